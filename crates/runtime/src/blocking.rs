//! CPU-heavy request work (picture decodes, tokenizing long texts, rendering chat templates) on
//! tokio's blocking pool, at most as many at once as a semaphore allows: a burst of such
//! requests queues for a slot instead of growing the blocking pool to hundreds of threads.

use tokio::sync::Semaphore;

use crate::error::Error;

/// Runs `f` on the blocking pool once `slots` has a permit; `what` names it if it panics.
pub async fn run<T: Send + 'static>(
    slots: &Semaphore,
    what: &str,
    f: impl FnOnce() -> Result<T, Error> + Send + 'static,
) -> Result<T, Error> {
    let _slot = slots.acquire().await.map_err(|_| Error::internal("the decoder pool is closed"))?;
    tokio::task::spawn_blocking(f).await.map_err(|_| Error::internal(&format!("{what} panicked")))?
}
