//! Shared request state and the limits every handler enforces.

use std::sync::Arc;

use axum::body::{Body, Bytes};

use crate::error::ApiError;
use crate::registry::Registry;

/// Limits applied to every request.
#[derive(Clone, Debug)]
pub struct Limits {
    /// Largest request body accepted (413 beyond).
    pub max_body_bytes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self { max_body_bytes: 8 << 20 }
    }
}

#[derive(Clone)]
pub struct AppState {
    pub registry: Arc<Registry>,
    pub limits: Limits,
    /// Model used by `/classify` when the request names none.
    pub default_model: Arc<str>,
}

impl AppState {
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
