//! OpenAI's Responses API, stateless: `POST /v1/responses` with `input` as a string or items
//! (messages, `function_call`, `function_call_output`), `instructions`, function tools,
//! `text.format` (json_object, json_schema), whole or streamed with its event types, for the
//! official `openai` client's `responses.create` and `responses.parse`.
//!
//! Nothing is kept between requests: `previous_response_id` and `store: true` are refused with
//! a 400 that says so (a client carries the conversation in `input`, as with chat). A
//! translation layer over the same chat path, engine and tool parser as chat completions.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::sync::Arc;
use std::time::UNIX_EPOCH;

use aiserve_core::chat::Message;
use axum::body::Body;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use serde_json::{json, Map, Value};

use super::openai_input::{
    flat_tool, openai_tool_choice, parallel_tool_calls, text_content, tool_list, tool_name, tool_request,
};
use crate::error::{shown, Error, OpenAiError};
use crate::http::metrics::{tag, Served};
use crate::http::state::{parse_json, AppState};
use aiserve_runtime::generation::engine::{Event, FinishReason};
use aiserve_runtime::generation::params::{self, Params};
use aiserve_runtime::generation::tools::{whole, CallStream, Delta, ToolRequest};
use aiserve_runtime::generation::{collect_all, Choices};
use aiserve_runtime::metrics::METRICS;
use aiserve_runtime::servable::Servable;

pub fn routes() -> Router<AppState> {
    Router::new().route("/v1/responses", post(responses))
}

const FIELDS: [&str; 17] = [
    "model",
    "input",
    "instructions",
    "tools",
    "tool_choice",
    "parallel_tool_calls",
    "text",
    "max_output_tokens",
    "temperature",
    "top_p",
    "stream",
    "store",
    "previous_response_id",
    "metadata",
    "user",
    "truncation",
    "seed",
];

fn get<'a>(req: &'a Map<String, Value>, k: &str) -> Option<&'a Value> {
    req.get(k).filter(|v| !v.is_null())
}

/// `input` (a string or a list of items) after `instructions`, as chat messages.
fn messages(req: &Map<String, Value>) -> Result<Vec<Message>, Error> {
    let mut out = Vec::new();
    if let Some(v) = get(req, "instructions") {
        let text = v.as_str().ok_or_else(|| {
            Error::invalid("instructions", format!("`instructions` must be a string, got {}", shown(v)))
        })?;
        out.push(Message::new("system", text));
    }
    let items = match get(req, "input") {
        Some(Value::String(s)) => {
            out.push(Message::new("user", s));
            return Ok(out);
        }
        Some(Value::Array(items)) if !items.is_empty() => items,
        Some(other) => {
            return Err(Error::invalid(
                "input",
                format!("`input` must be a string or a non-empty list of items, got {}", shown(other)),
            ))
        }
        None => return Err(Error::invalid("input", "`input` is required")),
    };
    for (i, item) in items.iter().enumerate() {
        let at = format!("input[{i}]");
        let kind = item.get("type").and_then(Value::as_str).unwrap_or("message");
        match kind {
            "message" => {
                let role = match item.get("role").and_then(Value::as_str) {
                    Some(r @ ("user" | "assistant" | "system" | "developer")) => r,
                    other => {
                        return Err(Error::invalid(
                            format!("{at}.role"),
                            format!("`{at}.role` must be user, assistant, system or developer, got {other:?}"),
                        ))
                    }
                };
                let content = item
                    .get("content")
                    .ok_or_else(|| Error::invalid(format!("{at}.content"), format!("`{at}.content` is required")))?;
                out.push(Message::new(role, &text_content(content, &format!("{at}.content"))?));
            }
            "function_call" => {
                let name = tool_name(item.get("name"), &format!("{at}.name"))?;
                let call_id = item.get("call_id").and_then(Value::as_str).unwrap_or_default();
                let arguments = match item.get("arguments") {
                    Some(Value::String(s)) => serde_json::from_str(s).unwrap_or_else(|_| Value::String(s.clone())),
                    _ => json!({}),
                };
                let call =
                    json!({ "id": call_id, "type": "function", "function": { "name": name, "arguments": arguments } });
                // Calls in a row belong to one assistant turn.
                match out.last_mut() {
                    Some(m) if m.role == "assistant" => m.tool_calls.get_or_insert_with(Vec::new).push(call),
                    _ => {
                        let mut m = Message::new("assistant", "");
                        m.tool_calls = Some(vec![call]);
                        out.push(m);
                    }
                }
            }
            "function_call_output" => {
                let call_id = item.get("call_id").and_then(Value::as_str).ok_or_else(|| {
                    Error::invalid(format!("{at}.call_id"), format!("`{at}.call_id` must be a string"))
                })?;
                let output = match item.get("output") {
                    Some(Value::String(s)) => s.clone(),
                    Some(v) => text_content(v, &format!("{at}.output"))?,
                    None => String::new(),
                };
                let mut m = Message::new("tool", &output);
                m.tool_call_id = Some(call_id.to_string());
                out.push(m);
            }
            other => {
                return Err(Error::invalid(
                    format!("{at}.type"),
                    format!(
                    "`{at}.type` `{other}` is not served: items are messages, function_call and function_call_output"
                ),
                ))
            }
        }
    }
    Ok(out)
}

/// Function `tools` (flat: `name`, `description`, `parameters`), `tool_choice`, `parallel_tool_calls`.
fn tools(req: &Map<String, Value>) -> Result<Option<ToolRequest>, Error> {
    let tools = tool_list(get(req, "tools"), |t, at| {
        if t.get("type").and_then(Value::as_str) != Some("function") {
            return Err(Error::invalid(
                format!("{at}.type"),
                format!("`{at}.type` must be \"function\": hosted tools are not served"),
            ));
        }
        flat_tool(t, at, "parameters")
    })?;
    let choice = openai_tool_choice(get(req, "tool_choice"), |o| tool_name(o.get("name"), "tool_choice.name"))?;
    tool_request(tools, choice, parallel_tool_calls(req)?)
}

/// The sampling fields and `text.format`, as chat's [`Params`].
fn sampling(req: &Map<String, Value>) -> Result<Params, Error> {
    for (field, why) in [
        ("previous_response_id", "responses are not stored: send the whole conversation in `input`"),
        ("store", "responses are not stored: leave `store` unset or false"),
    ] {
        if get(req, field).is_some_and(|v| v != &Value::Bool(false)) {
            return Err(Error::invalid(field, format!("`{field}` is not supported: {why}")));
        }
    }
    if let Some(v) = get(req, "truncation").filter(|v| *v != "disabled") {
        return Err(Error::invalid("truncation", format!("`truncation` must be \"disabled\", got {}", shown(v))));
    }
    let mut shared = Map::new();
    for (from, to) in [
        ("max_output_tokens", "max_tokens"),
        ("temperature", "temperature"),
        ("top_p", "top_p"),
        ("stream", "stream"),
        ("seed", "seed"),
    ] {
        if let Some(v) = get(req, from) {
            shared.insert(to.into(), v.clone());
        }
    }
    let mut p = params::parse(&shared, &["max_tokens"]).map_err(|e| match e {
        Error::Input(i) if i.field() == "max_tokens" => {
            Error::invalid("max_output_tokens", i.to_string().replace("max_tokens", "max_output_tokens"))
        }
        e => e,
    })?;
    if let Some(text) = get(req, "text") {
        let o = text.as_object().ok_or_else(|| Error::invalid("text", "`text` must be an object"))?;
        params::check_fields(o, &["format", "verbosity"], "text")?;
        if let Some(f) = get(o, "format") {
            // Chat's `response_format` with the schema fields at the top, as Responses has them.
            let mut format = f.clone();
            if f.get("type").and_then(Value::as_str) == Some("json_schema") {
                let mut js = f.as_object().cloned().unwrap_or_default();
                js.remove("type");
                format = json!({ "type": "json_schema", "json_schema": js });
            }
            let mut rf = Map::new();
            rf.insert("response_format".into(), format);
            p.grammar = params::parse(&rf, &["max_tokens"])
                .map_err(|e| match e {
                    Error::Input(i) => {
                        let field = i
                            .field()
                            .replace("response_format.json_schema", "text.format")
                            .replace("response_format", "text.format");
                        Error::invalid(
                            &field,
                            i.to_string()
                                .replace("response_format.json_schema", "text.format")
                                .replace("response_format", "text.format"),
                        )
                    }
                    e => e,
                })?
                .grammar;
        }
    }
    Ok(p)
}

async fn responses(State(state): State<AppState>, headers: HeaderMap, body: Body) -> Result<Response, OpenAiError> {
    let body = state.read_body(body).await?;
    let req: Map<String, Value> = parse_json(&body.bytes, &body.hold)?;
    params::check_fields(&req, &FIELDS, "/v1/responses")?;
    let model = match req.get("model") {
        Some(Value::String(m)) => m.clone(),
        Some(other) => {
            return Err(Error::invalid("model", format!("`model` must be a string, got {}", shown(other))).into())
        }
        None => return Err(Error::invalid("model", "`model` is required").into()),
    };
    let servable = state.registry.resolve(&model, None)?;
    let gen = servable.generator()?;
    let mut p = sampling(&req)?;
    let tools = tools(&req)?;
    let messages = messages(&req)?;
    let (prompt, output) =
        gen.chat_request(messages, tools.as_ref(), &mut p, "tool_choice", &state.decoders, &body.hold).await?;
    let prompt_tokens = prompt.len();
    METRICS.tokens.with_label_values(&[servable.model.as_str(), "prompt"]).inc_by(prompt_tokens as u64);
    let deadline = state.deadline(&headers, None)?;
    let constraint = gen.params_constraint(&p, &state.decoders).await?;
    let rxs = gen.start(prompt, &p, deadline, constraint.as_ref())?;
    let served = Served::of(&servable);
    let mut items = Items::new(echo(&req, &servable, &p), prompt_tokens, p.stream);
    if !p.stream {
        let done = collect_all(rxs, deadline).await?;
        let c = &done[0];
        whole(output.as_ref(), &c.text).0.into_iter().for_each(|d| items.delta(d));
        items.close();
        return Ok(tag(
            Json(items.response(Some((c.reason, c.completion_tokens, c.cached_tokens)))).into_response(),
            served,
        ));
    }
    let s = Stream {
        items,
        choices: Choices::new(rxs),
        calls: CallStream::new(output.as_ref()),
        started: false,
        ended: false,
        _servable: servable,
    };
    let events =
        futures_util::stream::unfold(s, |mut s| async move { s.next().await.map(|e| (Ok::<_, Infallible>(e), s)) });
    Ok(tag(Sse::new(events).keep_alive(KeepAlive::default()).into_response(), served))
}

/// The request fields a response repeats.
fn echo(req: &Map<String, Value>, servable: &Servable, p: &Params) -> Map<String, Value> {
    let created = std::time::SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
    let or = |k: &str, d: Value| get(req, k).cloned().unwrap_or(d);
    let mut m = Map::new();
    m.insert("id".into(), format!("resp_{}", uuid::Uuid::new_v4().simple()).into());
    m.insert("object".into(), "response".into());
    m.insert("created_at".into(), created.into());
    m.insert("status".into(), "in_progress".into());
    m.insert("error".into(), Value::Null);
    m.insert("incomplete_details".into(), Value::Null);
    m.insert("instructions".into(), or("instructions", Value::Null));
    m.insert("max_output_tokens".into(), or("max_output_tokens", Value::Null));
    m.insert("model".into(), servable.model.to_string().into());
    m.insert("output".into(), json!([]));
    m.insert("parallel_tool_calls".into(), or("parallel_tool_calls", true.into()));
    m.insert("previous_response_id".into(), Value::Null);
    m.insert("store".into(), false.into());
    m.insert("temperature".into(), p.sampling.temperature.into());
    m.insert("top_p".into(), p.sampling.top_p.into());
    m.insert("tool_choice".into(), or("tool_choice", "auto".into()));
    m.insert("tools".into(), or("tools", json!([])));
    m.insert("text".into(), or("text", json!({ "format": { "type": "text" } })));
    m.insert("truncation".into(), "disabled".into());
    m.insert("metadata".into(), or("metadata", json!({})));
    m.insert("user".into(), or("user", Value::Null));
    m.insert("usage".into(), Value::Null);
    m
}

/// The output item being written.
enum Open {
    Message { index: usize, id: String, text: String },
    Call { index: usize, id: String, call_id: String, name: String, arguments: String },
}

/// A response's output items, built from the answer's deltas, with the stream events that
/// describe each step (kept only when streaming).
struct Items {
    head: Map<String, Value>,
    done: Vec<Value>,
    open: Option<Open>,
    events: VecDeque<(String, Value)>,
    stream: bool,
    sequence: u64,
    prompt_tokens: usize,
}

impl Items {
    fn new(head: Map<String, Value>, prompt_tokens: usize, stream: bool) -> Self {
        Self { head, done: Vec::new(), open: None, events: VecDeque::new(), stream, sequence: 0, prompt_tokens }
    }

    fn emit(&mut self, kind: &str, mut body: Value) {
        if self.stream {
            body["type"] = kind.into();
            body["sequence_number"] = self.sequence.into();
            self.sequence += 1;
            self.events.push_back((kind.to_string(), body));
        }
    }

    fn message_item(id: &str, text: &str, status: &str) -> Value {
        let content: Vec<Value> = if status == "completed" || !text.is_empty() {
            vec![json!({ "type": "output_text", "text": text, "annotations": [], "logprobs": [] })]
        } else {
            Vec::new()
        };
        json!({ "type": "message", "id": id, "status": status, "role": "assistant", "content": content })
    }

    fn call_item(id: &str, call_id: &str, name: &str, arguments: &str, status: &str) -> Value {
        json!({ "type": "function_call", "id": id, "call_id": call_id, "name": name, "arguments": arguments, "status": status })
    }

    fn delta(&mut self, d: Delta) {
        match d {
            Delta::Text(t) if t.is_empty() => {}
            Delta::Text(t) if t.trim().is_empty() && !matches!(self.open, Some(Open::Message { .. })) => {}
            Delta::Text(t) => {
                if !matches!(self.open, Some(Open::Message { .. })) {
                    self.close();
                    let (index, id) = (self.done.len(), format!("msg_{}", uuid::Uuid::new_v4().simple()));
                    self.emit(
                        "response.output_item.added",
                        json!({ "output_index": index, "item": Self::message_item(&id, "", "in_progress") }),
                    );
                    let part = json!({ "type": "output_text", "text": "", "annotations": [] });
                    self.emit(
                        "response.content_part.added",
                        json!({ "item_id": id, "output_index": index, "content_index": 0, "part": part }),
                    );
                    self.open = Some(Open::Message { index, id, text: String::new() });
                }
                let Some(Open::Message { index, id, text }) = &mut self.open else { return };
                text.push_str(&t);
                let body =
                    json!({ "item_id": id, "output_index": index, "content_index": 0, "delta": t, "logprobs": [] });
                self.emit("response.output_text.delta", body);
            }
            Delta::Call { id, name, .. } => {
                self.close();
                let index = self.done.len();
                let item_id = format!("fc_{}", uuid::Uuid::new_v4().simple());
                self.emit(
                    "response.output_item.added",
                    json!({ "output_index": index, "item": Self::call_item(&item_id, &id, &name, "", "in_progress") }),
                );
                self.open = Some(Open::Call { index, id: item_id, call_id: id, name, arguments: String::new() });
            }
            Delta::Arguments { json, .. } => {
                let Some(Open::Call { index, id, arguments, .. }) = &mut self.open else { return };
                arguments.push_str(&json);
                let body = json!({ "item_id": id, "output_index": index, "delta": json });
                self.emit("response.function_call_arguments.delta", body);
            }
        }
    }

    /// Finishes the open item.
    fn close(&mut self) {
        match self.open.take() {
            Some(Open::Message { index, id, text }) => {
                self.emit(
                    "response.output_text.done",
                    json!({ "item_id": id, "output_index": index, "content_index": 0, "text": text, "logprobs": [] }),
                );
                let part = json!({ "type": "output_text", "text": text, "annotations": [] });
                self.emit(
                    "response.content_part.done",
                    json!({ "item_id": id, "output_index": index, "content_index": 0, "part": part }),
                );
                let item = Self::message_item(&id, &text, "completed");
                self.emit("response.output_item.done", json!({ "output_index": index, "item": item }));
                self.done.push(item);
            }
            Some(Open::Call { index, id, call_id, name, arguments }) => {
                self.emit(
                    "response.function_call_arguments.done",
                    json!({ "item_id": id, "output_index": index, "name": name, "arguments": arguments }),
                );
                let item = Self::call_item(&id, &call_id, &name, &arguments, "completed");
                self.emit("response.output_item.done", json!({ "output_index": index, "item": item }));
                self.done.push(item);
            }
            None => {}
        }
    }

    /// The response object: in progress, or finished with its reason, its token count and the
    /// prompt tokens the prefix cache supplied.
    fn response(&self, end: Option<(FinishReason, usize, usize)>) -> Value {
        let mut r = self.head.clone();
        if let Some((reason, completion, cached)) = end {
            let incomplete = reason == FinishReason::Length;
            r.insert("status".into(), if incomplete { "incomplete" } else { "completed" }.into());
            if incomplete {
                r.insert("incomplete_details".into(), json!({ "reason": "max_output_tokens" }));
            }
            r.insert("output".into(), self.done.clone().into());
            r.insert(
                "usage".into(),
                json!({ "input_tokens": self.prompt_tokens, "input_tokens_details": { "cached_tokens": cached },
                    "output_tokens": completion, "output_tokens_details": { "reasoning_tokens": 0 },
                    "total_tokens": self.prompt_tokens + completion }),
            );
        }
        Value::Object(r)
    }
}

/// The SSE events of a streamed response.
struct Stream {
    items: Items,
    choices: Choices,
    calls: CallStream,
    started: bool,
    ended: bool,
    /// Keeps the version loaded while its stream runs.
    _servable: Arc<Servable>,
}

impl Stream {
    async fn next(&mut self) -> Option<SseEvent> {
        loop {
            if let Some((kind, body)) = self.items.events.pop_front() {
                return Some(SseEvent::default().event(kind).data(body.to_string()));
            }
            if self.ended {
                return None;
            }
            if !self.started {
                self.started = true;
                let r = self.items.response(None);
                self.items.emit("response.created", json!({ "response": r }));
                self.items.emit("response.in_progress", json!({ "response": r }));
                continue;
            }
            match self.choices.next().await {
                Some((_, Event::Text(t))) => {
                    for d in self.calls.push(&t) {
                        self.items.delta(d);
                    }
                }
                Some((_, Event::Token(_))) => {}
                Some((_, Event::Done { reason, completion_tokens, cached_tokens, .. })) => {
                    for d in self.calls.finish() {
                        self.items.delta(d);
                    }
                    self.items.close();
                    let r = self.items.response(Some((reason, completion_tokens, cached_tokens)));
                    let kind =
                        if reason == FinishReason::Length { "response.incomplete" } else { "response.completed" };
                    self.items.emit(kind, json!({ "response": r }));
                    self.ended = true;
                }
                Some((_, Event::Failed(err))) => {
                    let mut r = self.items.response(None);
                    r["status"] = "failed".into();
                    r["error"] = json!({ "code": "server_error", "message": err.to_string() });
                    self.items.emit("response.failed", json!({ "response": r }));
                    self.ended = true;
                }
                None => self.ended = true,
            }
        }
    }
}
