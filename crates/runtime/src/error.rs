//! What can go wrong with a request, classified once for every front end.
//!
//! Messages name the field, the limit and the value given and never carry internals (paths,
//! panic payloads); server-side failures get an id that is logged with the details. The front
//! ends map each variant to their own codes in one place (the server crate's `error.rs`: HTTP
//! statuses and gRPC codes), so a limit means the same thing over every protocol.

use aiserve_core::{BackendError, InputError};
use thiserror::Error;

#[derive(Debug, Error)]
pub enum Error {
    #[error(transparent)]
    Input(#[from] InputError),
    #[error("request body must be at most {limit} bytes")]
    PayloadTooLarge { limit: usize },
    #[error("{0}")]
    UnsupportedMediaType(String),
    #[error("model `{0}` is not served here")]
    ModelNotFound(String),
    #[error("version {version} of model `{model}` is not available{hint}")]
    VersionNotFound { model: String, version: String, hint: String },
    #[error("{0}")]
    NotFound(String),
    #[error("model `{model}` is {is}; this endpoint takes {wants}")]
    WrongModelKind { model: String, is: String, wants: String },
    #[error("model `{model}` has no version ready to serve{detail}")]
    NotReady { model: String, detail: String },
    #[error("model `{model}` version {version} has {queued} requests queued (the limit); retry shortly")]
    Overloaded { model: String, version: String, queued: usize },
    #[error("{0}")]
    Unauthorized(String),
    #[error("{0}")]
    Forbidden(String),
    #[error("{message}; retry in {retry_after_s} s")]
    RateLimited { message: String, retry_after_s: u64 },
    #[error("{what} needs {needed} bytes; this server decodes at most {limit} bytes per request (--memory-budget-mb)")]
    TooMuchMemory { what: String, needed: usize, limit: usize },
    #[error("{what} needs {needed} bytes and the server's decode memory ({limit} bytes, --memory-budget-mb) is in use by other requests; retry shortly")]
    MemoryBusy { what: String, needed: usize, limit: usize },
    #[error("the server is handling {limit} requests (--max-concurrent-requests); retry shortly")]
    Busy { limit: usize },
    #[error("the request timed out before the model answered")]
    Timeout,
    #[error("internal error {id}; the server log has the details")]
    Internal { id: String },
}

impl Error {
    pub fn invalid(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self::Input(InputError::invalid(field, message))
    }

    /// Logs the backend failure with a fresh id and returns the client-facing error.
    pub fn backend(model: &str, version: &str, err: &BackendError) -> Self {
        let id = error_id();
        tracing::error!(error_id = %id, model, version, error = %err, "model call failed");
        Self::Internal { id }
    }

    /// Logs a server-side failure outside a model call (`cause` says what broke) with a fresh
    /// id, and returns the client-facing error carrying that id.
    pub fn internal(cause: &str) -> Self {
        let id = error_id();
        tracing::error!(error_id = %id, cause, "internal error");
        Self::Internal { id }
    }

    /// Whether retrying the same request later may succeed (the front ends say so: HTTP's
    /// `Retry-After`, gRPC's UNAVAILABLE / RESOURCE_EXHAUSTED).
    pub fn is_retryable(&self) -> bool {
        matches!(self, Self::Overloaded { .. } | Self::NotReady { .. } | Self::MemoryBusy { .. } | Self::Busy { .. })
    }
}

/// How much of a client's JSON value an error message repeats.
const SHOWN_BYTES: usize = 64;

/// A client's JSON value as an error message quotes it: at most its first [`SHOWN_BYTES`] bytes
/// (then `…`), so a wrong 8 MB value costs an 8 MB reply or log line to nobody.
pub fn shown(v: impl std::borrow::Borrow<serde_json::Value>) -> String {
    struct Capped(Vec<u8>);
    impl std::io::Write for Capped {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            let room = SHOWN_BYTES - self.0.len();
            if room == 0 {
                return Err(std::io::ErrorKind::WriteZero.into());
            }
            let n = b.len().min(room);
            self.0.extend_from_slice(&b[..n]);
            Ok(n)
        }

        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let mut out = Capped(Vec::with_capacity(SHOWN_BYTES));
    let whole = serde_json::to_writer(&mut out, v.borrow()).is_ok();
    let mut text = String::from_utf8_lossy(&out.0).into_owned();
    if !whole {
        text.push('…');
    }
    text
}

fn error_id() -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(1);
    let t = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
    format!("E{t:x}-{}", NEXT.fetch_add(1, Ordering::Relaxed))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_are_shown_short() {
        assert_eq!(shown(serde_json::json!([1, 2])), "[1,2]");
        let long = shown(serde_json::json!(vec![0; 100_000]));
        assert!(long.len() <= SHOWN_BYTES + 3 && long.ends_with('…'), "{long}");
    }
}
