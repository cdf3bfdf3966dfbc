//! The server-wide memory budget for what requests decode: bodies, parsed JSON trees, decoded
//! tensors and pictures.
//!
//! Every request gets a [`Hold`] when its body is read; each decoder measures what it is about to
//! allocate (from what actually arrived, never from a size the client claims) and grows the hold
//! *before* allocating. A hold that cannot grow fails the request with 503 and `Retry-After`
//! (other requests hold the memory; it frees as they finish), or with 413 when the request alone
//! needs more than the whole budget. Dropping the hold (the handler finishing, or the client going
//! away) returns its bytes. Lock-free: one atomic counter.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use crate::error::Error;

/// Memory one byte of text may take while tokenised: `tokenizers`' encoding keeps ids, type
/// ids, offsets, masks and token strings per token (~64 bytes), and a text makes at most one
/// token per byte.
pub const TOKENIZE_BYTES_PER_BYTE: usize = 64;

/// The bytes all requests may hold at once.
#[derive(Debug)]
pub struct MemoryBudget {
    limit: usize,
    used: AtomicUsize,
}

impl MemoryBudget {
    pub fn new(limit: usize) -> Arc<Self> {
        Arc::new(Self { limit, used: AtomicUsize::new(0) })
    }

    pub fn limit(&self) -> usize {
        self.limit
    }

    /// Bytes held by requests right now.
    pub fn used(&self) -> usize {
        self.used.load(Ordering::Relaxed)
    }

    /// An empty hold on this budget.
    pub fn hold(self: &Arc<Self>) -> Hold {
        Hold(Arc::new(HoldInner { budget: self.clone(), bytes: AtomicUsize::new(0) }))
    }

    fn try_take(&self, bytes: usize) -> bool {
        self.used
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |used| {
                used.checked_add(bytes).filter(|&total| total <= self.limit)
            })
            .is_ok()
    }

    fn give_back(&self, bytes: usize) {
        self.used.fetch_sub(bytes, Ordering::AcqRel);
    }
}

/// One request's share of the budget; cheap to clone (blocking decoders take a clone along).
#[derive(Clone, Debug)]
pub struct Hold(Arc<HoldInner>);

#[derive(Debug)]
struct HoldInner {
    budget: Arc<MemoryBudget>,
    bytes: AtomicUsize,
}

impl Hold {
    /// Counts `bytes` more for `what` (e.g. "the decoded tensor `inputs[0]`"), or refuses.
    pub fn grow(&self, bytes: usize, what: &str) -> Result<(), Error> {
        let budget = &self.0.budget;
        let mine = self.0.bytes.load(Ordering::Relaxed);
        if mine.saturating_add(bytes) > budget.limit {
            return Err(Error::TooMuchMemory {
                what: what.to_owned(),
                needed: mine.saturating_add(bytes),
                limit: budget.limit,
            });
        }
        if !budget.try_take(bytes) {
            return Err(Error::MemoryBusy { what: what.to_owned(), needed: bytes, limit: budget.limit });
        }
        self.0.bytes.fetch_add(bytes, Ordering::AcqRel);
        Ok(())
    }

    /// Bytes this hold counts.
    pub fn bytes(&self) -> usize {
        self.0.bytes.load(Ordering::Relaxed)
    }
}

impl Drop for HoldInner {
    fn drop(&mut self) {
        self.budget.give_back(*self.bytes.get_mut());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn holds_count_and_give_back() {
        let b = MemoryBudget::new(100);
        let h = b.hold();
        h.grow(60, "x").unwrap();
        let other = b.hold();
        match other.grow(50, "y").unwrap_err() {
            Error::MemoryBusy { needed: 50, limit: 100, .. } => {}
            e => panic!("{e:?}"),
        }
        // More than the whole budget can never fit: a 413, not a retry.
        assert!(matches!(other.grow(101, "z").unwrap_err(), Error::TooMuchMemory { .. }));
        let clone = h.clone();
        clone.grow(40, "x").unwrap();
        assert_eq!((b.used(), h.bytes()), (100, 100));
        drop(h);
        assert_eq!(b.used(), 100, "a clone still holds it");
        drop(clone);
        assert_eq!(b.used(), 0);
        other.grow(100, "y").unwrap();
    }

    #[test]
    fn concurrent_growth_never_passes_the_limit() {
        let b = MemoryBudget::new(1000);
        let holds: Vec<Hold> = (0..8).map(|_| b.hold()).collect();
        std::thread::scope(|s| {
            for h in &holds {
                s.spawn(|| {
                    for _ in 0..1000 {
                        let _ = h.grow(7, "x");
                        assert!(b.used() <= 1000);
                    }
                });
            }
        });
        assert!(b.used() <= 1000 && b.used() > 1000 - 7);
        drop(holds);
        assert_eq!(b.used(), 0);
    }
}
