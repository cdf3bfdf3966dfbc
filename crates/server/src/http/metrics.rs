//! HTTP request metrics and `GET /metrics` (the `metrics` scope); the metric families
//! themselves live in `aiserve_runtime::metrics`.
//!
//! One middleware records every request: the protocol comes from the route, the model and
//! version from a [`Served`] extension the handler puts on its response once it knows which
//! version answered.

use std::time::Instant;

use aiserve_runtime::metrics::METRICS;
use axum::extract::{Request, State};
use axum::http::{header, HeaderValue};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use crate::http::state::AppState;

/// Which model version produced a response (set by handlers, read by the middleware).
#[derive(Clone)]
pub struct Served {
    pub model: String,
    pub version: String,
    /// The version's statistics, which count the request's outcome.
    pub stats: std::sync::Arc<aiserve_runtime::stats::VersionStats>,
}

impl Served {
    pub fn of(s: &aiserve_runtime::servable::Servable) -> Self {
        Self { model: s.model.to_string(), version: s.version.to_string(), stats: s.stats().clone() }
    }
}

/// Puts `served` on a response.
pub fn tag(mut resp: Response, served: Served) -> Response {
    resp.extensions_mut().insert(served);
    resp
}

/// The protocol a route belongs to (the `protocol` label).
fn protocol(path: &str) -> &'static str {
    if path == "/classify" {
        "classify"
    } else if path.starts_with("/v2/repository") {
        "repository"
    } else if path.starts_with("/v2") {
        "kserve"
    } else if crate::error::is_openai_path(path) {
        "openai"
    } else if crate::error::is_anthropic_path(path) {
        "anthropic"
    } else if path.starts_with("/v1/models/") {
        "tfserving"
    } else {
        "other"
    }
}

pub async fn middleware(req: Request, next: Next) -> Response {
    let proto = protocol(req.uri().path());
    let started = Instant::now();
    let resp = next.run(req).await;
    let served = resp.extensions().get::<Served>();
    let (model, version) = served.map_or(("", ""), |s| (s.model.as_str(), s.version.as_str()));
    let took = started.elapsed();
    METRICS.requests.with_label_values(&[model, version, proto, resp.status().as_str()]).inc();
    METRICS.request_seconds.with_label_values(&[model, proto]).observe(took.as_secs_f64());
    if let Some(s) = served {
        s.stats.request(resp.status().is_success(), took);
    }
    resp
}

/// `GET /metrics`: the Prometheus text format.
pub async fn render(State(state): State<AppState>) -> Response {
    let mut resp = aiserve_runtime::metrics::render_text(state.registry.state_metrics()).into_response();
    resp.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain; version=0.0.4"));
    resp
}
