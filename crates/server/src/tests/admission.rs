//! Requests against the server-wide limits: the concurrency cap (503 with Retry-After, probes
//! still answered), permits and in-flight counts given back when a client hangs up mid-stream,
//! the memory budget, the generation queue's deadline, and metrics that stay true (concurrent
//! scrapes, no series left for an unloaded version).

use std::time::Duration;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use futures_util::future::join_all;
use http_body_util::BodyExt;
use serde_json::{json, Value};

use super::fake::{error_text, write_version, Harness};
use super::fake_generator::write_generator;
use aiserve_runtime::generation::engine::EngineConfig;
use aiserve_runtime::Limits;

fn chat(extra: Value) -> Request<Body> {
    let mut body = json!({ "model": "gen", "messages": [{ "role": "user", "content": "A" }] });
    body.as_object_mut().unwrap().extend(extra.as_object().unwrap().clone());
    Request::post("/v1/chat/completions")
        .header("content-type", "application/json")
        .body(Body::from(body.to_string()))
        .unwrap()
}

async fn with_generator(limits: Limits, generation: EngineConfig, weights: &str) -> Harness {
    let h = Harness::with_config(limits, generation).await;
    write_generator(h.repo(), "gen", 1, weights);
    h.poll().await;
    h
}

/// Reads a streamed body until `needle` has arrived.
async fn read_until(body: &mut Body, needle: &str) -> String {
    let mut seen = String::new();
    while !seen.contains(needle) {
        let frame = body.frame().await.expect("the stream ended early").unwrap();
        seen.push_str(&String::from_utf8_lossy(frame.data_ref().unwrap()));
    }
    seen
}

#[tokio::test]
async fn the_concurrency_cap_answers_503_and_a_dropped_stream_gives_its_permit_back() {
    let limits = Limits { max_concurrent_requests: 1, ..Limits::default() };
    let h = with_generator(limits, EngineConfig::default(), "sleep 20").await;
    let admission = h.state.admission.clone();
    let mut stream = h.send(chat(json!({ "max_tokens": 60, "stream": true }))).await.into_body();
    read_until(&mut stream, "\"B\"").await;
    assert_eq!(admission.in_use(), 1, "a stream holds its permit until it ends");
    let resp = h.send(Request::get("/v1/models").body(Body::empty()).unwrap()).await;
    assert_eq!(resp.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(resp.headers()["retry-after"], "1");
    let (_, v) = super::fake::read_json(resp).await;
    assert!(v["error"]["message"].as_str().unwrap().contains("--max-concurrent-requests"), "{v}");
    // Probes and metrics never wait behind work.
    assert_eq!(h.get("/v2/health/live").await.0, StatusCode::OK);
    assert_eq!(h.get("/v2/health/ready").await.0, StatusCode::OK);
    // The client hangs up mid-stream: permit and in-flight count come back at once.
    drop(stream);
    assert_eq!(admission.in_use(), 0);
    assert_eq!(h.get("/v1/models").await.0, StatusCode::OK);
}

#[tokio::test]
async fn a_request_dropped_before_its_answer_gives_its_permit_back() {
    let h = Harness::new().await;
    write_version(h.repo(), "slow", 1, "sleep 300");
    h.poll().await;
    let admission = h.state.admission.clone();
    let req = Request::post("/classify?model=slow")
        .header("content-type", "application/json")
        .body(Body::from(json!({ "image": vec![0.0; 784] }).to_string()))
        .unwrap();
    let pending = h.send(req);
    // The client gives up while the model is still computing.
    assert!(tokio::time::timeout(Duration::from_millis(50), pending).await.is_err());
    assert_eq!(admission.in_use(), 0);
}

#[tokio::test]
async fn the_memory_budget_refuses_with_503_or_413_and_frees_what_it_counted() {
    let limits = Limits { memory_budget_bytes: 1 << 20, ..Limits::default() };
    let h = Harness::with_limits(limits).await;
    // One image of 784 zeros as JSON needs ~0.3 MB of parsed tree and tensor: it fits.
    let (s, v) = h.json("POST", "/classify", json!({ "image": vec![0.0; 784] })).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    // Sixteen of them can never fit in 1 MiB: 413 naming the flag, not a retry.
    let (s, v) = h.json("POST", "/classify", json!({ "images": vec![vec![0.0; 784]; 16] })).await;
    assert_eq!(s, StatusCode::PAYLOAD_TOO_LARGE, "{v}");
    assert!(error_text(&v).contains("--memory-budget-mb"), "{v}");
    // While another request holds most of the budget, the same image waits its turn: 503.
    let other = h.state.budget.hold();
    other.grow(1000 << 10, "test").unwrap();
    let resp = h
        .send(
            Request::post("/classify")
                .header("content-type", "application/json")
                .body(Body::from(json!({ "image": vec![0.0; 784] }).to_string()))
                .unwrap(),
        )
        .await;
    assert_eq!(resp.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(resp.headers()["retry-after"], "1");
    drop(other);
    assert_eq!(h.state.budget.used(), 0, "every request gave back what it held");
    assert_eq!(h.json("POST", "/classify", json!({ "image": vec![0.0; 784] })).await.0, StatusCode::OK);
}

#[tokio::test]
async fn generation_waits_in_the_queue_at_most_the_request_timeout() {
    // One sequence at a time: the second request queues behind a long first one.
    let generation = EngineConfig { max_seqs: 1, ..Default::default() };
    let h = with_generator(Limits::default(), generation, "sleep 20").await;
    let mut first = h.send(chat(json!({ "max_tokens": 60, "stream": true }))).await.into_body();
    read_until(&mut first, "\"B\"").await;
    let mut late = chat(json!({ "max_tokens": 5, "stream": true }));
    late.headers_mut().insert("x-request-timeout-ms", "100".parse().unwrap());
    let resp = h.send(late).await;
    assert_eq!(resp.status(), StatusCode::OK, "the stream's head goes out at once");
    let text = String::from_utf8(resp.into_body().collect().await.unwrap().to_bytes().to_vec()).unwrap();
    assert!(text.contains("timed out") && text.ends_with("data: [DONE]\n\n"), "{text}");
    assert_eq!(h.generated.live_seqs.load(std::sync::atomic::Ordering::SeqCst), 1, "only the first still runs");
    // Triton's `parameters.timeout` (µs) on KServe generate bounds the wait the same way.
    let body = json!({ "text_input": "A", "parameters": { "max_tokens": 5, "timeout": 100_000 } });
    let (status, v) = h.json("POST", "/v2/models/gen/generate", body).await;
    assert_eq!(status, StatusCode::GATEWAY_TIMEOUT, "{v}");
    drop(first);
}

#[tokio::test]
async fn concurrent_scrapes_all_see_every_model_state() {
    let h = Harness::new().await;
    let scrapes = join_all((0..16).map(|_| h.get_text("/metrics"))).await;
    for text in scrapes {
        assert!(text.contains("aiserve_model_state{model=\"digits\",state=\"AVAILABLE\",version=\"1\"} 1"), "{text}");
    }
}

#[tokio::test]
async fn an_unloaded_version_leaves_no_series_behind() {
    let h = Harness::new().await;
    write_version(h.repo(), "stale", 1, "shift 0");
    h.poll().await;
    assert_eq!(h.json("POST", "/classify?model=stale", json!({ "image": vec![0.0; 784] })).await.0, StatusCode::OK);
    let series = "{model=\"stale\",version=\"1\"}";
    assert!(h.get_text("/metrics").await.contains(&format!("aiserve_batch_size_count{series}")));
    std::fs::remove_dir_all(h.repo().join("stale")).unwrap();
    h.poll().await;
    let text = h.get_text("/metrics").await;
    // What remains: the per-model request history, and the registry's record of the version.
    for line in text.lines().filter(|l| l.contains("model=\"stale\"")) {
        let kept = line.starts_with("aiserve_requests_total")
            || line.starts_with("aiserve_request_duration_seconds")
            || line.contains("state=\"END\"");
        assert!(kept, "stale series after unloading: {line}");
    }
}
