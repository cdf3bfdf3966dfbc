//! aiserve-store: model repositories on object storage. `--repo s3://bucket/prefix` (or `gs://`,
//! `az://`, `http(s)://` for WebDAV) is mirrored into a local cache directory that the version
//! manager scans like any repository:
//!
//! - every round lists the prefix once and groups the objects as `<model>/<version>/<file...>`
//!   ([`layout`]); a version whose names, sizes and ETags changed is downloaded whole into a
//!   staging directory and renamed into place, so the manager sees it complete or not at all;
//! - versions and models that left the bucket are removed from the mirror, so the manager
//!   retires them as it would deleted directories;
//! - a listing that fails leaves the mirror as it was: a network fault never retires a version;
//! - credentials come from each cloud's standard environment variables, never from the URL,
//!   and are never logged ([`location`]).

pub mod layout;
pub mod location;
mod manifest;
pub mod mirror;

pub use location::{cache_dir_name, is_remote};
pub use mirror::Mirror;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("repository URL: {0}")]
    Url(String),
    #[error("{0}: cannot open the object store: {1}")]
    Open(String, String),
    #[error("{0}: cannot list the repository: {1}")]
    List(String, String),
    #[error("{0}: cannot download: {1}")]
    Get(String, String),
    #[error("{0}: {1}")]
    Io(String, std::io::Error),
    #[error("{0}")]
    Cache(String),
}

impl StoreError {
    fn io(path: &std::path::Path, e: std::io::Error) -> Self {
        Self::Io(path.display().to_string(), e)
    }
}

#[cfg(test)]
mod mirror_tests;
