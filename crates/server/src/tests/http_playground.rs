//! The playground page: served at `/` with its files and a strict CSP, without a key even when
//! keys are on (it tells the page that they are), and not at all with `playground` off. Its
//! behaviour in a browser is `tests/clients/playground_check.py`'s.

use std::sync::Arc;

use axum::body::Body;
use axum::http::{header, Request, StatusCode};
use http_body_util::BodyExt;

use super::fake::Harness;
use crate::auth::{Auth, KeyLimits};

async fn fetch(h: &Harness, uri: &str) -> (StatusCode, axum::http::HeaderMap, String) {
    let resp = h.send(Request::get(uri).body(Body::empty()).unwrap()).await;
    let (parts, body) = resp.into_parts();
    let text = String::from_utf8(body.collect().await.unwrap().to_bytes().to_vec()).unwrap();
    (parts.status, parts.headers, text)
}

#[tokio::test]
async fn serves_the_page_and_its_files_with_a_strict_csp() {
    let h = Harness::new().await;
    let (s, headers, page) = fetch(&h, "/").await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(headers[header::CONTENT_TYPE], "text/html; charset=utf-8");
    let csp = headers[header::CONTENT_SECURITY_POLICY].to_str().unwrap();
    assert!(csp.contains("script-src 'self'") && !csp.contains("unsafe"), "{csp}");
    assert!(csp.contains("frame-ancestors 'none'"), "{csp}");
    assert!(page.contains("<body data-auth=\"open\">"), "an open server needs no key");
    for (file, kind) in [("app.js", "text/javascript"), ("style.css", "text/css"), ("icon.svg", "image/svg+xml")] {
        let (s, headers, body) = fetch(&h, &format!("/playground/{file}")).await;
        assert_eq!(s, StatusCode::OK, "{file}");
        assert!(headers[header::CONTENT_TYPE].to_str().unwrap().starts_with(kind), "{file}");
        assert_eq!(headers[header::X_CONTENT_TYPE_OPTIONS], "nosniff");
        assert!(!body.is_empty());
    }
    let (s, _, _) = fetch(&h, "/playground/secret.txt").await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    for escape in
        ["/playground/../Cargo.toml", "/playground/..%2FCargo.toml", "/playground/%2e%2e%2f%2e%2e%2fetc%2fpasswd"]
    {
        let (s, _, body) = fetch(&h, escape).await;
        assert_eq!(s, StatusCode::NOT_FOUND, "{escape}: {body}");
    }
}

#[tokio::test]
async fn needs_no_key_and_says_keys_are_on() {
    let mut h = Harness::new().await;
    h.state.auth = Arc::new(Auth::from_text("infer-key-0123456789 infer\n", KeyLimits::default()).unwrap());
    let (s, _, page) = fetch(&h, "/").await;
    assert_eq!(s, StatusCode::OK);
    assert!(page.contains("<body data-auth=\"keys\">"), "the page asks for a key before calling");
    let (s, _, _) = fetch(&h, "/playground/app.js").await;
    assert_eq!(s, StatusCode::OK);
    let (s, _, _) = fetch(&h, "/playground/other.js").await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    // Everything else still wants the key.
    let (s, _, _) = fetch(&h, "/playground/a/b.js").await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
    let (s, _, _) = fetch(&h, "/v1/models").await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn off_means_no_page() {
    let mut h = Harness::new().await;
    h.state.playground = false;
    let (s, _, _) = fetch(&h, "/").await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    let (s, _, _) = fetch(&h, "/playground/app.js").await;
    assert_eq!(s, StatusCode::NOT_FOUND);
}

/// The page sorts models into its tabs by their KServe metadata: image classifiers say that
/// `/classify` takes their pictures.
#[tokio::test]
async fn image_models_name_their_classify_endpoint() {
    let h = Harness::new().await;
    let (s, v) = h.get("/v2/models/digits").await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(v["parameters"]["endpoints"], serde_json::json!(["classify"]));
}
