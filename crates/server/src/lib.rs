//! aiserve-server: the network front ends, with no candle dependency: HTTP ([`http`], axum) and
//! gRPC ([`grpc`], tonic), two siblings over the transport-free `aiserve_runtime`.
//!
//! [`app`] and [`grpc::app`] build the routers from shared state (tests call them without a
//! socket); [`serve`] runs the version manager, the HTTP server and (when given a listener) the
//! gRPC server until a shutdown future resolves, then drains in-flight requests and streams on
//! both. Model code arrives as an `aiserve_core::ModelLoader`.

pub mod admission;
pub mod auth;
pub mod decode;
pub mod error;
pub mod grpc;
pub mod http;
pub mod kserve;
pub mod listen;
pub mod tfserving;

use std::future::Future;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use aiserve_core::ModelLoader;
use tokio::net::TcpListener;

pub use aiserve_runtime::{Limits, Registry, TextLimits};
pub use http::state::AppState;
pub use http::{app, cors_layer};

/// Everything `serve` needs besides the listener.
pub struct ServeOptions {
    pub repo: PathBuf,
    /// The remote repository `repo` mirrors (object storage), synced before every poll.
    pub source: Option<Arc<dyn aiserve_runtime::source::RepoSource>>,
    pub listen: listen::ListenOptions,
    /// Origins allowed to call from a browser (CORS); empty: no CORS headers at all.
    pub cors_origins: Vec<String>,
    /// Serve the playground page at `/`.
    pub playground: bool,
    pub auth: Arc<auth::Auth>,
    pub poll_interval: Duration,
    /// After the shutdown signal, how long requests are still served while readiness answers
    /// 503 (load balancers and Kubernetes endpoints stop sending), before the listeners close.
    pub drain_delay: Duration,
    pub limits: Limits,
    pub default_model: String,
    /// Engine limits of text generation models.
    pub generation: aiserve_runtime::generation::engine::EngineConfig,
    /// The gRPC listener (`None`: no gRPC), with its HTTP/2 settings; it shares `listen`'s
    /// connection limits and TLS.
    pub grpc: Option<(TcpListener, listen::Http2Options)>,
}

impl ServeOptions {
    /// Defaults for everything but the repository: open, loopback-safe limits, no CORS.
    pub fn new(repo: PathBuf) -> Self {
        Self {
            repo,
            source: None,
            listen: listen::ListenOptions::default(),
            cors_origins: Vec::new(),
            playground: true,
            auth: Arc::new(auth::Auth::open()),
            poll_interval: Duration::from_secs(2),
            drain_delay: Duration::ZERO,
            limits: Limits::default(),
            default_model: "digits".into(),
            generation: Default::default(),
            grpc: None,
        }
    }
}

/// Serves HTTP on `listener` from the first moment (liveness answers at once, readiness once the
/// first repository poll has loaded what the policies ask for) while polling the repository in
/// the background, until `shutdown` resolves; then readiness goes 503 while requests are still
/// served for `drain_delay`, the listeners close, and in-flight requests are finished before this
/// returns.
pub async fn serve(
    opts: ServeOptions,
    loader: Arc<dyn ModelLoader>,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let registry = Arc::new(Registry::new());
    let mut manager =
        aiserve_runtime::manager::Manager::new(opts.repo, loader, registry.clone()).with_generation(opts.generation);
    if let Some(source) = opts.source {
        manager = manager.with_source(source);
    }
    let manager = Arc::new(manager);
    let (stop_tx, mut stop_rx) = tokio::sync::watch::channel(false);
    let poller_manager = manager.clone();
    // Loading is a background job like any other poll: a large model loading never keeps the
    // listener (and so a liveness probe) waiting.
    let poller = tokio::spawn(async move {
        poller_manager
            .run(opts.poll_interval, async move {
                let _ = stop_rx.wait_for(|s| *s).await;
            })
            .await;
    });
    let (draining, drain_delay) = (registry.clone(), opts.drain_delay);
    let state = AppState {
        default_model: opts.default_model.into(),
        auth: opts.auth,
        playground: opts.playground,
        ..AppState::from_runtime(aiserve_runtime::Runtime::new(registry, Some(manager), opts.limits))
    };
    let grpc = opts.grpc.map(|(l, h2)| (l, h2, grpc::app(state.clone())));
    let mut router = app(state).layer(axum::middleware::map_response(close_when_draining(draining.clone())));
    if !opts.cors_origins.is_empty() {
        router = router.layer(cors_layer(&opts.cors_origins).map_err(std::io::Error::other)?);
    }
    // One shutdown signal for both listeners and the poller.
    let stopping = stop_tx.clone();
    let (drain_tx, mut drain_rx) = tokio::sync::watch::channel(false);
    let draining_began = async move {
        let _ = drain_rx.wait_for(|d| *d).await;
    };
    tokio::spawn(async move {
        shutdown.await;
        draining.begin_draining();
        let _ = drain_tx.send(true);
        if !drain_delay.is_zero() {
            tracing::info!(
                seconds = drain_delay.as_secs_f64(),
                "draining: readiness answers 503, requests still served"
            );
            tokio::time::sleep(drain_delay).await;
        }
        let _ = stopping.send(true);
    });
    let stopped = move || {
        let mut rx = stop_tx.subscribe();
        async move {
            let _ = rx.wait_for(|s| *s).await;
        }
    };
    let http = listen::serve(listener, router, opts.listen.clone(), stopped());
    let result = match grpc {
        None => http.await,
        Some((l, h2, grpc_router)) => {
            let wire = listen::Wire::Http2(h2);
            let grpc = listen::serve_wire_draining(l, grpc_router, opts.listen, wire, draining_began, stopped());
            let (a, b) = tokio::join!(http, grpc);
            a.and(b)
        }
    };
    poller.abort();
    result
}

/// While draining, HTTP/1.1 responses carry `Connection: close`: a load balancer's pool of
/// keep-alive connections to this server empties while requests are still served, so when the
/// listener closes no idle connection is left for a request to race its close (which a balancer
/// cannot safely replay for a POST).
fn close_when_draining(
    registry: Arc<Registry>,
) -> impl Fn(axum::response::Response) -> std::future::Ready<axum::response::Response> + Clone {
    move |mut resp| {
        if registry.is_draining() {
            resp.headers_mut().insert(axum::http::header::CONNECTION, axum::http::HeaderValue::from_static("close"));
        }
        std::future::ready(resp)
    }
}

#[cfg(test)]
mod tests;
