//! `POST /ocr`: the simple API for OCR pipelines.
//!
//! Body: a raw PNG/JPEG picture (any body sent as `image/*`), or JSON `{"image": "<base64>"}`. Query: `?model=&version=`
//! (model `ocr` when none is named). The model must be a pipeline with one BYTES input (the
//! picture) and the outputs `boxes` (FP32 `[n, 4, 2]`), `texts` (BYTES `[n]`) and `scores`
//! (FP32 `[n]`), as README's PP-OCR pipeline has. Answer:
//! `{"lines": [{"text", "confidence", "polygon": [[x, y] x 4]}], "model", "version"}`, lines in
//! reading order, polygons clockwise from the top left, in the picture's pixels.

use aiserve_core::{Tensor, TensorData};
use aiserve_runtime::servable::Kind;
use axum::body::Body;
use axum::extract::{Query, State};
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use serde::Serialize;
use serde_json::Value;

use super::classify::Target;
use super::images::decode_base64;
use crate::decode::image::looks_like_image;
use crate::error::{Error, HttpError};
use crate::http::state::{parse_json, AppState};

/// The model `/ocr` reads with when the request names none.
pub const DEFAULT_MODEL: &str = "ocr";

pub fn routes() -> Router<AppState> {
    Router::new().route("/ocr", post(ocr))
}

#[derive(Serialize)]
struct Line {
    text: String,
    confidence: f32,
    polygon: Vec<[f32; 2]>,
}

async fn ocr(
    State(state): State<AppState>,
    query: Result<Query<Target>, axum::extract::rejection::QueryRejection>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, HttpError> {
    let Query(target) = query.map_err(|e| Error::invalid("query", format!("bad query string: {}", e.body_text())))?;
    let body = state.read_body(body).await?;
    let model = target.model.as_deref().unwrap_or(DEFAULT_MODEL);
    let servable = state.registry.resolve(model, target.version.as_deref())?;
    let Kind::Pipeline(p) = &servable.kind else {
        return Err(Error::WrongModelKind {
            model: model.to_owned(),
            is: "not a pipeline".into(),
            wants: "an OCR pipeline (one BYTES picture in; boxes, texts and scores out)".into(),
        }
        .into());
    };
    let [input] = p.info.inputs.as_slice() else {
        return Err(not_ocr(model, "it takes several inputs").into());
    };
    let said_picture = headers
        .get(axum::http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|t| t.trim_start().to_ascii_lowercase().starts_with("image/"));
    let picture = if said_picture || looks_like_image(&body.bytes) {
        body.bytes.to_vec()
    } else {
        let mut req: serde_json::Map<String, Value> = parse_json(&body.bytes, &body.hold)?;
        if let Some(extra) = req.keys().find(|k| *k != "image") {
            return Err(Error::invalid(extra, format!("unknown field `{extra}`; expected `image`")).into());
        }
        match req.remove("image") {
            Some(Value::String(s)) => decode_base64(&s, "image", &body.hold)?,
            Some(_) => return Err(Error::invalid("image", "`image` must be a base64 PNG/JPEG picture").into()),
            None => return Err(Error::invalid("image", "missing `image` (a base64 PNG/JPEG picture)").into()),
        }
    };
    let tensor = Tensor { shape: vec![1], data: TensorData::Bytes(vec![picture]) };
    let deadline = state.deadline(&headers, None)?;
    let outputs = p.infer(&state.runtime, vec![(input.name.clone(), tensor)], &body.hold, deadline).await?;
    let named = |name: &str| p.info.outputs.iter().position(|o| o.name == name).map(|i| &outputs[i].data);
    let (Some(TensorData::F32(boxes)), Some(TensorData::Bytes(texts)), Some(TensorData::F32(scores))) =
        (named("boxes"), named("texts"), named("scores"))
    else {
        return Err(not_ocr(model, "it lacks the outputs `boxes` (FP32), `texts` (BYTES) and `scores` (FP32)").into());
    };
    if boxes.len() != texts.len() * 8 || scores.len() != texts.len() {
        return Err(not_ocr(model, "its `boxes`, `texts` and `scores` disagree in number").into());
    }
    let lines: Vec<Line> = texts
        .iter()
        .zip(scores)
        .zip(boxes.chunks_exact(8))
        .map(|((t, &confidence), b)| Line {
            text: String::from_utf8_lossy(t).into_owned(),
            confidence,
            polygon: b.chunks_exact(2).map(|p| [p[0], p[1]]).collect(),
        })
        .collect();
    let out = serde_json::json!({
        "lines": lines, "model": servable.model.to_string(), "version": servable.version.to_string(),
    });
    Ok(crate::http::metrics::tag(Json(out).into_response(), crate::http::metrics::Served::of(&servable)))
}

fn not_ocr(model: &str, why: &str) -> Error {
    Error::WrongModelKind {
        model: model.to_owned(),
        is: format!("a pipeline that is not OCR ({why})"),
        wants: "an OCR pipeline (one BYTES picture in; boxes, texts and scores out)".into(),
    }
}
