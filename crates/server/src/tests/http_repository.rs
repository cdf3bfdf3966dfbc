//! The KServe repository extension: index with states and reasons, unload that survives polls,
//! load that answers with the load result.

use axum::http::StatusCode;
use serde_json::{json, Value};

use super::fake::{write_version, Harness};

fn row<'a>(index: &'a Value, name: &str, version: &str) -> &'a Value {
    index
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["name"] == name && r["version"] == version)
        .unwrap_or_else(|| panic!("{name} {version} missing from {index}"))
}

async fn classify(h: &Harness, model: &str) -> StatusCode {
    h.json("POST", &format!("/classify?model={model}"), json!({ "image": vec![0.0; 784] })).await.0
}

#[tokio::test]
async fn index_unload_and_load() {
    let h = Harness::new().await;
    write_version(h.repo(), "broken", 1, "not weights");
    h.poll().await;
    let (s, index) = h.json("POST", "/v2/repository/index", json!({})).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(row(&index, "digits", "1")["state"], "READY");
    let broken = row(&index, "broken", "1");
    assert_eq!(broken["state"], "UNAVAILABLE");
    assert!(broken["reason"].as_str().unwrap().contains("unreadable fake weights"), "{broken}");
    let (_, ready) = h.json("POST", "/v2/repository/index", json!({ "ready": true })).await;
    assert_eq!(ready.as_array().unwrap().len(), 1, "{ready}");

    let (s, v) = h.json("POST", "/v2/repository/models/digits/unload", json!({})).await;
    assert_eq!((s, v), (StatusCode::OK, json!({})));
    h.poll().await; // the poller must not bring it back
    assert_eq!(classify(&h, "digits").await, StatusCode::SERVICE_UNAVAILABLE);
    let (_, index) = h.json("POST", "/v2/repository/index", json!({})).await;
    assert_eq!(row(&index, "digits", "1")["state"], "UNAVAILABLE");
    assert_eq!(row(&index, "digits", "1")["reason"], "unloaded");

    let (s, _) = h.json("POST", "/v2/repository/models/digits/load", json!({})).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(classify(&h, "digits").await, StatusCode::OK);
    h.poll().await;
    assert_eq!(classify(&h, "digits").await, StatusCode::OK);
}

#[tokio::test]
async fn load_reports_failures_and_unknown_models() {
    let h = Harness::new().await;
    write_version(h.repo(), "broken", 1, "not weights");
    let (s, v) = h.json("POST", "/v2/repository/models/broken/load", json!({})).await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    assert!(v["error"].as_str().unwrap().contains("failed to load"), "{v}");
    let (s, _) = h.json("POST", "/v2/repository/models/ghost/load", json!({})).await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    let (s, _) = h.json("POST", "/v2/repository/models/ghost/unload", json!({})).await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    let (s, _) = h.json("POST", "/v2/repository/index", json!({ "ready": "yes" })).await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
}
