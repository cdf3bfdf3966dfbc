//! Prometheus metrics (`GET /metrics`, `metrics` scope), all prefixed `aiserve_`, durations in
//! seconds, counters ending in `_total`.
//!
//! Request metrics are recorded by one middleware: the protocol comes from the route, the model
//! and version from a [`Served`] extension the handler puts on its response once it knows which
//! version answered. Queue time, queue depth and batch sizes are recorded by each model's queue;
//! load times by the version manager; model states are collected from the registry at each
//! scrape (a fresh family per scrape, so concurrent scrapes never see each other's half-built
//! series). A version's own series are removed when it is unloaded ([`forget_version`]), so a
//! removed version leaves no stale series; `requests_total` keeps its history, as counters do.
//!
//! Batch metrics, one meaning each: `batch_size` counts the requests (generation: sequences)
//! merged into one forward pass; `batch_images` the images in it and `batch_tokens` the tokens
//! (embeddings: tokens of the texts; generation: decoded tokens plus prompt-chunk tokens).

use std::sync::LazyLock;
use std::time::Instant;

use axum::extract::{Request, State};
use axum::http::{header, HeaderValue};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use prometheus::{
    exponential_buckets, Encoder, HistogramOpts, HistogramVec, IntCounterVec, IntGaugeVec, Opts, Registry, TextEncoder,
};

use crate::state::AppState;

/// Which model version produced a response (set by handlers, read by the middleware).
#[derive(Clone, Debug)]
pub struct Served {
    pub model: String,
    pub version: String,
}

impl Served {
    pub fn of(s: &crate::servable::Servable) -> Self {
        Self { model: s.model.to_string(), version: s.version.to_string() }
    }
}

/// Puts `served` on a response.
pub fn tag(mut resp: Response, served: Served) -> Response {
    resp.extensions_mut().insert(served);
    resp
}

pub struct Metrics {
    registry: Registry,
    pub requests: IntCounterVec,
    pub request_seconds: HistogramVec,
    pub queue_seconds: HistogramVec,
    pub batch_size: HistogramVec,
    pub batch_images: HistogramVec,
    pub batch_tokens: HistogramVec,
    pub queue_depth: IntGaugeVec,
    pub tokens: IntCounterVec,
    pub load_seconds: prometheus::GaugeVec,
    pub inflight: prometheus::IntGauge,
    pub first_token_seconds: HistogramVec,
    pub token_seconds: HistogramVec,
}

pub static METRICS: LazyLock<Metrics> = LazyLock::new(Metrics::new);

impl Metrics {
    fn new() -> Self {
        let latency = exponential_buckets(0.0005, 2.0, 16).expect("valid buckets"); // 0.5 ms .. 16 s
        let registry = Registry::new_custom(Some("aiserve".into()), None).expect("valid prefix");
        let m = Self {
            requests: IntCounterVec::new(
                Opts::new("requests_total", "HTTP requests by model, version, protocol and status code"),
                &["model", "version", "protocol", "status"],
            )
            .expect("valid metric"),
            request_seconds: HistogramVec::new(
                HistogramOpts::new("request_duration_seconds", "Time from request to response head")
                    .buckets(latency.clone()),
                &["model", "protocol"],
            )
            .expect("valid metric"),
            queue_seconds: HistogramVec::new(
                HistogramOpts::new("queue_duration_seconds", "Time a request waited for its model's forward pass")
                    .buckets(latency),
                &["model", "version"],
            )
            .expect("valid metric"),
            batch_size: HistogramVec::new(
                HistogramOpts::new("batch_size", "Requests (generation: sequences) merged into one forward pass")
                    .buckets(exponential_buckets(1.0, 2.0, 12).expect("valid buckets")),
                &["model", "version"],
            )
            .expect("valid metric"),
            batch_images: HistogramVec::new(
                HistogramOpts::new("batch_images", "Images in one forward pass of an image model")
                    .buckets(exponential_buckets(1.0, 2.0, 12).expect("valid buckets")),
                &["model", "version"],
            )
            .expect("valid metric"),
            batch_tokens: HistogramVec::new(
                HistogramOpts::new("batch_tokens", "Tokens in one forward pass of a text model")
                    .buckets(exponential_buckets(1.0, 2.0, 16).expect("valid buckets")),
                &["model", "version"],
            )
            .expect("valid metric"),
            queue_depth: IntGaugeVec::new(
                Opts::new("queue_depth", "Requests waiting for a forward pass"),
                &["model", "version"],
            )
            .expect("valid metric"),
            tokens: IntCounterVec::new(
                Opts::new("tokens_total", "Tokens processed: prompt (input) and generated (output)"),
                &["model", "kind"],
            )
            .expect("valid metric"),
            load_seconds: prometheus::GaugeVec::new(
                Opts::new("model_load_duration_seconds", "How long the version took to load and warm up"),
                &["model", "version"],
            )
            .expect("valid metric"),
            inflight: prometheus::IntGauge::new("http_requests_in_flight", "HTTP requests being handled")
                .expect("valid metric"),
            first_token_seconds: HistogramVec::new(
                HistogramOpts::new(
                    "time_to_first_token_seconds",
                    "Generation: from a sequence's arrival at the engine to its first token",
                )
                .buckets(exponential_buckets(0.005, 2.0, 14).expect("valid buckets")),
                &["model", "version"],
            )
            .expect("valid metric"),
            token_seconds: HistogramVec::new(
                HistogramOpts::new("time_per_output_token_seconds", "Generation: time between a sequence's tokens")
                    .buckets(exponential_buckets(0.001, 2.0, 14).expect("valid buckets")),
                &["model", "version"],
            )
            .expect("valid metric"),
            registry,
        };
        for c in [
            Box::new(m.requests.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(m.request_seconds.clone()),
            Box::new(m.queue_seconds.clone()),
            Box::new(m.batch_size.clone()),
            Box::new(m.batch_images.clone()),
            Box::new(m.batch_tokens.clone()),
            Box::new(m.queue_depth.clone()),
            Box::new(m.tokens.clone()),
            Box::new(m.load_seconds.clone()),
            Box::new(m.inflight.clone()),
            Box::new(m.first_token_seconds.clone()),
            Box::new(m.token_seconds.clone()),
        ] {
            m.registry.register(c).expect("metric names are unique");
        }
        m
    }
}

/// The protocol a route belongs to (the `protocol` label).
fn protocol(path: &str) -> &'static str {
    if path == "/classify" {
        "classify"
    } else if path.starts_with("/v2/repository") {
        "repository"
    } else if path.starts_with("/v2") {
        "kserve"
    } else if crate::protocols::openai::is_openai_path(path) {
        "openai"
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
    let (model, version) = match resp.extensions().get::<Served>() {
        Some(s) => (s.model.as_str(), s.version.as_str()),
        None => ("", ""),
    };
    METRICS.requests.with_label_values(&[model, version, proto, resp.status().as_str()]).inc();
    METRICS.request_seconds.with_label_values(&[model, proto]).observe(started.elapsed().as_secs_f64());
    resp
}

/// Drops the series of a version that has been unloaded.
pub fn forget_version(model: &str, version: &str) {
    let m = &*METRICS;
    let labels = [model, version];
    for vec in
        [&m.queue_seconds, &m.batch_size, &m.batch_images, &m.batch_tokens, &m.first_token_seconds, &m.token_seconds]
    {
        let _ = vec.remove_label_values(&labels);
    }
    let _ = m.queue_depth.remove_label_values(&labels);
    let _ = m.load_seconds.remove_label_values(&labels);
}

/// `aiserve_model_state{model,version,state}`: 1 for the state each known version is in, read
/// from the registry when collected.
struct ModelStates<'a>(&'a crate::registry::Registry);

impl prometheus::core::Collector for ModelStates<'_> {
    fn desc(&self) -> Vec<&prometheus::core::Desc> {
        Vec::new()
    }

    fn collect(&self) -> Vec<prometheus::proto::MetricFamily> {
        let gauge = IntGaugeVec::new(
            Opts::new("aiserve_model_state", "1 for the state each known version is in"),
            &["model", "version", "state"],
        )
        .expect("valid metric");
        for st in self.0.statuses() {
            for v in st.versions {
                let version = v.version.to_string();
                gauge.with_label_values(&[st.name.as_str(), &version, v.state.tf_serving_name()]).set(1);
            }
        }
        prometheus::core::Collector::collect(&gauge)
    }
}

/// `GET /metrics`: the Prometheus text format.
pub async fn render(State(state): State<AppState>) -> Response {
    let mut families = METRICS.registry.gather();
    families.extend(prometheus::core::Collector::collect(&ModelStates(&state.registry)));
    families.sort_by(|a, b| a.name().cmp(b.name()));
    let mut buf = Vec::new();
    if let Err(e) = TextEncoder::new().encode(&families, &mut buf) {
        tracing::error!(error = %e, "encoding metrics failed");
    }
    let mut resp = buf.into_response();
    resp.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain; version=0.0.4"));
    resp
}
