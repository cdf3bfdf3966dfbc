//! The one place where runtime errors become HTTP statuses and bodies (and, for the gRPC front
//! end, status codes).
//!
//! Every HTTP protocol here (classify, KServe v2, TF Serving REST) uses `{"error": "<message>"}`
//! as its error body; OpenAI routes use OpenAI's shape ([`OpenAiError`]), Anthropic's route
//! Anthropic's ([`AnthropicError`]). The message is the
//! runtime error's, which names the field, the limit and the value given.

use aiserve_core::InputError;
use axum::body::Body;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::{json, Value};

pub use aiserve_runtime::error::shown;
pub use aiserve_runtime::Error;

/// The HTTP status of each kind of error.
pub fn status(e: &Error) -> StatusCode {
    match e {
        Error::Input(InputError::TooLarge { .. }) | Error::Input(InputError::Invalid { .. }) => StatusCode::BAD_REQUEST,
        Error::WrongModelKind { .. } => StatusCode::BAD_REQUEST,
        Error::PayloadTooLarge { .. } | Error::TooMuchMemory { .. } => StatusCode::PAYLOAD_TOO_LARGE,
        Error::UnsupportedMediaType(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
        Error::ModelNotFound(_) | Error::VersionNotFound { .. } | Error::NotFound(_) => StatusCode::NOT_FOUND,
        Error::NotReady { .. } | Error::Overloaded { .. } | Error::MemoryBusy { .. } | Error::Busy { .. } => {
            StatusCode::SERVICE_UNAVAILABLE
        }
        Error::Unauthorized(_) => StatusCode::UNAUTHORIZED,
        Error::Forbidden(_) => StatusCode::FORBIDDEN,
        Error::RateLimited { .. } => StatusCode::TOO_MANY_REQUESTS,
        Error::Timeout => StatusCode::GATEWAY_TIMEOUT,
        Error::Internal { .. } => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

/// The gRPC code of each kind of error: the same classification as [`status`], in gRPC's
/// vocabulary (a full queue or a rate limit is RESOURCE_EXHAUSTED, a model still loading
/// UNAVAILABLE).
pub fn grpc_code(e: &Error) -> tonic::Code {
    use tonic::Code;
    match e {
        Error::Input(_) | Error::WrongModelKind { .. } | Error::UnsupportedMediaType(_) => Code::InvalidArgument,
        Error::PayloadTooLarge { .. } | Error::TooMuchMemory { .. } => Code::ResourceExhausted,
        Error::ModelNotFound(_) | Error::VersionNotFound { .. } | Error::NotFound(_) => Code::NotFound,
        Error::NotReady { .. } => Code::Unavailable,
        Error::Overloaded { .. } | Error::MemoryBusy { .. } | Error::Busy { .. } | Error::RateLimited { .. } => {
            Code::ResourceExhausted
        }
        Error::Unauthorized(_) => Code::Unauthenticated,
        Error::Forbidden(_) => Code::PermissionDenied,
        Error::Timeout => Code::DeadlineExceeded,
        Error::Internal { .. } => Code::Internal,
    }
}

/// A runtime error as a gRPC status: its code, its message, and (when a retry may succeed)
/// `retry-after` seconds in the trailing metadata, as HTTP's header says it.
pub fn grpc_status(e: Error) -> tonic::Status {
    let code = grpc_code(&e);
    if code != tonic::Code::Internal && code != tonic::Code::Unavailable {
        tracing::debug!(?code, error = %e, "client error");
    }
    let retry = match &e {
        Error::RateLimited { retry_after_s, .. } => Some(*retry_after_s),
        e if e.is_retryable() => Some(1),
        _ => None,
    };
    let mut status = tonic::Status::new(code, e.to_string());
    if let Some(s) = retry {
        status.metadata_mut().insert("retry-after", s.into());
    }
    status
}

/// The headers that go with an error's status: `Retry-After` when a retry may succeed,
/// `WWW-Authenticate` when a key is missing.
pub fn headers(e: &Error, headers: &mut axum::http::HeaderMap) {
    match e {
        Error::RateLimited { retry_after_s, .. } => {
            headers.insert(header::RETRY_AFTER, HeaderValue::from(*retry_after_s));
        }
        e if e.is_retryable() => {
            headers.insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        }
        Error::Unauthorized(_) => {
            headers.insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        _ => {}
    }
}

/// A runtime error as an HTTP response: what handlers return.
#[derive(Debug)]
pub struct HttpError(pub Error);

impl From<Error> for HttpError {
    fn from(e: Error) -> Self {
        Self(e)
    }
}

impl From<InputError> for HttpError {
    fn from(e: InputError) -> Self {
        Self(e.into())
    }
}

impl IntoResponse for HttpError {
    fn into_response(self) -> Response {
        let status = status(&self.0);
        if status.is_client_error() {
            tracing::debug!(%status, error = %self.0, "client error");
        }
        let mut resp = (status, Json(serde_json::json!({ "error": self.0.to_string() }))).into_response();
        headers(&self.0, resp.headers_mut());
        resp
    }
}

/// Routes whose errors use OpenAI's shape.
pub fn is_openai_path(path: &str) -> bool {
    path == "/v1/models"
        || ["/v1/embeddings", "/v1/chat/", "/v1/completions", "/v1/responses"].iter().any(|p| path.starts_with(p))
}

/// Routes whose errors use Anthropic's shape.
pub fn is_anthropic_path(path: &str) -> bool {
    path == "/v1/messages" || path.starts_with("/v1/messages/")
}

/// An error answered before a handler runs (keys, admission), in the shape of `path`'s protocol.
pub fn response_for(path: &str, e: Error) -> Response {
    if is_openai_path(path) {
        OpenAiError(e).into_response()
    } else if is_anthropic_path(path) {
        AnthropicError(e).into_response()
    } else {
        HttpError(e).into_response()
    }
}

/// An [`Error`] rendered in Anthropic's error shape (same status and headers).
pub struct AnthropicError(pub Error);

impl From<Error> for AnthropicError {
    fn from(e: Error) -> Self {
        Self(e)
    }
}

/// Anthropic's error body: `{"type": "error", "error": {"type", "message"}}`.
pub fn anthropic_body(e: &Error) -> Value {
    let kind = match status(e) {
        StatusCode::UNAUTHORIZED => "authentication_error",
        StatusCode::FORBIDDEN => "permission_error",
        StatusCode::NOT_FOUND => "not_found_error",
        StatusCode::PAYLOAD_TOO_LARGE => "request_too_large",
        StatusCode::TOO_MANY_REQUESTS => "rate_limit_error",
        StatusCode::SERVICE_UNAVAILABLE => "overloaded_error",
        StatusCode::GATEWAY_TIMEOUT => "timeout_error",
        s if s.is_server_error() => "api_error",
        _ => "invalid_request_error",
    };
    json!({ "type": "error", "error": { "type": kind, "message": e.to_string() } })
}

impl IntoResponse for AnthropicError {
    fn into_response(self) -> Response {
        let body = anthropic_body(&self.0);
        let (parts, _) = HttpError(self.0).into_response().into_parts();
        let mut resp = Response::from_parts(parts, Body::from(body.to_string()));
        resp.headers_mut().remove(axum::http::header::CONTENT_LENGTH);
        resp
    }
}

/// An [`Error`] rendered in OpenAI's error shape (same status and headers).
pub struct OpenAiError(pub Error);

impl From<Error> for OpenAiError {
    fn from(e: Error) -> Self {
        Self(e)
    }
}

impl IntoResponse for OpenAiError {
    fn into_response(self) -> Response {
        let (status, message) = (status(&self.0), self.0.to_string());
        let param = match &self.0 {
            Error::Input(e) => Value::from(e.field()),
            _ => Value::Null,
        };
        let (kind, code) = match status {
            StatusCode::NOT_FOUND => ("invalid_request_error", Value::from("model_not_found")),
            StatusCode::UNAUTHORIZED => ("invalid_request_error", Value::from("invalid_api_key")),
            StatusCode::FORBIDDEN => ("invalid_request_error", Value::from("insufficient_scope")),
            StatusCode::TOO_MANY_REQUESTS => ("rate_limit_error", Value::from("rate_limit_exceeded")),
            s if s.is_server_error() => ("server_error", Value::Null),
            _ => ("invalid_request_error", Value::Null),
        };
        let body = json!({ "error": { "message": message, "type": kind, "param": param, "code": code } });
        let (parts, _) = HttpError(self.0).into_response().into_parts();
        let mut resp = Response::from_parts(parts, Body::from(body.to_string()));
        resp.headers_mut().remove(axum::http::header::CONTENT_LENGTH);
        resp
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses() {
        assert_eq!(status(&Error::invalid("x", "bad")), StatusCode::BAD_REQUEST);
        assert_eq!(status(&Error::Input(InputError::too_large("x", 1, 2))), StatusCode::BAD_REQUEST);
        assert_eq!(status(&Error::PayloadTooLarge { limit: 1 }), StatusCode::PAYLOAD_TOO_LARGE);
        assert_eq!(status(&Error::ModelNotFound("m".into())), StatusCode::NOT_FOUND);
        let o = HttpError(Error::Overloaded { model: "m".into(), version: "1".into(), queued: 3 }).into_response();
        assert_eq!(o.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(o.headers()[header::RETRY_AFTER], "1");
    }

    #[test]
    fn grpc_codes() {
        use tonic::Code;
        assert_eq!(grpc_code(&Error::invalid("x", "bad")), Code::InvalidArgument);
        assert_eq!(grpc_code(&Error::ModelNotFound("m".into())), Code::NotFound);
        assert_eq!(grpc_code(&Error::Unauthorized("k".into())), Code::Unauthenticated);
        assert_eq!(grpc_code(&Error::Forbidden("k".into())), Code::PermissionDenied);
        assert_eq!(grpc_code(&Error::Timeout), Code::DeadlineExceeded);
        let full = grpc_status(Error::Overloaded { model: "m".into(), version: "1".into(), queued: 3 });
        assert_eq!(full.code(), Code::ResourceExhausted);
        assert_eq!(full.metadata().get("retry-after").unwrap(), "1");
        assert!(full.message().contains("3 requests queued"), "{}", full.message());
        let limited = grpc_status(Error::RateLimited { message: "slow down".into(), retry_after_s: 4 });
        assert_eq!(limited.metadata().get("retry-after").unwrap(), "4");
    }
}
