//! API keys over HTTP: 401 vs 403 on every kind of route, both header forms, open probes,
//! per-key rate and concurrency limits answering 429 with Retry-After, OpenAI error shape on
//! OpenAI routes, and the unknown-route fallback covered too.

use std::sync::Arc;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use futures_util::future::join_all;
use serde_json::json;

use super::fake::{read_json, write_version, Harness};
use crate::auth::{Auth, KeyLimits};

const INFER: &str = "infer-key-0123456789";
const ADMIN: &str = "admin-key-0123456789";
const METRICS: &str = "metrics-key-01234567";
const LIMITED: &str = "limited-key-01234567";

async fn secured(extra: &str) -> Harness {
    let mut h = Harness::new().await;
    let text = format!("{INFER} infer\n{ADMIN} admin,infer\n{METRICS} metrics\n{extra}");
    h.state.auth = Arc::new(Auth::from_text(&text, KeyLimits::default()).unwrap());
    h
}

fn get(uri: &str, key: Option<&str>, bearer: bool) -> Request<Body> {
    let mut r = Request::get(uri);
    if let Some(k) = key {
        r = if bearer { r.header("authorization", format!("Bearer {k}")) } else { r.header("x-api-key", k) };
    }
    r.body(Body::empty()).unwrap()
}

fn classify(key: &str) -> Request<Body> {
    Request::post("/classify")
        .header("authorization", format!("Bearer {key}"))
        .header("content-type", "application/json")
        .body(Body::from(json!({ "image": vec![0.0; 784] }).to_string()))
        .unwrap()
}

#[tokio::test]
async fn keys_gate_every_route_with_401_and_403() {
    let h = secured("").await;
    for uri in ["/v2/models/digits", "/v1/models/digits", "/v1/models", "/v2/models/digits/ready", "/no/such/route"] {
        let resp = h.send(get(uri, None, true)).await;
        assert_eq!(resp.status(), StatusCode::UNAUTHORIZED, "{uri}");
        assert_eq!(resp.headers()["www-authenticate"], "Bearer");
        let (s, v) = read_json(h.send(get(uri, Some("wrong-key-0123456789"), true)).await).await;
        assert_eq!(s, StatusCode::UNAUTHORIZED, "{uri}: {v}");
        let (s, _) = read_json(h.send(get(uri, Some(METRICS), true)).await).await;
        assert_eq!(s, StatusCode::FORBIDDEN, "{uri}: a metrics key cannot infer");
    }
    // Both header forms work; the route answers normally.
    for bearer in [true, false] {
        let (s, v) = read_json(h.send(get("/v2/models/digits", Some(INFER), bearer)).await).await;
        assert_eq!(s, StatusCode::OK, "{v}");
    }
    let (s, v) = read_json(h.send(classify(INFER)).await).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    // Probes stay open.
    assert_eq!(h.send(get("/v2/health/live", None, true)).await.status(), StatusCode::OK);
    assert_eq!(h.send(get("/v2/health/ready", None, true)).await.status(), StatusCode::OK);
    // The admin scope is separate from infer.
    let resp =
        h.send(Request::post("/v2/repository/index").header("x-api-key", INFER).body(Body::empty()).unwrap()).await;
    assert_eq!(resp.status(), StatusCode::FORBIDDEN);
    let (_, v) = read_json(resp).await;
    assert!(v["error"].as_str().unwrap().contains("`admin` scope"), "{v}");
    // OpenAI routes answer in OpenAI's error shape.
    let (s, v) = h.json("POST", "/v1/embeddings", json!({ "model": "x", "input": "y" })).await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
    assert_eq!(v["error"]["code"], "invalid_api_key", "{v}");
}

#[tokio::test]
async fn open_server_needs_no_key() {
    let h = Harness::new().await;
    assert_eq!(h.send(get("/v2/models/digits", None, true)).await.status(), StatusCode::OK);
}

#[tokio::test]
async fn per_key_rate_limit_answers_429_with_retry_after() {
    let h = secured(&format!("{LIMITED} infer rps=2")).await;
    let mut statuses = Vec::new();
    for _ in 0..4 {
        let resp = h.send(classify(LIMITED)).await;
        if resp.status() == StatusCode::TOO_MANY_REQUESTS {
            assert!(resp.headers()["retry-after"].to_str().unwrap().parse::<u64>().unwrap() >= 1);
        }
        statuses.push(resp.status());
    }
    assert_eq!(statuses[..2], [StatusCode::OK, StatusCode::OK], "{statuses:?}");
    assert!(statuses[2..].contains(&StatusCode::TOO_MANY_REQUESTS), "{statuses:?}");
    // Another key is not affected.
    assert_eq!(h.send(classify(INFER)).await.status(), StatusCode::OK);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn per_key_concurrency_limit() {
    let h = secured(&format!("{LIMITED} infer concurrency=1")).await;
    write_version(h.repo(), "slow", 1, "sleep 300");
    h.poll().await;
    let slow = |key: &str| {
        Request::post("/classify?model=slow")
            .header("x-api-key", key)
            .header("content-type", "application/json")
            .body(Body::from(json!({ "image": vec![0.0; 784] }).to_string()))
            .unwrap()
    };
    let answers = join_all((0..3).map(|_| h.send(slow(LIMITED)))).await;
    let statuses: Vec<StatusCode> = answers.iter().map(|r| r.status()).collect();
    assert_eq!(statuses.iter().filter(|s| **s == StatusCode::OK).count(), 1, "{statuses:?}");
    assert_eq!(statuses.iter().filter(|s| **s == StatusCode::TOO_MANY_REQUESTS).count(), 2, "{statuses:?}");
    // The permit is released with the response: the next request goes through.
    assert_eq!(h.send(slow(LIMITED)).await.status(), StatusCode::OK);
}

#[tokio::test]
async fn an_open_stream_holds_its_keys_concurrency_permit() {
    use http_body_util::BodyExt;
    let h = secured(&format!("{LIMITED} infer concurrency=1")).await;
    super::fake_generator::write_generator(h.repo(), "gen", 1, "sleep 20");
    h.poll().await;
    let chat = |stream: bool| {
        Request::post("/v1/chat/completions")
            .header("authorization", format!("Bearer {LIMITED}"))
            .header("content-type", "application/json")
            .body(Body::from(
                json!({ "model": "gen", "stream": stream, "max_tokens": 20, "messages": [{ "role": "user", "content": "A" }] })
                    .to_string(),
            ))
            .unwrap()
    };
    let resp = h.send(chat(true)).await;
    assert_eq!(resp.status(), StatusCode::OK);
    let mut body = resp.into_body();
    body.frame().await.unwrap().unwrap();
    // The stream is still open: a second request with the same key is over its limit.
    let (s, v) = read_json(h.send(chat(false)).await).await;
    assert_eq!(s, StatusCode::TOO_MANY_REQUESTS, "{v}");
    assert_eq!(v["error"]["code"], "rate_limit_exceeded");
    while body.frame().await.is_some() {}
    drop(body);
    let (s, v) = read_json(h.send(chat(false)).await).await;
    assert_eq!(s, StatusCode::OK, "{v}");
}
