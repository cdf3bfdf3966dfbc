//! The limits every request is held to, whichever front end it arrived on.

use std::time::Duration;

/// Limits applied to every request.
#[derive(Clone, Debug)]
pub struct Limits {
    /// Largest request body accepted (HTTP: 413 beyond; gRPC: the largest message).
    pub max_body_bytes: usize,
    /// Longest a request may wait for the model (queue plus compute) before it times out; a
    /// client's own timeout can only shorten it.
    pub request_timeout: Duration,
    pub text: TextLimits,
    /// Most images one request may hold; requests beyond a model's `max_batch_size` are split
    /// across forward passes, up to this.
    pub max_request_images: usize,
    /// Memory all requests' decoded bodies, JSON trees, tensors and pictures may take at once.
    pub memory_budget_bytes: usize,
    /// Most requests handled at once (probes and metrics aside); more are refused at once.
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
    /// Cut texts longer than the model's limit instead of refusing them.
    pub auto_truncate: bool,
}

impl Default for TextLimits {
    fn default() -> Self {
        Self { max_inputs: 2048, auto_truncate: false }
    }
}
