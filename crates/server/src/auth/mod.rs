//! Who may call what: API keys with scopes, per-key rate and concurrency limits, as one axum
//! middleware in front of every route (the fallback included, so unknown paths reveal nothing).
//!
//! With no key file the server is open (and binds loopback by default). With keys, a request
//! presents one as `Authorization: Bearer <key>` or `x-api-key: <key>`: none or an unknown key is
//! 401 (with `WWW-Authenticate`), a key without the route's scope is 403, a key over its
//! requests-per-second or concurrency limit is 429 with `Retry-After`. Liveness/readiness probes
//! and the OpenAPI document stay open so orchestrators and tooling work without secrets. Keys
//! are never logged; a key is named by its line in the key file.

pub mod keys;

use std::num::NonZeroU32;
use std::path::Path;
use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{header, HeaderMap};
use axum::middleware::Next;
use axum::response::Response;
use futures_util::StreamExt;
use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};
use tokio::sync::Semaphore;

pub use keys::{KeyLimits, Scope};

use crate::error::Error;

/// The configured keys and their limiters; empty means the server is open.
#[derive(Default)]
pub struct Auth {
    keys: Vec<keys::KeyEntry>,
    /// Per key (same index): its requests-per-second bucket, when it has a rate limit.
    rate: Vec<Option<DefaultDirectRateLimiter>>,
    /// Per key: permits for requests in flight, when it has a concurrency limit; a request holds
    /// one until its response is produced, and none left means 429 at once (never a wait).
    inflight: Vec<Option<Arc<Semaphore>>>,
}

impl Auth {
    /// No keys: every route is open.
    pub fn open() -> Self {
        Self::default()
    }

    pub fn from_text(text: &str, defaults: KeyLimits) -> Result<Self, String> {
        let keys = keys::parse(text, defaults)?;
        if keys.is_empty() {
            return Err("the key file has no keys (an open server needs no key file)".into());
        }
        let rate = keys
            .iter()
            .map(|k| k.limits.requests_per_second.map(|r| RateLimiter::direct(Quota::per_second(r))))
            .collect();
        let inflight =
            keys.iter().map(|k| k.limits.concurrency.map(|c| Arc::new(Semaphore::new(c.get() as usize)))).collect();
        Ok(Self { keys, rate, inflight })
    }

    /// Reads `--api-keys-file`; warns when other users can read it.
    pub fn from_file(path: &Path, defaults: KeyLimits) -> Result<Self, String> {
        let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
        #[cfg(unix)]
        if let Ok(meta) = std::fs::metadata(path) {
            use std::os::unix::fs::PermissionsExt;
            if meta.permissions().mode() & 0o077 != 0 {
                tracing::warn!(path = %path.display(), "the API key file is readable by other users; chmod 600 it");
            }
        }
        Self::from_text(&text, defaults).map_err(|e| format!("{}: {e}", path.display()))
    }

    pub fn is_open(&self) -> bool {
        self.keys.is_empty()
    }

    pub fn key_count(&self) -> usize {
        self.keys.len()
    }
}

/// The scope a route needs; `None` for the routes that stay open.
pub fn required_scope(path: &str) -> Option<Scope> {
    if path.starts_with("/v2/health/") || path == "/openapi.json" || crate::http::playground::is_playground_path(path) {
        None
    } else if path == "/metrics" {
        Some(Scope::Metrics)
    } else if path.starts_with("/v2/repository") {
        Some(Scope::Admin)
    } else {
        Some(Scope::Infer)
    }
}

fn presented_key(headers: &HeaderMap) -> Option<&str> {
    if let Some(v) = headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok()) {
        let (scheme, token) = v.trim().split_once(' ')?;
        return scheme.eq_ignore_ascii_case("bearer").then(|| token.trim());
    }
    headers.get("x-api-key").and_then(|v| v.to_str().ok()).map(str::trim)
}

/// A request let through: the key's concurrency permit (if it has a limit), to hold until the
/// answer has been sent in full.
pub type Admitted = Option<tokio::sync::OwnedSemaphorePermit>;

impl Auth {
    /// Checks the key in `headers` for `scope` (`what` names the call in errors): the front
    /// ends' shared check, whichever transport the headers came on (HTTP headers, gRPC metadata).
    pub fn check(&self, headers: &HeaderMap, scope: Scope, what: &str) -> Result<Admitted, Error> {
        if self.is_open() {
            return Ok(None);
        }
        let Some(key) = presented_key(headers) else {
            return Err(Error::Unauthorized(
                "an API key is required: send `Authorization: Bearer <key>` or `x-api-key: <key>`".into(),
            ));
        };
        let Some(i) = keys::lookup(&self.keys, key) else {
            return Err(Error::Unauthorized("the API key is not valid".into()));
        };
        let entry = &self.keys[i];
        if !entry.allows(scope) {
            return Err(Error::Forbidden(format!("this API key lacks the `{}` scope `{what}` needs", scope.name())));
        }
        if let Some(limiter) = &self.rate[i] {
            if let Err(not_until) = limiter.check() {
                let wait =
                    not_until.wait_time_from(governor::clock::Clock::now(&governor::clock::DefaultClock::default()));
                let rps = entry.limits.requests_per_second.map_or(0, NonZeroU32::get);
                return Err(Error::RateLimited {
                    message: format!("this API key is limited to {rps} requests per second"),
                    retry_after_s: wait.as_secs_f64().ceil().max(1.0) as u64,
                });
            }
        }
        let permit = match &self.inflight[i] {
            None => None,
            Some(sem) => match sem.clone().try_acquire_owned() {
                Ok(p) => Some(p),
                Err(_) => {
                    let limit = entry.limits.concurrency.map_or(0, NonZeroU32::get);
                    return Err(Error::RateLimited {
                        message: format!("this API key already has {limit} requests in flight (its limit)"),
                        retry_after_s: 1,
                    });
                }
            },
        };
        tracing::debug!(key = %entry.label(), scope = scope.name(), "authorised");
        Ok(permit)
    }
}

pub async fn middleware(State(auth): State<Arc<Auth>>, req: Request, next: Next) -> Response {
    if auth.is_open() {
        return next.run(req).await;
    }
    let path = req.uri().path().to_owned();
    let Some(scope) = required_scope(&path) else { return next.run(req).await };
    let permit = match auth.check(req.headers(), scope, &path) {
        Ok(permit) => permit,
        Err(e) => return crate::error::response_for(&path, e),
    };
    let resp = next.run(req).await;
    match permit {
        // A streamed answer (server-sent events) is in flight until its body ends: the permit
        // goes with the body, so a key's concurrency limit counts open streams too.
        Some(permit) if is_event_stream(&resp) => {
            let (parts, body) = resp.into_parts();
            let body = body.into_data_stream().map(move |chunk| {
                let _held = &permit;
                chunk
            });
            Response::from_parts(parts, Body::from_stream(body))
        }
        _ => resp,
    }
}

fn is_event_stream(resp: &Response) -> bool {
    resp.headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|t| t.starts_with("text/event-stream"))
}
