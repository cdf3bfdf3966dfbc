//! aiserve-server: the network front end (axum), with no candle dependency.
//!
//! [`app`] builds the router from shared state (tests call it without a socket); [`serve`] runs
//! the version manager and the HTTP server on a bound listener until a shutdown future resolves,
//! then drains in-flight requests. Model code arrives as an `aiserve_core::ModelLoader`.

pub mod admission;
pub mod auth;
pub mod blocking;
pub mod budget;
pub mod decode;
pub mod error;
pub mod generation;
pub mod listen;
pub mod manager;
pub mod metrics;
pub mod openapi;
pub mod protocols;
pub mod registry;
pub mod request_id;
pub mod servable;
pub mod state;
pub mod text_input;
pub mod worker;

use std::future::Future;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use aiserve_core::ModelLoader;
use axum::Router;
use tokio::net::TcpListener;

pub use registry::Registry;
pub use state::{AppState, Limits};

/// The HTTP routes of every protocol, behind the API-key check.
pub fn app(state: AppState) -> Router {
    let (auth, admission) = (state.auth.clone(), state.admission.clone());
    Router::new()
        .route("/metrics", axum::routing::get(metrics::render))
        .route("/openapi.json", axum::routing::get(openapi::serve))
        .merge(protocols::classify::routes())
        .merge(protocols::kserve::routes())
        .merge(protocols::kserve_repository::routes())
        .merge(protocols::openai::routes())
        .merge(protocols::openai_generate::routes())
        .merge(protocols::kserve_generate::routes())
        .merge(protocols::tfserving::routes())
        .fallback(
            |uri: axum::http::Uri| async move { error::ApiError::NotFound(format!("no route for `{}`", uri.path())) },
        )
        .with_state(state)
        .layer(axum::middleware::from_fn_with_state(auth, auth::middleware))
        .layer(axum::middleware::from_fn_with_state(admission, admission::middleware))
        .layer(axum::middleware::from_fn(metrics::middleware))
        .layer(tower_http::trace::TraceLayer::new_for_http().make_span_with(request_id::span))
        .layer(axum::middleware::from_fn(request_id::middleware))
        // Keys never reach a log line, even at trace level.
        .layer(tower_http::sensitive_headers::SetSensitiveRequestHeadersLayer::new([
            axum::http::header::AUTHORIZATION,
            axum::http::HeaderName::from_static("x-api-key"),
        ]))
}

/// Everything `serve` needs besides the listener.
pub struct ServeOptions {
    pub repo: PathBuf,
    pub listen: listen::ListenOptions,
    /// Origins allowed to call from a browser (CORS); empty: no CORS headers at all.
    pub cors_origins: Vec<String>,
    pub auth: Arc<auth::Auth>,
    pub poll_interval: Duration,
    pub limits: Limits,
    pub default_model: String,
    /// Engine limits of text generation models.
    pub generation: generation::engine::EngineConfig,
}

impl ServeOptions {
    /// Defaults for everything but the repository: open, loopback-safe limits, no CORS.
    pub fn new(repo: PathBuf) -> Self {
        Self {
            repo,
            listen: listen::ListenOptions::default(),
            cors_origins: Vec::new(),
            auth: Arc::new(auth::Auth::open()),
            poll_interval: Duration::from_secs(2),
            limits: Limits::default(),
            default_model: "digits".into(),
            generation: Default::default(),
        }
    }
}

/// Browser access for the given origins (`*` for any): the methods and headers the protocols
/// use, and the response headers clients read. Preflights are answered before the key check.
pub fn cors_layer(origins: &[String]) -> Result<tower_http::cors::CorsLayer, String> {
    use axum::http::{header, HeaderName, HeaderValue, Method};
    use tower_http::cors::{AllowOrigin, CorsLayer};
    let allow = if origins.iter().any(|o| o == "*") {
        AllowOrigin::any()
    } else {
        let list = origins
            .iter()
            .map(|o| HeaderValue::from_str(o).map_err(|_| format!("CORS origin {o:?} is not a valid header value")))
            .collect::<Result<Vec<_>, _>>()?;
        AllowOrigin::list(list)
    };
    Ok(CorsLayer::new()
        .allow_origin(allow)
        .allow_methods([Method::GET, Method::POST, Method::OPTIONS])
        .allow_headers([
            header::AUTHORIZATION,
            header::CONTENT_TYPE,
            HeaderName::from_static("x-api-key"),
            HeaderName::from_static("x-request-id"),
            HeaderName::from_static(state::TIMEOUT_HEADER),
            HeaderName::from_static(protocols::kserve::HEADER_LENGTH),
        ])
        .expose_headers([
            HeaderName::from_static("x-request-id"),
            HeaderName::from_static(protocols::kserve::HEADER_LENGTH),
            header::RETRY_AFTER,
        ])
        .max_age(Duration::from_secs(600)))
}

/// Serves HTTP on `listener` from the first moment (liveness answers at once, readiness once the
/// first repository poll has loaded what the policies ask for) while polling the repository in
/// the background, until `shutdown` resolves; in-flight requests are finished before this returns.
pub async fn serve(
    opts: ServeOptions,
    loader: Arc<dyn ModelLoader>,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let registry = Arc::new(Registry::new());
    let manager = Arc::new(manager::Manager::new(opts.repo, loader, registry.clone()).with_generation(opts.generation));
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
    let state = AppState {
        default_model: opts.default_model.into(),
        auth: opts.auth,
        manager: Some(manager),
        ..AppState::new(registry, opts.limits)
    };
    let mut router = app(state);
    if !opts.cors_origins.is_empty() {
        router = router.layer(cors_layer(&opts.cors_origins).map_err(std::io::Error::other)?);
    }
    let result = listen::serve(listener, router, opts.listen, async move {
        shutdown.await;
        let _ = stop_tx.send(true);
    })
    .await;
    poller.abort();
    result
}

#[cfg(test)]
mod tests;
