//! Error types of the core layer, one enum per concern.
//!
//! `InputError` is a client's mistake and always names the field, the limit and the value given;
//! `LoadError` says why a model version could not be loaded; `BackendError` is a failure inside a
//! model call. The server maps these to protocol status codes in one place.

use thiserror::Error;

/// A request that fails validation. Displayed text is safe to send to the client.
#[derive(Debug, Clone, PartialEq, Error)]
pub enum InputError {
    /// A field is malformed or out of range.
    #[error("{message}")]
    Invalid { field: String, message: String },
    /// A field exceeds a configured limit.
    #[error("`{field}` must be at most {limit}, got {given}")]
    TooLarge { field: String, limit: usize, given: usize },
}

impl InputError {
    pub fn invalid(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self::Invalid { field: field.into(), message: message.into() }
    }

    pub fn too_large(field: impl Into<String>, limit: usize, given: usize) -> Self {
        Self::TooLarge { field: field.into(), limit, given }
    }

    /// The request field this error is about.
    pub fn field(&self) -> &str {
        match self {
            Self::Invalid { field, .. } | Self::TooLarge { field, .. } => field,
        }
    }
}

/// Why a model version failed to load. Shown in the model's status.
#[derive(Debug, Error)]
pub enum LoadError {
    #[error("config: {0}")]
    Config(String),
    #[error("weights: {0}")]
    Weights(String),
    #[error("unsupported model: {0}")]
    Unsupported(String),
    #[error("io: {0}")]
    Io(#[from] std::io::Error),
}

/// A failure inside a model call (not the client's fault).
#[derive(Debug, Clone, Error)]
#[error("{0}")]
pub struct BackendError(pub String);
