//! Reranking: `POST /v1/rerank`, `/v2/rerank` and `/rerank`, the Cohere / Jina body that vLLM,
//! TEI's Cohere route and llama.cpp's server accept, for cross-encoder models.
//!
//! The body holds `model`, `query`, `documents` (strings, or objects with a `text` field as
//! Cohere's first API and Jina's take), optionally `top_n` (the best N, all by default),
//! `return_documents` (each result carries `document.text`; on by default, as vLLM and Jina
//! do) and `truncate` (cut a pair that is too long, longest text first, instead of answering
//! 400; the server's `--auto-truncate` by default). The answer lists `results` best first
//! (`index` into `documents`, `relevance_score`: the model's score after its activation,
//! sigmoid for the usual one-label rerankers), and `usage.total_tokens`.

use axum::body::Body;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use serde_json::{json, Map, Value};

use crate::error::{shown, Error, OpenAiError};
use crate::http::state::{parse_json, AppState};

pub fn routes() -> Router<AppState> {
    Router::new().route("/v1/rerank", post(rerank)).route("/v2/rerank", post(rerank)).route("/rerank", post(rerank))
}

const FIELDS: &[&str] = &["model", "query", "documents", "top_n", "return_documents", "truncate", "user"];

async fn rerank(State(state): State<AppState>, headers: HeaderMap, body: Body) -> Result<Response, OpenAiError> {
    let body = state.read_body(body).await?;
    let mut req: Map<String, Value> = parse_json(&body.bytes, &body.hold)?;
    if let Some(extra) = req.keys().find(|k| !FIELDS.contains(&k.as_str())) {
        return Err(Error::invalid(
            extra,
            format!("unknown field `{extra}` for rerank (known: {})", FIELDS.join(", ")),
        )
        .into());
    }
    let model = string(req.remove("model"), "model")?;
    let query = string(req.remove("query"), "query")?;
    let documents = documents(req.remove("documents"))?;
    let flag = |name: &str| -> Result<Option<bool>, Error> {
        match req.get(name) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::Bool(b)) => Ok(Some(*b)),
            Some(other) => Err(Error::invalid(name, format!("`{name}` must be true or false, got {}", shown(other)))),
        }
    };
    let return_documents = flag("return_documents")?.unwrap_or(true);
    let truncate = flag("truncate")?.unwrap_or(state.limits.text.auto_truncate);
    let top_n =
        match req.get("top_n") {
            None | Some(Value::Null) => None,
            Some(v) => Some(v.as_u64().filter(|&n| n >= 1).ok_or_else(|| {
                Error::invalid("top_n", format!("`top_n` must be a positive integer, got {}", shown(v)))
            })?),
        };
    let servable = state.registry.resolve(&model, None)?;
    let sm = servable.scorer()?;
    if sm.info.labels.len() != 1 {
        return Err(Error::invalid(
            "model",
            format!(
                "model `{model}` scores {} labels ({}); rerank needs a model with one relevance score (KServe infer \
                 answers every label's score)",
                sm.info.labels.len(),
                sm.info.labels.join(", ")
            ),
        )
        .into());
    }
    let deadline = state.deadline(&headers, None)?;
    // The texts come back in the answer only when asked for (a copy, counted against the hold).
    let kept = if return_documents {
        body.hold.grow(documents.iter().map(String::len).sum(), "keeping the documents for the answer")?;
        documents.clone()
    } else {
        Vec::new()
    };
    let pairs = sm.tokenize(&state, (vec![query], "query"), (documents, "documents"), truncate, &body.hold).await?;
    let tokens = pairs.tokens;
    let rows = sm.score(pairs.pairs, Some(deadline)).await?;
    let mut ranked: Vec<(usize, f32)> = rows.iter().map(|r| r[0]).enumerate().collect();
    // Best first; equal scores keep the documents' order.
    ranked.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
    let keep = top_n.map_or(ranked.len(), |n| usize::try_from(n).unwrap_or(usize::MAX).min(ranked.len()));
    let results: Vec<Value> = ranked[..keep]
        .iter()
        .map(|&(index, score)| {
            let mut r = json!({ "index": index, "relevance_score": score });
            if let Some(text) = kept.get(index) {
                r["document"] = json!({ "text": text });
            }
            r
        })
        .collect();
    aiserve_runtime::metrics::METRICS
        .tokens
        .with_label_values(&[servable.model.as_str(), "prompt"])
        .inc_by(tokens as u64);
    let id = format!("rerank-{}", uuid::Uuid::new_v4().simple());
    let resp = Json(json!({
        "id": id, "model": model, "results": results,
        "usage": { "prompt_tokens": tokens, "total_tokens": tokens },
    }))
    .into_response();
    Ok(crate::http::metrics::tag(resp, crate::http::metrics::Served::of(&servable)))
}

fn string(v: Option<Value>, field: &str) -> Result<String, Error> {
    match v {
        Some(Value::String(s)) => Ok(s),
        Some(other) => Err(Error::invalid(field, format!("`{field}` must be a string, got {}", shown(&other)))),
        None => Err(Error::invalid(field, format!("`{field}` is required"))),
    }
}

/// `documents` as texts: strings, or objects whose `text` is one.
fn documents(v: Option<Value>) -> Result<Vec<String>, Error> {
    let kind = crate::decode::json_tensor::kind;
    let items = match v {
        Some(Value::Array(items)) => items,
        Some(other) => {
            return Err(Error::invalid(
                "documents",
                format!("`documents` must be a list of texts, got {}", kind(&other)),
            ))
        }
        None => return Err(Error::invalid("documents", "`documents` is required")),
    };
    items
        .into_iter()
        .enumerate()
        .map(|(i, d)| match d {
            Value::String(s) => Ok(s),
            Value::Object(mut o) => match o.remove("text") {
                Some(Value::String(s)) => Ok(s),
                _ => Err(Error::invalid(
                    format!("documents[{i}].text"),
                    format!("`documents[{i}]` is an object without a `text` string"),
                )),
            },
            other => Err(Error::invalid(
                format!("documents[{i}]"),
                format!("`documents[{i}]` must be a string or {{\"text\": ...}}, got {}", kind(&other)),
            )),
        })
        .collect()
}
