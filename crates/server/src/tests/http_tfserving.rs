//! TF Serving REST: status, metadata, `:predict` in row and columnar form, labels, errors.

use axum::http::StatusCode;
use serde_json::json;

use super::fake::{error_text, flat_image, write_version, Harness};

#[tokio::test]
async fn status_and_metadata() {
    let h = Harness::new().await;
    let (s, v) = h.get("/v1/models/digits").await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(
        v,
        json!({ "model_version_status": [{ "version": "1", "state": "AVAILABLE", "status": { "error_code": "OK", "error_message": "" } }] })
    );
    assert_eq!(h.get("/v1/models/digits/versions/1").await.0, StatusCode::OK);
    assert_eq!(h.get("/v1/models/digits/versions/4").await.0, StatusCode::NOT_FOUND);
    assert_eq!(h.get("/v1/models/nope").await.0, StatusCode::NOT_FOUND);
    let (s, v) = h.get("/v1/models/digits/metadata").await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(v["model_spec"]["version"], "1");
    let sig = &v["metadata"]["signature_def"]["signature_def"]["serving_default"];
    assert_eq!(sig["inputs"]["image"]["dtype"], "DT_FLOAT");
    assert_eq!(sig["inputs"]["image"]["tensor_shape"]["dim"][1]["size"], "28");
}

#[tokio::test]
async fn predicts_rows_and_columns() {
    let h = Harness::new().await;
    let (s, v) = h
        .json(
            "POST",
            "/v1/models/digits:predict",
            json!({ "instances": [flat_image(1.0), vec![0.0; 784], { "image": flat_image(1.0 / 9.0) }] }),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let preds = v["predictions"].as_array().unwrap();
    assert_eq!(preds.len(), 3);
    assert!((preds[0][9].as_f64().unwrap() - 0.91).abs() < 1e-6);
    assert!((preds[2][1].as_f64().unwrap() - 0.91).abs() < 1e-6);
    let (s, v) = h
        .json(
            "POST",
            "/v1/models/digits/versions/1:predict",
            json!({ "signature_name": "serving_default", "inputs": { "image": [flat_image(1.0)] } }),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["outputs"].as_array().unwrap().len(), 1);
    let (s, v) = h.json("POST", "/v1/models/digits:predict", json!({ "inputs": vec![vec![0.0; 784]; 2] })).await;
    assert_eq!(s, StatusCode::OK, "{v}");
}

#[tokio::test]
async fn labels_resolve_through_model_config() {
    let h = Harness::new().await;
    write_version(h.repo(), "digits", 2, "shift 1");
    std::fs::write(
        h.repo().join("digits/model.toml"),
        "[version_policy]\nall = true\n[version_labels]\nstable = 1\ncanary = 2",
    )
    .unwrap();
    h.poll().await;
    let body = json!({ "instances": [vec![0.0; 784]] });
    let (_, v) = h.json("POST", "/v1/models/digits/labels/stable:predict", body.clone()).await;
    assert!((v["predictions"][0][0].as_f64().unwrap() - 0.91).abs() < 1e-6, "{v}");
    let (_, v) = h.json("POST", "/v1/models/digits/labels/canary:predict", body.clone()).await;
    assert!((v["predictions"][0][1].as_f64().unwrap() - 0.91).abs() < 1e-6, "{v}");
    let (s, v) = h.json("POST", "/v1/models/digits/labels/beta:predict", body).await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    assert!(error_text(&v).contains("no version label `beta`"));
    let (s, v) = h.get("/v1/models/digits/labels/canary").await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(v["model_version_status"][0]["version"], "2");
}

#[tokio::test]
async fn predict_errors() {
    let h = Harness::new().await;
    let cases = [
        (json!({ "instances": [vec![0.0; 10]] }), "28x28"),
        (json!({ "instances": [] }), "at least one"),
        (json!({ "instances": 3 }), "must be a list"),
        (json!({ "instances": [{ "pixels": [] }] }), "this model takes `image`"),
        (json!({ "inputs": { "x": [] } }), "this model takes `image`"),
        (json!({ "instances": [], "inputs": [] }), "not both"),
        (json!({ "signature_name": "other", "instances": [] }), "signature_name"),
        (json!({ "examples": [] }), "unknown field `examples`"),
    ];
    for (body, want) in cases {
        let (s, v) = h.json("POST", "/v1/models/digits:predict", body.clone()).await;
        assert_eq!(s, StatusCode::BAD_REQUEST, "{body}: {v}");
        assert!(error_text(&v).contains(want), "{want:?} not in {v}");
    }
    assert_eq!(h.json("POST", "/v1/models/digits:classify", json!({})).await.0, StatusCode::NOT_FOUND);
    assert_eq!(h.json("POST", "/v1/models/digits:explode", json!({})).await.0, StatusCode::NOT_FOUND);
}
