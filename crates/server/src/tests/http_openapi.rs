//! `/openapi.json`: open, valid OpenAPI 3.1, and true to the server: every documented path is
//! routed (no fallback answer) and names the scope the key check enforces.

use std::sync::Arc;

use axum::body::Body;
use axum::http::{Request, StatusCode};

use super::fake::{read_json, Harness};
use crate::auth::{required_scope, Auth};
use crate::http::openapi::{method_name, ROUTES};

#[tokio::test]
async fn document_is_open_and_matches_the_routes_and_scopes() {
    let mut h = Harness::new().await;
    std::fs::write(h.repo().join("digits/model.toml"), "[version_labels]\nstable = 1\n").unwrap();
    h.poll().await;
    let (s, doc) = h.get("/openapi.json").await;
    assert_eq!(s, StatusCode::OK);
    assert!(doc["openapi"].as_str().unwrap().starts_with("3.1"), "{}", doc["openapi"]);
    let documented: usize = doc["paths"].as_object().unwrap().values().map(|p| p.as_object().unwrap().len()).sum();
    assert_eq!(documented, ROUTES.len());

    for r in ROUTES {
        assert_eq!(r.scope, required_scope(r.path), "{}: documented scope differs from the enforced one", r.path);
        let op = &doc["paths"][r.path][method_name(&r.method)];
        match r.scope {
            Some(s) => assert_eq!(op["security"][0]["bearer"][0], s.name(), "{}", r.path),
            None => assert!(op.get("security").is_none(), "{}", r.path),
        }
        let uri = r.path.replace("{model}", "digits").replace("{version}", "1").replace("{label}", "stable");
        let req = Request::builder()
            .method(method_name(&r.method).to_uppercase().as_str())
            .uri(&uri)
            .header("content-type", "application/json")
            .body(Body::from(if method_name(&r.method) == "post" { "{}" } else { "" }))
            .unwrap();
        let (status, v) = read_json(h.send(req).await).await;
        let text = v["error"].as_str().unwrap_or_default();
        assert!(
            !text.contains("no route for") && !text.contains("no TF Serving route"),
            "{uri} is documented but not routed: {status} {v}"
        );
    }

    // Open even when keys are configured.
    h.state.auth = Arc::new(Auth::from_text("k-0123456789abcdef infer", Default::default()).unwrap());
    let (s, _) = h.get("/openapi.json").await;
    assert_eq!(s, StatusCode::OK);
}
