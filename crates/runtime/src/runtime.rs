//! [`Runtime`]: what every front end shares to serve a request, and nothing of any transport.
//!
//! The registry of loaded versions, the version manager (absent in tests that drive none), the
//! limits, the memory budget requests' decoded data is counted against, and the bounded pool
//! CPU-heavy decodes run on. Front ends hold one `Arc<Runtime>` and clone it per request.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::Semaphore;

use crate::budget::MemoryBudget;
use crate::error::Error;
use crate::limits::Limits;
use crate::manager::Manager;
use crate::registry::Registry;

pub struct Runtime {
    pub registry: Arc<Registry>,
    /// The version manager, for the repository APIs (absent in tests that drive no manager).
    pub manager: Option<Arc<Manager>>,
    pub limits: Limits,
    /// What requests' decoded data may take together (`limits.memory_budget_bytes`).
    pub budget: Arc<MemoryBudget>,
    /// Bounds CPU-heavy decodes (pictures, long texts) to `limits.decode_threads` at once, so a
    /// burst of them queues here instead of growing the blocking pool to hundreds of threads.
    pub decoders: Arc<Semaphore>,
}

impl Runtime {
    pub fn new(registry: Arc<Registry>, manager: Option<Arc<Manager>>, limits: Limits) -> Self {
        Self {
            registry,
            manager,
            budget: MemoryBudget::new(limits.memory_budget_bytes),
            decoders: Arc::new(Semaphore::new(limits.decode_threads.max(1))),
            limits,
        }
    }

    /// When a request must be answered: the server's limit, shortened by whatever the client
    /// asked for (a header, a protocol's timeout field, gRPC's deadline), the shortest winning.
    pub fn deadline(&self, requested: impl IntoIterator<Item = Duration>) -> Instant {
        let timeout = requested.into_iter().fold(self.limits.request_timeout, Duration::min);
        Instant::now() + timeout
    }

    /// Runs a CPU-heavy decode on the blocking pool, at most `decode_threads` at once.
    pub async fn decode<T: Send + 'static>(
        &self,
        what: &str,
        f: impl FnOnce() -> Result<T, Error> + Send + 'static,
    ) -> Result<T, Error> {
        crate::blocking::run(&self.decoders, what, f).await
    }
}
