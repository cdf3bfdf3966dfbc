//! The playground: one page (`GET /`) and its scripts and styles (`/playground/<file>`), compiled
//! into the binary, so `aiserve serve` hands a person a UI for every model kind with nothing
//! fetched at run time. The page only calls the public APIs (OpenAI, KServe v2 and its
//! repository extension, `/classify`, `/ocr`, `/metrics`) with the key the person typed, so it
//! can do nothing a client could not.
//!
//! The page and its files need no key (they hold no data); every answer carries a strict
//! Content-Security-Policy: scripts and styles only from this server, no inline script, no
//! framing. The page learns whether the server wants a key from an attribute filled in here, so it
//! asks for one before its first call instead of collecting 401s.

use axum::extract::{Path, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;

use super::state::AppState;

/// What the page and its files may load and do.
pub const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data: blob:; \
                       connect-src 'self'; form-action 'none'; frame-ancestors 'none'; base-uri 'none'";

const INDEX: &str = include_str!("assets/index.html");

/// The files under `/playground/`: name, media type, contents.
const FILES: &[(&str, &str, &str)] = &[
    ("app.js", "text/javascript; charset=utf-8", include_str!("assets/app.js")),
    ("api.js", "text/javascript; charset=utf-8", include_str!("assets/api.js")),
    ("chat.js", "text/javascript; charset=utf-8", include_str!("assets/chat.js")),
    ("images.js", "text/javascript; charset=utf-8", include_str!("assets/images.js")),
    ("embeddings.js", "text/javascript; charset=utf-8", include_str!("assets/embeddings.js")),
    ("rerank.js", "text/javascript; charset=utf-8", include_str!("assets/rerank.js")),
    ("ocr.js", "text/javascript; charset=utf-8", include_str!("assets/ocr.js")),
    ("models.js", "text/javascript; charset=utf-8", include_str!("assets/models.js")),
    ("style.css", "text/css; charset=utf-8", include_str!("assets/style.css")),
    ("icon.svg", "image/svg+xml", include_str!("assets/icon.svg")),
];

pub fn routes() -> Router<AppState> {
    Router::new().route("/", get(index)).route("/playground/{file}", get(file))
}

/// The paths this module answers (no key needed: the key check skips them; a name under
/// `/playground/` that is no file is a 404 either way).
pub fn is_playground_path(path: &str) -> bool {
    path == "/" || path.strip_prefix("/playground/").is_some_and(|f| !f.contains('/'))
}

async fn index(State(state): State<AppState>) -> Response {
    let auth = if state.auth.is_open() { "open" } else { "keys" };
    let page = INDEX.replace("data-auth=\"open\"", &format!("data-auth=\"{auth}\""));
    asset("text/html; charset=utf-8", page)
}

async fn file(Path(name): Path<String>) -> Response {
    match FILES.iter().find(|(n, ..)| *n == name) {
        Some((_, kind, body)) => asset(kind, *body),
        None => crate::error::HttpError(crate::error::Error::NotFound(format!("no playground file `{name}`")))
            .into_response(),
    }
}

fn asset(kind: &'static str, body: impl Into<axum::body::Body>) -> Response {
    let mut resp = (StatusCode::OK, body.into()).into_response();
    let h = resp.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(kind));
    h.insert(header::CONTENT_SECURITY_POLICY, HeaderValue::from_static(CSP));
    h.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    h.insert(header::REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    // Small files that change with the binary: revalidate each time rather than serve a stale
    // script beside a newer page.
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every script the page loads comes from a file (the CSP forbids inline script), and every
    /// file the page and scripts name is served.
    #[test]
    fn page_names_only_served_files_and_has_no_inline_script() {
        let mut texts = vec![INDEX];
        texts.extend(FILES.iter().filter(|(n, ..)| n.ends_with(".js")).map(|(.., body)| *body));
        for text in texts {
            for (i, _) in text.match_indices("/playground/") {
                let rest = &text[i + "/playground/".len()..];
                let name: String = rest.chars().take_while(|c| c.is_ascii_alphanumeric() || *c == '.').collect();
                assert!(FILES.iter().any(|(n, ..)| *n == name), "`/playground/{name}` is named but not served");
            }
            for (i, _) in text.match_indices("from './") {
                let rest = &text[i + "from './".len()..];
                let name: String = rest.chars().take_while(|c| *c != '\'').collect();
                assert!(FILES.iter().any(|(n, ..)| *n == name), "module `./{name}` is imported but not served");
            }
            assert!(!text.contains("http://") && !text.contains("https://"), "nothing may come from elsewhere");
        }
        for (i, _) in INDEX.match_indices("<script") {
            let tag: String = INDEX[i..].chars().take_while(|c| *c != '>').collect();
            assert!(tag.contains(" src=\"/playground/"), "inline script: {tag}");
        }
        for (i, _) in INDEX.match_indices(" on") {
            let attr: String = INDEX[i + 1..].chars().take_while(|c| c.is_ascii_lowercase()).collect();
            assert!(!INDEX[i + 1 + attr.len()..].starts_with('='), "inline handler `{attr}=` breaks under the CSP");
        }
        assert!(INDEX.contains("data-auth=\"open\""), "the page's auth attribute is filled in by `index`");
    }
}
