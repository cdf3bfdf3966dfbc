//! KServe v2 / Open Inference Protocol over HTTP (what Triton and tritonclient speak).
//!
//! Health, server and model metadata, model readiness and `infer`, including the binary tensor
//! extension (`Inference-Header-Content-Length`: a JSON header followed by raw little-endian
//! tensor bytes), which tritonclient uses by default. Outputs: `probabilities` (FP32 `[N, C]`)
//! and `label` (INT64 `[N]`, the arg-max).

use aiserve_core::ImageBatch;
use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{json, Map, Value};

use super::classify::argmax;
use super::images::Decode;
use crate::decode::json_tensor;
use crate::error::ApiError;
use crate::servable::{ImageModel, Kind, Servable};
use crate::state::{parse_json, AppState};

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
    if state.registry.initial_poll_done() {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    }
}

async fn model_metadata(State(state): State<AppState>, Path(model): Path<String>) -> Result<Json<Value>, ApiError> {
    metadata(&state, &model, None)
}

async fn model_metadata_version(
    State(state): State<AppState>,
    Path((model, version)): Path<(String, String)>,
) -> Result<Json<Value>, ApiError> {
    metadata(&state, &model, Some(&version))
}

fn metadata(state: &AppState, model: &str, version: Option<&str>) -> Result<Json<Value>, ApiError> {
    let servable = state.registry.resolve(model, version)?;
    let versions: Vec<String> = state
        .registry
        .status(model)
        .map(|s| {
            s.versions
                .iter()
                .filter(|v| v.state == aiserve_core::state::VersionState::Available)
                .map(|v| v.version.to_string())
                .collect()
        })
        .unwrap_or_default();
    let cfg = match &servable.kind {
        Kind::Image(img) => &img.config,
        Kind::Embedder(em) => return Ok(Json(super::kserve_text::metadata(&servable, em, versions))),
        Kind::Generator(g) => {
            let info = &g.engine.spec().info;
            return Ok(Json(json!({
                "name": servable.model.as_str(),
                "versions": versions,
                "platform": "aiserve_candle",
                "inputs": [{ "name": "text_input", "datatype": "BYTES", "shape": [1] }],
                "outputs": [{ "name": "text_output", "datatype": "BYTES", "shape": [-1] }],
                "parameters": { "architecture": info.architecture, "max_context": info.max_context, "endpoints": ["generate", "generate_stream"] }
            })));
        }
    };
    let [h, w, c] = cfg.input.shape;
    Ok(Json(json!({
        "name": servable.model.as_str(),
        "versions": versions,
        "platform": "aiserve_candle",
        "inputs": [{ "name": cfg.input.name, "datatype": cfg.input.datatype, "shape": [-1, h as i64, w as i64, c as i64] }],
        "outputs": [
            { "name": cfg.output.name, "datatype": cfg.output.datatype, "shape": [-1, cfg.output.shape[0] as i64] },
            { "name": "label", "datatype": "INT64", "shape": [-1] }
        ]
    })))
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
        Err(e @ ApiError::ModelNotFound(_)) => e.into_response(),
        Err(_) => (StatusCode::BAD_REQUEST, Json(json!({ "name": model, "ready": false }))).into_response(),
    }
}

#[derive(Deserialize)]
pub(super) struct InferRequest {
    pub id: Option<String>,
    #[serde(default)]
    pub parameters: Map<String, Value>,
    pub inputs: Vec<InferInput>,
    #[serde(default)]
    pub outputs: Option<Vec<RequestedOutput>>,
}

#[derive(Deserialize)]
pub(super) struct InferInput {
    pub name: String,
    pub shape: Vec<i64>,
    pub datatype: String,
    #[serde(default)]
    pub parameters: Map<String, Value>,
    #[serde(default)]
    pub data: Option<Value>,
}

#[derive(Deserialize)]
pub(super) struct RequestedOutput {
    pub name: String,
    #[serde(default)]
    pub parameters: Map<String, Value>,
}

async fn infer(
    State(state): State<AppState>,
    Path(model): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    run_infer(state, &model, None, headers, body).await
}

async fn infer_version(
    State(state): State<AppState>,
    Path((model, version)): Path<(String, String)>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    run_infer(state, &model, Some(&version), headers, body).await
}

async fn run_infer(
    state: AppState,
    model: &str,
    version: Option<&str>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let body = state.read_body(body).await?;
    let servable = state.registry.resolve(model, version)?;
    let (json_part, mut binary) = split_binary(&headers, &body.bytes)?;
    let req: InferRequest = parse_json(json_part, &body.hold)?;
    let deadline = state.deadline(&headers, timeout_parameter(&req.parameters)?)?;
    let img = match &servable.kind {
        Kind::Image(img) => img,
        Kind::Embedder(em) => {
            let text = super::kserve_text::TextInfer { servable: &servable, em, state: &state, hold: &body.hold };
            return text.infer(req, binary, deadline).await;
        }
        Kind::Generator(_) => {
            return Err(ApiError::invalid(
                "inputs",
                format!(
                    "model `{}` generates text: use /v2/models/{}/generate or /generate_stream",
                    servable.model, servable.model
                ),
            ))
        }
    };
    let ctx = Decode { state: &state, img, hold: &body.hold };
    let batch = decode_input(&req, &mut binary, &servable, &ctx)?;
    if !binary.is_empty() {
        return Err(ApiError::invalid(
            "body",
            format!("{} bytes of binary data follow the inputs that no input claimed", binary.len()),
        ));
    }
    let outputs = requested_outputs(&req, &servable, img)?;
    let probs = img.classify(batch, Some(deadline), &body.hold).await?;
    Ok(encode_response(&servable, img, req.id, &outputs, &probs))
}

/// Triton's request parameter `timeout`, in microseconds (it can only shorten the server's).
pub(super) fn timeout_parameter(parameters: &Map<String, Value>) -> Result<Option<std::time::Duration>, ApiError> {
    match parameters.get("timeout") {
        None => Ok(None),
        Some(v) => v.as_u64().map(|us| Some(std::time::Duration::from_micros(us))).ok_or_else(|| {
            ApiError::invalid(
                "parameters.timeout",
                format!("`parameters.timeout` must be microseconds (an integer), got {}", crate::error::shown(v)),
            )
        }),
    }
}

/// Splits a binary-extension body into its JSON header and the raw tensor bytes.
pub(super) fn split_binary<'a>(headers: &HeaderMap, bytes: &'a [u8]) -> Result<(&'a [u8], &'a [u8]), ApiError> {
    let Some(v) = headers.get(HEADER_LENGTH) else { return Ok((bytes, &[])) };
    let n: usize =
        v.to_str().ok().and_then(|s| s.trim().parse().ok()).ok_or_else(|| {
            ApiError::invalid(HEADER_LENGTH, "`Inference-Header-Content-Length` must be a byte count")
        })?;
    if n > bytes.len() {
        return Err(ApiError::invalid(
            HEADER_LENGTH,
            format!("`Inference-Header-Content-Length` is {n} but the body has only {} bytes", bytes.len()),
        ));
    }
    Ok(bytes.split_at(n))
}

fn decode_input(
    req: &InferRequest,
    binary: &mut &[u8],
    servable: &Servable,
    ctx: &Decode<'_>,
) -> Result<ImageBatch, ApiError> {
    let img = ctx.img;
    let expected = &img.config.input.name;
    let input = match req.inputs.as_slice() {
        [one] => one,
        other => {
            return Err(ApiError::invalid(
                "inputs",
                format!("model `{}` takes exactly one input (`{expected}`), got {}", servable.model, other.len()),
            ))
        }
    };
    if &input.name != expected {
        return Err(ApiError::invalid(
            "inputs[0].name",
            format!("unknown input `{}`; model `{}` takes `{expected}`", input.name, servable.model),
        ));
    }
    let shape: Vec<usize> = input
        .shape
        .iter()
        .map(|&d| {
            usize::try_from(d).map_err(|_| {
                ApiError::invalid(
                    "inputs[0].shape",
                    format!("`inputs[0].shape` dims must be non-negative, got {:?}", input.shape),
                )
            })
        })
        .collect::<Result<_, _>>()?;
    let width = match input.datatype.as_str() {
        "FP32" | "INT32" | "UINT32" => 4,
        "FP64" | "INT64" | "UINT64" => 8,
        "UINT8" | "INT8" => 1,
        "FP16" | "BF16" | "INT16" | "UINT16" => 2,
        other => {
            return Err(ApiError::invalid(
                "inputs[0].datatype",
                format!("`inputs[0].datatype` must be a numeric type such as FP32, got {other:?}"),
            ))
        }
    };
    let data = match input.parameters.get("binary_data_size") {
        Some(size) => {
            let size = size.as_u64().ok_or_else(|| {
                ApiError::invalid("inputs[0].parameters.binary_data_size", "`binary_data_size` must be a byte count")
            })? as usize;
            if size > binary.len() {
                return Err(ApiError::invalid(
                    "inputs[0].parameters.binary_data_size",
                    format!("`binary_data_size` is {size} but only {} binary bytes follow", binary.len()),
                ));
            }
            if !size.is_multiple_of(width) {
                return Err(ApiError::invalid(
                    "inputs[0].parameters.binary_data_size",
                    format!("{size} bytes is not a whole number of {} values", input.datatype),
                ));
            }
            let (mine, rest) = binary.split_at(size);
            *binary = rest;
            ctx.hold.grow(size / width * size_of::<f32>(), "the tensor `inputs[0]`")?;
            from_le_bytes(&input.datatype, mine)
        }
        None => {
            let value = input
                .data
                .as_ref()
                .ok_or_else(|| ApiError::invalid("inputs[0].data", "`inputs[0].data` is missing"))?;
            json_tensor::flatten(value, "inputs[0].data", ctx.hold)?.1
        }
    };
    Ok(ImageBatch::from_tensor(&img.spec, "inputs[0]", &shape, data, ctx.limits())?)
}

fn from_le_bytes(datatype: &str, b: &[u8]) -> Vec<f32> {
    macro_rules! conv {
        ($t:ty, $n:expr) => {
            b.chunks_exact($n).map(|c| <$t>::from_le_bytes(c.try_into().expect("exact chunk")) as f32).collect()
        };
    }
    match datatype {
        "FP32" => conv!(f32, 4),
        "FP64" => conv!(f64, 8),
        "INT32" => conv!(i32, 4),
        "UINT32" => conv!(u32, 4),
        "INT64" => conv!(i64, 8),
        "UINT64" => conv!(u64, 8),
        "INT16" => conv!(i16, 2),
        "UINT16" => conv!(u16, 2),
        "INT8" => b.iter().map(|&v| v as i8 as f32).collect(),
        "UINT8" => b.iter().map(|&v| v as f32).collect(),
        // FP16 / BF16: widen through the bit patterns.
        "FP16" => b.chunks_exact(2).map(|c| f16_to_f32(u16::from_le_bytes([c[0], c[1]]))).collect(),
        "BF16" => b.chunks_exact(2).map(|c| f32::from_bits((u16::from_le_bytes([c[0], c[1]]) as u32) << 16)).collect(),
        _ => Vec::new(),
    }
}

fn f16_to_f32(h: u16) -> f32 {
    let sign = if h & 0x8000 != 0 { -1.0 } else { 1.0 };
    let exp = ((h >> 10) & 0x1f) as i32;
    let frac = (h & 0x3ff) as f32;
    match exp {
        0 => sign * frac * 2f32.powi(-24),
        31 => {
            if frac == 0.0 {
                sign * f32::INFINITY
            } else {
                f32::NAN
            }
        }
        e => sign * (1.0 + frac / 1024.0) * 2f32.powi(e - 15),
    }
}

#[derive(Clone, Copy, PartialEq)]
enum Out {
    Probabilities,
    Label,
}

/// The outputs to return and whether each goes as binary.
fn requested_outputs(req: &InferRequest, servable: &Servable, img: &ImageModel) -> Result<Vec<(Out, bool)>, ApiError> {
    let all_binary = req.parameters.get("binary_data_output").and_then(Value::as_bool).unwrap_or(false);
    let prob_name = &img.config.output.name;
    match &req.outputs {
        None => Ok(vec![(Out::Probabilities, all_binary), (Out::Label, all_binary)]),
        Some(list) => list
            .iter()
            .enumerate()
            .map(|(i, o)| {
                let which = if &o.name == prob_name {
                    Out::Probabilities
                } else if o.name == "label" {
                    Out::Label
                } else {
                    return Err(ApiError::invalid(
                        format!("outputs[{i}].name"),
                        format!(
                            "unknown output `{}`; model `{}` has `{prob_name}` and `label`",
                            o.name, servable.model
                        ),
                    ));
                };
                let binary = o.parameters.get("binary_data").and_then(Value::as_bool).unwrap_or(all_binary);
                Ok((which, binary))
            })
            .collect(),
    }
}

/// One output tensor's values.
enum Values {
    F32(Vec<f32>),
    I64(Vec<i64>),
}

impl Values {
    fn append_le_bytes(&self, out: &mut Vec<u8>) {
        match self {
            Self::F32(v) => v.iter().for_each(|x| out.extend_from_slice(&x.to_le_bytes())),
            Self::I64(v) => v.iter().for_each(|x| out.extend_from_slice(&x.to_le_bytes())),
        }
    }

    fn into_json(self) -> Value {
        match self {
            Self::F32(v) => json!(v),
            Self::I64(v) => json!(v),
        }
    }
}

fn encode_response(
    servable: &Servable,
    img: &ImageModel,
    id: Option<String>,
    outputs: &[(Out, bool)],
    probs: &[Vec<f32>],
) -> Response {
    let n = probs.len();
    let classes = img.config.output.shape[0];
    let mut tail: Vec<u8> = Vec::new();
    let mut outs = Vec::with_capacity(outputs.len());
    for &(which, binary) in outputs {
        let (name, datatype, shape, values) = match which {
            Out::Probabilities => (
                img.config.output.name.as_str(),
                "FP32",
                vec![n, classes],
                Values::F32(probs.iter().flatten().copied().collect()),
            ),
            Out::Label => ("label", "INT64", vec![n], Values::I64(probs.iter().map(|p| argmax(p) as i64).collect())),
        };
        let mut o = json!({ "name": name, "datatype": datatype, "shape": shape });
        // Encode each output once, in the form the client asked for.
        if binary {
            let start = tail.len();
            values.append_le_bytes(&mut tail);
            o["parameters"] = json!({ "binary_data_size": tail.len() - start });
        } else {
            o["data"] = values.into_json();
        }
        outs.push(o);
    }
    respond(servable, id, outs, tail)
}

/// The infer response: JSON alone, or (when any output went binary) the JSON header followed by
/// the raw output bytes, with the header length in `Inference-Header-Content-Length`.
pub(super) fn respond(servable: &Servable, id: Option<String>, outs: Vec<Value>, tail: Vec<u8>) -> Response {
    let mut body = json!({ "model_name": servable.model.as_str(), "model_version": servable.version.to_string(), "outputs": outs });
    if let Some(id) = id {
        body["id"] = Value::String(id);
    }
    let served = crate::metrics::Served::of(servable);
    if tail.is_empty() {
        return crate::metrics::tag(Json(body).into_response(), served);
    }
    let mut bytes = serde_json::to_vec(&body).expect("response JSON serialises");
    let header_len = bytes.len();
    bytes.extend_from_slice(&tail);
    let mut resp = bytes.into_response();
    let h = resp.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/octet-stream"));
    h.insert(HEADER_LENGTH, HeaderValue::from(header_len));
    crate::metrics::tag(resp, served)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn half_floats() {
        assert_eq!(f16_to_f32(0x3c00), 1.0);
        assert_eq!(f16_to_f32(0x3800), 0.5);
        assert_eq!(f16_to_f32(0x0000), 0.0);
        assert!(f16_to_f32(0x7e00).is_nan());
        assert_eq!(from_le_bytes("BF16", &[0x80, 0x3f]), vec![1.0]);
        assert_eq!(from_le_bytes("UINT8", &[0, 255]), vec![0.0, 255.0]);
    }
}
