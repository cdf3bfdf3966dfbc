//! Shared request state and the limits every handler enforces.

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::{Body, Bytes};
use tokio::sync::Semaphore;

use crate::budget::{Hold, MemoryBudget};
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
    /// Most images one request may hold; requests beyond a model's `max_batch_size` are split
    /// across forward passes, up to this.
    pub max_request_images: usize,
    /// Memory all requests' decoded bodies, JSON trees, tensors and pictures may take at once.
    pub memory_budget_bytes: usize,
    /// Most requests handled at once (probes and metrics aside); more get 503.
    pub max_concurrent_requests: usize,
    /// Most picture decodes and large tokenizations running at once (on the blocking pool).
    pub decode_threads: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_body_bytes: 8 << 20,
            request_timeout: Duration::from_secs(30),
            text: TextLimits::default(),
            max_request_images: 1024,
            memory_budget_bytes: 2 << 30,
            max_concurrent_requests: 512,
            decode_threads: std::thread::available_parallelism().map_or(2, |n| n.get()),
        }
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
    /// What requests' decoded data may take together (`limits.memory_budget_bytes`).
    pub budget: Arc<MemoryBudget>,
    /// The cap on requests handled at once (`limits.max_concurrent_requests`).
    pub admission: crate::admission::Admission,
    /// Bounds CPU-heavy decodes (pictures, long texts) to `limits.decode_threads` at once, so a
    /// burst of them queues here instead of growing the blocking pool to hundreds of threads.
    pub decoders: Arc<Semaphore>,
}

/// A request body as read, with the request's memory hold (which already counts the body).
pub struct Payload {
    pub bytes: Bytes,
    pub hold: Hold,
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

    /// State for tests and embedders: these limits, an open server, no manager.
    pub fn new(registry: Arc<Registry>, limits: Limits) -> Self {
        Self {
            registry,
            budget: MemoryBudget::new(limits.memory_budget_bytes),
            decoders: Arc::new(Semaphore::new(limits.decode_threads.max(1))),
            admission: crate::admission::Admission::new(limits.max_concurrent_requests),
            limits,
            default_model: "digits".into(),
            auth: Arc::new(crate::auth::Auth::open()),
            manager: None,
        }
    }

    /// Reads the whole body, refusing more than `max_body_bytes` with 413; the body's bytes are
    /// counted against the memory budget (503 when it is in use).
    pub async fn read_body(&self, body: Body) -> Result<Payload, ApiError> {
        let limit = self.limits.max_body_bytes;
        let bytes = axum::body::to_bytes(body, limit).await.map_err(|e| {
            let too_large = std::error::Error::source(&e).is_some_and(|s| s.is::<http_body_util::LengthLimitError>());
            if too_large {
                ApiError::PayloadTooLarge { limit }
            } else {
                ApiError::invalid("body", format!("could not read the request body: {e}"))
            }
        })?;
        let hold = self.budget.hold();
        hold.grow(bytes.len(), "the request body")?;
        Ok(Payload { bytes, hold })
    }

    /// Runs a CPU-heavy decode on the blocking pool, at most `decode_threads` at once.
    pub async fn decode<T: Send + 'static>(
        &self,
        what: &str,
        f: impl FnOnce() -> Result<T, ApiError> + Send + 'static,
    ) -> Result<T, ApiError> {
        crate::blocking::run(&self.decoders, what, f).await
    }
}

/// Parses JSON, first counting the tree it may build against `hold` (see
/// [`crate::decode::json_cost`]); syntax errors are reported with their position.
pub fn parse_json<T: serde::de::DeserializeOwned>(bytes: &[u8], hold: &Hold) -> Result<T, ApiError> {
    hold.grow(crate::decode::json_cost::tree_bytes(bytes), "parsing the JSON body")?;
    serde_json::from_slice(bytes).map_err(|e| ApiError::invalid("body", format!("malformed JSON request: {e}")))
}
