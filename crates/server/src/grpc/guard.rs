//! What every gRPC call passes before its handler, as one axum middleware: the API key and the
//! scope its method needs, the server-wide concurrency cap, the in-flight count, and the request
//! metrics. Refusals are answered as gRPC statuses (UNAUTHENTICATED, PERMISSION_DENIED,
//! RESOURCE_EXHAUSTED with `retry-after`), never as HTTP errors a gRPC client cannot read.
//!
//! The permits live in the response body, so a stream holds them until it ends.

use std::time::Instant;

use aiserve_runtime::metrics::METRICS;
use axum::extract::{Request, State};
use axum::http::{HeaderValue, Uri};
use axum::middleware::Next;
use axum::response::Response;

use crate::auth::Scope;
use crate::error::grpc_status;
use crate::http::metrics::Served;
use crate::http::state::AppState;

/// The scope a method needs (`None`: open, like the HTTP probes).
pub fn required_scope(path: &str) -> Option<Scope> {
    const OPEN: [&str; 2] =
        ["/inference.GRPCInferenceService/ServerLive", "/inference.GRPCInferenceService/ServerReady"];
    if OPEN.contains(&path) || path.starts_with("/grpc.health.v1.") || path.starts_with("/grpc.reflection.") {
        None
    } else if path.starts_with("/inference.GRPCInferenceService/Repository") {
        Some(Scope::Admin)
    } else {
        Some(Scope::Infer)
    }
}

/// A gRPC status as the HTTP response that carries it (trailers-only).
pub fn status_response(status: tonic::Status) -> Response {
    let (parts, body) = status.into_http::<tonic::body::Body>().into_parts();
    Response::from_parts(parts, axum::body::Body::new(body))
}

pub async fn middleware(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let path = req.uri().path().to_owned();
    let scope = required_scope(&path);
    let key = match scope {
        Some(scope) => match state.auth.check(req.headers(), scope, &path) {
            Ok(permit) => permit,
            Err(e) => return record(&path, status_response(grpc_status(e)), Instant::now()),
        },
        None => None,
    };
    let guard = match state.admission.admit(scope.is_none()) {
        Ok(g) => g.with_key(key),
        Err(busy) => return record(&path, status_response(grpc_status(busy)), Instant::now()),
    };
    let started = Instant::now();
    let mut resp = next.run(req).await;
    // A known service's unknown method is answered UNIMPLEMENTED with no message: name it.
    let unimplemented = resp.headers().get("grpc-status").is_some_and(|v| v == "12");
    if unimplemented && !resp.headers().contains_key("grpc-message") {
        let msg = format!("aiserve does not implement `{path}`");
        if let Ok(v) = HeaderValue::from_str(&percent_encode(&msg)) {
            resp.headers_mut().insert("grpc-message", v);
        }
    }
    guard.keep_until_sent(record(&path, resp, started))
}

/// gRPC's percent-encoding of `grpc-message` (bytes outside printable ASCII, and `%`).
fn percent_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if (0x20..0x7f).contains(&b) && b != b'%' {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Counts the call: its code is in the response head when it failed before any message
/// (trailers-only), otherwise it is OK so far (a stream's later failure is in its trailers).
fn record(path: &str, resp: Response, started: Instant) -> Response {
    if path.starts_with("/grpc.") {
        return resp;
    }
    let code = resp
        .headers()
        .get("grpc-status")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<i32>().ok())
        .map_or(tonic::Code::Ok, tonic::Code::from);
    let served = resp.extensions().get::<Served>();
    let (model, version) = served.map_or(("", ""), |s| (s.model.as_str(), s.version.as_str()));
    let took = started.elapsed();
    METRICS.requests.with_label_values(&[model, version, "grpc", code_name(code)]).inc();
    METRICS.request_seconds.with_label_values(&[model, "grpc"]).observe(took.as_secs_f64());
    // Stream calls count each request inside them instead (`kserve_stream`).
    if let Some(s) = served {
        s.stats.request(code == tonic::Code::Ok, took);
    }
    resp
}

/// The upper-case name gRPC documents for each code (the `status` label).
pub fn code_name(code: tonic::Code) -> &'static str {
    use tonic::Code::*;
    match code {
        Ok => "OK",
        Cancelled => "CANCELLED",
        Unknown => "UNKNOWN",
        InvalidArgument => "INVALID_ARGUMENT",
        DeadlineExceeded => "DEADLINE_EXCEEDED",
        NotFound => "NOT_FOUND",
        AlreadyExists => "ALREADY_EXISTS",
        PermissionDenied => "PERMISSION_DENIED",
        ResourceExhausted => "RESOURCE_EXHAUSTED",
        FailedPrecondition => "FAILED_PRECONDITION",
        Aborted => "ABORTED",
        OutOfRange => "OUT_OF_RANGE",
        Unimplemented => "UNIMPLEMENTED",
        Internal => "INTERNAL",
        Unavailable => "UNAVAILABLE",
        DataLoss => "DATA_LOSS",
        Unauthenticated => "UNAUTHENTICATED",
    }
}

/// Services this server does not offer: UNIMPLEMENTED, naming the method.
pub async fn unimplemented(uri: Uri) -> Response {
    let mut resp = status_response(tonic::Status::unimplemented(format!(
        "aiserve does not implement `{}`",
        crate::error::shown(serde_json::Value::from(uri.path()))
    )));
    resp.headers_mut().insert("content-type", HeaderValue::from_static("application/grpc"));
    resp
}
