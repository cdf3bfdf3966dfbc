//! Prometheus metrics, all prefixed `aiserve_`, durations in seconds, counters ending in
//! `_total`, shared by every front end.
//!
//! Front ends record requests (`requests_total`, `request_duration_seconds`, with a `protocol`
//! label); each model's queue records queue time, queue depth and batch sizes; the version
//! manager records load times; model states are collected from the registry at each scrape (a
//! fresh family per scrape, so concurrent scrapes never see each other's half-built series). A
//! version's own series are removed when it is unloaded ([`forget_version`]), so a removed
//! version leaves no stale series; `requests_total` keeps its history, as counters do.
//!
//! Batch metrics, one meaning each: `batch_size` counts the requests (generation: sequences)
//! merged into one forward pass; `batch_images` the images in it, `batch_rows` the rows (dimension
//! 0) in one pass of a graph (ONNX) model, and `batch_tokens` the tokens
//! (embeddings: tokens of the texts; generation: decoded tokens plus prompt-chunk tokens).

use std::sync::LazyLock;

use prometheus::{
    exponential_buckets, Encoder, HistogramOpts, HistogramVec, IntCounterVec, IntGaugeVec, Opts, Registry, TextEncoder,
};

pub struct Metrics {
    registry: Registry,
    pub requests: IntCounterVec,
    pub request_seconds: HistogramVec,
    pub queue_seconds: HistogramVec,
    pub batch_size: HistogramVec,
    pub batch_images: HistogramVec,
    pub batch_rows: HistogramVec,
    pub batch_tokens: HistogramVec,
    pub queue_depth: IntGaugeVec,
    pub tokens: IntCounterVec,
    pub load_seconds: prometheus::GaugeVec,
    pub inflight: prometheus::IntGauge,
    pub first_token_seconds: HistogramVec,
    pub token_seconds: HistogramVec,
    pub pipeline_step_seconds: HistogramVec,
    pub repository_syncs: IntCounterVec,
}

pub static METRICS: LazyLock<Metrics> = LazyLock::new(Metrics::new);

impl Metrics {
    fn new() -> Self {
        let latency = exponential_buckets(0.0005, 2.0, 16).expect("valid buckets"); // 0.5 ms .. 16 s
        let registry = Registry::new_custom(Some("aiserve".into()), None).expect("valid prefix");
        let m = Self {
            requests: IntCounterVec::new(
                Opts::new(
                    "requests_total",
                    "Requests by model, version, protocol and status (HTTP status code, or gRPC code name)",
                ),
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
            batch_rows: HistogramVec::new(
                HistogramOpts::new("batch_rows", "Rows (dimension 0) in one forward pass of a graph (ONNX) model")
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
            pipeline_step_seconds: HistogramVec::new(
                HistogramOpts::new(
                    "pipeline_step_duration_seconds",
                    "Pipelines: time a step that completed took for one request (model steps: queue and passes)",
                )
                .buckets(exponential_buckets(0.0001, 2.0, 18).expect("valid buckets")),
                &["model", "version", "step"],
            )
            .expect("valid metric"),
            repository_syncs: IntCounterVec::new(
                Opts::new(
                    "repository_syncs_total",
                    "Object-storage repositories: mirror syncs by result (ok, failed: the listing failed and the mirror was kept)",
                ),
                &["result"],
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
            Box::new(m.batch_rows.clone()),
            Box::new(m.batch_tokens.clone()),
            Box::new(m.queue_depth.clone()),
            Box::new(m.tokens.clone()),
            Box::new(m.load_seconds.clone()),
            Box::new(m.inflight.clone()),
            Box::new(m.first_token_seconds.clone()),
            Box::new(m.token_seconds.clone()),
            Box::new(m.pipeline_step_seconds.clone()),
            Box::new(m.repository_syncs.clone()),
        ] {
            m.registry.register(c).expect("metric names are unique");
        }
        m
    }
}

/// Drops the series of a version that has been unloaded.
pub fn forget_version(model: &str, version: &str) {
    let m = &*METRICS;
    let labels = [model, version];
    for vec in [
        &m.queue_seconds,
        &m.batch_size,
        &m.batch_images,
        &m.batch_rows,
        &m.batch_tokens,
        &m.first_token_seconds,
        &m.token_seconds,
    ] {
        let _ = vec.remove_label_values(&labels);
    }
    let _ = m.queue_depth.remove_label_values(&labels);
    let _ = m.load_seconds.remove_label_values(&labels);
}

/// Every series in the Prometheus text format, with `extra` families collected at this scrape
/// (the registry's model states).
pub fn render_text(extra: Vec<prometheus::proto::MetricFamily>) -> Vec<u8> {
    let mut families = METRICS.registry.gather();
    families.extend(extra);
    families.sort_by(|a, b| a.name().cmp(b.name()));
    let mut buf = Vec::new();
    if let Err(e) = TextEncoder::new().encode(&families, &mut buf) {
        tracing::error!(error = %e, "encoding metrics failed");
    }
    buf
}
