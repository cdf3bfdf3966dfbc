//! The dynamic batcher's decisions, as a pure state machine (Triton's dynamic batching rules).
//!
//! Requests are queued FIFO with their size (images), enqueue time and optional deadline. Given
//! the time, [`Batcher::next`] answers one of: run this batch now, wait until a given instant,
//! or idle (nothing queued). A batch is the longest FIFO prefix that fits `max_batch_size`; it
//! runs at once when it is full or reaches one of the `preferred_batch_sizes`, or when its
//! oldest request has waited `max_queue_delay`. Requests whose client has gone are dropped and
//! requests past their deadline are handed back as expired, before they cost compute. The model
//! threads call this under a mutex; nothing here blocks or reads a clock.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

/// Batching knobs of one model (from `model.toml`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BatchPolicy {
    pub max_batch_size: usize,
    /// Batch sizes worth running at once without waiting for more requests (sorted ascending).
    pub preferred_batch_sizes: Vec<usize>,
    /// How long the oldest request may wait for others to join its batch.
    pub max_queue_delay: Duration,
    /// Most requests queued at once; more are refused.
    pub max_queue_size: usize,
}

/// One queued request.
#[derive(Debug)]
pub struct Pending<T> {
    pub item: T,
    /// Images in the request.
    pub size: usize,
    pub enqueued: Instant,
    pub deadline: Option<Instant>,
}

/// What the model thread should do next.
#[derive(Debug)]
pub enum Decision<T> {
    /// Run these requests as one forward pass (in this order).
    Run(Vec<Pending<T>>),
    /// Nothing is due before this instant (a delay or a deadline ends then).
    WaitUntil(Instant),
    /// The queue is empty.
    Idle,
}

/// Why a request was not queued.
#[derive(Debug, PartialEq, Eq)]
pub enum Refused {
    /// The queue is at `max_queue_size`.
    QueueFull { limit: usize },
    /// The request alone is bigger than a batch (`max_batch_size`): it could never run.
    TooBig { size: usize, limit: usize },
}

#[derive(Debug)]
pub struct Batcher<T> {
    policy: BatchPolicy,
    queue: VecDeque<Pending<T>>,
}

impl<T> Batcher<T> {
    pub fn new(mut policy: BatchPolicy) -> Self {
        policy.preferred_batch_sizes.sort_unstable();
        policy.preferred_batch_sizes.dedup();
        Self { policy, queue: VecDeque::new() }
    }

    pub fn len(&self) -> usize {
        self.queue.len()
    }

    pub fn is_empty(&self) -> bool {
        self.queue.is_empty()
    }

    /// Queues a request; refuses it when the queue is full or when it is bigger than a batch.
    pub fn push(&mut self, item: T, size: usize, now: Instant, deadline: Option<Instant>) -> Result<(), (T, Refused)> {
        if size > self.policy.max_batch_size {
            return Err((item, Refused::TooBig { size, limit: self.policy.max_batch_size }));
        }
        if self.queue.len() >= self.policy.max_queue_size {
            return Err((item, Refused::QueueFull { limit: self.policy.max_queue_size }));
        }
        self.queue.push_back(Pending { item, size, enqueued: now, deadline });
        Ok(())
    }

    /// Removes requests whose client is gone (`alive` false) and returns those past their deadline.
    pub fn prune(&mut self, now: Instant, alive: impl Fn(&T) -> bool) -> Vec<Pending<T>> {
        let keep = |p: &Pending<T>| alive(&p.item) && p.deadline.is_none_or(|d| d > now);
        if self.queue.iter().all(keep) {
            return Vec::new(); // the common case: nothing to remove, nothing allocated
        }
        let mut expired = Vec::new();
        let mut kept = VecDeque::with_capacity(self.queue.len());
        for p in self.queue.drain(..) {
            if !alive(&p.item) {
                continue;
            }
            if p.deadline.is_some_and(|d| d <= now) {
                expired.push(p);
            } else {
                kept.push_back(p);
            }
        }
        self.queue = kept;
        expired
    }

    /// The next step; call [`Batcher::prune`] first so dead and expired requests are gone.
    pub fn next(&mut self, now: Instant) -> Decision<T> {
        let Some(oldest) = self.queue.front() else { return Decision::Idle };
        let max = self.policy.max_batch_size;
        // Longest FIFO prefix that fits, and the prefix lengths at each preferred size.
        let (mut count, mut images, mut preferred_at) = (0, 0, None);
        for p in &self.queue {
            if images + p.size > max {
                break;
            }
            images += p.size;
            count += 1;
            if self.policy.preferred_batch_sizes.contains(&images) {
                preferred_at = Some(count);
            }
        }
        let full = count < self.queue.len() || images == max;
        let waited_enough = now >= oldest.enqueued + self.policy.max_queue_delay;
        let take = if full {
            // A full batch runs now; prefer ending it on a preferred size when one was passed.
            match preferred_at {
                Some(n) if !self.policy.preferred_batch_sizes.is_empty() && images != max => n,
                _ => count,
            }
        } else if self.policy.preferred_batch_sizes.last().is_some_and(|&p| images >= p) {
            preferred_at.unwrap_or(count)
        } else if waited_enough || preferred_at == Some(count) {
            count
        } else {
            let delay_ends = oldest.enqueued + self.policy.max_queue_delay;
            let first_deadline = self.queue.iter().filter_map(|p| p.deadline).min();
            return Decision::WaitUntil(first_deadline.map_or(delay_ends, |d| d.min(delay_ends)));
        };
        // Never an empty batch: that would have the model thread ask again at once, forever.
        Decision::Run(self.queue.drain(..take.max(1)).collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(max: usize, preferred: &[usize], delay_us: u64) -> BatchPolicy {
        BatchPolicy {
            max_batch_size: max,
            preferred_batch_sizes: preferred.to_vec(),
            max_queue_delay: Duration::from_micros(delay_us),
            max_queue_size: 4,
        }
    }

    fn sizes(d: &Decision<u32>) -> Vec<usize> {
        match d {
            Decision::Run(b) => b.iter().map(|p| p.size).collect(),
            other => panic!("expected a batch, got {other:?}"),
        }
    }

    #[test]
    fn zero_delay_runs_whatever_is_queued() {
        let t0 = Instant::now();
        let mut b = Batcher::new(policy(8, &[], 0));
        assert!(matches!(b.next(t0), Decision::Idle));
        b.push(1, 2, t0, None).unwrap();
        b.push(2, 3, t0, None).unwrap();
        assert_eq!(sizes(&b.next(t0)), [2, 3]);
        assert!(b.is_empty());
    }

    #[test]
    fn waits_for_the_delay_then_runs() {
        let t0 = Instant::now();
        let mut b = Batcher::new(policy(8, &[], 500));
        b.push(1, 1, t0, None).unwrap();
        match b.next(t0 + Duration::from_micros(100)) {
            Decision::WaitUntil(t) => assert_eq!(t, t0 + Duration::from_micros(500)),
            other => panic!("{other:?}"),
        }
        b.push(2, 1, t0 + Duration::from_micros(200), None).unwrap();
        assert_eq!(sizes(&b.next(t0 + Duration::from_micros(500))), [1, 1]);
    }

    #[test]
    fn a_full_batch_runs_without_waiting_and_the_rest_stays() {
        let t0 = Instant::now();
        let mut b = Batcher::new(policy(4, &[], 1_000_000));
        for i in 0..3 {
            b.push(i, 2, t0, None).unwrap();
        }
        assert_eq!(sizes(&b.next(t0)), [2, 2]);
        assert_eq!(b.len(), 1);
        assert!(matches!(b.next(t0), Decision::WaitUntil(_)));
    }

    #[test]
    fn preferred_sizes_run_at_once() {
        let t0 = Instant::now();
        let mut b = Batcher::new(policy(8, &[4], 1_000_000));
        b.push(1, 2, t0, None).unwrap();
        assert!(matches!(b.next(t0), Decision::WaitUntil(_)));
        b.push(2, 2, t0, None).unwrap();
        assert_eq!(sizes(&b.next(t0)), [2, 2]);
        // Past the largest preferred size without reaching it exactly: cut at the preferred size.
        b.push(3, 3, t0, None).unwrap();
        b.push(4, 1, t0, None).unwrap();
        b.push(5, 2, t0, None).unwrap();
        assert_eq!(sizes(&b.next(t0)), [3, 1]);
        assert_eq!(b.len(), 1);
    }

    #[test]
    fn queue_limit_refuses_at_once() {
        let t0 = Instant::now();
        let mut b = Batcher::new(policy(8, &[], 0));
        for i in 0..4 {
            b.push(i, 1, t0, None).unwrap();
        }
        let (item, full) = b.push(9, 1, t0, None).unwrap_err();
        assert_eq!((item, full), (9, Refused::QueueFull { limit: 4 }));
    }

    #[test]
    fn a_request_bigger_than_a_batch_is_refused_at_the_door() {
        let t0 = Instant::now();
        let mut b = Batcher::new(policy(8, &[], 0));
        let (item, why) = b.push(1, 9, t0, None).unwrap_err();
        assert_eq!((item, why), (1, Refused::TooBig { size: 9, limit: 8 }));
        assert!(matches!(b.next(t0), Decision::Idle));
        b.push(2, 8, t0, None).unwrap();
        assert_eq!(sizes(&b.next(t0)), [8]);
    }

    #[test]
    fn dead_clients_are_dropped_and_expired_requests_returned() {
        let t0 = Instant::now();
        let mut b = Batcher::new(policy(8, &[], 1_000));
        b.push(1, 1, t0, None).unwrap();
        b.push(2, 1, t0, Some(t0 + Duration::from_micros(300))).unwrap();
        b.push(3, 1, t0, None).unwrap();
        // The wait ends early when a deadline comes first.
        match b.next(t0) {
            Decision::WaitUntil(t) => assert_eq!(t, t0 + Duration::from_micros(300)),
            other => panic!("{other:?}"),
        }
        let expired = b.prune(t0 + Duration::from_micros(300), |&i| i != 3);
        assert_eq!(expired.iter().map(|p| p.item).collect::<Vec<_>>(), [2]);
        assert_eq!(b.len(), 1);
        assert_eq!(sizes(&b.next(t0 + Duration::from_micros(1_000))), [1]);
    }
}
