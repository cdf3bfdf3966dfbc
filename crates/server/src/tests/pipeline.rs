//! Pipelines (Triton's ensembles) over the fake graph model `g` (see `fake_graph`): a model step
//! and a built-in step wired by value names, served over KServe v2; wiring mistakes failing the
//! pipeline's version (with a message) while everything else serves; a failing step named in
//! the error; a request that runs out of time stopping at the step it is in; per-step metrics;
//! `/ocr` refusing what is not an OCR pipeline.

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
    harness_with(config, Some(""), "p").await
}

/// The same, the fake graph's `graph.txt` saying `graph` (no `g` at all when `None`) and the
/// pipeline called `name` (tests that read metrics, which every test shares, use a name of
/// their own).
async fn harness_with(config: &str, graph: Option<&str>, name: &str) -> Harness {
    let h = Harness::new().await;
    if let Some(graph) = graph {
        write_graph(&h, graph);
    }
    let p = h.repo().join(name).join("1");
    std::fs::create_dir_all(&p).unwrap();
    std::fs::write(p.join("labels.txt"), "only\n").unwrap();
    std::fs::write(p.join("digits.txt"), (0..10).map(|d| format!("digit {d}\n")).collect::<String>()).unwrap();
    std::fs::write(h.repo().join(name).join("model.toml"), config).unwrap();
    h.poll().await;
    h
}

/// The fake graph `g`, version 1, its `graph.txt` saying `graph`.
fn write_graph(h: &Harness, graph: &str) {
    let g = h.repo().join("g/1");
    std::fs::create_dir_all(&g).unwrap();
    std::fs::write(g.join(GRAPH_FILE), graph).unwrap();
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
    let h = harness_with(PIPELINE, Some(""), "steps").await;
    let (s, v) = h.get("/v2/models/steps").await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["platform"], "ensemble");
    assert_eq!(v["parameters"]["steps"], "graph, top", "the model step runs first: `top` reads its `sum`");
    assert_eq!(v["outputs"][0], json!({ "name": "label", "datatype": "BYTES", "shape": [-1, 1] }));
    let (s, v) = h.json("POST", "/v2/models/steps/infer", request(7)).await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["outputs"][0]["data"], json!(["only", "only"]));
    assert_eq!(v["outputs"][1], json!({ "name": "sum", "datatype": "FP32", "shape": [2, 1], "data": [3.0, 7.5] }));
    assert_eq!(v["outputs"][2]["data"], json!(["row3", "row7.5"]));
    // Outputs asked for by name, as for any model.
    let mut asked = request(7);
    asked["outputs"] = json!([{ "name": "name" }]);
    let (s, v) = h.json("POST", "/v2/models/steps/infer", asked).await;
    assert_eq!((s.as_u16(), v["outputs"].as_array().unwrap().len()), (200, 1), "{v}");
    let metrics = h.get_text("/metrics").await;
    for step in ["graph", "top"] {
        let series =
            format!("aiserve_pipeline_step_duration_seconds_count{{model=\"steps\",step=\"{step}\",version=\"1\"}} 2");
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

#[tokio::test]
async fn a_request_out_of_time_stops_at_its_step() {
    let h = harness_with(PIPELINE, Some("slow"), "slow").await;
    let req = axum::http::Request::builder()
        .method("POST")
        .uri("/v2/models/slow/infer")
        .header("content-type", "application/json")
        .header("x-request-timeout-ms", "100")
        .body(axum::body::Body::from(request(1).to_string()))
        .unwrap();
    let (s, v) = super::fake::read_json(h.send(req).await).await;
    assert_eq!(s, 504, "{v}");
    // The model step was given up on; the step after it never ran.
    tokio::time::sleep(std::time::Duration::from_millis(400)).await;
    let count = |step: &str, n: u32| {
        format!("aiserve_pipeline_step_duration_seconds_count{{model=\"slow\",step=\"{step}\",version=\"1\"}} {n}")
    };
    let metrics = h.get_text("/metrics").await;
    assert!(
        metrics.contains(&count("top", 0)) && metrics.contains(&count("graph", 0)),
        "a step after the deadline ran"
    );
    let (s, v) = h.json("POST", "/v2/models/slow/infer", request(1)).await;
    assert_eq!(s, 200, "{v}");
    assert!(h.get_text("/metrics").await.contains(&count("top", 1)));
}

#[tokio::test]
async fn an_image_classifier_is_a_step_too() {
    // The harness's fake digits model: a picture of mean m is class round(9 m).
    let config = r#"
[pipeline]
inputs = [{ name = "pictures", datatype = "FP32", dims = [-1, 28, 28, 1] }]
outputs = ["best"]

[[pipeline.step]]
name = "classify"
model = "digits"
input_map = { image = "pictures" }
output_map = { probabilities = "probs" }

[[pipeline.step]]
name = "top"
builtin = "labels.top_k"
params = { labels = "digits.txt", k = 1 }
input_map = { scores = "probs" }
output_map = { labels = "best" }
"#;
    let h = harness(config).await;
    let (_, reason) = state_of(&h, "p").await;
    let pixels: Vec<f32> = [vec![0.0f32; 784], vec![1.0f32; 784]].concat();
    let body =
        json!({ "inputs": [{ "name": "pictures", "datatype": "FP32", "shape": [2, 28, 28, 1], "data": pixels }] });
    let (s, v) = h.json("POST", "/v2/models/p/infer", body).await;
    assert_eq!(s, 200, "{v} {reason}");
    assert_eq!(v["outputs"][0]["data"], json!(["digit 0", "digit 9"]));
}

#[tokio::test]
async fn a_pipeline_waits_for_a_step_model_that_arrives_later() {
    let h = harness_with(PIPELINE, None, "p").await;
    let (state, reason) = state_of(&h, "p").await;
    assert_eq!(state, "UNAVAILABLE");
    assert!(reason.contains("model `g` is not served here"), "{reason}");
    // The step model is copied in: the next poll loads it, then the pipeline.
    write_graph(&h, "");
    h.poll().await;
    assert_eq!(state_of(&h, "p").await.0, "READY");
    let (s, v) = h.json("POST", "/v2/models/p/infer", request(1)).await;
    assert_eq!(s, 200, "{v}");
}
