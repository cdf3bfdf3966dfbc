//! A small team of helper threads that stay awake between the many short parallel steps of
//! one forward pass (an encoder's ~40 products of 50–100 µs each for a single text).
//!
//! Handing work to rayon's pool from outside it wakes a sleeping worker each time, which costs
//! about what splitting one such product saves, so a single text gained nothing from a second
//! core. Here the caller publishes a job (a closure over task indices), takes tasks itself, and
//! helpers that finished the previous job a moment ago are still spinning and join at once;
//! after [`SPIN`] without work a helper sleeps until the next job (ONNX Runtime's pool works the
//! same way). One job runs at a time: a caller that finds the team busy runs its tasks itself.
//!
//! Kernels use the team only from threads outside rayon's pool (see [`super::spread`]): training
//! shards run on the pool and keep their kernels sequential.

use std::any::Any;
use std::panic::{catch_unwind, resume_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, AtomicPtr, AtomicU64, AtomicUsize, Ordering::SeqCst};
use std::sync::{Arc, Condvar, Mutex, OnceLock};
use std::time::{Duration, Instant};

/// How long a helper keeps looking for the next job before it sleeps.
const SPIN: Duration = Duration::from_micros(300);

/// One published job: `f(i)` for every `i < tasks`.
struct Job<'a> {
    f: &'a (dyn Fn(usize) + Sync),
    tasks: usize,
    /// The caller's subnormal mode ([`super::denormals`]), which helpers adopt for the job.
    flush: bool,
}

struct State {
    /// The current job (valid while `closed` is false and the caller waits in [`run`]).
    job: AtomicPtr<Job<'static>>,
    /// The next task index to take.
    next: AtomicUsize,
    /// Set by the caller once every task is taken: helpers arriving later leave the job alone.
    closed: AtomicBool,
    /// Helpers inside the current job (the caller waits for none before returning).
    inside: AtomicUsize,
    /// Bumped for every job, so a helper sees that one was published.
    epoch: AtomicU64,
    /// Helpers asleep (or going to sleep) on `wake`.
    sleepers: AtomicUsize,
    sleep: Mutex<()>,
    wake: Condvar,
    /// A task's panic, carried back to the caller.
    panic: Mutex<Option<Box<dyn Any + Send>>>,
}

pub(crate) struct Team {
    state: Arc<State>,
    /// Held by the one caller whose job runs.
    busy: Mutex<()>,
    helpers: usize,
}

impl Team {
    fn new(helpers: usize) -> Self {
        let state = Arc::new(State {
            job: AtomicPtr::new(std::ptr::null_mut()),
            next: AtomicUsize::new(0),
            closed: AtomicBool::new(true),
            inside: AtomicUsize::new(0),
            epoch: AtomicU64::new(0),
            sleepers: AtomicUsize::new(0),
            sleep: Mutex::new(()),
            wake: Condvar::new(),
            panic: Mutex::new(None),
        });
        let mut started = 0;
        for i in 0..helpers {
            let state = Arc::clone(&state);
            let spawned =
                std::thread::Builder::new().name(format!("aiserve-team-{i}")).spawn(move || helper(&state)).is_ok();
            started += usize::from(spawned);
        }
        Self { state, busy: Mutex::new(()), helpers: started }
    }

    /// Runs `f(i)` for every `i < tasks` on the calling thread and the helpers, returning when all
    /// have finished; a task's panic is resumed here once no helper is inside the job.
    pub(crate) fn run(&self, tasks: usize, f: &(dyn Fn(usize) + Sync)) {
        let Ok(_busy) = self.busy.try_lock() else {
            (0..tasks).for_each(f);
            return;
        };
        if self.helpers == 0 || tasks < 2 {
            (0..tasks).for_each(f);
            return;
        }
        let s = &*self.state;
        let job = Job { f, tasks, flush: super::denormals::flushing() };
        // SAFETY (of the lifetime erasure): the pointer is read only by helpers inside the job,
        // and this function returns only after closing the job and seeing no helper inside.
        let ptr = &job as *const Job<'_> as *mut Job<'static>;
        s.job.store(ptr, SeqCst);
        s.next.store(0, SeqCst);
        s.closed.store(false, SeqCst);
        s.epoch.fetch_add(1, SeqCst);
        if s.sleepers.load(SeqCst) > 0 {
            let _lock = s.sleep.lock().unwrap_or_else(|e| e.into_inner());
            s.wake.notify_all();
        }
        let mine = catch_unwind(AssertUnwindSafe(|| take_tasks(s, &job)));
        s.closed.store(true, SeqCst);
        while s.inside.load(SeqCst) != 0 {
            std::hint::spin_loop();
        }
        s.job.store(std::ptr::null_mut(), SeqCst);
        let theirs = s.panic.lock().unwrap_or_else(|e| e.into_inner()).take();
        if let Err(p) = mine {
            resume_unwind(p);
        }
        if let Some(p) = theirs {
            resume_unwind(p);
        }
    }
}

fn take_tasks(s: &State, job: &Job<'_>) {
    loop {
        let i = s.next.fetch_add(1, SeqCst);
        if i >= job.tasks {
            return;
        }
        (job.f)(i);
    }
}

fn helper(s: &State) {
    let mut seen = s.epoch.load(SeqCst);
    loop {
        // Look for the next job: spin a while, then sleep until one is published.
        let started = Instant::now();
        let mut spins = 0u32;
        while s.epoch.load(SeqCst) == seen {
            std::hint::spin_loop();
            spins = spins.wrapping_add(1);
            if spins.is_multiple_of(256) && started.elapsed() > SPIN {
                let mut lock = s.sleep.lock().unwrap_or_else(|e| e.into_inner());
                s.sleepers.fetch_add(1, SeqCst);
                while s.epoch.load(SeqCst) == seen {
                    lock = s.wake.wait(lock).unwrap_or_else(|e| e.into_inner());
                }
                s.sleepers.fetch_sub(1, SeqCst);
                break;
            }
        }
        seen = s.epoch.load(SeqCst);
        s.inside.fetch_add(1, SeqCst);
        if !s.closed.load(SeqCst) {
            // SAFETY: the job is open, so its caller is still in `run` (it waits for `inside` to
            // reach zero after closing), and the pointer it stored before opening is live.
            let job = unsafe { &*s.job.load(SeqCst) };
            super::denormals::set_flushing(job.flush);
            if let Err(p) = catch_unwind(AssertUnwindSafe(|| take_tasks(s, job))) {
                // Take no more of this job's tasks; the caller resumes the panic.
                s.next.store(usize::MAX / 2, SeqCst);
                s.panic.lock().unwrap_or_else(|e| e.into_inner()).get_or_insert(p);
            }
        }
        s.inside.fetch_sub(1, SeqCst);
    }
}

/// The process's team: one helper per compute thread past the first (rayon's pool size).
pub(crate) fn team() -> &'static Team {
    static TEAM: OnceLock<Team> = OnceLock::new();
    TEAM.get_or_init(|| Team::new(rayon::current_num_threads().saturating_sub(1)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_task_runs_once() {
        let team = Team::new(2);
        for tasks in [0, 1, 2, 3, 17, 100] {
            let hits: Vec<AtomicUsize> = (0..tasks).map(|_| AtomicUsize::new(0)).collect();
            team.run(tasks, &|i| {
                hits[i].fetch_add(1, SeqCst);
            });
            assert!(hits.iter().all(|h| h.load(SeqCst) == 1), "{tasks} tasks");
        }
    }

    /// Helpers asleep after the spin wake for the next job; back-to-back jobs from several
    /// callers each finish whole.
    #[test]
    fn sleeping_helpers_wake_and_callers_take_turns() {
        let team = Team::new(1);
        std::thread::sleep(Duration::from_millis(5));
        let total = AtomicUsize::new(0);
        team.run(8, &|_| {
            total.fetch_add(1, SeqCst);
        });
        assert_eq!(total.load(SeqCst), 8);
        std::thread::scope(|scope| {
            for _ in 0..3 {
                scope.spawn(|| {
                    for _ in 0..200 {
                        let sum = AtomicUsize::new(0);
                        team.run(5, &|i| {
                            sum.fetch_add(i, SeqCst);
                        });
                        assert_eq!(sum.load(SeqCst), 10);
                    }
                });
            }
        });
    }

    /// A task's panic reaches the caller, and the team keeps working afterwards.
    #[test]
    fn a_panicking_task_reaches_the_caller() {
        let team = Team::new(1);
        for bad in [0, 7] {
            let r = catch_unwind(AssertUnwindSafe(|| {
                team.run(8, &|i| {
                    if i == bad {
                        panic!("task {i}");
                    }
                    std::thread::sleep(Duration::from_micros(50));
                })
            }));
            assert!(r.is_err());
        }
        let n = AtomicUsize::new(0);
        team.run(4, &|_| {
            n.fetch_add(1, SeqCst);
        });
        assert_eq!(n.load(SeqCst), 4);
    }
}
