//! A response body that keeps the request's memory hold until hyper has taken the whole body
//! (or the client went away), so a large answer (a graph's outputs as JSON can be hundreds of
//! megabytes) stays counted in the memory budget while it is written out, not only while it is
//! built.

use std::pin::Pin;
use std::task::{Context, Poll};

use aiserve_runtime::budget::Hold;
use axum::body::{Body, Bytes};
use axum::response::Response;
use http_body::{Frame, SizeHint};

struct HeldBody {
    inner: Body,
    /// Returned to the budget when hyper drops the body.
    _hold: Hold,
}

impl http_body::Body for HeldBody {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        Pin::new(&mut self.get_mut().inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// `resp` with its body holding `hold` until the body is dropped.
pub fn hold_until_sent(resp: Response, hold: &Hold) -> Response {
    resp.map(|inner| Body::new(HeldBody { inner, _hold: hold.clone() }))
}
