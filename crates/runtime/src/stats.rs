//! Per-version inference statistics (Triton's `ModelStatistics`): cumulative counts and
//! durations that clients read back as numbers, beside the Prometheus histograms in
//! [`crate::metrics`].
//!
//! Each loaded version owns one [`VersionStats`] (its queue or generation engine creates it, and
//! `Servable::stats` hands it out), so a version loaded again starts from zero, as in Triton:
//! the worker queue records queue waits, forward passes and items; the front ends record each
//! request's outcome and duration. Counters are relaxed atomics (a reader may see one request's
//! counts a moment apart); the per-batch-size table sits behind a mutex taken once per forward
//! pass.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Mutex;
use std::time::{Duration, SystemTime};

/// A cumulative count and total duration.
#[derive(Default)]
pub struct Tally {
    count: AtomicU64,
    ns: AtomicU64,
}

impl Tally {
    pub fn add(&self, n: u64, d: Duration) {
        self.count.fetch_add(n, Relaxed);
        self.ns.fetch_add(d.as_nanos().min(u64::MAX as u128) as u64, Relaxed);
    }

    /// (count, nanoseconds).
    pub fn get(&self) -> (u64, u64) {
        (self.count.load(Relaxed), self.ns.load(Relaxed))
    }
}

#[derive(Default)]
pub struct VersionStats {
    /// Requests answered successfully, and their time from arrival to answer.
    pub success: Tally,
    /// Requests that failed after they were routed to this version.
    pub fail: Tally,
    /// Time each request waited in the queue for a forward pass.
    pub queue: Tally,
    /// Forward-pass time, counted once per request in the pass.
    pub compute: Tally,
    /// Items (images, texts, sequences) the model has answered.
    pub inference_count: AtomicU64,
    /// Forward passes run.
    pub execution_count: AtomicU64,
    /// When the last request finished, in milliseconds since the epoch.
    pub last_inference_ms: AtomicU64,
    /// Per batch size (requests in one forward pass): passes run and their total time.
    batches: Mutex<BTreeMap<u64, (u64, u64)>>,
}

impl VersionStats {
    /// A request's outcome, from the front end that answered it.
    pub fn request(&self, ok: bool, took: Duration) {
        if ok { &self.success } else { &self.fail }.add(1, took);
        let now = SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).unwrap_or_default();
        self.last_inference_ms.store(now.as_millis() as u64, Relaxed);
    }

    /// One forward pass of `requests` requests holding `items` items, which took `took`.
    pub fn execution(&self, requests: usize, items: usize, took: Duration) {
        self.execution_count.fetch_add(1, Relaxed);
        self.inference_count.fetch_add(items as u64, Relaxed);
        self.compute.add(requests as u64, took * requests as u32);
        let mut b = self.batches.lock().unwrap_or_else(|p| p.into_inner());
        let e = b.entry(requests as u64).or_default();
        e.0 += 1;
        e.1 += took.as_nanos().min(u64::MAX as u128) as u64;
    }

    /// Sequences a generation model finished.
    pub fn sequences(&self, n: u64) {
        self.inference_count.fetch_add(n, Relaxed);
    }

    /// (batch size, passes, nanoseconds), smallest batch first.
    pub fn batches(&self) -> Vec<(u64, u64, u64)> {
        let b = self.batches.lock().unwrap_or_else(|p| p.into_inner());
        b.iter().map(|(&size, &(n, ns))| (size, n, ns)).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_add_up() {
        let s = VersionStats::default();
        s.request(true, Duration::from_millis(2));
        s.request(false, Duration::from_millis(1));
        s.execution(3, 5, Duration::from_millis(4));
        s.execution(1, 1, Duration::from_millis(1));
        assert_eq!(s.success.get(), (1, 2_000_000));
        assert_eq!(s.fail.get(), (1, 1_000_000));
        assert_eq!(s.compute.get(), (4, 13_000_000));
        assert_eq!(s.inference_count.load(Relaxed), 6);
        assert_eq!(s.execution_count.load(Relaxed), 2);
        assert_eq!(s.batches(), vec![(1, 1, 1_000_000), (3, 1, 4_000_000)]);
    }
}
