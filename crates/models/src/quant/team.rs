//! A small team of threads that a decoder keeps for its whole life: each product of a forward
//! pass is split among them by claiming chunks of rows from an atomic counter.
//!
//! Why not rayon: a decode step is ~150 short products (50–500 µs each). Handing each to rayon's
//! pool from the engine thread puts that thread to sleep and wakes a worker every time (measured:
//! 12% of the time in the kernel's scheduler). Here the caller works too, and the helpers spin
//! between products (parking only after a few milliseconds without work), as llama.cpp's
//! threads do. Every wait turns into yielding the core after a few microseconds, so on a busy
//! machine a spinning thread does not hold the core the awaited one needs.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

/// How long a helper spins for the next job before parking.
const SPIN: Duration = Duration::from_millis(5);

/// Busy-wait rounds before a waiting thread starts yielding its core: when the machine is
/// oversubscribed (HTTP threads, other models, other processes), the thread being waited for
/// may need this very core to finish.
const PATIENCE: u32 = 4096;

/// One round of waiting: a pause instruction at first, then a yield to the scheduler.
fn wait_round(round: &mut u32) {
    *round = round.saturating_add(1);
    if *round < PATIENCE {
        std::hint::spin_loop();
    } else {
        std::thread::yield_now();
    }
}

type Job = &'static (dyn Fn(usize) + Sync);

struct Shared {
    /// Bumped for every job; helpers run each epoch once.
    epoch: AtomicUsize,
    /// Helpers still running the current job.
    pending: AtomicUsize,
    job: Mutex<Option<Job>>,
    panicked: AtomicBool,
    stop: AtomicBool,
    parked: Mutex<usize>,
    wake: Condvar,
}

/// Helper threads plus the caller, running one job at a time.
///
/// [`Team::run`] takes `&mut self`: it lends the helpers a reference to the caller's closure
/// for exactly one job, which is sound only while no other job starts on the same team before
/// it ends. An exclusive borrow rules out both ways that could happen from safe code: two
/// threads running jobs on one team at once, and a job starting another on its own team. The
/// team is still [`Send`], so it can be built on one thread and used on another. (This crate's
/// doc tests are off, so `run_takes_the_team_exclusively` below checks the same at build time.)
///
/// ```compile_fail,E0499
/// let mut team = aiserve_models::quant::team::Team::new(2);
/// std::thread::scope(|s| {
///     s.spawn(|| team.run(&|_| {}));
///     team.run(&|_| {}); // a second job at the same time: does not compile
/// });
/// ```
///
/// ```compile_fail,E0596
/// let mut team = aiserve_models::quant::team::Team::new(2);
/// let outer = &mut team;
/// outer.run(&|_| outer.run(&|_| {})); // a job inside a job: does not compile
/// ```
///
/// ```
/// fn send<T: Send>(_: T) {}
/// send(aiserve_models::quant::team::Team::new(2));
/// ```
pub struct Team {
    shared: Arc<Shared>,
    helpers: Vec<std::thread::JoinHandle<()>>,
}

impl Team {
    /// A team of `threads` (the caller included; at least 1).
    pub fn new(threads: usize) -> Self {
        let shared = Arc::new(Shared {
            epoch: AtomicUsize::new(0),
            pending: AtomicUsize::new(0),
            job: Mutex::new(None),
            panicked: AtomicBool::new(false),
            stop: AtomicBool::new(false),
            parked: Mutex::new(0),
            wake: Condvar::new(),
        });
        let helpers = (1..threads.max(1))
            .map(|i| {
                let s = shared.clone();
                std::thread::Builder::new()
                    .name(format!("team-{i}"))
                    .spawn(move || helper(&s, i))
                    .expect("spawning a team thread")
            })
            .collect();
        Self { shared, helpers }
    }

    pub fn threads(&self) -> usize {
        self.helpers.len() + 1
    }

    /// Runs `f(t)` for every thread index `t`, the caller taking `t = 0`; returns when all are
    /// done. A panic in any of them is re-raised here after all have finished.
    pub fn run(&mut self, f: &(dyn Fn(usize) + Sync)) {
        if self.helpers.is_empty() {
            return f(0);
        }
        let s = &*self.shared;
        // SAFETY: the reference only lives in `job` until every helper has finished this epoch,
        // which `Wait` below waits for before `run` returns or unwinds, so it never outlives `f`.
        // `&mut self` means no other `run` on this team (from another thread, or from inside
        // `f`) can replace the job or reset `pending` before that.
        let job: Job = unsafe { std::mem::transmute::<&(dyn Fn(usize) + Sync), Job>(f) };
        *s.job.lock().unwrap_or_else(|p| p.into_inner()) = Some(job);
        s.pending.store(self.helpers.len(), Ordering::SeqCst);
        s.epoch.fetch_add(1, Ordering::SeqCst);
        if *s.parked.lock().unwrap_or_else(|p| p.into_inner()) > 0 {
            s.wake.notify_all();
        }
        struct Wait<'a>(&'a Shared);
        impl Drop for Wait<'_> {
            fn drop(&mut self) {
                let mut round = 0;
                while self.0.pending.load(Ordering::Acquire) != 0 {
                    wait_round(&mut round);
                }
                *self.0.job.lock().unwrap_or_else(|p| p.into_inner()) = None;
                if std::thread::panicking() {
                    // The caller's own panic is the one reported; a helper's from the same job
                    // must not surface as the next job's.
                    self.0.panicked.store(false, Ordering::SeqCst);
                }
            }
        }
        let wait = Wait(s);
        f(0);
        drop(wait);
        if s.panicked.swap(false, Ordering::SeqCst) {
            panic!("a team thread panicked");
        }
    }
}

impl Team {
    /// Runs `f(i, chunk)` for every `len`-long chunk `i` of `out` (the last may be shorter),
    /// chunks claimed by whichever thread is free; on the caller alone when there is one chunk.
    pub fn chunks_mut(&mut self, out: &mut [f32], len: usize, f: impl Fn(usize, &mut [f32]) + Sync) {
        let n = out.len().div_ceil(len.max(1));
        if n < 2 || self.helpers.is_empty() {
            out.chunks_mut(len.max(1)).enumerate().for_each(|(i, c)| f(i, c));
            return;
        }
        struct Base(*mut f32, usize);
        // SAFETY: each chunk index is claimed once, so threads write disjoint slices.
        unsafe impl Sync for Base {}
        let (base, next) = (Base(out.as_mut_ptr(), out.len()), Chunks::new(n));
        self.run(&|_| {
            let base = &base;
            while let Some(i) = next.claim() {
                let start = i * len;
                // SAFETY: `start..start + l` lies inside `out`, which outlives `run`, and chunk
                // `i` is this thread's alone.
                let chunk = unsafe { std::slice::from_raw_parts_mut(base.0.add(start), len.min(base.1 - start)) };
                f(i, chunk);
            }
        });
    }
}

fn helper(s: &Shared, index: usize) {
    let mut seen = 0;
    loop {
        let started = Instant::now();
        let mut spins = 0u32;
        let mut round = 0;
        loop {
            if s.stop.load(Ordering::Acquire) {
                return;
            }
            let e = s.epoch.load(Ordering::Acquire);
            if e != seen {
                seen = e;
                break;
            }
            spins = spins.wrapping_add(1);
            if spins.is_multiple_of(1024) && started.elapsed() > SPIN {
                let mut parked = s.parked.lock().unwrap_or_else(|p| p.into_inner());
                *parked += 1;
                while s.epoch.load(Ordering::Acquire) == seen && !s.stop.load(Ordering::Acquire) {
                    parked = s.wake.wait(parked).unwrap_or_else(|p| p.into_inner());
                }
                *parked -= 1;
            } else {
                wait_round(&mut round);
            }
        }
        let job = *s.job.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(f) = job {
            if catch_unwind(AssertUnwindSafe(|| f(index))).is_err() {
                s.panicked.store(true, Ordering::SeqCst);
            }
        }
        s.pending.fetch_sub(1, Ordering::Release);
    }
}

impl Drop for Team {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        {
            let _parked = self.shared.parked.lock().unwrap_or_else(|p| p.into_inner());
            self.shared.wake.notify_all();
        }
        for h in self.helpers.drain(..) {
            let _ = h.join();
        }
    }
}

/// Hands out chunk indices `0..chunks` to whichever thread asks first.
pub struct Chunks {
    next: AtomicUsize,
    chunks: usize,
}

impl Chunks {
    pub fn new(chunks: usize) -> Self {
        Self { next: AtomicUsize::new(0), chunks }
    }

    pub fn claim(&self) -> Option<usize> {
        let c = self.next.fetch_add(1, Ordering::Relaxed);
        (c < self.chunks).then_some(c)
    }
}

/// Hands out ranges of `0..len` that shrink as the work runs out (guided scheduling): each claim
/// takes a `1/(2·threads)` share of what is left, at least `min`. Big ranges first keep the
/// claims few; small ones last keep the threads finishing together (with equal ranges, the
/// thread that takes the last one is still working while the others wait).
pub struct Ranges {
    next: AtomicUsize,
    len: usize,
    parts: usize,
    min: usize,
}

impl Ranges {
    pub fn new(len: usize, threads: usize, min: usize) -> Self {
        Self { next: AtomicUsize::new(0), len, parts: 2 * threads.max(1), min: min.max(1) }
    }

    pub fn claim(&self) -> Option<std::ops::Range<usize>> {
        let mut at = self.next.load(Ordering::Relaxed);
        loop {
            if at >= self.len {
                return None;
            }
            let end = (at + ((self.len - at) / self.parts).max(self.min)).min(self.len);
            match self.next.compare_exchange_weak(at, end, Ordering::Relaxed, Ordering::Relaxed) {
                Ok(_) => return Some(at..end),
                Err(now) => at = now,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Fails to build if `run` goes back to `&self` (see [`Team`]) or the team stops being
    /// `Send`.
    #[test]
    fn run_takes_the_team_exclusively() {
        fn send<T: Send>() {}
        send::<Team>();
        let run: fn(&mut Team, &(dyn Fn(usize) + Sync)) = Team::run;
        type ChunksMut = fn(&mut Team, &mut [f32], usize, fn(usize, &mut [f32]));
        let chunks: ChunksMut = Team::chunks_mut;
        let mut out = [0.0f32; 4];
        chunks(&mut Team::new(2), &mut out, 1, |i, c| c[0] = i as f32);
        run(&mut Team::new(1), &|_| {});
        assert_eq!(out, [0.0, 1.0, 2.0, 3.0]);
    }

    #[test]
    fn ranges_cover_everything_once_and_shrink() {
        let mut team = Team::new(3);
        for (len, min) in [(0, 1), (1, 1), (7, 2), (3072, 1), (1000, 16)] {
            let hits: Vec<AtomicUsize> = (0..len).map(|_| AtomicUsize::new(0)).collect();
            let ranges = Ranges::new(len, 3, min);
            team.run(&|_| {
                while let Some(r) = ranges.claim() {
                    assert!(!r.is_empty());
                    r.for_each(|i| {
                        hits[i].fetch_add(1, Ordering::Relaxed);
                    });
                }
            });
            assert!(hits.iter().all(|h| h.load(Ordering::Relaxed) == 1), "len {len}");
        }
        let one = Ranges::new(3072, 2, 1);
        let sizes: Vec<usize> = std::iter::from_fn(|| one.claim()).map(|r| r.len()).collect();
        assert_eq!(sizes[0], 768);
        assert!(sizes.windows(2).all(|w| w[0] >= w[1]) && *sizes.last().unwrap() == 1);
    }

    #[test]
    fn every_chunk_runs_once_and_panics_come_back() {
        let mut team = Team::new(3);
        for _ in 0..200 {
            let hits: Vec<AtomicUsize> = (0..50).map(|_| AtomicUsize::new(0)).collect();
            let chunks = Chunks::new(50);
            team.run(&|_| {
                while let Some(c) = chunks.claim() {
                    hits[c].fetch_add(1, Ordering::Relaxed);
                }
            });
            assert!(hits.iter().all(|h| h.load(Ordering::Relaxed) == 1));
        }
        let r = catch_unwind(AssertUnwindSafe(|| team.run(&|t| assert!(t != 2, "thread 2 fails"))));
        assert!(r.is_err());
        // The caller and a helper failing in one job: one panic, and the next job is clean.
        let r = catch_unwind(AssertUnwindSafe(|| team.run(&|t| assert!(t == 1, "thread {t} fails"))));
        assert!(r.is_err());
        team.run(&|_| {});
        // Still usable afterwards, also after parking.
        std::thread::sleep(SPIN * 3);
        let n = AtomicUsize::new(0);
        team.run(&|_| {
            n.fetch_add(1, Ordering::Relaxed);
        });
        assert_eq!(n.load(Ordering::Relaxed), 3);
    }

    #[test]
    fn chunks_mut_hands_every_chunk_to_one_thread() {
        let mut team = Team::new(2);
        let mut out = vec![0.0f32; 103];
        team.chunks_mut(&mut out, 10, |i, c| c.iter_mut().for_each(|v| *v += i as f32 + 1.0));
        assert!(out.iter().enumerate().all(|(j, v)| *v == (j / 10) as f32 + 1.0));
    }
}
