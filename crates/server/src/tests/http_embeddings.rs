//! Text embeddings over HTTP with the fake embedder (`[tokens, sum of ids, first, last]` per
//! text; a word's id is its length): OpenAI `/v1/embeddings` and `/v1/models`, KServe BYTES in
//! JSON and binary form, every input error in OpenAI's shape, and token-budget batching.

use axum::body::Body;
use axum::http::{Request, StatusCode};
use base64::Engine;
use futures_util::future::join_all;
use http_body_util::BodyExt;
use serde_json::{json, Value};

use super::fake::{write_embedder, Harness};
use aiserve_runtime::{Limits, TextLimits};

async fn with_embedder(limits: Limits, model_toml: Option<&str>) -> Harness {
    let h = Harness::with_limits(limits).await;
    write_embedder(h.repo(), "emb", 1, 16);
    if let Some(t) = model_toml {
        std::fs::write(h.repo().join("emb/model.toml"), t).unwrap();
    }
    h.poll().await;
    h
}

async fn embed(h: &Harness, body: Value) -> (StatusCode, Value) {
    h.json("POST", "/v1/embeddings", body).await
}

fn vectors(v: &Value) -> Vec<Vec<f64>> {
    v["data"]
        .as_array()
        .unwrap()
        .iter()
        .enumerate()
        .map(|(i, d)| {
            assert_eq!(d["index"], i);
            assert_eq!(d["object"], "embedding");
            d["embedding"].as_array().unwrap().iter().map(|x| x.as_f64().unwrap()).collect()
        })
        .collect()
}

/// The OpenAI error shape, with the parameter it names.
fn openai_error(v: &Value) -> (String, Value) {
    let e = &v["error"];
    assert!(e["type"].is_string() && e.get("code").is_some(), "not OpenAI's error shape: {v}");
    (e["message"].as_str().unwrap().to_owned(), e["param"].clone())
}

#[tokio::test]
async fn embeddings_for_each_input_form_with_real_usage() {
    let h = with_embedder(Limits::default(), None).await;
    let (s, v) = embed(&h, json!({ "model": "emb", "input": "one three" })).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(vectors(&v), [[4.0, 101.0 + 3.0 + 5.0 + 102.0, 101.0, 102.0]]);
    assert_eq!((v["object"].as_str(), v["model"].as_str()), (Some("list"), Some("emb")));
    assert_eq!(v["usage"], json!({ "prompt_tokens": 4, "total_tokens": 4 }));

    let (_, v) = embed(&h, json!({ "model": "emb", "input": ["a", "bb cc"] })).await;
    assert_eq!(vectors(&v)[0][0], 3.0);
    assert_eq!(vectors(&v)[1][0], 4.0);
    assert_eq!(v["usage"]["prompt_tokens"], 7);

    // Token ids are used as given.
    let (_, v) = embed(&h, json!({ "model": "emb", "input": [7, 8, 9] })).await;
    assert_eq!(vectors(&v), [[3.0, 24.0, 7.0, 9.0]]);
    let (_, v) = embed(&h, json!({ "model": "emb", "input": [[1], [2, 3]] })).await;
    assert_eq!(vectors(&v), [[1.0, 1.0, 1.0, 1.0], [2.0, 5.0, 2.0, 3.0]]);
    assert_eq!(v["usage"]["total_tokens"], 3);
}

#[tokio::test]
async fn base64_and_dimensions() {
    let h = with_embedder(Limits::default(), None).await;
    let (s, v) =
        embed(&h, json!({ "model": "emb", "input": "hello", "encoding_format": "base64", "dimensions": 2 })).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let bytes = base64::engine::general_purpose::STANDARD.decode(v["data"][0]["embedding"].as_str().unwrap()).unwrap();
    let floats: Vec<f32> = bytes.chunks_exact(4).map(|c| f32::from_le_bytes(c.try_into().unwrap())).collect();
    assert_eq!(floats, [3.0, 208.0]);
    for bad in [json!(0), json!(5), json!("2"), json!(1.5)] {
        let (s, v) = embed(&h, json!({ "model": "emb", "input": "x", "dimensions": bad })).await;
        assert_eq!(s, StatusCode::BAD_REQUEST);
        let (msg, param) = openai_error(&v);
        assert_eq!(param, "dimensions");
        assert!(msg.contains("1..=4"), "{msg}");
    }
}

#[tokio::test]
async fn bad_input_gets_a_clear_openai_error() {
    let limits = Limits { text: TextLimits { max_inputs: 3, auto_truncate: false }, ..Limits::default() };
    let h = with_embedder(limits, None).await;
    let long = "w ".repeat(20);
    let cases = [
        (json!({ "model": "emb", "input": [] }), StatusCode::BAD_REQUEST, "input", "at least one text"),
        (json!({ "model": "emb", "input": "" }), StatusCode::BAD_REQUEST, "input[0]", "empty string"),
        (json!({ "model": "emb", "input": ["a", ""] }), StatusCode::BAD_REQUEST, "input[1]", "empty string"),
        (json!({ "model": "emb", "input": ["a", 3] }), StatusCode::BAD_REQUEST, "input[1]", "must be a string"),
        (json!({ "model": "emb", "input": [1, -2] }), StatusCode::BAD_REQUEST, "input[1]", "token id"),
        (json!({ "model": "emb", "input": [5000] }), StatusCode::BAD_REQUEST, "input[0]", "vocabulary has 1000"),
        (json!({ "model": "emb", "input": [[]] }), StatusCode::BAD_REQUEST, "input[0]", "empty token list"),
        (json!({ "model": "emb", "input": {"a": 1} }), StatusCode::BAD_REQUEST, "input", "got an object"),
        (
            json!({ "model": "emb", "input": ["a", "b", "c", "d"] }),
            StatusCode::BAD_REQUEST,
            "input",
            "at most 3, got 4",
        ),
        (
            json!({ "model": "emb", "input": long }),
            StatusCode::BAD_REQUEST,
            "input[0]",
            "22 tokens; the model takes at most 16",
        ),
        (json!({ "input": "x" }), StatusCode::BAD_REQUEST, "model", "`model` is required"),
        (json!({ "model": "emb" }), StatusCode::BAD_REQUEST, "input", "`input` is required"),
        (
            json!({ "model": "emb", "input": "x", "encoding_format": "int8" }),
            StatusCode::BAD_REQUEST,
            "encoding_format",
            "\"float\" or \"base64\"",
        ),
        (
            json!({ "model": "emb", "input": "x", "temperature": 1 }),
            StatusCode::BAD_REQUEST,
            "temperature",
            "unknown field",
        ),
        (json!({ "model": "nope", "input": "x" }), StatusCode::NOT_FOUND, "", "not served here"),
        (json!({ "model": "digits", "input": "x" }), StatusCode::BAD_REQUEST, "", "is an image classifier"),
    ];
    for (body, status, param, text) in cases {
        let (s, v) = embed(&h, body.clone()).await;
        assert_eq!(s, status, "{body} -> {v}");
        let (msg, got_param) = openai_error(&v);
        assert!(msg.contains(text), "{body}: {msg}");
        if !param.is_empty() {
            assert_eq!(got_param, param, "{body}");
        }
    }
    let (_, v) = embed(&h, json!({ "model": "nope", "input": "x" })).await;
    assert_eq!(v["error"]["code"], "model_not_found");
    let (s, _) = h.raw("/v1/embeddings", "application/json", b"{not json".to_vec()).await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn auto_truncate_cuts_long_texts_the_tokenizers_way() {
    let limits = Limits { text: TextLimits { max_inputs: 8, auto_truncate: true }, ..Limits::default() };
    let h = with_embedder(limits, None).await;
    let (s, v) = embed(&h, json!({ "model": "emb", "input": "w ".repeat(20) })).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(vectors(&v)[0], [16.0, 101.0 + 14.0 + 102.0, 101.0, 102.0]);
    assert_eq!(v["usage"]["prompt_tokens"], 16);
}

#[tokio::test]
async fn models_list_and_image_routes_refuse_text_models() {
    let h = with_embedder(Limits::default(), None).await;
    let (s, v) = h.get("/v1/models").await;
    assert_eq!(s, StatusCode::OK);
    let ids: Vec<&str> = v["data"].as_array().unwrap().iter().map(|m| m["id"].as_str().unwrap()).collect();
    assert_eq!(ids, ["digits", "emb"]);
    assert!(v["data"][1]["created"].as_u64().unwrap() > 1_700_000_000);
    let (s, v) = h.json("POST", "/classify?model=emb", json!({ "image": vec![0.0; 784] })).await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    assert!(v["error"].as_str().unwrap().contains("text embedding model"), "{v}");
    let (s, _) = h.json("POST", "/v1/models/emb:predict", json!({ "instances": [[0.0]] })).await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn kserve_bytes_in_json_and_binary() {
    let h = with_embedder(Limits::default(), None).await;
    let (s, v) = h.get("/v2/models/emb").await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(v["inputs"][0], json!({ "name": "text", "datatype": "BYTES", "shape": [-1] }));
    assert_eq!(v["outputs"][0]["shape"], json!([-1, 4]));

    let req = json!({ "id": "r1", "inputs": [{ "name": "text", "shape": [2], "datatype": "BYTES", "data": ["a b", "ccc"] }] });
    let (s, v) = h.json("POST", "/v2/models/emb/infer", req).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["id"], "r1");
    assert_eq!(v["outputs"][0]["shape"], json!([2, 4]));
    assert_eq!(v["outputs"][0]["data"], json!([4.0, 205.0, 101.0, 102.0, 3.0, 206.0, 101.0, 102.0]));

    // Binary in (length-prefixed elements) and binary out.
    let mut tail = Vec::new();
    for t in ["a b", "ccc"] {
        tail.extend_from_slice(&(t.len() as u32).to_le_bytes());
        tail.extend_from_slice(t.as_bytes());
    }
    let header = json!({
        "inputs": [{ "name": "text", "shape": [2], "datatype": "BYTES", "parameters": { "binary_data_size": tail.len() } }],
        "outputs": [{ "name": "embedding", "parameters": { "binary_data": true } }]
    })
    .to_string();
    let mut body = header.clone().into_bytes();
    body.extend_from_slice(&tail);
    let resp = h
        .send(
            Request::post("/v2/models/emb/infer")
                .header("inference-header-content-length", header.len())
                .body(Body::from(body))
                .unwrap(),
        )
        .await;
    assert_eq!(resp.status(), StatusCode::OK);
    let n: usize = resp.headers()["inference-header-content-length"].to_str().unwrap().parse().unwrap();
    let bytes = resp.into_body().collect().await.unwrap().to_bytes();
    let floats: Vec<f32> = bytes[n..].chunks_exact(4).map(|c| f32::from_le_bytes(c.try_into().unwrap())).collect();
    assert_eq!(floats, [4.0, 205.0, 101.0, 102.0, 3.0, 206.0, 101.0, 102.0]);

    for (req, text) in [
        (json!({ "inputs": [{ "name": "text", "shape": [1], "datatype": "FP32", "data": [1.0] }] }), "must be BYTES"),
        (json!({ "inputs": [{ "name": "txt", "shape": [1], "datatype": "BYTES", "data": ["a"] }] }), "unknown input"),
        (json!({ "inputs": [{ "name": "text", "shape": [3], "datatype": "BYTES", "data": ["a"] }] }), "does not match"),
        (json!({ "inputs": [{ "name": "text", "shape": [1], "datatype": "BYTES", "data": [1] }] }), "must be a string"),
        (json!({ "inputs": [{ "name": "text", "shape": [1], "datatype": "BYTES", "data": [""] }] }), "empty string"),
    ] {
        let (s, v) = h.json("POST", "/v2/models/emb/infer", req).await;
        assert_eq!(s, StatusCode::BAD_REQUEST);
        assert!(v["error"].as_str().unwrap().contains(text), "{v}");
    }
}

/// Texts from concurrent requests share forward passes up to `max_batch_tokens`; a request
/// bigger than that is split across passes and still answered in its own order.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn token_budget_batching_packs_and_splits() {
    let toml = "max_batch_tokens = 512\nmax_queue_delay_us = 200000";
    let h = with_embedder(Limits::default(), Some(toml)).await;
    // 8 clients of 5 texts of 13 or 14 tokens (68 each): 544 tokens, more than one pass holds.
    let bodies: Vec<Value> = (0..8)
        .map(|c| {
            let texts: Vec<String> = (0..5).map(|t| vec!["x".repeat(c + 1); 12 - t % 2].join(" ")).collect();
            json!({ "model": "emb", "input": texts })
        })
        .collect();
    let answers = join_all(bodies.iter().map(|b| embed(&h, b.clone()))).await;
    for (c, (s, v)) in answers.iter().enumerate() {
        assert_eq!(*s, StatusCode::OK, "{v}");
        for (t, vec) in vectors(v).iter().enumerate() {
            let words = 12 - t % 2;
            assert_eq!(vec[..2], [(words + 2) as f64, (203 + words * (c + 1)) as f64], "client {c} text {t}");
        }
    }
    let passes = h.observed.batch_sizes.lock().unwrap().clone();
    assert!(passes.iter().all(|&t| t <= 512), "{passes:?}");
    assert_eq!(passes.iter().sum::<usize>(), 8 * 68, "every text ran exactly once");
    assert!(passes.len() >= 2 && passes.len() < 8, "requests were packed together: {passes:?}");

    // One request over the budget: 40 texts of 14 tokens = 560 tokens, split, in order.
    let texts: Vec<String> = (0..40).map(|i| vec!["y".repeat(1 + i % 5); 12].join(" ")).collect();
    let (s, v) = embed(&h, json!({ "model": "emb", "input": texts })).await;
    assert_eq!(s, StatusCode::OK);
    for (i, vec) in vectors(&v).iter().enumerate() {
        assert_eq!(vec[1], (203 + 12 * (1 + i % 5)) as f64, "text {i}");
    }
}
