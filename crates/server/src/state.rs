//! Shared request state and the limits every handler enforces.

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::{Body, Bytes};

use crate::error::ApiError;
use crate::registry::Registry;

/// Header a client may send to bound how long it waits for the model, in milliseconds.
pub const TIMEOUT_HEADER: &str = "x-request-timeout-ms";

/// Limits applied to every request.
#[derive(Clone, Debug)]
pub struct Limits {
    /// Largest request body accepted (413 beyond).
    pub max_body_bytes: usize,
    /// Longest a request may wait for the model (queue plus compute) before a 504; a client's
    /// own timeout can only shorten it.
    pub request_timeout: Duration,
    pub text: TextLimits,
}

impl Default for Limits {
    fn default() -> Self {
        Self { max_body_bytes: 8 << 20, request_timeout: Duration::from_secs(30), text: TextLimits::default() }
    }
}

/// Limits on text inputs (embeddings).
#[derive(Clone, Debug)]
pub struct TextLimits {
    /// Most texts in one request (OpenAI's limit is 2048).
    pub max_inputs: usize,
    /// Cut texts longer than the model's limit instead of answering 400.
    pub auto_truncate: bool,
}

impl Default for TextLimits {
    fn default() -> Self {
        Self { max_inputs: 2048, auto_truncate: false }
    }
}

#[derive(Clone)]
pub struct AppState {
    pub registry: Arc<Registry>,
    pub limits: Limits,
    /// Model used by `/classify` when the request names none.
    pub default_model: Arc<str>,
    /// API keys (empty: open).
    pub auth: Arc<crate::auth::Auth>,
    /// The version manager, for the repository API (absent in tests that drive no manager).
    pub manager: Option<Arc<crate::manager::Manager>>,
}

impl AppState {
    /// When this request must be answered: the server's limit, shortened by the client's
    /// `x-request-timeout-ms` header or a protocol's own timeout field (`requested`).
    pub fn deadline(&self, headers: &axum::http::HeaderMap, requested: Option<Duration>) -> Result<Instant, ApiError> {
        let mut timeout = self.limits.request_timeout;
        if let Some(v) = headers.get(TIMEOUT_HEADER) {
            let ms: u64 = v.to_str().ok().and_then(|s| s.trim().parse().ok()).ok_or_else(|| {
                ApiError::invalid(
                    TIMEOUT_HEADER,
                    format!("`{TIMEOUT_HEADER}` must be a whole number of milliseconds, got {v:?}"),
                )
            })?;
            timeout = timeout.min(Duration::from_millis(ms));
        }
        if let Some(r) = requested {
            timeout = timeout.min(r);
        }
        Ok(Instant::now() + timeout)
    }

    /// Reads the whole body, refusing more than `max_body_bytes` with 413.
    pub async fn read_body(&self, body: Body) -> Result<Bytes, ApiError> {
        let limit = self.limits.max_body_bytes;
        axum::body::to_bytes(body, limit).await.map_err(|e| {
            let too_large = std::error::Error::source(&e).is_some_and(|s| s.is::<http_body_util::LengthLimitError>());
            if too_large {
                ApiError::PayloadTooLarge { limit }
            } else {
                ApiError::invalid("body", format!("could not read the request body: {e}"))
            }
        })
    }
}

/// Parses a JSON body, reporting syntax errors with their position.
pub fn parse_json<T: serde::de::DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    serde_json::from_slice(bytes).map_err(|e| ApiError::invalid("body", format!("malformed JSON request: {e}")))
}
