//! `POST /classify`: the simple API.
//!
//! Body forms: `{"image": <28 rows of 28 numbers | 784 numbers | base64 PNG/JPEG>}`,
//! `{"images": [<image>, ...]}`, or a raw PNG/JPEG body. Query: `?model=&version=`.
//! `&top=k` adds the `k` most likely classes, `"top": [{"label", "probability"}]`.
//! Answer: `{"label", "probabilities", "model", "version"}` (or `"predictions": [...]` for
//! `images`). A model that reads text (the digit-strings reader) answers `{"text", "label"}`
//! (the same string) and the probability of each character read.

use aiserve_core::ImageBatch;
use axum::body::Body;
use axum::extract::{Query, State};
use axum::http::{header, HeaderMap};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::Value;

use super::images::{image_from_json, join, picture, Decode};
use crate::decode::image::looks_like_image;
use crate::error::{Error, HttpError};
use crate::http::state::{parse_json, AppState};
use crate::kserve::argmax;

pub fn routes() -> Router<AppState> {
    Router::new().route("/classify", post(classify))
}

/// `?model=&version=` of the simple routes.
#[derive(Deserialize)]
pub(super) struct Target {
    pub model: Option<String>,
    pub version: Option<String>,
}

/// `/classify`'s query: the target, and `top=k` for the `k` most likely labels.
#[derive(Deserialize)]
struct ClassifyQuery {
    model: Option<String>,
    version: Option<String>,
    top: Option<usize>,
}

async fn classify(
    State(state): State<AppState>,
    query: Result<Query<ClassifyQuery>, axum::extract::rejection::QueryRejection>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, HttpError> {
    let Query(q) = query.map_err(|e| Error::invalid("query", format!("bad query string: {}", e.body_text())))?;
    if q.top == Some(0) {
        return Err(Error::invalid("top", "`top` must be at least 1, got 0").into());
    }
    let body = state.read_body(body).await?;
    let model = q.model.as_deref().unwrap_or(&state.default_model);
    let servable = state.registry.resolve(model, q.version.as_deref())?;
    let (probs, single, labels, label_of): (_, _, &[String], fn(&str) -> Value) =
        if let aiserve_runtime::servable::Kind::Graph(g) = &servable.kind {
            let pictures = || {
                if looks_like_image(&body.bytes) {
                    Ok((vec![("body".to_owned(), body.bytes.clone())], true))
                } else if is_json(&headers, &body.bytes) {
                    super::classify_graph::pictures(parse_json(&body.bytes, &body.hold)?, &body.hold)
                } else {
                    Err(Error::UnsupportedMediaType(
                        "`/classify` takes a PNG/JPEG body or JSON with base64 pictures".into(),
                    ))
                }
            };
            if let Some(r) = &g.info.reader {
                if q.top.is_some() {
                    return Err(Error::invalid(
                        "top",
                        format!("`top` ranks a classifier's labels; model `{model}` reads text (drop `top`)"),
                    )
                    .into());
                }
                let (pics, single) = pictures()?;
                let deadline = state.deadline(&headers, None)?;
                let read = super::classify_graph::read(&state, &servable, g, r, pics, &body.hold, deadline).await?;
                let readings: Vec<Value> = read
                    .into_iter()
                    .map(|(text, p)| serde_json::json!({ "text": text, "label": text, "probabilities": p }))
                    .collect();
                return Ok(answer(&servable, readings, single));
            }
            let c = g.info.classifier.as_ref().ok_or_else(|| Error::WrongModelKind {
                model: model.to_owned(),
                is: "an ONNX model without `[onnx.image]` in its model.toml".into(),
                wants: "pictures to classify (use KServe v2 or TF Serving for its tensors)".into(),
            })?;
            let (pics, single) = pictures()?;
            let deadline = state.deadline(&headers, None)?;
            let probs = super::classify_graph::classify(&state, &servable, g, c, pics, &body.hold, deadline).await?;
            // An ONNX model's labels are the lines of its labels file, answered as written.
            (probs, single, &c.labels[..], |l| Value::from(l))
        } else {
            let img = servable.image()?;
            let ctx = Decode { state: &state, img, hold: &body.hold };
            let (batch, single) = if looks_like_image(&body.bytes) {
                (picture(&ctx, body.bytes.clone(), "body".into()).await?, true)
            } else if is_json(&headers, &body.bytes) {
                let req: serde_json::Map<String, Value> = parse_json(&body.bytes, &body.hold)?;
                from_json(req, &ctx).await?
            } else {
                return Err(Error::UnsupportedMediaType(
                    "`/classify` takes JSON (`{\"image\": ...}` or `{\"images\": [...]}`) or a PNG/JPEG body".into(),
                )
                .into());
            };
            let deadline = state.deadline(&headers, None)?;
            (img.classify(batch, Some(deadline), &body.hold).await?, single, &img.config.labels[..], label_value)
        };
    let predictions: Vec<Value> = probs.into_iter().map(|p| prediction(p, labels, label_of, q.top)).collect();
    Ok(answer(&servable, predictions, single))
}

/// One picture's answer with the model and version, or `predictions` for several.
fn answer(servable: &aiserve_runtime::servable::Servable, mut predictions: Vec<Value>, single: bool) -> Response {
    let (m, v) = (servable.model.to_string(), servable.version.to_string());
    let out = if single {
        let mut p = predictions.remove(0);
        p["model"] = m.into();
        p["version"] = v.into();
        p
    } else {
        serde_json::json!({ "predictions": predictions, "model": m, "version": v })
    };
    crate::http::metrics::tag(Json(out).into_response(), crate::http::metrics::Served::of(servable))
}

/// One picture's answer: the best label and every probability, plus with `top` the `k` most
/// likely classes by name, most likely first (a bar chart's data; `k` beyond the classes gives them all).
fn prediction(probabilities: Vec<f32>, labels: &[String], label_of: fn(&str) -> Value, top: Option<usize>) -> Value {
    let mut answer = serde_json::json!({ "label": label_of(&labels[argmax(&probabilities)]) });
    if let Some(k) = top {
        let mut order: Vec<usize> = (0..probabilities.len()).collect();
        order.sort_by(|&a, &b| probabilities[b].total_cmp(&probabilities[a]).then(a.cmp(&b)));
        let best: Vec<Value> = order
            .into_iter()
            .take(k)
            .map(|i| serde_json::json!({ "label": label_of(&labels[i]), "probability": probabilities[i] }))
            .collect();
        answer["top"] = best.into();
    }
    answer["probabilities"] = probabilities.into();
    answer
}

/// `{"image": ...}` → one image; `{"images": [...]}` → a batch. Returns the batch and whether the
/// request was a single image.
async fn from_json(mut req: serde_json::Map<String, Value>, ctx: &Decode<'_>) -> Result<(ImageBatch, bool), Error> {
    if let Some(extra) = req.keys().find(|k| *k != "image" && *k != "images") {
        return Err(Error::invalid(extra, format!("unknown field `{extra}`; expected `image` or `images`")));
    }
    match (req.remove("image"), req.remove("images")) {
        (Some(image), None) => Ok((image_from_json(ctx, image, "image".into()).await?, true)),
        (None, Some(Value::Array(items))) => {
            ctx.check_count("images", items.len())?;
            let mut batches = Vec::with_capacity(items.len());
            for (i, item) in items.into_iter().enumerate() {
                batches.push(image_from_json(ctx, item, format!("images[{i}]")).await?);
            }
            Ok((join(ctx, batches)?, false))
        }
        (None, Some(other)) => Err(Error::invalid(
            "images",
            format!("`images` must be an array of images, got {}", crate::decode::json_tensor::kind(&other)),
        )),
        (Some(_), Some(_)) => Err(Error::invalid("image", "give either `image` or `images`, not both")),
        (None, None) => Err(Error::invalid("image", "missing `image` (one image) or `images` (a batch)")),
    }
}

fn is_json(headers: &HeaderMap, bytes: &[u8]) -> bool {
    let ct = headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or("");
    ct.contains("json") || bytes.iter().find(|b| !b.is_ascii_whitespace()) == Some(&b'{')
}

/// Numeric labels travel as numbers (`"label": 7`), others as strings.
fn label_value(label: &str) -> Value {
    label.parse::<u64>().map(Value::from).unwrap_or_else(|_| Value::from(label))
}
