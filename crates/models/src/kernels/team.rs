//! The kernels' process-wide [`Team`] (the decoder's team of threads that spin between jobs):
//! an encoder's ~40 products of 50–100 µs each for a single text, its attention and row ops, and
//! a CNN's per-picture convolutions run on the calling thread plus helpers that are still
//! awake from the previous step.
//!
//! Handing each step to rayon's pool from outside it woke a sleeping worker every time, which
//! cost about what splitting such a product saves, so a single text gained nothing from a second
//! core (MiniLM one sentence on 2 threads: 3.3 ms with rayon, 2.2 ms here). One job runs at a
//! time: a caller that finds the team busy (another model's batch) runs its tasks itself.
//! Kernels use the team only from threads outside rayon's pool (see [`super::spread`]): training
//! shards run on the pool and keep their kernels sequential.

use std::sync::{Mutex, OnceLock, TryLockError};

use crate::quant::team::{Chunks, Team};

/// Runs `f(i)` for every `i < tasks`, on the calling thread and the team's helpers where the
/// team is free, returning when all have finished. Helpers adopt the caller's subnormal mode
/// ([`super::denormals`]) for the job, so a result never depends on which thread computed it.
pub(crate) fn run(tasks: usize, f: &(dyn Fn(usize) + Sync)) {
    static TEAM: OnceLock<Mutex<Team>> = OnceLock::new();
    let team = TEAM.get_or_init(|| Mutex::new(Team::new(crate::compute_threads())));
    let mut team = match team.try_lock() {
        Ok(t) => t,
        // A task panicked on an earlier job: the team itself is intact.
        Err(TryLockError::Poisoned(p)) => p.into_inner(),
        Err(TryLockError::WouldBlock) => return (0..tasks).for_each(f),
    };
    if tasks < 2 || team.threads() < 2 {
        return (0..tasks).for_each(f);
    }
    let (next, flush) = (Chunks::new(tasks), super::denormals::flushing());
    team.run(&|_| {
        super::denormals::set_flushing(flush);
        while let Some(i) = next.claim() {
            f(i);
        }
    });
}

#[cfg(test)]
mod tests {
    use std::panic::{catch_unwind, AssertUnwindSafe};
    use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};

    use super::*;

    /// Every task runs once, also with several callers at a time (one gets the team, the
    /// others run their tasks themselves).
    #[test]
    fn every_task_runs_once_with_callers_taking_turns() {
        std::thread::scope(|scope| {
            for _ in 0..3 {
                scope.spawn(|| {
                    for tasks in [0, 1, 2, 3, 17, 100] {
                        let hits: Vec<AtomicUsize> = (0..tasks).map(|_| AtomicUsize::new(0)).collect();
                        run(tasks, &|i| {
                            hits[i].fetch_add(1, SeqCst);
                        });
                        assert!(hits.iter().all(|h| h.load(SeqCst) == 1), "{tasks} tasks");
                    }
                });
            }
        });
    }

    /// A task's panic reaches the caller, and the kernels keep working afterwards.
    #[test]
    fn a_panicking_task_reaches_the_caller() {
        for bad in [0, 7] {
            let r = catch_unwind(AssertUnwindSafe(|| {
                run(8, &|i| {
                    assert!(i != bad, "task {i}");
                    std::thread::sleep(std::time::Duration::from_micros(50));
                })
            }));
            assert!(r.is_err());
        }
        let n = AtomicUsize::new(0);
        run(4, &|_| {
            n.fetch_add(1, SeqCst);
        });
        assert_eq!(n.load(SeqCst), 4);
    }

    /// Helpers compute under the caller's flush-to-zero mode, whatever they ran before.
    #[test]
    fn helpers_take_the_callers_subnormal_mode() {
        let tiny = f32::MIN_POSITIVE / 4.0; // subnormal
        for flush in [true, false, true] {
            let _guard = flush.then(super::super::denormals::FlushDenormals::new);
            let out: Vec<AtomicUsize> = (0..64).map(|_| AtomicUsize::new(0)).collect();
            run(64, &|i| {
                let x = std::hint::black_box(tiny) * std::hint::black_box(1.0f32);
                out[i].store((x == 0.0) as usize, SeqCst);
            });
            assert!(out.iter().all(|o| o.load(SeqCst) == flush as usize), "flush {flush}");
        }
    }
}
