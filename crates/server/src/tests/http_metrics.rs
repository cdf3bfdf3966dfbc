//! `GET /metrics`: Prometheus text with requests by model/version/protocol/status, latency,
//! queue time, batch sizes, queue depth, tokens, load time and state; guarded by the `metrics`
//! scope when keys are configured. Counters are process-wide, so checks look for this test's
//! own model names.

use std::sync::Arc;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use http_body_util::BodyExt;
use serde_json::json;

use super::fake::{write_embedder, write_version, Harness};
use crate::auth::{Auth, KeyLimits};

async fn scrape(h: &Harness, key: Option<&str>) -> (StatusCode, String) {
    let mut r = Request::get("/metrics");
    if let Some(k) = key {
        r = r.header("x-api-key", k);
    }
    let resp = h.send(r.body(Body::empty()).unwrap()).await;
    let status = resp.status();
    let text = String::from_utf8(resp.into_body().collect().await.unwrap().to_bytes().to_vec()).unwrap();
    (status, text)
}

/// The value of the first sample whose line starts with `series` (a name and label prefix).
fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines().find(|l| l.starts_with(series)).and_then(|l| l.rsplit(' ').next()?.parse().ok())
}

#[tokio::test]
async fn requests_batches_tokens_and_states_are_exported() {
    let h = Harness::new().await;
    write_version(h.repo(), "metered", 1, "shift 0");
    write_embedder(h.repo(), "metered-emb", 1, 16);
    super::fake_generator::write_generator(h.repo(), "metered-gen", 1, "");
    h.poll().await;
    for _ in 0..3 {
        let (s, _) = h.json("POST", "/classify?model=metered", json!({ "image": vec![0.0; 784] })).await;
        assert_eq!(s, StatusCode::OK);
    }
    let (s, _) = h
        .json(
            "POST",
            "/v2/models/metered/infer",
            json!({ "inputs": [{ "name": "image", "shape": [1, 784], "datatype": "FP32", "data": vec![0.0; 784] }] }),
        )
        .await;
    assert_eq!(s, StatusCode::OK);
    let (s, _) = h.json("POST", "/classify?model=metered", json!({ "image": vec![9.0; 784] })).await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    let (s, _) = h.json("POST", "/v1/embeddings", json!({ "model": "metered-emb", "input": ["a b", "c"] })).await;
    assert_eq!(s, StatusCode::OK);
    let chat = json!({ "model": "metered-gen", "max_tokens": 5, "messages": [{ "role": "user", "content": "ab" }] });
    let (s, _) = h.json("POST", "/v1/chat/completions", chat).await;
    assert_eq!(s, StatusCode::OK);

    let (status, text) = scrape(&h, None).await;
    assert_eq!(status, StatusCode::OK);
    let req = |proto: &str, code: &str| {
        sample(
            &text,
            &format!(
                "aiserve_requests_total{{model=\"metered\",protocol=\"{proto}\",status=\"{code}\",version=\"1\"}}"
            ),
        )
    };
    assert_eq!(req("classify", "200"), Some(3.0), "{text}");
    assert_eq!(req("kserve", "200"), Some(1.0));
    // A request that failed validation before a version answered has no model label.
    assert!(text.contains("aiserve_requests_total{model=\"\",protocol=\"classify\",status=\"400\",version=\"\"}"));
    assert_eq!(sample(&text, "aiserve_batch_size_count{model=\"metered\",version=\"1\"}"), Some(4.0));
    assert_eq!(sample(&text, "aiserve_queue_duration_seconds_count{model=\"metered\",version=\"1\"}"), Some(4.0));
    assert_eq!(sample(&text, "aiserve_queue_depth{model=\"metered\",version=\"1\"}"), Some(0.0));
    assert!(
        sample(&text, "aiserve_request_duration_seconds_count{model=\"metered\",protocol=\"classify\"}") >= Some(3.0)
    );
    assert_eq!(sample(&text, "aiserve_tokens_total{kind=\"prompt\",model=\"metered-emb\"}"), Some(7.0));
    assert_eq!(sample(&text, "aiserve_tokens_total{kind=\"prompt\",model=\"metered-gen\"}"), Some(2.0));
    assert_eq!(sample(&text, "aiserve_tokens_total{kind=\"generated\",model=\"metered-gen\"}"), Some(5.0));
    let gen = |name: &str| sample(&text, &format!("aiserve_{name}_count{{model=\"metered-gen\",version=\"1\"}}"));
    assert_eq!(gen("time_to_first_token_seconds"), Some(1.0), "{text}");
    assert_eq!(gen("time_per_output_token_seconds"), Some(4.0));
    assert_eq!(sample(&text, "aiserve_model_state{model=\"metered\",state=\"AVAILABLE\",version=\"1\"}"), Some(1.0));
    assert!(sample(&text, "aiserve_model_load_duration_seconds{model=\"metered\",version=\"1\"}").is_some());
    assert!(text.contains("# TYPE aiserve_requests_total counter"));
}

#[tokio::test]
async fn metrics_need_the_metrics_scope() {
    let mut h = Harness::new().await;
    let keys = "metrics-key-01234567 metrics\ninfer-key-0123456789 infer\n";
    h.state.auth = Arc::new(Auth::from_text(keys, KeyLimits::default()).unwrap());
    assert_eq!(scrape(&h, None).await.0, StatusCode::UNAUTHORIZED);
    assert_eq!(scrape(&h, Some("infer-key-0123456789")).await.0, StatusCode::FORBIDDEN);
    assert_eq!(scrape(&h, Some("metrics-key-01234567")).await.0, StatusCode::OK);
}
