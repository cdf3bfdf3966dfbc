//! A request id on every request, response and log line (`x-request-id`).
//!
//! A client's own id is kept when it is a sane token (1–128 characters of letters, digits and
//! `-_.:`), so ids can be followed across services; otherwise a fresh UUID v4 is used. The
//! trace layer's span carries the id, so every log line of the request shows it.

use axum::extract::Request;
use axum::http::{HeaderName, HeaderValue};
use axum::middleware::Next;
use axum::response::Response;

pub static HEADER: HeaderName = HeaderName::from_static("x-request-id");

/// The id of a request, as an extension for handlers.
#[derive(Clone, Debug)]
pub struct RequestId(pub HeaderValue);

fn acceptable(v: &HeaderValue) -> bool {
    let b = v.as_bytes();
    !b.is_empty() && b.len() <= 128 && b.iter().all(|c| c.is_ascii_alphanumeric() || b"-_.:".contains(c))
}

pub async fn middleware(mut req: Request, next: Next) -> Response {
    let id = match req.headers().get(&HEADER) {
        Some(v) if acceptable(v) => v.clone(),
        _ => HeaderValue::from_str(&uuid::Uuid::new_v4().to_string()).expect("a UUID is a valid header value"),
    };
    req.headers_mut().insert(HEADER.clone(), id.clone());
    req.extensions_mut().insert(RequestId(id.clone()));
    let mut resp = next.run(req).await;
    resp.headers_mut().insert(HEADER.clone(), id);
    resp
}

/// The trace layer's span for a request: method, path and id (never headers or bodies).
pub fn span(req: &Request) -> tracing::Span {
    let id = req.headers().get(&HEADER).and_then(|v| v.to_str().ok()).unwrap_or("");
    tracing::info_span!("request", method = %req.method(), path = %req.uri().path(), request_id = %id)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_sane_client_ids_are_kept() {
        assert!(acceptable(&HeaderValue::from_static("trace-1234:abc.def_9")));
        assert!(!acceptable(&HeaderValue::from_static("")));
        assert!(!acceptable(&HeaderValue::from_static("has space")));
        assert!(!acceptable(&HeaderValue::from_str(&"x".repeat(129)).unwrap()));
    }
}
