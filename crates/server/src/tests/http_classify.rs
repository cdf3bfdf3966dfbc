//! `POST /classify`: every body form, every error class, 404/413, and a panicking model.

use std::io::Cursor;

use axum::http::StatusCode;
use base64::Engine;
use serde_json::json;

use super::fake::{error_text, flat_image, Harness};
use aiserve_runtime::Limits;

#[tokio::test]
async fn classifies_nested_flat_and_batched_images() {
    let h = Harness::new().await;
    let (s, v) = h.json("POST", "/classify", json!({ "image": flat_image(1.0 / 3.0) })).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["label"], 3);
    assert_eq!(v["model"], "digits");
    assert_eq!(v["version"], "1");
    assert_eq!(v["probabilities"].as_array().unwrap().len(), 10);

    let (s, v) = h.json("POST", "/classify", json!({ "image": vec![0.0; 784] })).await;
    assert_eq!((s, v["label"].clone()), (StatusCode::OK, json!(0)));

    let (s, v) = h
        .json("POST", "/classify?model=digits&version=1", json!({ "images": [flat_image(1.0), vec![0.5; 784]] }))
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["predictions"][0]["label"], 9);
    assert_eq!(v["predictions"][1]["label"], 5); // round(4.5) = 5
}

fn png_bytes() -> Vec<u8> {
    // A white one-pixel frame around black: the decoder sees a bright border and inverts, so
    // the model gets a dark frame around ink: mean 676/784 → round(9 × 0.862) = 8.
    let img = image::GrayImage::from_fn(28, 28, |x, y| {
        image::Luma([if x == 0 || y == 0 || x == 27 || y == 27 { 255 } else { 0 }])
    });
    let mut out = Vec::new();
    img.write_to(&mut Cursor::new(&mut out), image::ImageFormat::Png).unwrap();
    out
}

#[tokio::test]
async fn classifies_png_uploads_raw_and_base64() {
    let h = Harness::new().await;
    let (s, v) = h.raw("/classify", "image/png", png_bytes()).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    // Border brighter than the middle: inverted, so the middle is ink (1.0) and the frame 0.
    assert_eq!(v["label"], 8, "{v}");
    let b64 = base64::engine::general_purpose::STANDARD.encode(png_bytes());
    let (s, v2) = h.json("POST", "/classify", json!({ "image": b64 })).await;
    assert_eq!(s, StatusCode::OK, "{v2}");
    assert_eq!(v2["label"], v["label"]);
    let (s, v3) = h.json("POST", "/classify", json!({ "image": format!("data:image/png;base64,{b64}") })).await;
    assert_eq!((s, &v3["label"]), (StatusCode::OK, &v["label"]));
}

#[tokio::test]
async fn bad_inputs_get_clear_4xx_errors() {
    let h = Harness::new().await;
    let cases = [
        (json!({ "image": vec![vec![0.0; 28]; 27] }), "28x28"),
        (json!({ "image": vec![0.0; 783] }), "shape [783]"),
        (json!({ "image": [[1, 2], [3]] }), "ragged"),
        (json!({ "image": vec![vec![1.5; 28]; 28] }), "out of range"),
        (json!({ "image": vec![-0.5; 784] }), "out of range"),
        (json!({ "image": true }), "array of pixel values"),
        (json!({ "image": "!!!" }), "base64"),
        (json!({ "image": "aGVsbG8=" }), "not a PNG or JPEG"),
        (json!({ "picture": [] }), "unknown field `picture`"),
        (json!({}), "missing `image`"),
        (json!({ "images": [] }), "at least one image"),
        (json!({ "images": vec![vec![0.0; 784]; 1025] }), "at most 1024, got 1025"),
    ];
    for (body, want) in cases {
        let (s, v) = h.json("POST", "/classify", body.clone()).await;
        assert_eq!(s, StatusCode::BAD_REQUEST, "{body}: {v}");
        assert!(error_text(&v).contains(want), "{want:?} not in {v}");
    }
    let (s, v) = h.raw("/classify", "application/json", b"{\"image\": [1,".to_vec()).await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    assert!(error_text(&v).contains("malformed JSON"), "{v}");
    let (s, _) = h.raw("/classify", "text/plain", b"hello".to_vec()).await;
    assert_eq!(s, StatusCode::UNSUPPORTED_MEDIA_TYPE);
}

#[tokio::test]
async fn unknown_model_and_version_are_404() {
    let h = Harness::new().await;
    let (s, v) = h.json("POST", "/classify?model=nope", json!({ "image": vec![0.0; 784] })).await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    assert!(error_text(&v).contains("`nope`"));
    let (s, v) = h.json("POST", "/classify?version=7", json!({ "image": vec![0.0; 784] })).await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    assert!(error_text(&v).contains("version 7") && error_text(&v).contains("available: 1"), "{v}");
    let (s, v) = h.json("POST", "/classify?version=x", json!({ "image": vec![0.0; 784] })).await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{v}");
    let (s, v) = h.json("POST", "/classify?model=../etc", json!({ "image": vec![0.0; 784] })).await;
    assert_eq!(s, StatusCode::NOT_FOUND, "{v}");
}

#[tokio::test]
async fn oversized_bodies_are_413() {
    let h = Harness::with_limits(Limits { max_body_bytes: 1000, ..Limits::default() }).await;
    let (s, v) = h.json("POST", "/classify", json!({ "image": vec![0.0; 784] })).await;
    assert_eq!(s, StatusCode::PAYLOAD_TOO_LARGE, "{v}");
    assert!(error_text(&v).contains("at most 1000 bytes"));
}

#[tokio::test]
async fn a_panicking_model_fails_only_that_request() {
    let h = Harness::new().await;
    super::fake::write_version(h.repo(), "crashy", 1, "panic");
    h.poll().await;
    let (s, v) = h.json("POST", "/classify?model=crashy", json!({ "image": vec![0.0; 784] })).await;
    assert_eq!(s, StatusCode::INTERNAL_SERVER_ERROR);
    assert!(error_text(&v).starts_with("internal error E"), "{v}");
    assert!(!error_text(&v).contains("panics on purpose"), "internals leaked: {v}");
    let (s, _) = h.json("POST", "/classify", json!({ "image": vec![0.0; 784] })).await;
    assert_eq!(s, StatusCode::OK);
}

#[tokio::test]
async fn unknown_routes_are_json_404s() {
    let h = Harness::new().await;
    let (s, v) = h.get("/nothing/here").await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    assert!(error_text(&v).contains("/nothing/here"));
}

/// `top=k`: the `k` most likely labels, most likely first, for a bar chart; 0 is refused.
#[tokio::test]
async fn top_labels_most_likely_first() {
    let h = Harness::new().await;
    let (s, v) = h.json("POST", "/classify?top=3", json!({ "image": flat_image(1.0 / 3.0) })).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let top = v["top"].as_array().unwrap();
    assert_eq!(top.len(), 3);
    assert_eq!(top[0]["label"], 3);
    assert_eq!(top[0]["label"], v["label"]);
    let probs = v["probabilities"].as_array().unwrap();
    for (t, pair) in top.iter().zip(top.windows(2).map(Some).chain([None])) {
        let label = t["label"].as_u64().unwrap() as usize;
        assert_eq!(t["probability"], probs[label], "each entry carries its class's probability");
        if let Some([a, b]) = pair {
            assert!(a["probability"].as_f64() >= b["probability"].as_f64(), "{top:?}");
        }
    }
    let (_, v) = h.json("POST", "/classify?top=50", json!({ "images": [flat_image(0.0)] })).await;
    assert_eq!(v["predictions"][0]["top"].as_array().unwrap().len(), 10, "beyond the classes: all of them");
    let (_, v) = h.json("POST", "/classify", json!({ "image": flat_image(0.0) })).await;
    assert!(v.get("top").is_none(), "no `top` unless asked: {v}");
    let (s, v) = h.json("POST", "/classify?top=0", json!({ "image": flat_image(0.0) })).await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    assert!(error_text(&v).contains("`top` must be at least 1, got 0"), "{v}");
    let (s, _) = h.json("POST", "/classify?top=-1", json!({ "image": flat_image(0.0) })).await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
}
