//! The HTTP/1.1 front end: one axum router for every REST protocol (classify, KServe v2, TF
//! Serving REST, OpenAI) and the playground page, behind request ids, metrics, the concurrency cap and the key check.
//!
//! Handlers decode their wire types ([`protocols`]) into the runtime's validated requests and
//! call the same `aiserve_runtime` the gRPC front end calls; errors become responses in
//! `crate::error`.

pub mod held_body;
pub mod metrics;
pub mod openapi;
pub mod playground;
pub mod protocols;
pub mod request_id;
pub mod state;

use std::time::Duration;

use axum::Router;

use crate::{admission, auth};
use state::AppState;

/// The HTTP routes of every protocol, behind the API-key check.
pub fn app(state: AppState) -> Router {
    let (auth, admission) = (state.auth.clone(), state.admission.clone());
    let page = if state.playground { playground::routes() } else { Router::new() };
    Router::new()
        .merge(page)
        .route("/metrics", axum::routing::get(metrics::render))
        .route("/openapi.json", axum::routing::get(openapi::serve))
        .merge(protocols::classify::routes())
        .merge(protocols::ocr::routes())
        .merge(protocols::kserve::routes())
        .merge(protocols::kserve_repository::routes())
        .merge(protocols::openai::routes())
        .merge(protocols::rerank::routes())
        .merge(protocols::openai_generate::routes())
        .merge(protocols::openai_responses::routes())
        .merge(protocols::anthropic::routes())
        .merge(protocols::kserve_generate::routes())
        .merge(protocols::tfserving::routes())
        .fallback(|uri: axum::http::Uri| async move {
            crate::error::HttpError(crate::error::Error::NotFound(format!("no route for `{}`", uri.path())))
        })
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
