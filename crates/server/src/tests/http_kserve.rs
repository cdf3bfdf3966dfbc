//! KServe v2: health, metadata, readiness, infer in every shape, the binary extension, errors.

use axum::body::Body;
use axum::http::{Request, StatusCode};
use http_body_util::BodyExt;
use serde_json::{json, Value};

use super::fake::{error_text, Harness};

fn infer_body(shape: Value, data: Value) -> Value {
    json!({ "id": "req-1", "inputs": [{ "name": "image", "shape": shape, "datatype": "FP32", "data": data }] })
}

#[tokio::test]
async fn health_and_metadata() {
    let h = Harness::new().await;
    assert_eq!(h.get("/v2/health/live").await.0, StatusCode::OK);
    assert_eq!(h.get("/v2/health/ready").await.0, StatusCode::OK);
    let (s, v) = h.get("/v2").await;
    assert_eq!((s, v["name"].as_str()), (StatusCode::OK, Some("aiserve")));
    let (s, v) = h.get("/v2/models/digits").await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["versions"], json!(["1"]));
    assert_eq!(v["inputs"][0], json!({ "name": "image", "datatype": "FP32", "shape": [-1, 28, 28, 1] }));
    assert_eq!(v["outputs"][0]["name"], "probabilities");
    assert_eq!(h.get("/v2/models/digits/versions/1").await.0, StatusCode::OK);
    assert_eq!(h.get("/v2/models/digits/ready").await, (StatusCode::OK, json!({ "name": "digits", "ready": true })));
    assert_eq!(h.get("/v2/models/digits/versions/1/ready").await.0, StatusCode::OK);
    assert_eq!(h.get("/v2/models/digits/versions/2/ready").await.0, StatusCode::BAD_REQUEST);
    assert_eq!(h.get("/v2/models/other/ready").await.0, StatusCode::NOT_FOUND);
    assert_eq!(h.get("/v2/models/other").await.0, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn infers_every_accepted_shape_nested_or_flat() {
    let h = Harness::new().await;
    let img = vec![2.0f32 / 9.0; 784];
    for shape in [json!([2, 28, 28, 1]), json!([2, 28, 28]), json!([2, 784])] {
        let data: Vec<f32> = img.iter().chain(&vec![1.0; 784]).copied().collect();
        let (s, v) = h.json("POST", "/v2/models/digits/infer", infer_body(shape.clone(), json!(data))).await;
        assert_eq!(s, StatusCode::OK, "{shape}: {v}");
        assert_eq!(v["model_name"], "digits");
        assert_eq!(v["model_version"], "1");
        assert_eq!(v["id"], "req-1");
        assert_eq!(v["outputs"][0]["shape"], json!([2, 10]));
        assert_eq!(v["outputs"][0]["datatype"], "FP32");
        assert_eq!(v["outputs"][1], json!({ "name": "label", "datatype": "INT64", "shape": [2], "data": [2, 9] }));
    }
    let nested = json!([vec![vec![vec![0.0]; 28]; 28]]);
    let (s, v) = h.json("POST", "/v2/models/digits/versions/1/infer", infer_body(json!([1, 28, 28, 1]), nested)).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let req = json!({ "inputs": [{ "name": "image", "shape": [1, 784], "datatype": "FP32", "data": vec![0.0; 784] }], "outputs": [{ "name": "label" }] });
    let (s, v) = h.json("POST", "/v2/models/digits/infer", req).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(v["outputs"].as_array().unwrap().len(), 1);
}

#[tokio::test]
async fn binary_tensor_extension_in_and_out() {
    let h = Harness::new().await;
    let pixels: Vec<u8> = std::iter::repeat_n(1.0f32, 784).flat_map(|v| v.to_le_bytes()).collect();
    let header = json!({
        "inputs": [{ "name": "image", "shape": [1, 28, 28, 1], "datatype": "FP32", "parameters": { "binary_data_size": pixels.len() } }],
        "outputs": [{ "name": "probabilities", "parameters": { "binary_data": true } }, { "name": "label", "parameters": { "binary_data": false } }]
    })
    .to_string();
    let mut body = header.clone().into_bytes();
    body.extend_from_slice(&pixels);
    let req = Request::post("/v2/models/digits/infer")
        .header("inference-header-content-length", header.len())
        .header("content-type", "application/octet-stream")
        .body(Body::from(body))
        .unwrap();
    let resp = h.send(req).await;
    assert_eq!(resp.status(), StatusCode::OK);
    let json_len: usize = resp.headers()["inference-header-content-length"].to_str().unwrap().parse().unwrap();
    let bytes = resp.into_body().collect().await.unwrap().to_bytes();
    let head: Value = serde_json::from_slice(&bytes[..json_len]).unwrap();
    assert_eq!(head["outputs"][0]["parameters"]["binary_data_size"], 40);
    assert_eq!(head["outputs"][1]["data"], json!([9]));
    let probs: Vec<f32> = bytes[json_len..].chunks(4).map(|c| f32::from_le_bytes(c.try_into().unwrap())).collect();
    assert_eq!(probs.len(), 10);
    assert!((probs[9] - 0.91).abs() < 1e-6);
}

#[tokio::test]
async fn infer_errors_name_the_problem() {
    let h = Harness::new().await;
    let cases = [
        (infer_body(json!([1, 27, 28]), json!(vec![0.0; 756])), "[N,28,28,1], [N,28,28], [N,784]"),
        (infer_body(json!([2, 784]), json!(vec![0.0; 784])), "needs 1568 values, got 784"),
        (infer_body(json!([1, 784]), json!(vec![2.0; 784])), "out of range"),
        (infer_body(json!([-1, 784]), json!(vec![0.0; 784])), "non-negative"),
        (
            json!({ "inputs": [{ "name": "x", "shape": [1, 784], "datatype": "FP32", "data": [0] }] }),
            "unknown input `x`",
        ),
        (json!({ "inputs": [{ "name": "image", "shape": [1, 784], "datatype": "BYTES", "data": ["a"] }] }), "datatype"),
        (json!({ "inputs": [] }), "exactly one input"),
        (
            json!({ "inputs": [{ "name": "image", "shape": [1, 784], "datatype": "FP32" }] }),
            "`inputs[0].data` is missing",
        ),
        (
            json!({ "inputs": [{ "name": "image", "shape": [1, 784], "datatype": "FP32", "data": vec![0.0; 784] }], "outputs": [{ "name": "logits" }] }),
            "unknown output `logits`",
        ),
        (json!({ "input": [] }), "malformed JSON"),
    ];
    for (body, want) in cases {
        let (s, v) = h.json("POST", "/v2/models/digits/infer", body.clone()).await;
        assert_eq!(s, StatusCode::BAD_REQUEST, "{body}: {v}");
        assert!(error_text(&v).contains(want), "{want:?} not in {v}");
    }
    let (s, _) = h.json("POST", "/v2/models/nope/infer", infer_body(json!([1, 784]), json!(vec![0.0; 784]))).await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    let (s, _) =
        h.json("POST", "/v2/models/digits/versions/9/infer", infer_body(json!([1, 784]), json!(vec![0.0; 784]))).await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    // NaN and infinity cannot be written in JSON, but binary tensors can carry them.
    for bad in [f32::NAN, f32::INFINITY] {
        let mut pixels: Vec<u8> = vec![0u8; 783 * 4];
        pixels.extend_from_slice(&bad.to_le_bytes());
        let header = json!({ "inputs": [{ "name": "image", "shape": [1, 784], "datatype": "FP32",
            "parameters": { "binary_data_size": pixels.len() } }] })
        .to_string();
        let mut body = header.clone().into_bytes();
        body.extend_from_slice(&pixels);
        let req = Request::post("/v2/models/digits/infer")
            .header("inference-header-content-length", header.len())
            .body(Body::from(body))
            .unwrap();
        let (s, v) = super::fake::read_json(h.send(req).await).await;
        assert_eq!(s, StatusCode::BAD_REQUEST);
        assert!(error_text(&v).contains("value 783 is not a finite number"), "{v}");
    }
    let req = Request::post("/v2/models/digits/infer")
        .header("inference-header-content-length", "99999")
        .body(Body::from("{}"))
        .unwrap();
    let (s, v) = super::fake::read_json(h.send(req).await).await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    assert!(error_text(&v).contains("only 2 bytes"), "{v}");
}
