//! KServe v2 / Triton generate extension for text generation models:
//! `POST /v2/models/{m}[/versions/{v}]/generate` answers `{"model_name", "model_version",
//! "text_output", "finish_reason"}`; `.../generate_stream` sends the same object per text
//! delta as server-sent events. The request holds `text_input` and the sampling fields, at the
//! top level or under `parameters` (as Triton's LLM backends accept them).

use std::convert::Infallible;
use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::HeaderMap;
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use serde_json::{json, Map, Value};

use crate::error::{Error, HttpError};
use crate::http::metrics::{tag, Served};
use crate::http::state::{parse_json, AppState};
use crate::kserve::SAMPLING_FIELDS;
use aiserve_runtime::generation::engine::Event;
use aiserve_runtime::generation::{collect_all, params, Choices};
use aiserve_runtime::metrics::METRICS;
use aiserve_runtime::servable::Servable;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/v2/models/{model}/generate", post(generate))
        .route("/v2/models/{model}/versions/{version}/generate", post(generate_version))
        .route("/v2/models/{model}/generate_stream", post(generate_stream))
        .route("/v2/models/{model}/versions/{version}/generate_stream", post(generate_stream_version))
}

async fn generate(
    State(s): State<AppState>,
    Path(model): Path<String>,
    h: HeaderMap,
    body: Body,
) -> Result<Response, HttpError> {
    Ok(run(s, &model, None, h, body, false).await?)
}

async fn generate_version(
    State(s): State<AppState>,
    Path((model, version)): Path<(String, String)>,
    h: HeaderMap,
    body: Body,
) -> Result<Response, HttpError> {
    Ok(run(s, &model, Some(&version), h, body, false).await?)
}

async fn generate_stream(
    State(s): State<AppState>,
    Path(model): Path<String>,
    h: HeaderMap,
    body: Body,
) -> Result<Response, HttpError> {
    Ok(run(s, &model, None, h, body, true).await?)
}

async fn generate_stream_version(
    State(s): State<AppState>,
    Path((model, version)): Path<(String, String)>,
    h: HeaderMap,
    body: Body,
) -> Result<Response, HttpError> {
    Ok(run(s, &model, Some(&version), h, body, true).await?)
}

async fn run(
    state: AppState,
    model: &str,
    version: Option<&str>,
    headers: HeaderMap,
    body: Body,
    stream: bool,
) -> Result<Response, Error> {
    let body = state.read_body(body).await?;
    let mut req: Map<String, Value> = parse_json(&body.bytes, &body.hold)?;
    let mut known = vec!["text_input", "parameters", "id"];
    known.extend(SAMPLING_FIELDS);
    params::check_fields(&req, &known, "generate")?;
    // Sampling fields may come at the top level or in `parameters`; merged, top level wins.
    let mut fields = match req.remove("parameters") {
        None | Some(Value::Null) => Map::new(),
        Some(Value::Object(p)) => p,
        Some(other) => {
            return Err(Error::invalid(
                "parameters",
                format!("`parameters` must be an object, got {}", crate::error::shown(other)),
            ))
        }
    };
    // Triton's `timeout` (µs) bounds the wait for the first token, as the header does.
    let timeout = crate::kserve::timeout_parameter(&fields)?;
    fields.remove("timeout");
    params::check_fields(&fields, &SAMPLING_FIELDS, "generate `parameters`")?;
    for f in SAMPLING_FIELDS {
        if let Some(v) = req.remove(f) {
            fields.insert(f.into(), v);
        }
    }
    if fields.get("stream").and_then(Value::as_bool).is_some_and(|s| s != stream) {
        return Err(Error::invalid("stream", "use /generate_stream to stream and /generate for one answer"));
    }
    fields.remove("stream");
    let mut p = params::parse(&fields, &["max_tokens"])?;
    p.stream = stream;
    let text = match req.remove("text_input") {
        Some(Value::String(t)) => t,
        Some(other) => {
            return Err(Error::invalid(
                "text_input",
                format!("`text_input` must be a string, got {}", crate::error::shown(other)),
            ))
        }
        None => return Err(Error::invalid("text_input", "`text_input` is required")),
    };
    let servable = state.registry.resolve(model, version)?;
    let gen = servable.generator()?;
    let prompt = gen.text_prompt(text, "text_input", &state.decoders, &body.hold).await?;
    METRICS.tokens.with_label_values(&[servable.model.as_str(), "prompt"]).inc_by(prompt.len() as u64);
    let deadline = state.deadline(&headers, timeout)?;
    let constraint = gen.params_constraint(&p, &state.decoders).await?;
    let rxs = gen.start(prompt, &p, deadline, constraint.as_ref())?;
    let served = Served::of(&servable);
    let id = req.remove("id");
    let head = |servable: &Servable| {
        let mut m = Map::new();
        m.insert("model_name".into(), servable.model.as_str().into());
        m.insert("model_version".into(), servable.version.to_string().into());
        if let Some(id) = &id {
            m.insert("id".into(), id.clone());
        }
        m
    };
    if !stream {
        let done = collect_all(rxs, deadline).await?;
        let mut out = head(&servable);
        let c = &done[0];
        out.insert("text_output".into(), c.text.clone().into());
        out.insert("finish_reason".into(), c.reason.as_str().into());
        return Ok(tag(Json(Value::Object(out)).into_response(), served));
    }
    let start = (Choices::new(rxs), head(&servable), servable.clone(), false);
    let events = futures_util::stream::unfold(
        start,
        |(mut choices, head, servable, ended): (Choices, Map<String, Value>, Arc<Servable>, bool)| async move {
            if ended {
                return None;
            }
            // KServe's `parameters` take no `logprobs`, so no token events come.
            let (body, ended) = match choices.next().await? {
                (_, Event::Token(_)) => {
                    return Some((Ok(SseEvent::default().comment("")), (choices, head, servable, false)))
                }
                (_, Event::Text(t)) => {
                    let mut m = head.clone();
                    m.insert("text_output".into(), t.into());
                    (Value::Object(m), false)
                }
                (_, Event::Done { reason, .. }) => {
                    let mut m = head.clone();
                    m.insert("text_output".into(), "".into());
                    m.insert("finish_reason".into(), reason.as_str().into());
                    (Value::Object(m), true)
                }
                (_, Event::Failed(e)) => (json!({ "error": e.to_string() }), true),
            };
            Some((Ok::<_, Infallible>(SseEvent::default().data(body.to_string())), (choices, head, servable, ended)))
        },
    );
    Ok(tag(Sse::new(events).keep_alive(KeepAlive::default()).into_response(), served))
}
