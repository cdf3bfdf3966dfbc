//! `POST /classify`: the simple API.
//!
//! Body forms: `{"image": <28 rows of 28 numbers | 784 numbers | base64 PNG/JPEG>}`,
//! `{"images": [<image>, ...]}`, or a raw PNG/JPEG body. Query: `?model=&version=`.
//! Answer: `{"label", "probabilities", "model", "version"}` (or `"predictions": [...]` for
//! `images`).

use aiserve_core::ImageBatch;
use axum::body::Body;
use axum::extract::{Query, State};
use axum::http::{header, HeaderMap};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
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

#[derive(Serialize)]
struct Prediction {
    label: String,
    probabilities: Vec<f32>,
}

async fn classify(
    State(state): State<AppState>,
    query: Result<Query<Target>, axum::extract::rejection::QueryRejection>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, HttpError> {
    let Query(target) = query.map_err(|e| Error::invalid("query", format!("bad query string: {}", e.body_text())))?;
    let body = state.read_body(body).await?;
    let model = target.model.as_deref().unwrap_or(&state.default_model);
    let servable = state.registry.resolve(model, target.version.as_deref())?;
    if let aiserve_runtime::servable::Kind::Graph(g) = &servable.kind {
        let c = g.info.classifier.as_ref().ok_or_else(|| Error::WrongModelKind {
            model: model.to_owned(),
            is: "an ONNX model without `[onnx.image]` in its model.toml".into(),
            wants: "pictures to classify (use KServe v2 or TF Serving for its tensors)".into(),
        })?;
        let (pics, single) = if looks_like_image(&body.bytes) {
            (vec![("body".to_owned(), body.bytes.clone())], true)
        } else if is_json(&headers, &body.bytes) {
            super::classify_graph::pictures(parse_json(&body.bytes, &body.hold)?, &body.hold)?
        } else {
            return Err(Error::UnsupportedMediaType(
                "`/classify` takes a PNG/JPEG body or JSON with base64 pictures".into(),
            )
            .into());
        };
        let deadline = state.deadline(&headers, None)?;
        let mut preds = super::classify_graph::classify(&state, &servable, g, c, pics, &body.hold, deadline).await?;
        let (m, v) = (servable.model.to_string(), servable.version.to_string());
        let out = if single {
            let mut p = preds.remove(0);
            p["model"] = m.into();
            p["version"] = v.into();
            p
        } else {
            serde_json::json!({ "predictions": preds, "model": m, "version": v })
        };
        return Ok(crate::http::metrics::tag(Json(out).into_response(), crate::http::metrics::Served::of(&servable)));
    }
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
    let probs = img.classify(batch, Some(deadline), &body.hold).await?;
    let labels = &img.config.labels;
    let mut predictions: Vec<Prediction> =
        probs.into_iter().map(|p| Prediction { label: labels[argmax(&p)].clone(), probabilities: p }).collect();
    let (model, version) = (servable.model.to_string(), servable.version.to_string());
    let body = if single {
        let p = predictions.remove(0);
        serde_json::json!({ "label": label_value(&p.label), "probabilities": p.probabilities, "model": model, "version": version })
    } else {
        let preds: Vec<Value> = predictions
            .into_iter()
            .map(|p| serde_json::json!({ "label": label_value(&p.label), "probabilities": p.probabilities }))
            .collect();
        serde_json::json!({ "predictions": preds, "model": model, "version": version })
    };
    Ok(crate::http::metrics::tag(Json(body).into_response(), crate::http::metrics::Served::of(&servable)))
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
