//! The one place where errors become HTTP statuses and bodies.
//!
//! Every protocol here (classify, KServe v2, TF Serving REST) uses `{"error": "<message>"}` as its
//! error body; messages name the field, the limit and the value given and never carry internals
//! (paths, panic payloads). Server-side failures get an id that is logged with the details.

use aiserve_core::{BackendError, InputError};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use thiserror::Error;

#[derive(Debug, Error)]
pub enum ApiError {
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

impl ApiError {
    pub fn status(&self) -> StatusCode {
        match self {
            Self::Input(InputError::TooLarge { .. }) | Self::Input(InputError::Invalid { .. }) => {
                StatusCode::BAD_REQUEST
            }
            Self::WrongModelKind { .. } => StatusCode::BAD_REQUEST,
            Self::PayloadTooLarge { .. } | Self::TooMuchMemory { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            Self::UnsupportedMediaType(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            Self::ModelNotFound(_) | Self::VersionNotFound { .. } | Self::NotFound(_) => StatusCode::NOT_FOUND,
            Self::NotReady { .. } | Self::Overloaded { .. } | Self::MemoryBusy { .. } | Self::Busy { .. } => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            Self::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            Self::Forbidden(_) => StatusCode::FORBIDDEN,
            Self::RateLimited { .. } => StatusCode::TOO_MANY_REQUESTS,
            Self::Timeout => StatusCode::GATEWAY_TIMEOUT,
            Self::Internal { .. } => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

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

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status();
        if status.is_client_error() {
            tracing::debug!(%status, error = %self, "client error");
        }
        let mut resp = (status, Json(serde_json::json!({ "error": self.to_string() }))).into_response();
        match self {
            Self::Overloaded { .. } | Self::NotReady { .. } | Self::MemoryBusy { .. } | Self::Busy { .. } => {
                resp.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
            }
            Self::RateLimited { retry_after_s, .. } => {
                resp.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(retry_after_s));
            }
            Self::Unauthorized(_) => {
                resp.headers_mut().insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
            }
            _ => {}
        }
        resp
    }
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

    #[test]
    fn statuses() {
        assert_eq!(ApiError::invalid("x", "bad").status(), StatusCode::BAD_REQUEST);
        assert_eq!(ApiError::Input(InputError::too_large("x", 1, 2)).status(), StatusCode::BAD_REQUEST);
        assert_eq!(ApiError::PayloadTooLarge { limit: 1 }.status(), StatusCode::PAYLOAD_TOO_LARGE);
        assert_eq!(ApiError::ModelNotFound("m".into()).status(), StatusCode::NOT_FOUND);
        let o = ApiError::Overloaded { model: "m".into(), version: "1".into(), queued: 3 }.into_response();
        assert_eq!(o.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(o.headers()[header::RETRY_AFTER], "1");
    }
}
