//! Graph (ONNX-like) models through every protocol with the fake graph (`fake_graph`): typed
//! tensors keep their type (INT64 past 2^24, BYTES out), several inputs by name, outputs asked
//! for by name, errors naming the input, batching of concurrent requests, TF Serving's row and
//! columnar formats, KServe gRPC.

use axum::body::Body;
use axum::http::{Request, StatusCode};
use http_body_util::BodyExt;
use serde_json::{json, Value};

use super::fake::{error_text, Harness};
use super::fake_graph::GRAPH_FILE;
use super::grpc_kserve::{f32s, i64s, le_f32, serve};
use crate::grpc::pb::inference as pb;

async fn harness(graph: &str) -> Harness {
    let h = Harness::new().await;
    let dir = h.repo().join("g/1");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join(GRAPH_FILE), graph).unwrap();
    h.poll().await;
    h
}

fn inputs(x: Value, x_shape: Value, ids: Value, ids_shape: Value) -> Value {
    json!({ "inputs": [
        { "name": "ids", "datatype": "INT64", "shape": ids_shape, "data": ids },
        { "name": "x", "datatype": "FP32", "shape": x_shape, "data": x },
    ] })
}

#[tokio::test]
async fn metadata_comes_from_the_graph() {
    let h = harness("").await;
    let (s, v) = h.get("/v2/models/g").await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["platform"], "onnxruntime_onnx");
    assert_eq!(v["inputs"][1], json!({ "name": "ids", "datatype": "INT64", "shape": [-1, -1] }));
    assert_eq!(v["outputs"][2], json!({ "name": "name", "datatype": "BYTES", "shape": [-1] }));
    assert_eq!(v["parameters"]["graph"]["producer"], "fake");
    assert_eq!(v["parameters"]["batching"], true);
    let (s, v) = h.get("/v1/models/g/metadata").await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let sig = &v["metadata"]["signature_def"]["signature_def"]["serving_default"];
    assert_eq!(sig["inputs"]["ids"]["dtype"], "DT_INT64");
    assert_eq!(sig["outputs"]["name"]["dtype"], "DT_STRING");
}

#[tokio::test]
async fn kserve_json_keeps_types_and_picks_outputs() {
    let h = harness("").await;
    let big = (1i64 << 40) + 1;
    let body = inputs(json!([1, 2, 3.5, 4]), json!([2, 2]), json!([[big], [7]]), json!([2, 1]));
    let (s, v) = h.json("POST", "/v2/models/g/infer", body.clone()).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["outputs"][0], json!({ "name": "sum", "datatype": "FP32", "shape": [2, 1], "data": [3.0, 7.5] }));
    assert_eq!(v["outputs"][1], json!({ "name": "next", "datatype": "INT64", "shape": [2, 1], "data": [big + 1, 8] }));
    assert_eq!(
        v["outputs"][2],
        json!({ "name": "name", "datatype": "BYTES", "shape": [2], "data": ["row3", "row7.5"] })
    );
    let mut asked = body;
    asked["outputs"] = json!([{ "name": "name" }, { "name": "sum" }]);
    let (s, v) = h.json("POST", "/v2/models/g/infer", asked).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["outputs"].as_array().unwrap().iter().map(|o| o["name"].clone()).collect::<Vec<_>>(), ["name", "sum"]);
}

#[tokio::test]
async fn kserve_binary_in_and_out() {
    let h = harness("").await;
    let x: Vec<u8> = [1.0f32, 2.0].iter().flat_map(|v| v.to_le_bytes()).collect();
    let ids: Vec<u8> = [5i64, 6, 7].iter().flat_map(|v| v.to_le_bytes()).collect();
    let header = json!({
        "inputs": [
            { "name": "x", "shape": [1, 2], "datatype": "FP32", "parameters": { "binary_data_size": x.len() } },
            { "name": "ids", "shape": [1, 3], "datatype": "INT64", "parameters": { "binary_data_size": ids.len() } },
        ],
        "parameters": { "binary_data_output": true }
    })
    .to_string();
    let mut body = header.clone().into_bytes();
    body.extend_from_slice(&x);
    body.extend_from_slice(&ids);
    let req = Request::post("/v2/models/g/infer")
        .header("inference-header-content-length", header.len())
        .body(Body::from(body))
        .unwrap();
    let resp = h.send(req).await;
    assert_eq!(resp.status(), StatusCode::OK);
    let json_len: usize = resp.headers()["inference-header-content-length"].to_str().unwrap().parse().unwrap();
    let bytes = resp.into_body().collect().await.unwrap().to_bytes();
    let head: Value = serde_json::from_slice(&bytes[..json_len]).unwrap();
    let sizes: Vec<u64> = head["outputs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| o["parameters"]["binary_data_size"].as_u64().unwrap())
        .collect();
    assert_eq!(sizes, [4, 24, 8], "{head}");
    let tail = &bytes[json_len..];
    assert_eq!(f32s(&tail[..4]), [3.0]);
    assert_eq!(i64s(&tail[4..28]), [6, 7, 8]);
    assert_eq!(&tail[28..], [4, 0, 0, 0, b'r', b'o', b'w', b'3'], "BYTES: a 4-byte length, then the bytes");
}

#[tokio::test]
async fn errors_name_the_input() {
    let h = harness("").await;
    let ok_ids = (json!([1]), json!([1, 1]));
    let cases = [
        (inputs(json!([1, 2]), json!([1, 2]), json!([1, 2]), json!([2, 1])), "same batch size"),
        (inputs(json!([1, 2, 3]), json!([1, 3]), ok_ids.0.clone(), ok_ids.1.clone()), "input `x` has shape [-1, 2]"),
        (inputs(json!([1, 2]), json!([1, 2]), json!([1.5]), json!([1, 1])), "value 0 is 1.5, which is not a INT64"),
        (inputs(json!([1]), json!([1, 2]), ok_ids.0.clone(), ok_ids.1.clone()), "needs 2 values, got 1"),
        (
            json!({ "inputs": [{ "name": "x", "datatype": "FP32", "shape": [1, 2], "data": [1, 2] }] }),
            "`ids` is missing",
        ),
        (
            json!({ "inputs": [
                { "name": "x", "datatype": "FP64", "shape": [1, 2], "data": [1, 2] },
                { "name": "ids", "datatype": "INT64", "shape": [1, 1], "data": [1] }] }),
            "input `x` is FP32, got FP64",
        ),
        (
            json!({ "inputs": [{ "name": "y", "datatype": "FP32", "shape": [1, 2], "data": [1, 2] }] }),
            "unknown input `y`",
        ),
        // Declared shapes and types, but values the runtime refuses (ONNX Runtime's
        // INVALID_ARGUMENT): a 400 with its reason, not a 500.
        (
            inputs(json!([1, 2]), json!([1, 2]), json!([-1]), json!([1, 1])),
            "the model cannot run on these inputs: ids must not be negative",
        ),
    ];
    for (body, want) in cases {
        let (s, v) = h.json("POST", "/v2/models/g/infer", body).await;
        assert_eq!(s, StatusCode::BAD_REQUEST, "{want}: {v}");
        assert!(error_text(&v).contains(want), "{want}: {v}");
    }
    let mut unknown = inputs(json!([1, 2]), json!([1, 2]), json!([1]), json!([1, 1]));
    unknown["outputs"] = json!([{ "name": "nope" }]);
    let (s, v) = h.json("POST", "/v2/models/g/infer", unknown).await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    assert!(error_text(&v).contains("unknown output `nope`; model `g` has `sum`, `next`, `name`"), "{v}");
    let rows = 65;
    let many = inputs(json!(vec![0.0; 2 * rows]), json!([rows, 2]), json!(vec![1; rows]), json!([rows, 1]));
    let (s, v) = h.json("POST", "/v2/models/g/infer", many).await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{v}");
    assert!(error_text(&v).contains("at most 64, got 65"), "{v}");
}

#[tokio::test]
async fn concurrent_requests_share_passes_and_get_their_own_rows() {
    let h = harness("").await;
    std::fs::write(h.repo().join("g/model.toml"), "max_queue_delay_us = 200000\npreferred_batch_sizes = [8]\n")
        .unwrap();
    // A second version, loaded with the model's new batching config.
    std::fs::create_dir_all(h.repo().join("g/2")).unwrap();
    std::fs::write(h.repo().join("g/2").join(GRAPH_FILE), "").unwrap();
    h.poll().await;
    let before = super::fake_graph::PASSES.load(std::sync::atomic::Ordering::Relaxed);
    let sends = (0..8).map(|i| {
        let body = inputs(json!([i, 0]), json!([1, 2]), json!([i]), json!([1, 1]));
        h.json("POST", "/v2/models/g/versions/2/infer", body)
    });
    let answers = futures_util::future::join_all(sends).await;
    for (i, (s, v)) in answers.into_iter().enumerate() {
        assert_eq!(s, StatusCode::OK, "{v}");
        assert_eq!(v["outputs"][0]["data"], json!([i as f64]));
        assert_eq!(v["outputs"][1]["data"], json!([i + 1]));
    }
    let passes = super::fake_graph::PASSES.load(std::sync::atomic::Ordering::Relaxed) - before;
    assert!(passes < 8, "8 concurrent requests ran in {passes} passes");
}

#[tokio::test]
async fn tf_serving_rows_and_columns() {
    let h = harness("").await;
    let rows = json!({ "instances": [{ "x": [1, 2], "ids": [3] }, { "x": [3, 4], "ids": [5] }] });
    let (s, v) = h.json("POST", "/v1/models/g:predict", rows).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["predictions"][0], json!({ "sum": [3.0], "next": [4], "name": "row3" }));
    assert_eq!(v["predictions"][1]["next"], json!([6]));
    let cols = json!({ "inputs": { "x": [[1, 2]], "ids": [[9, 10]] } });
    let (s, v) = h.json("POST", "/v1/models/g/versions/1:predict", cols).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["outputs"], json!({ "sum": [[3.0]], "next": [[10, 11]], "name": ["row3"] }));
    let (s, v) = h.json("POST", "/v1/models/g:predict", json!({ "instances": [{ "x": [1, 2] }] })).await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    assert!(error_text(&v).contains("lacks input `ids`"), "{v}");
    let unbatched = harness("unbatched").await;
    let (s, v) =
        unbatched.json("POST", "/v1/models/g:predict", json!({ "instances": [{ "x": [1, 2], "ids": [3] }] })).await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    assert!(error_text(&v).contains("no batch dimension"), "{v}");
}

#[tokio::test]
async fn grpc_model_infer_and_config() {
    let h = harness("").await;
    let g = serve(h.state.clone()).await;
    let mut c = pb::grpc_inference_service_client::GrpcInferenceServiceClient::connect(format!("http://{}", g.addr))
        .await
        .unwrap();
    let input = |name: &str, datatype: &str, shape: Vec<i64>| pb::model_infer_request::InferInputTensor {
        name: name.into(),
        datatype: datatype.into(),
        shape,
        ..Default::default()
    };
    let mut ids = input("ids", "INT64", vec![1, 2]);
    ids.contents = Some(pb::InferTensorContents { int64_contents: vec![1 << 50, 2], ..Default::default() });
    let mut x = input("x", "FP32", vec![1, 2]);
    x.contents = Some(pb::InferTensorContents { fp32_contents: vec![0.5, 0.25], ..Default::default() });
    let req = pb::ModelInferRequest { model_name: "g".into(), inputs: vec![x, ids], ..Default::default() };
    let r = c.model_infer(req).await.unwrap().into_inner();
    assert_eq!(r.outputs.iter().map(|o| o.name.as_str()).collect::<Vec<_>>(), ["sum", "next", "name"]);
    assert_eq!(f32s(&r.raw_output_contents[0]), [0.75]);
    assert_eq!(i64s(&r.raw_output_contents[1]), [(1 << 50) + 1, 3]);
    let raw = pb::ModelInferRequest {
        model_name: "g".into(),
        inputs: vec![input("x", "FP32", vec![1, 2]), input("ids", "INT64", vec![1, 1])],
        raw_input_contents: vec![le_f32(&[1.0, 1.0]), 9i64.to_le_bytes().to_vec().into()],
        ..Default::default()
    };
    let r = c.model_infer(raw).await.unwrap().into_inner();
    assert_eq!(r.raw_output_contents[2].as_ref(), [4, 0, 0, 0, b'r', b'o', b'w', b'2']);
    let cfg = c
        .model_config(pb::ModelConfigRequest { name: "g".into(), version: String::new() })
        .await
        .unwrap()
        .into_inner()
        .config
        .unwrap();
    assert_eq!(
        (cfg.platform.as_str(), cfg.backend.as_str(), cfg.max_batch_size),
        ("onnxruntime_onnx", "onnxruntime", 64)
    );
    assert_eq!(cfg.input[1].dims, [-1], "the batch dimension is left out, as Triton does");
}

/// A binary request for `g` with `n` ids (a small body) and outputs written as JSON or raw.
fn many_ids(n: usize, raw_out: bool) -> Request<Body> {
    let x: Vec<u8> = [1.0f32, 2.0].iter().flat_map(|v| v.to_le_bytes()).collect();
    let ids: Vec<u8> = (0..n as i64).flat_map(|v| v.to_le_bytes()).collect();
    let header = json!({
        "inputs": [
            { "name": "x", "shape": [1, 2], "datatype": "FP32", "parameters": { "binary_data_size": x.len() } },
            { "name": "ids", "shape": [1, n], "datatype": "INT64", "parameters": { "binary_data_size": ids.len() } },
        ],
        "outputs": [{ "name": "next" }],
        "parameters": { "binary_data_output": raw_out }
    })
    .to_string();
    let mut body = header.clone().into_bytes();
    body.extend_from_slice(&x);
    body.extend_from_slice(&ids);
    Request::post("/v2/models/g/infer")
        .header("inference-header-content-length", header.len())
        .body(Body::from(body))
        .unwrap()
}

#[tokio::test]
async fn outputs_count_against_the_memory_budget_before_they_are_written() {
    // 20,000 INT64 ids: a 160 kB body, the same 160 kB out raw, but about 1.3 MB as JSON (a value
    // node and up to 25 characters each) -- past a 1 MiB budget.
    let h = Harness::with_limits(aiserve_runtime::Limits { memory_budget_bytes: 1 << 20, ..Default::default() }).await;
    let dir = h.repo().join("g/1");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join(GRAPH_FILE), "").unwrap();
    h.poll().await;
    let resp = h.send(many_ids(20_000, false)).await;
    assert_eq!(resp.status(), StatusCode::PAYLOAD_TOO_LARGE);
    let body: Value = serde_json::from_slice(&resp.into_body().collect().await.unwrap().to_bytes()).unwrap();
    assert!(error_text(&body).contains("the output `next` needs"), "{body}");
    let resp = h.send(many_ids(20_000, true)).await;
    assert_eq!(resp.status(), StatusCode::OK, "the same answer written raw fits");
    let (status, _) = h.json("GET", "/v2/health/ready", json!(null)).await;
    assert_eq!(status, StatusCode::OK);
}
