//! Pipelines (Triton's ensembles) over the fake graph model `g` (see `fake_graph`): a model step
//! and a built-in step wired by value names, served over KServe v2; wiring mistakes failing the
//! pipeline's version (with a message) while everything else serves; a failing step named in
//! the error; per-step metrics; `/ocr` refusing what is not an OCR pipeline.

use serde_json::{json, Value};

use super::fake::{error_text, Harness};
use super::fake_graph::GRAPH_FILE;

const PIPELINE: &str = r#"
[pipeline]
inputs = [{ name = "x", datatype = "FP32", dims = [-1, 2] }, { name = "ids", datatype = "INT64", dims = [-1, -1] }]
outputs = ["label", "sum", "name"]

[[pipeline.step]]
name = "top"
builtin = "labels.top_k"
params = { labels = "labels.txt", k = 1 }
input_map = { scores = "sum" }
output_map = { labels = "label" }

[[pipeline.step]]
name = "graph"
model = "g"
input_map = { x = "x", ids = "ids" }
output_map = { sum = "sum", name = "name" }
"#;

/// A harness serving the fake graph `g` and the pipeline `p` written from `config`.
async fn harness(config: &str) -> Harness {
    let h = Harness::new().await;
    let g = h.repo().join("g/1");
    std::fs::create_dir_all(&g).unwrap();
    std::fs::write(g.join(GRAPH_FILE), "").unwrap();
    let p = h.repo().join("p/1");
    std::fs::create_dir_all(&p).unwrap();
    std::fs::write(p.join("labels.txt"), "only\n").unwrap();
    std::fs::write(h.repo().join("p/model.toml"), config).unwrap();
    h.poll().await;
    h
}

fn request(ids: i64) -> Value {
    json!({ "inputs": [
        { "name": "x", "datatype": "FP32", "shape": [2, 2], "data": [1, 2, 3, 4.5] },
        { "name": "ids", "datatype": "INT64", "shape": [2, 1], "data": [ids, 1] },
    ] })
}

/// The pipeline's version state and error, from the repository index.
async fn state_of(h: &Harness, model: &str) -> (String, String) {
    let (_, v) = h.json("POST", "/v2/repository/index", json!({})).await;
    let row = v.as_array().unwrap().iter().find(|r| r["name"] == model).cloned().unwrap_or_default();
    (row["state"].as_str().unwrap_or("").to_owned(), row["reason"].as_str().unwrap_or("").to_owned())
}

#[tokio::test]
async fn model_and_builtin_steps_run_in_wiring_order() {
    let h = harness(PIPELINE).await;
    let (s, v) = h.get("/v2/models/p").await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["platform"], "ensemble");
    assert_eq!(v["parameters"]["steps"], "graph, top", "the model step runs first: `top` reads its `sum`");
    assert_eq!(v["outputs"][0], json!({ "name": "label", "datatype": "BYTES", "shape": [-1, 1] }));
    let (s, v) = h.json("POST", "/v2/models/p/infer", request(7)).await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["outputs"][0]["data"], json!(["only", "only"]));
    assert_eq!(v["outputs"][1], json!({ "name": "sum", "datatype": "FP32", "shape": [2, 1], "data": [3.0, 7.5] }));
    assert_eq!(v["outputs"][2]["data"], json!(["row3", "row7.5"]));
    // Outputs asked for by name, as for any model.
    let mut asked = request(7);
    asked["outputs"] = json!([{ "name": "name" }]);
    let (s, v) = h.json("POST", "/v2/models/p/infer", asked).await;
    assert_eq!((s.as_u16(), v["outputs"].as_array().unwrap().len()), (200, 1), "{v}");
    let metrics = h.get_text("/metrics").await;
    for step in ["graph", "top"] {
        let series =
            format!("aiserve_pipeline_step_duration_seconds_count{{model=\"p\",step=\"{step}\",version=\"1\"}} 2");
        assert!(metrics.contains(&series), "{series} missing");
    }
}

#[tokio::test]
async fn a_failing_step_is_named_and_inputs_are_checked() {
    let h = harness(PIPELINE).await;
    // The fake graph refuses negative ids, as ONNX Runtime refuses sizes it cannot take.
    let (s, v) = h.json("POST", "/v2/models/p/infer", request(-1)).await;
    assert_eq!(s, 400, "{v}");
    assert!(
        error_text(&v).contains("pipeline step `graph`: ") && error_text(&v).contains("ids must not be negative"),
        "{v}"
    );
    let (s, v) = h.json("POST", "/v2/models/p/infer", json!({ "inputs": [request(1)["inputs"][0]] })).await;
    assert_eq!(s, 400, "{v}");
    assert!(error_text(&v).contains("input `ids` is missing"), "{v}");
    let (s, v) = h.raw("/ocr?model=p", "image/png", vec![0x89, b'P', b'N', b'G']).await;
    assert_eq!(s, 400, "{v}");
    assert!(error_text(&v).contains("not OCR"), "{v}");
    let (s, v) = h.raw("/ocr?model=g", "image/png", vec![0x89, b'P', b'N', b'G']).await;
    assert_eq!(s, 400, "{v}");
    assert!(error_text(&v).contains("not a pipeline"), "{v}");
}

#[tokio::test]
async fn wiring_mistakes_fail_the_version_and_the_rest_serves() {
    let cases = [
        (PIPELINE.replace("model = \"g\"", "model = \"nope\""), "step `graph`: model `nope` is not served here"),
        (PIPELINE.replace("labels.top_k", "labels.top"), "unknown built-in `labels.top`"),
        (
            PIPELINE.replace("{ x = \"x\", ids = \"ids\" }", "{ x = \"x\", ids = \"x\" }"),
            "step `graph` input `ids` takes INT64 [-1, -1], but value `x` is FP32 [-1, 2]",
        ),
        (
            PIPELINE.replace("{ scores = \"sum\" }", "{ scores = \"name\" }"),
            "step `top` input `scores` takes FP32 [-1, 1], but value `name` is BYTES [-1]",
        ),
        (
            PIPELINE.replace("{ scores = \"sum\" }", "{ scores = \"label\" }"),
            "steps `top` wait on each other's values: a cycle",
        ),
        (
            PIPELINE
                .replace("{ x = \"x\", ids = \"ids\" }", "{ x = \"x\", ids = \"loop\" }")
                .replace("{ labels = \"label\" }", "{ labels = \"loop\" }"),
            "a cycle",
        ),
        (PIPELINE.replace("k = 1", "k = 2"), "`k` must be in 1..=1"),
    ];
    for (config, want) in cases {
        let h = harness(&config).await;
        let (state, reason) = state_of(&h, "p").await;
        assert_eq!(state, "UNAVAILABLE", "{want}: {reason}");
        assert!(reason.contains(want), "wanted {want:?} in {reason:?}");
        let (s, v) = h.json("POST", "/v2/models/g/infer", request(1)).await;
        assert_eq!(s, 200, "{v}");
    }
}
