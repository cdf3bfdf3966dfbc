//! TF Serving REST: model status, metadata and `:predict` (row and columnar formats).
//!
//! Paths are `/v1/models/{m}[/versions/{v}|/labels/{l}][/metadata|:predict]`. The router cannot
//! match a `:predict` suffix inside a segment, so one catch-all route parses the tail with
//! [`parse_path`]. Version labels come from the model's `model.toml` (`[version_labels]`).

use aiserve_core::ImageBatch;
use axum::body::Body;
use axum::extract::{Path, State};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde_json::{json, Map, Value};

use super::images::{image_from_json, join, Decode};
use crate::decode::json_tensor;
use crate::error::{Error, HttpError};
use crate::http::state::{parse_json, AppState};
use aiserve_runtime::servable::Servable;

pub fn routes() -> Router<AppState> {
    Router::new().route("/v1/models/{*rest}", get(get_handler).post(post_handler))
}

#[derive(Debug, PartialEq)]
pub enum Selector {
    Latest,
    Version(String),
    Label(String),
}

#[derive(Debug, PartialEq)]
pub struct TfPath {
    pub model: String,
    pub selector: Selector,
    /// `None` for status, `Some("metadata")`, or the verb after `:` (`predict`, ...).
    pub verb: Option<String>,
}

/// Parses the part after `/v1/models/`.
pub fn parse_path(rest: &str) -> Option<TfPath> {
    let (path, verb) = match rest.rsplit_once(':') {
        Some((p, v)) if !v.contains('/') => (p, Some(v.to_owned())),
        _ => (rest, None),
    };
    let segs: Vec<&str> = path.split('/').collect();
    let (model, selector, tail) = match segs.as_slice() {
        [m, tail @ ..] if !m.is_empty() => match tail {
            ["versions", v, t @ ..] => (*m, Selector::Version((*v).to_owned()), t),
            ["labels", l, t @ ..] => (*m, Selector::Label((*l).to_owned()), t),
            t => (*m, Selector::Latest, t),
        },
        _ => return None,
    };
    let verb = match (tail, verb) {
        ([], v) => v,
        (["metadata"], None) => Some("metadata".to_owned()),
        _ => return None,
    };
    Some(TfPath { model: model.to_owned(), selector, verb })
}

fn not_found(rest: &str) -> Error {
    Error::NotFound(format!("no TF Serving route for `/v1/models/{rest}`"))
}

/// The version string a selector names (`None`: latest).
fn version_of(state: &AppState, p: &TfPath) -> Result<Option<String>, Error> {
    match &p.selector {
        Selector::Latest => Ok(None),
        Selector::Version(v) => Ok(Some(v.clone())),
        Selector::Label(l) => crate::tfserving::label_version(&state.runtime, &p.model, l).map(Some),
    }
}

async fn get_handler(State(state): State<AppState>, Path(rest): Path<String>) -> Result<Json<Value>, HttpError> {
    let p = parse_path(&rest).ok_or_else(|| not_found(&rest))?;
    match p.verb.as_deref() {
        None => Ok(status(&state, &p)?),
        Some("metadata") => {
            let servable = state.registry.resolve(&p.model, version_of(&state, &p)?.as_deref())?;
            Ok(Json(metadata(&servable)?))
        }
        Some(_) => Err(not_found(&rest).into()),
    }
}

fn status(state: &AppState, p: &TfPath) -> Result<Json<Value>, Error> {
    let only = version_of(state, p)?;
    let rows: Vec<Value> = crate::tfserving::version_statuses(&state.runtime, &p.model, only.as_deref())?
        .into_iter()
        .map(|v| {
            let (code, msg) = match &v.error {
                Some(e) => ("UNKNOWN", e.as_str()),
                None => ("OK", ""),
            };
            json!({ "version": v.version.to_string(), "state": v.state.tf_serving_name(), "status": { "error_code": code, "error_message": msg } })
        })
        .collect();
    Ok(Json(json!({ "model_version_status": rows })))
}

fn metadata(s: &Servable) -> Result<Value, Error> {
    let dims = |d: &[i64]| d.iter().map(|v| json!({ "size": v.to_string(), "name": "" })).collect::<Vec<_>>();
    if let aiserve_runtime::servable::Kind::Graph(g) = &s.kind {
        let infos = |list: &[aiserve_core::TensorSpec]| -> Map<String, Value> {
            list.iter()
                .map(|t| {
                    let info = json!({
                        "dtype": crate::tfserving::dtype_name(t.datatype),
                        "tensor_shape": { "dim": dims(&t.dims), "unknown_rank": false },
                        "name": t.name,
                    });
                    (t.name.clone(), info)
                })
                .collect()
        };
        return Ok(json!({
            "model_spec": { "name": s.model.as_str(), "signature_name": "", "version": s.version.to_string() },
            "metadata": { "signature_def": { "signature_def": { "serving_default": {
                "inputs": infos(&g.info.inputs), "outputs": infos(&g.info.outputs),
                "method_name": crate::tfserving::PREDICT_METHOD
            } } } }
        }));
    }
    let cfg = &s.image()?.config;
    let [h, w, c] = cfg.input.shape;
    Ok(json!({
        "model_spec": { "name": s.model.as_str(), "signature_name": "", "version": s.version.to_string() },
        "metadata": { "signature_def": { "signature_def": { "serving_default": {
            "inputs": { cfg.input.name.clone(): { "dtype": "DT_FLOAT", "tensor_shape": { "dim": dims(&[-1, h as i64, w as i64, c as i64]), "unknown_rank": false }, "name": cfg.input.name } },
            "outputs": { cfg.output.name.clone(): { "dtype": "DT_FLOAT", "tensor_shape": { "dim": dims(&[-1, cfg.output.shape[0] as i64]), "unknown_rank": false }, "name": cfg.output.name } },
            "method_name": crate::tfserving::PREDICT_METHOD
        } } } }
    }))
}

async fn post_handler(
    State(state): State<AppState>,
    Path(rest): Path<String>,
    headers: axum::http::HeaderMap,
    body: Body,
) -> Result<Response, HttpError> {
    let p = parse_path(&rest).ok_or_else(|| not_found(&rest))?;
    match p.verb.as_deref() {
        Some("predict") => {}
        Some(v @ ("classify" | "regress")) => {
            return Err(Error::NotFound(format!(
                "`:{v}` takes tf.Example inputs, which this model does not; use `:predict`"
            ))
            .into())
        }
        _ => return Err(not_found(&rest).into()),
    }
    let body = state.read_body(body).await?;
    let servable = state.registry.resolve(&p.model, version_of(&state, &p)?.as_deref())?;
    let mut req: Map<String, Value> = parse_json(&body.bytes, &body.hold)?;
    if let Some(sig) = req.remove("signature_name") {
        if sig.as_str() != Some("serving_default") && sig.as_str() != Some("") {
            return Err(Error::invalid(
                "signature_name",
                format!("unknown `signature_name` {}; this model has `serving_default`", crate::error::shown(&sig)),
            )
            .into());
        }
    }
    if let Some(extra) = req.keys().find(|k| *k != "instances" && *k != "inputs") {
        return Err(Error::invalid(extra, format!("unknown field `{extra}`; expected `instances` or `inputs`")).into());
    }
    let deadline = state.deadline(&headers, None)?;
    if let aiserve_runtime::servable::Kind::Graph(g) = &servable.kind {
        let (value, row) = match (req.remove("instances"), req.remove("inputs")) {
            (Some(v), None) => (v, true),
            (None, Some(v)) => (v, false),
            _ => {
                return Err(
                    Error::invalid("instances", "give one of `instances` (row format) or `inputs` (columnar)").into()
                )
            }
        };
        let inputs = super::tfserving_graph::inputs(g, value, row, &body.hold)?;
        let request = crate::kserve::Request { inputs, outputs: None, encoding: crate::kserve::Encoding::Json };
        let outputs = crate::kserve::infer(&state.runtime, &servable, request, &body.hold, deadline).await?;
        let answer = super::tfserving_graph::answer(outputs, row);
        let resp = crate::http::metrics::tag(Json(answer).into_response(), crate::http::metrics::Served::of(&servable));
        return Ok(crate::http::held_body::hold_until_sent(resp, &body.hold));
    }
    let img = servable.image()?;
    let ctx = Decode { state: &state, img, hold: &body.hold };
    let (batch, row_format) = match (req.remove("instances"), req.remove("inputs")) {
        (Some(instances), None) => (from_instances(instances, &ctx).await?, true),
        (None, Some(inputs)) => (from_inputs(inputs, &ctx)?, false),
        (Some(_), Some(_)) => {
            return Err(Error::invalid(
                "instances",
                "give either `instances` (row format) or `inputs` (columnar), not both",
            )
            .into())
        }
        (None, None) => {
            return Err(Error::invalid("instances", "missing `instances` (row format) or `inputs` (columnar)").into())
        }
    };
    let probs = img.classify(batch, Some(deadline), &body.hold).await?;
    let body = if row_format { json!({ "predictions": probs }) } else { json!({ "outputs": probs }) };
    Ok(crate::http::metrics::tag(Json(body).into_response(), crate::http::metrics::Served::of(&servable)))
}

/// Row format: each instance is one image (numbers, `{"b64": ...}`, or `{"<input name>": ...}`).
async fn from_instances(instances: Value, ctx: &Decode<'_>) -> Result<ImageBatch, Error> {
    let Value::Array(items) = instances else {
        return Err(Error::invalid(
            "instances",
            format!("`instances` must be a list, got {}", json_tensor::kind(&instances)),
        ));
    };
    ctx.check_count("instances", items.len())?;
    let input_name = &ctx.img.config.input.name;
    let mut batches = Vec::with_capacity(items.len());
    for (i, item) in items.into_iter().enumerate() {
        let field = format!("instances[{i}]");
        let value = match item {
            Value::Object(mut m) if m.contains_key(input_name) && m.len() == 1 => {
                m.remove(input_name).expect("checked")
            }
            Value::Object(m) if !m.contains_key("b64") => {
                let names: Vec<&String> = m.keys().collect();
                return Err(Error::invalid(
                    &field,
                    format!("`{field}` names inputs {names:?}; this model takes `{input_name}`"),
                ));
            }
            other => other,
        };
        batches.push(image_from_json(ctx, value, field).await?);
    }
    join(ctx, batches)
}

/// Columnar format: one batch-first tensor, bare or under the input's name.
fn from_inputs(inputs: Value, ctx: &Decode<'_>) -> Result<ImageBatch, Error> {
    let input_name = &ctx.img.config.input.name;
    let tensor = match inputs {
        Value::Object(mut m) => {
            if m.len() != 1 || !m.contains_key(input_name) {
                let names: Vec<&String> = m.keys().collect();
                return Err(Error::invalid(
                    "inputs",
                    format!("`inputs` names {names:?}; this model takes `{input_name}`"),
                ));
            }
            m.remove(input_name).expect("checked")
        }
        other => other,
    };
    let (shape, data) = json_tensor::flatten(&tensor, "inputs", ctx.hold)?;
    Ok(ImageBatch::from_tensor(&ctx.img.spec, "inputs", &shape, data, ctx.limits())?)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(model: &str, selector: Selector, verb: Option<&str>) -> Option<TfPath> {
        Some(TfPath { model: model.into(), selector, verb: verb.map(Into::into) })
    }

    #[test]
    fn parses_paths() {
        assert_eq!(parse_path("digits"), p("digits", Selector::Latest, None));
        assert_eq!(parse_path("digits:predict"), p("digits", Selector::Latest, Some("predict")));
        assert_eq!(
            parse_path("digits/versions/2:predict"),
            p("digits", Selector::Version("2".into()), Some("predict"))
        );
        assert_eq!(parse_path("digits/labels/stable"), p("digits", Selector::Label("stable".into()), None));
        assert_eq!(
            parse_path("digits/versions/2/metadata"),
            p("digits", Selector::Version("2".into()), Some("metadata"))
        );
        assert_eq!(parse_path("digits/metadata"), p("digits", Selector::Latest, Some("metadata")));
        assert_eq!(parse_path(""), None);
        assert_eq!(parse_path("digits/versions/2/extra"), None);
        assert_eq!(parse_path("digits/metadata:predict"), None);
    }
}
