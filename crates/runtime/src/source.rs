//! A repository kept somewhere else (object storage), mirrored into the local directory that the
//! [`crate::manager::Manager`] scans. The manager syncs the mirror at the start of every round,
//! under the round's lock, so a scan never sees a version half downloaded.

use std::future::Future;
use std::pin::Pin;

/// What one sync changed in the mirror.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct SyncReport {
    /// Versions (and model-level files) downloaded, new or changed.
    pub downloaded: usize,
    /// Versions and models removed because they left the remote repository.
    pub removed: usize,
    /// Versions that could not be downloaded this round (kept as they were; tried again next round).
    pub failed: usize,
}

pub type SyncFuture<'a> = Pin<Box<dyn Future<Output = Result<SyncReport, String>> + Send + 'a>>;

pub trait RepoSource: Send + Sync {
    /// Where the repository is, for logs: never with credentials.
    fn location(&self) -> &str;
    /// Brings the local mirror up to date. An error (the listing failed: the store is
    /// unreachable, the credentials are refused) leaves the mirror exactly as it was, so a
    /// network fault never retires what is serving.
    fn sync(&self) -> SyncFuture<'_>;
}
