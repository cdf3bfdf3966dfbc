//! The state HTTP handlers share, and reading bodies under the limits.

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::{Body, Bytes};

use aiserve_runtime::budget::Hold;
use aiserve_runtime::{Error, Limits, Registry, Runtime};

/// Header a client may send to bound how long it waits for the model, in milliseconds.
pub const TIMEOUT_HEADER: &str = "x-request-timeout-ms";

/// What every HTTP handler shares: the transport-free [`Runtime`] (registry, manager, limits,
/// memory budget, decode pool; reachable through `Deref`) and the front end's own parts.
#[derive(Clone)]
pub struct AppState {
    pub runtime: Arc<Runtime>,
    /// Model used by `/classify` when the request names none.
    pub default_model: Arc<str>,
    /// API keys (empty: open).
    pub auth: Arc<crate::auth::Auth>,
    /// The cap on requests handled at once (`limits.max_concurrent_requests`).
    pub admission: crate::admission::Admission,
    /// Serve the playground page at `/`.
    pub playground: bool,
}

impl std::ops::Deref for AppState {
    type Target = Runtime;

    fn deref(&self) -> &Runtime {
        &self.runtime
    }
}

/// A request body as read, with the request's memory hold (which already counts the body).
pub struct Payload {
    pub bytes: Bytes,
    pub hold: Hold,
}

impl AppState {
    /// When this request must be answered: the server's limit, shortened by the client's
    /// `x-request-timeout-ms` header or a protocol's own timeout field (`requested`).
    pub fn deadline(&self, headers: &axum::http::HeaderMap, requested: Option<Duration>) -> Result<Instant, Error> {
        let mut header = None;
        if let Some(v) = headers.get(TIMEOUT_HEADER) {
            let ms: u64 = v.to_str().ok().and_then(|s| s.trim().parse().ok()).ok_or_else(|| {
                Error::invalid(
                    TIMEOUT_HEADER,
                    format!("`{TIMEOUT_HEADER}` must be a whole number of milliseconds, got {v:?}"),
                )
            })?;
            header = Some(Duration::from_millis(ms));
        }
        Ok(self.runtime.deadline(header.into_iter().chain(requested)))
    }

    /// State for tests and embedders: these limits, an open server, no manager.
    pub fn new(registry: Arc<Registry>, limits: Limits) -> Self {
        Self::from_runtime(Runtime::new(registry, None, limits))
    }

    /// An open server over `runtime`, `/classify` defaulting to `digits`.
    pub fn from_runtime(runtime: Runtime) -> Self {
        Self {
            admission: crate::admission::Admission::new(runtime.limits.max_concurrent_requests),
            runtime: Arc::new(runtime),
            default_model: "digits".into(),
            auth: Arc::new(crate::auth::Auth::open()),
            playground: true,
        }
    }

    /// Reads the whole body, refusing more than `max_body_bytes` with 413; the body's bytes are
    /// counted against the memory budget (503 when it is in use).
    pub async fn read_body(&self, body: Body) -> Result<Payload, Error> {
        let limit = self.limits.max_body_bytes;
        let bytes = axum::body::to_bytes(body, limit).await.map_err(|e| {
            let too_large = std::error::Error::source(&e).is_some_and(|s| s.is::<http_body_util::LengthLimitError>());
            if too_large {
                Error::PayloadTooLarge { limit }
            } else {
                Error::invalid("body", format!("could not read the request body: {e}"))
            }
        })?;
        let hold = self.budget.hold();
        hold.grow(bytes.len(), "the request body")?;
        Ok(Payload { bytes, hold })
    }
}

/// Parses JSON, first counting the tree it may build against `hold` (see
/// [`crate::decode::json_cost`]); syntax errors are reported with their position.
pub fn parse_json<T: serde::de::DeserializeOwned>(bytes: &[u8], hold: &Hold) -> Result<T, Error> {
    hold.grow(crate::decode::json_cost::tree_bytes(bytes), "parsing the JSON body")?;
    serde_json::from_slice(bytes).map_err(|e| Error::invalid("body", format!("malformed JSON request: {e}")))
}
