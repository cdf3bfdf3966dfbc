//! The traits model code implements, so that the server never depends on candle.
//!
//! A loaded model version is an [`ImageClassifier`] owned by one model thread; the version
//! manager obtains it from a [`ModelLoader`] on a blocking thread.

use std::path::Path;

use crate::config::VersionConfig;
use crate::error::{BackendError, LoadError};
use crate::tensor::ImageBatch;

/// A loaded image classification model. Called from a single dedicated thread.
pub trait ImageClassifier: Send {
    /// Class probabilities, one row of `classes` values per image, in batch order.
    fn predict(&mut self, batch: &ImageBatch) -> Result<Vec<Vec<f32>>, BackendError>;
}

/// Turns a version directory into a loaded model. Must be callable from any thread.
pub trait ModelLoader: Send + Sync + 'static {
    /// Reads and validates `<dir>/config.toml` (cheap; used for metadata and errors).
    fn read_config(&self, dir: &Path) -> Result<VersionConfig, LoadError>;
    /// Loads the weights described by `config` from `dir`.
    fn load(&self, dir: &Path, config: &VersionConfig) -> Result<Box<dyn ImageClassifier>, LoadError>;
}

/// Reads a version config file with the size cap and strict parsing. Shared by loaders.
pub fn read_version_config(dir: &Path) -> Result<VersionConfig, LoadError> {
    use crate::config::{MAX_CONFIG_BYTES, VERSION_CONFIG_FILE};
    let path = dir.join(VERSION_CONFIG_FILE);
    let meta = std::fs::metadata(&path).map_err(|e| LoadError::Config(format!("{VERSION_CONFIG_FILE}: {e}")))?;
    if meta.len() > MAX_CONFIG_BYTES {
        return Err(LoadError::Config(format!(
            "{VERSION_CONFIG_FILE} must be at most {MAX_CONFIG_BYTES} bytes, got {}",
            meta.len()
        )));
    }
    let text = std::fs::read_to_string(&path).map_err(|e| LoadError::Config(format!("{VERSION_CONFIG_FILE}: {e}")))?;
    VersionConfig::parse(&text).map_err(|e| LoadError::Config(format!("{VERSION_CONFIG_FILE}: {e}")))
}
