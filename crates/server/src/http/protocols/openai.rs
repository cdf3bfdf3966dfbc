//! The OpenAI API subset for embedding models: `POST /v1/embeddings` and `GET /v1/models`.
//!
//! Requests take `input` as a string, a list of strings, a list of token ids or a list of such
//! lists; `encoding_format` `float` or `base64` (what the official Python client asks for by
//! default: little-endian f32 bytes); `dimensions` (keep the first N components, re-normalised
//! when the model normalises). `usage` counts the real tokens fed to the model. Errors use
//! OpenAI's shape, `{"error": {"message", "type", "param", "code"}}`.

use std::time::UNIX_EPOCH;

use axum::body::Body;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use base64::Engine;
use serde_json::{json, Map, Value};

use crate::error::{Error, OpenAiError};
use crate::http::state::{parse_json, AppState};
use aiserve_runtime::text_input::{self, Texts};

pub fn routes() -> Router<AppState> {
    Router::new().route("/v1/embeddings", post(embeddings)).route("/v1/models", get(list_models))
}

async fn list_models(State(state): State<AppState>) -> Json<Value> {
    let data: Vec<Value> = state
        .registry
        .model_names()
        .into_iter()
        .filter_map(|m| state.registry.resolve(m.as_str(), None).ok())
        .map(|s| {
            let created = s.loaded_at.duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
            json!({ "id": s.model.as_str(), "object": "model", "created": created, "owned_by": "aiserve" })
        })
        .collect();
    Json(json!({ "object": "list", "data": data }))
}

async fn embeddings(State(state): State<AppState>, headers: HeaderMap, body: Body) -> Result<Response, OpenAiError> {
    let body = state.read_body(body).await?;
    let mut req: Map<String, Value> = parse_json(&body.bytes, &body.hold)?;
    if let Some(extra) =
        req.keys().find(|k| !["model", "input", "encoding_format", "dimensions", "user"].contains(&k.as_str()))
    {
        return Err(Error::invalid(extra, format!("unknown field `{extra}` for /v1/embeddings")).into());
    }
    let model = match req.remove("model") {
        Some(Value::String(m)) => m,
        Some(other) => {
            return Err(Error::invalid(
                "model",
                format!("`model` must be a string, got {}", crate::error::shown(other)),
            )
            .into())
        }
        None => return Err(Error::invalid("model", "`model` is required").into()),
    };
    let base64 = match req.get("encoding_format") {
        None | Some(Value::Null) => false,
        Some(Value::String(f)) if f == "float" => false,
        Some(Value::String(f)) if f == "base64" => true,
        Some(other) => {
            return Err(Error::invalid(
                "encoding_format",
                format!("`encoding_format` must be \"float\" or \"base64\", got {}", crate::error::shown(other)),
            )
            .into())
        }
    };
    let texts = parse_input(req.remove("input"))?;
    let servable = state.registry.resolve(&model, None)?;
    let em = servable.embedder()?;
    let dimensions = match req.get("dimensions") {
        None | Some(Value::Null) => None,
        Some(v) => match v.as_u64() {
            Some(d) if d >= 1 && d as usize <= em.info.dim => Some(d as usize),
            _ => {
                return Err(Error::invalid(
                    "dimensions",
                    format!(
                        "`dimensions` must be an integer in 1..={} for model `{model}`, got {}",
                        em.info.dim,
                        crate::error::shown(v)
                    ),
                )
                .into())
            }
        },
    };
    let tokens = text_input::tokenize(&state, em, texts, "input", &body.hold).await?;
    let deadline = state.deadline(&headers, None)?;
    let vectors = em.embed(tokens.sequences, Some(deadline)).await?;
    let data: Vec<Value> = vectors
        .into_iter()
        .enumerate()
        .map(|(i, mut v)| {
            if let Some(d) = dimensions {
                v.truncate(d);
                if em.info.normalize {
                    aiserve_core::text::normalize(&mut v);
                }
            }
            let embedding = if base64 {
                let bytes: Vec<u8> = v.iter().flat_map(|x| x.to_le_bytes()).collect();
                Value::from(base64::engine::general_purpose::STANDARD.encode(bytes))
            } else {
                json!(v)
            };
            json!({ "object": "embedding", "index": i, "embedding": embedding })
        })
        .collect();
    let usage = json!({ "prompt_tokens": tokens.tokens, "total_tokens": tokens.tokens });
    aiserve_runtime::metrics::METRICS
        .tokens
        .with_label_values(&[servable.model.as_str(), "prompt"])
        .inc_by(tokens.tokens as u64);
    let resp = Json(json!({ "object": "list", "data": data, "model": model, "usage": usage })).into_response();
    Ok(crate::http::metrics::tag(resp, crate::http::metrics::Served::of(&servable)))
}

/// OpenAI's four `input` forms.
fn parse_input(input: Option<Value>) -> Result<Texts, Error> {
    let kind = crate::decode::json_tensor::kind;
    let token = |v: &Value, field: &str| -> Result<u32, Error> {
        v.as_u64().and_then(|t| u32::try_from(t).ok()).ok_or_else(|| {
            Error::invalid(
                field,
                format!("`{field}` must be a token id (a non-negative integer), got {}", crate::error::shown(v)),
            )
        })
    };
    match input {
        None => Err(Error::invalid("input", "`input` is required")),
        Some(Value::String(s)) => Ok(Texts::Strings(vec![s])),
        Some(Value::Array(items)) => match items.first() {
            None | Some(Value::String(_)) => items
                .into_iter()
                .enumerate()
                .map(|(i, v)| match v {
                    Value::String(s) => Ok(s),
                    other => Err(Error::invalid(
                        format!("input[{i}]"),
                        format!("`input[{i}]` must be a string like the other items, got {}", kind(&other)),
                    )),
                })
                .collect::<Result<_, _>>()
                .map(Texts::Strings),
            Some(Value::Number(_)) => Ok(Texts::Tokens(vec![items
                .iter()
                .enumerate()
                .map(|(i, v)| token(v, &format!("input[{i}]")))
                .collect::<Result<_, _>>()?])),
            Some(Value::Array(_)) => items
                .iter()
                .enumerate()
                .map(|(i, seq)| match seq {
                    Value::Array(ids) => ids
                        .iter()
                        .enumerate()
                        .map(|(j, v)| token(v, &format!("input[{i}][{j}]")))
                        .collect::<Result<Vec<_>, _>>(),
                    other => Err(Error::invalid(
                        format!("input[{i}]"),
                        format!("`input[{i}]` must be a list of token ids, got {}", kind(other)),
                    )),
                })
                .collect::<Result<_, _>>()
                .map(Texts::Tokens),
            Some(other) => Err(Error::invalid(
                "input[0]",
                format!("`input` items must be strings or token ids, got {}", kind(other)),
            )),
        },
        Some(other) => Err(Error::invalid(
            "input",
            format!("`input` must be a string, a list of strings or token ids, got {}", kind(&other)),
        )),
    }
}
