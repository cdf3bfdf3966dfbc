//! KServe v2 / Open Inference Protocol over HTTP (what Triton and tritonclient speak).
//!
//! Health, server and model metadata, model readiness and `infer`, including the binary tensor
//! extension (`Inference-Header-Content-Length`: a JSON header followed by raw little-endian
//! tensor bytes), which tritonclient uses by default. Outputs: `probabilities` (FP32 `[N, C]`)
//! and `label` (INT64 `[N]`, the arg-max).

use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{json, Map, Value};

use crate::decode::json_tensor;
use crate::error::{Error, HttpError};
use crate::http::state::{parse_json, AppState};
use crate::kserve;
use aiserve_runtime::budget::Hold;
use aiserve_runtime::servable::Servable;

pub const HEADER_LENGTH: &str = "inference-header-content-length";

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/v2", get(server_metadata))
        .route("/v2/health/live", get(|| async { StatusCode::OK }))
        .route("/v2/health/ready", get(server_ready))
        .route("/v2/models/{model}", get(model_metadata))
        .route("/v2/models/{model}/versions/{version}", get(model_metadata_version))
        .route("/v2/models/{model}/ready", get(model_ready))
        .route("/v2/models/{model}/versions/{version}/ready", get(model_ready_version))
        .route("/v2/models/{model}/infer", post(infer))
        .route("/v2/models/{model}/versions/{version}/infer", post(infer_version))
}

async fn server_metadata() -> Json<Value> {
    Json(
        json!({ "name": "aiserve", "version": env!("CARGO_PKG_VERSION"), "extensions": ["binary_tensor_data", "model_repository"] }),
    )
}

async fn server_ready(State(state): State<AppState>) -> StatusCode {
    if state.registry.is_ready() {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    }
}

async fn model_metadata(State(state): State<AppState>, Path(model): Path<String>) -> Result<Json<Value>, HttpError> {
    Ok(metadata(&state, &model, None)?)
}

async fn model_metadata_version(
    State(state): State<AppState>,
    Path((model, version)): Path<(String, String)>,
) -> Result<Json<Value>, HttpError> {
    Ok(metadata(&state, &model, Some(&version))?)
}

fn metadata(state: &AppState, model: &str, version: Option<&str>) -> Result<Json<Value>, Error> {
    let servable = state.registry.resolve(model, version)?;
    let versions: Vec<String> = state.registry.available_versions(model).iter().map(ToString::to_string).collect();
    let md = kserve::metadata(&servable);
    let tensors = |list: Vec<kserve::TensorMeta>| -> Vec<Value> {
        list.into_iter().map(|t| json!({ "name": t.name, "datatype": t.datatype, "shape": t.shape })).collect()
    };
    let mut body = json!({
        "name": servable.model.as_str(),
        "versions": versions,
        "platform": md.platform,
        "inputs": tensors(md.inputs),
        "outputs": tensors(md.outputs),
    });
    if md.parameters.as_object().is_some_and(|p| !p.is_empty()) {
        body["parameters"] = md.parameters;
    }
    Ok(Json(body))
}

async fn model_ready(State(state): State<AppState>, Path(model): Path<String>) -> Response {
    ready(&state, &model, None)
}

async fn model_ready_version(
    State(state): State<AppState>,
    Path((model, version)): Path<(String, String)>,
) -> Response {
    ready(&state, &model, Some(&version))
}

fn ready(state: &AppState, model: &str, version: Option<&str>) -> Response {
    match state.registry.resolve(model, version) {
        Ok(_) => (StatusCode::OK, Json(json!({ "name": model, "ready": true }))).into_response(),
        Err(e @ Error::ModelNotFound(_)) => HttpError(e).into_response(),
        Err(_) => (StatusCode::BAD_REQUEST, Json(json!({ "name": model, "ready": false }))).into_response(),
    }
}

#[derive(Deserialize)]
struct InferRequest {
    pub id: Option<String>,
    #[serde(default)]
    pub parameters: Map<String, Value>,
    pub inputs: Vec<InferInput>,
    #[serde(default)]
    pub outputs: Option<Vec<RequestedOutput>>,
}

#[derive(Deserialize)]
struct InferInput {
    pub name: String,
    pub shape: Vec<i64>,
    pub datatype: String,
    #[serde(default)]
    pub parameters: Map<String, Value>,
    #[serde(default)]
    pub data: Option<Value>,
}

#[derive(Deserialize)]
struct RequestedOutput {
    pub name: String,
    #[serde(default)]
    pub parameters: Map<String, Value>,
}

async fn infer(
    State(state): State<AppState>,
    Path(model): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, HttpError> {
    Ok(run_infer(state, &model, None, headers, body).await?)
}

async fn infer_version(
    State(state): State<AppState>,
    Path((model, version)): Path<(String, String)>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, HttpError> {
    Ok(run_infer(state, &model, Some(&version), headers, body).await?)
}

async fn run_infer(
    state: AppState,
    model: &str,
    version: Option<&str>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, Error> {
    let body = state.read_body(body).await?;
    let servable = state.registry.resolve(model, version)?;
    let (json_part, mut binary) = split_binary(&headers, &body.bytes)?;
    let req: InferRequest = parse_json(json_part, &body.hold)?;
    let deadline = state.deadline(&headers, kserve::timeout_parameter(&req.parameters)?)?;
    let inputs = req
        .inputs
        .iter()
        .enumerate()
        .map(|(i, input)| decode_input(i, input, &mut binary, &body.hold))
        .collect::<Result<Vec<_>, _>>()?;
    if !binary.is_empty() {
        return Err(Error::invalid(
            "body",
            format!("{} bytes of binary data follow the inputs that no input claimed", binary.len()),
        ));
    }
    let all_binary = req.parameters.get("binary_data_output").and_then(Value::as_bool).unwrap_or(false);
    let asked = req.outputs.as_ref().map(|list| list.iter().map(|o| o.name.clone()).collect());
    let binary_of = |name: &str| {
        req.outputs
            .iter()
            .flatten()
            .find(|o| o.name == name)
            .and_then(|o| o.parameters.get("binary_data").and_then(Value::as_bool))
            .unwrap_or(all_binary)
    };
    // Counted as JSON unless every output will be written raw.
    let every_raw = match &req.outputs {
        Some(list) => list.iter().all(|o| binary_of(&o.name)),
        None => all_binary,
    };
    let encoding = if every_raw { kserve::Encoding::Raw } else { kserve::Encoding::Json };
    let outputs = kserve::infer(
        &state.runtime,
        &servable,
        kserve::Request { inputs, outputs: asked, encoding },
        &body.hold,
        deadline,
    )
    .await?;
    let mut tail: Vec<u8> = Vec::new();
    let outs = outputs
        .into_iter()
        .map(|o| {
            let mut v = json!({ "name": o.name, "datatype": o.datatype.name(), "shape": o.shape });
            // Encode each output once, in the form the client asked for.
            if binary_of(&o.name) {
                let start = tail.len();
                o.values.append_le_bytes(&mut tail);
                v["parameters"] = json!({ "binary_data_size": tail.len() - start });
            } else {
                v["data"] = o.values.to_json();
            }
            v
        })
        .collect();
    Ok(crate::http::held_body::hold_until_sent(respond(&servable, req.id, outs, tail), &body.hold))
}

/// Splits a binary-extension body into its JSON header and the raw tensor bytes.
pub(super) fn split_binary<'a>(headers: &HeaderMap, bytes: &'a [u8]) -> Result<(&'a [u8], &'a [u8]), Error> {
    let Some(v) = headers.get(HEADER_LENGTH) else { return Ok((bytes, &[])) };
    let n: usize = v
        .to_str()
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .ok_or_else(|| Error::invalid(HEADER_LENGTH, "`Inference-Header-Content-Length` must be a byte count"))?;
    if n > bytes.len() {
        return Err(Error::invalid(
            HEADER_LENGTH,
            format!("`Inference-Header-Content-Length` is {n} but the body has only {} bytes", bytes.len()),
        ));
    }
    Ok(bytes.split_at(n))
}

/// One input of the JSON header: its values from the binary part (`binary_data_size`) or from
/// `data` (numbers, or strings for BYTES).
fn decode_input(i: usize, input: &InferInput, binary: &mut &[u8], hold: &Hold) -> Result<kserve::Input, Error> {
    let field = format!("inputs[{i}]");
    let datatype = kserve::tensor::datatype(&input.datatype, &format!("{field}.datatype"))?;
    let values = match input.parameters.get("binary_data_size") {
        Some(size) => {
            let f = format!("{field}.parameters.binary_data_size");
            let size = size.as_u64().ok_or_else(|| Error::invalid(&f, "`binary_data_size` must be a byte count"))?;
            if size > binary.len() as u64 {
                return Err(Error::invalid(
                    &f,
                    format!("`binary_data_size` is {size} but only {} binary bytes follow", binary.len()),
                ));
            }
            let (mine, rest) = binary.split_at(size as usize);
            *binary = rest;
            kserve::tensor::from_le_bytes(datatype, mine, &field, hold)?
        }
        None => {
            let f = format!("{field}.data");
            let value = input.data.as_ref().ok_or_else(|| Error::invalid(&f, format!("`{f}` is missing")))?;
            if datatype == kserve::Datatype::Bytes {
                let Value::Array(items) = value else {
                    return Err(Error::invalid(&f, format!("`{f}` must be a list of strings")));
                };
                let texts = items
                    .iter()
                    .enumerate()
                    .map(|(j, v)| {
                        v.as_str().map(str::to_owned).ok_or_else(|| {
                            Error::invalid(
                                format!("{f}[{j}]"),
                                format!("`{f}[{j}]` must be a string, got {}", crate::error::shown(v)),
                            )
                        })
                    })
                    .collect::<Result<_, _>>()?;
                kserve::Values::Texts(texts)
            } else {
                kserve::Values::Numbers(json_tensor::flatten_as(value, datatype, &f, hold)?.1)
            }
        }
    };
    Ok(kserve::Input { name: input.name.clone(), datatype: input.datatype.clone(), shape: input.shape.clone(), values })
}

/// The infer response: JSON alone, or (when any output went binary) the JSON header followed by
/// the raw output bytes, with the header length in `Inference-Header-Content-Length`.
fn respond(servable: &Servable, id: Option<String>, outs: Vec<Value>, tail: Vec<u8>) -> Response {
    let mut body = json!({ "model_name": servable.model.as_str(), "model_version": servable.version.to_string(), "outputs": outs });
    if let Some(id) = id {
        body["id"] = Value::String(id);
    }
    let served = crate::http::metrics::Served::of(servable);
    if tail.is_empty() {
        return crate::http::metrics::tag(Json(body).into_response(), served);
    }
    let mut bytes = serde_json::to_vec(&body).expect("response JSON serialises");
    let header_len = bytes.len();
    bytes.extend_from_slice(&tail);
    let mut resp = bytes.into_response();
    let h = resp.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/octet-stream"));
    h.insert(HEADER_LENGTH, HeaderValue::from(header_len));
    crate::http::metrics::tag(resp, served)
}
