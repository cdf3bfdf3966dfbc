//! The server-wide cap on requests handled at once (TEI's `max_concurrent_requests`), and the
//! guard that keeps `aiserve_http_requests_in_flight` true.
//!
//! A request takes a permit before it reaches its handler; with none left it is answered 503
//! with `Retry-After` at once. Probes and `/metrics` never queue behind work, so they are not
//! counted. The permit and the in-flight count live in a guard that travels inside the response
//! body: they are given back when the body has been sent, or when the client goes away
//! mid-request or mid-stream (the guard is dropped with the future or the body), never later.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use axum::body::Body;
use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::Response;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::error::Error;
use aiserve_runtime::metrics::METRICS;

/// The permits of the concurrency cap.
#[derive(Clone, Debug)]
pub struct Admission {
    /// One permit per request being handled (its body included); none left: 503.
    permits: Arc<Semaphore>,
    limit: usize,
}

impl Admission {
    pub fn new(limit: usize) -> Self {
        let limit = limit.max(1);
        Self { permits: Arc::new(Semaphore::new(limit)), limit }
    }

    /// Requests holding a permit now.
    pub fn in_use(&self) -> usize {
        self.limit - self.permits.available_permits()
    }

    /// Admits one request (`exempt`: without taking a permit): the guard counts it in flight
    /// until dropped; with no permit left, `Busy`.
    pub fn admit(&self, exempt: bool) -> Result<Guard, Error> {
        let permit = if exempt {
            None
        } else {
            Some(self.permits.clone().try_acquire_owned().map_err(|_| Error::Busy { limit: self.limit })?)
        };
        Ok(Guard::new(permit))
    }
}

/// Routes answered without a permit: they must work while the server is saturated.
fn exempt(path: &str) -> bool {
    path.starts_with("/v2/health/") || path == "/metrics"
}

/// Holds a request's permit (if it took one), its API key's concurrency permit (if the key has
/// a limit) and its in-flight count until dropped.
pub struct Guard {
    _permit: Option<OwnedSemaphorePermit>,
    _key: crate::auth::Admitted,
}

impl Guard {
    fn new(permit: Option<OwnedSemaphorePermit>) -> Self {
        METRICS.inflight.inc();
        Self { _permit: permit, _key: None }
    }

    /// Also holds the key's permit until the response has been sent.
    pub fn with_key(mut self, key: crate::auth::Admitted) -> Self {
        self._key = key;
        self
    }

    /// Moves this guard into `resp`'s body, so it lives until the body is sent or dropped.
    pub fn keep_until_sent(self, resp: Response) -> Response {
        let (parts, body) = resp.into_parts();
        Response::from_parts(parts, Body::new(Guarded { inner: body, _guard: self }))
    }
}

impl Drop for Guard {
    fn drop(&mut self) {
        METRICS.inflight.dec();
    }
}

pub async fn middleware(State(admission): State<Admission>, req: Request, next: Next) -> Response {
    let guard = match admission.admit(exempt(req.uri().path())) {
        Ok(g) => g,
        Err(busy) => return crate::error::response_for(req.uri().path(), busy),
    };
    // Counted from here; if the client goes away before the handler answers, the future and the
    // guard in it are dropped.
    guard.keep_until_sent(next.run(req).await)
}

/// A response body that keeps its request's guard until it is finished or dropped.
struct Guarded {
    inner: Body,
    _guard: Guard,
}

impl hyper::body::Body for Guarded {
    type Data = axum::body::Bytes;
    type Error = axum::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<hyper::body::Frame<Self::Data>, Self::Error>>> {
        Pin::new(&mut self.get_mut().inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        self.inner.size_hint()
    }
}
