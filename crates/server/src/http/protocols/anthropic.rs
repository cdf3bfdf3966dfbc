//! Anthropic's Messages API: `POST /v1/messages` (whole, or streamed with Anthropic's event
//! sequence) and `POST /v1/messages/count_tokens`, for the official `anthropic` client
//! unmodified (it sends its key as `x-api-key`, which the key check accepts).
//!
//! A translation layer only: the request becomes the same chat messages, tools and sampling
//! [`Params`] as OpenAI chat's and runs through the same engine; the answer's text and calls
//! (from [`CallStream`]) become `text` and `tool_use` blocks. Errors use Anthropic's shape.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::sync::Arc;

use aiserve_core::chat::Message;
use aiserve_core::tools::ToolChoice;
use axum::body::Body;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use serde_json::{json, Map, Value};

use super::openai_input::{flat_tool, text_content, tool_list, tool_name, tool_request};
use crate::error::{shown, AnthropicError, Error};
use crate::http::metrics::{tag, Served};
use crate::http::state::{parse_json, AppState};
use aiserve_runtime::generation::engine::{Event, FinishReason};
use aiserve_runtime::generation::grammar::{Grammar, GrammarRequest};
use aiserve_runtime::generation::params::{self, Params, MAX_STOPS, MAX_STOP_BYTES};
use aiserve_runtime::generation::tools::{whole, CallStream, Delta, ToolRequest};
use aiserve_runtime::generation::{collect_all, Choices};
use aiserve_runtime::metrics::METRICS;
use aiserve_runtime::servable::Servable;

pub fn routes() -> Router<AppState> {
    Router::new().route("/v1/messages", post(messages)).route("/v1/messages/count_tokens", post(count_tokens))
}

const FIELDS: [&str; 14] = [
    "output_config",
    "model",
    "max_tokens",
    "messages",
    "system",
    "stop_sequences",
    "temperature",
    "top_p",
    "top_k",
    "stream",
    "tools",
    "tool_choice",
    "metadata",
    "service_tier",
];

/// A request read into the engine's terms.
struct Ask {
    servable: Arc<Servable>,
    messages: Vec<Message>,
    tools: Option<ToolRequest>,
    params: Params,
}

async fn read(state: &AppState, body: Body, count_only: bool) -> Result<(Ask, aiserve_runtime::budget::Hold), Error> {
    let body = state.read_body(body).await?;
    let req: Map<String, Value> = parse_json(&body.bytes, &body.hold)?;
    let known: &[&str] = if count_only { &["model", "messages", "system", "tools", "tool_choice"] } else { &FIELDS };
    params::check_fields(&req, known, if count_only { "/v1/messages/count_tokens" } else { "/v1/messages" })?;
    let model = match req.get("model") {
        Some(Value::String(m)) => m.clone(),
        Some(other) => return Err(Error::invalid("model", format!("`model` must be a string, got {}", shown(other)))),
        None => return Err(Error::invalid("model", "`model` is required")),
    };
    let servable = state.registry.resolve(&model, None)?;
    servable.generator()?;
    let mut messages = system(req.get("system"))?;
    messages.extend(parse_messages(req.get("messages"))?);
    let tools = parse_tools(&req)?;
    let params = if count_only { params::parse(&Map::new(), &["max_tokens"])? } else { sampling(&req)? };
    Ok((Ask { servable, messages, tools, params }, body.hold))
}

/// The sampling fields, in Anthropic's ranges, as the engine's [`Params`].
fn sampling(req: &Map<String, Value>) -> Result<Params, Error> {
    if req.get("max_tokens").is_none_or(Value::is_null) {
        return Err(Error::invalid("max_tokens", "`max_tokens` is required"));
    }
    if let Some(t) = req.get("temperature").and_then(Value::as_f64).filter(|t| *t > 1.0) {
        return Err(Error::invalid("temperature", format!("`temperature` must be in [0, 1], got {t}")));
    }
    let mut shared = Map::new();
    for k in ["max_tokens", "temperature", "top_p", "top_k", "stream"] {
        if let Some(v) = req.get(k) {
            shared.insert(k.into(), v.clone());
        }
    }
    let mut p = params::parse(&shared, &["max_tokens"])?;
    p.grammar = output_format(req.get("output_config"))?;
    p.stop = match req.get("stop_sequences") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Array(items)) if items.len() <= MAX_STOPS => items
            .iter()
            .enumerate()
            .map(|(i, s)| match s.as_str() {
                Some(s) if !s.is_empty() && s.len() <= MAX_STOP_BYTES => Ok(s.to_string()),
                _ => Err(Error::invalid(
                    format!("stop_sequences[{i}]"),
                    format!("`stop_sequences[{i}]` must be a string of 1 to {MAX_STOP_BYTES} bytes, got {}", shown(s)),
                )),
            })
            .collect::<Result<_, _>>()?,
        Some(other) => {
            return Err(Error::invalid(
                "stop_sequences",
                format!("`stop_sequences` must be a list of at most {MAX_STOPS} strings, got {}", shown(other)),
            ))
        }
    };
    Ok(p)
}

/// `output_config.format`: `{"type": "json_schema", "schema": {...}}` (Anthropic's structured
/// outputs, what `messages.parse` sends).
fn output_format(v: Option<&Value>) -> Result<Option<GrammarRequest>, Error> {
    let Some(o) = v.filter(|v| !v.is_null()) else { return Ok(None) };
    let o = o.as_object().ok_or_else(|| Error::invalid("output_config", "`output_config` must be an object"))?;
    if o.get("effort").is_some_and(|e| !e.is_null()) {
        return Err(Error::invalid(
            "output_config.effort",
            "`output_config.effort` is not supported: these models do not reason at length",
        ));
    }
    params::check_fields(o, &["format", "effort"], "output_config")?;
    let Some(f) = o.get("format").filter(|f| !f.is_null()) else { return Ok(None) };
    let field = "output_config.format.schema";
    match (f.get("type").and_then(Value::as_str), f.get("schema")) {
        (Some("json_schema"), Some(Value::Object(schema))) => Ok(Some(GrammarRequest {
            grammar: Grammar::JsonSchema(Value::Object(schema.clone())),
            field: field.into(),
        })),
        _ => Err(Error::invalid(
            "output_config.format",
            "`output_config.format` must be {\"type\": \"json_schema\", \"schema\": {...}}",
        )),
    }
}

/// `system`: a string or a list of text blocks.
fn system(v: Option<&Value>) -> Result<Vec<Message>, Error> {
    match v {
        None | Some(Value::Null) => Ok(Vec::new()),
        Some(v) => Ok(vec![Message::new("system", &text_content(v, "system")?)]),
    }
}

/// `messages`: user and assistant turns of text, `tool_use` and `tool_result` blocks.
fn parse_messages(v: Option<&Value>) -> Result<Vec<Message>, Error> {
    let items = match v {
        Some(Value::Array(items)) if !items.is_empty() => items,
        Some(Value::Array(_)) => return Err(Error::invalid("messages", "`messages` must not be empty")),
        Some(other) => {
            return Err(Error::invalid("messages", format!("`messages` must be a list, got {}", shown(other))))
        }
        None => return Err(Error::invalid("messages", "`messages` is required")),
    };
    let mut out = Vec::new();
    for (i, m) in items.iter().enumerate() {
        let field = format!("messages[{i}]");
        let role = match m.get("role").and_then(Value::as_str) {
            Some(r @ ("user" | "assistant")) => r,
            _ => {
                return Err(Error::invalid(
                    format!("{field}.role"),
                    format!(
                        "`{field}.role` must be user or assistant, got {}",
                        m.get("role").map_or("nothing".into(), shown)
                    ),
                ))
            }
        };
        let blocks = match m.get("content") {
            Some(Value::String(s)) => {
                out.push(Message::new(role, s));
                continue;
            }
            Some(Value::Array(blocks)) => blocks,
            _ => {
                return Err(Error::invalid(
                    format!("{field}.content"),
                    format!("`{field}.content` must be a string or a list of content blocks"),
                ))
            }
        };
        let (mut text, mut calls) = (String::new(), Vec::new());
        for (j, b) in blocks.iter().enumerate() {
            let at = format!("{field}.content[{j}]");
            match (b.get("type").and_then(Value::as_str), role) {
                (Some("text"), _) => text.push_str(b.get("text").and_then(Value::as_str).unwrap_or_default()),
                (Some("tool_use"), "assistant") => {
                    let id = b.get("id").and_then(Value::as_str).unwrap_or_default();
                    let name = tool_name(b.get("name"), &format!("{at}.name"))?;
                    let input = b.get("input").cloned().unwrap_or_else(|| json!({}));
                    calls.push(json!({ "id": id, "type": "function", "function": { "name": name, "arguments": input } }));
                }
                (Some("tool_result"), "user") => {
                    let id = b.get("tool_use_id").and_then(Value::as_str).ok_or_else(|| {
                        Error::invalid(format!("{at}.tool_use_id"), format!("`{at}.tool_use_id` must be a string"))
                    })?;
                    let content = match b.get("content") {
                        None | Some(Value::Null) => String::new(),
                        Some(c) => text_content(c, &format!("{at}.content"))?,
                    };
                    let mut result = Message::new("tool", &content);
                    result.tool_call_id = Some(id.to_string());
                    out.push(result);
                }
                (other, _) => {
                    return Err(Error::invalid(
                        format!("{at}.type"),
                        format!(
                            "`{at}.type` {} is not served in a {role} turn: text models take text, tool_use (assistant) and tool_result (user) blocks",
                            other.map_or("nothing".into(), |t| format!("`{t}`"))
                        ),
                    ))
                }
            }
        }
        if !text.is_empty() || !calls.is_empty() {
            let mut msg = Message::new(role, &text);
            msg.tool_calls = (!calls.is_empty()).then_some(calls);
            out.push(msg);
        }
    }
    Ok(out)
}

/// `tools` (`name`, `description`, `input_schema`) and `tool_choice` (`auto`, `any`, `tool`,
/// `none`, with `disable_parallel_tool_use`).
fn parse_tools(req: &Map<String, Value>) -> Result<Option<ToolRequest>, Error> {
    let tools = tool_list(req.get("tools"), |t, at| {
        if let Some(kind) = t.get("type").and_then(Value::as_str).filter(|k| *k != "custom") {
            return Err(Error::invalid(
                format!("{at}.type"),
                format!("`{at}.type` `{kind}` names a server tool; only client tools (name, input_schema) are served"),
            ));
        }
        flat_tool(t, at, "input_schema")
    })?;
    let (choice, parallel) = match req.get("tool_choice") {
        None | Some(Value::Null) => (ToolChoice::Auto, true),
        Some(Value::Object(o)) => {
            let parallel = !o.get("disable_parallel_tool_use").and_then(Value::as_bool).unwrap_or(false);
            let choice = match o.get("type").and_then(Value::as_str) {
                Some("auto") => ToolChoice::Auto,
                Some("any") => ToolChoice::Required,
                Some("none") => ToolChoice::None,
                Some("tool") => ToolChoice::Named(tool_name(o.get("name"), "tool_choice.name")?),
                _ => {
                    return Err(Error::invalid(
                        "tool_choice.type",
                        format!(
                            "`tool_choice.type` must be auto, any, tool or none, got {}",
                            shown(Value::Object(o.clone()))
                        ),
                    ))
                }
            };
            (choice, parallel)
        }
        Some(other) => {
            return Err(Error::invalid("tool_choice", format!("`tool_choice` must be an object, got {}", shown(other))))
        }
    };
    tool_request(tools, choice, parallel)
}

async fn count_tokens(State(state): State<AppState>, body: Body) -> Result<Response, AnthropicError> {
    let (ask, hold) = read(&state, body, true).await?;
    let gen = ask.servable.generator()?;
    let mut p = ask.params;
    let (prompt, _) =
        gen.chat_request(ask.messages, ask.tools.as_ref(), &mut p, "tool_choice", &state.decoders, &hold).await?;
    Ok(tag(Json(json!({ "input_tokens": prompt.len() })).into_response(), Served::of(&ask.servable)))
}

async fn messages(State(state): State<AppState>, headers: HeaderMap, body: Body) -> Result<Response, AnthropicError> {
    let (ask, hold) = read(&state, body, false).await?;
    let Ask { servable, messages, tools, mut params } = ask;
    let gen = servable.generator()?;
    let (prompt, output) =
        gen.chat_request(messages, tools.as_ref(), &mut params, "tool_choice", &state.decoders, &hold).await?;
    let prompt_tokens = prompt.len();
    METRICS.tokens.with_label_values(&[servable.model.as_str(), "prompt"]).inc_by(prompt_tokens as u64);
    let deadline = state.deadline(&headers, None)?;
    let constraint = gen.params_constraint(&params, &state.decoders).await?;
    let rxs = gen.start(prompt, &params, deadline, constraint.as_ref())?;
    let served = Served::of(&servable);
    let head = Head { id: format!("msg_{}", uuid::Uuid::new_v4().simple()), model: servable.model.to_string() };
    if !params.stream {
        let done = collect_all(rxs, deadline).await?;
        let c = &done[0];
        let (deltas, calls) = whole(output.as_ref(), &c.text);
        let mut blocks = Blocks::default();
        deltas.into_iter().for_each(|d| blocks.add(d));
        let (reason, sequence) = stop_reason(c.reason, c.stop.as_deref(), calls);
        let body =
            head.message(blocks.into_values(), Value::from(reason), sequence, prompt_tokens, c.completion_tokens);
        return Ok(tag(Json(body).into_response(), served));
    }
    let s = Events {
        head,
        choices: Choices::new(rxs),
        calls: CallStream::new(output.as_ref()),
        open: None,
        blocks: 0,
        outbox: VecDeque::new(),
        prompt_tokens,
        started: false,
        ended: false,
        _servable: servable,
    };
    let events =
        futures_util::stream::unfold(s, |mut s| async move { s.next().await.map(|e| (Ok::<_, Infallible>(e), s)) });
    Ok(tag(Sse::new(events).keep_alive(KeepAlive::default()).into_response(), served))
}

/// Anthropic's stop reason (and the stop sequence that ended the text, if one did).
fn stop_reason(reason: FinishReason, stop: Option<&str>, calls: usize) -> (&'static str, Value) {
    match (reason, stop) {
        (FinishReason::Length, _) => ("max_tokens", Value::Null),
        (_, Some(s)) => ("stop_sequence", Value::from(s)),
        _ if calls > 0 => ("tool_use", Value::Null),
        _ => ("end_turn", Value::Null),
    }
}

/// A call id in Anthropic's spelling (`toolu_…`).
fn tool_use_id(id: &str) -> String {
    format!("toolu_{}", id.strip_prefix("call_").unwrap_or(id))
}

struct Head {
    id: String,
    model: String,
}

impl Head {
    fn message(&self, content: Vec<Value>, reason: Value, sequence: Value, input: usize, output: usize) -> Value {
        json!({
            "id": self.id, "type": "message", "role": "assistant", "model": self.model, "content": content,
            "stop_reason": reason, "stop_sequence": sequence,
            "usage": { "input_tokens": input, "output_tokens": output },
        })
    }
}

/// A whole answer's content blocks, built from its deltas.
#[derive(Default)]
struct Blocks {
    blocks: Vec<Value>,
    /// Each call's arguments text, by block.
    args: Vec<(usize, String)>,
}

impl Blocks {
    fn add(&mut self, d: Delta) {
        match d {
            Delta::Text(t) if t.trim().is_empty() && self.blocks.is_empty() => {}
            Delta::Text(t) => match self.blocks.last_mut() {
                Some(b) if b["type"] == "text" => {
                    let joined = format!("{}{t}", b["text"].as_str().unwrap_or_default());
                    b["text"] = joined.into();
                }
                _ => self.blocks.push(json!({ "type": "text", "text": t })),
            },
            Delta::Call { id, name, .. } => {
                self.args.push((self.blocks.len(), String::new()));
                self.blocks.push(json!({ "type": "tool_use", "id": tool_use_id(&id), "name": name, "input": {} }));
            }
            Delta::Arguments { json, .. } => {
                if let Some((_, a)) = self.args.last_mut() {
                    a.push_str(&json);
                }
            }
        }
    }

    fn into_values(mut self) -> Vec<Value> {
        for (at, args) in self.args {
            self.blocks[at]["input"] = serde_json::from_str(&args).unwrap_or_else(|_| json!({}));
        }
        // Text that only separated calls is no block.
        self.blocks.retain(|b| b["type"] != "text" || !b["text"].as_str().unwrap_or_default().trim().is_empty());
        self.blocks
    }
}

#[derive(Clone, Copy, PartialEq)]
enum Open {
    Text(usize),
    Tool(usize),
}

/// The SSE events of a streamed message.
struct Events {
    head: Head,
    choices: Choices,
    calls: CallStream,
    open: Option<Open>,
    /// Blocks started so far.
    blocks: usize,
    outbox: VecDeque<SseEvent>,
    prompt_tokens: usize,
    started: bool,
    ended: bool,
    /// Keeps the version loaded while its stream runs.
    _servable: Arc<Servable>,
}

impl Events {
    fn send(&mut self, name: &str, data: Value) {
        self.outbox.push_back(SseEvent::default().event(name).data(data.to_string()));
    }

    fn close(&mut self) {
        if let Some(Open::Text(i) | Open::Tool(i)) = self.open.take() {
            self.send("content_block_stop", json!({ "type": "content_block_stop", "index": i }));
        }
    }

    fn delta(&mut self, d: Delta) {
        match d {
            Delta::Text(t) if t.is_empty() => {}
            // Whitespace before a call or at the start is no block of its own.
            Delta::Text(t) if t.trim().is_empty() && !matches!(self.open, Some(Open::Text(_))) => {}
            Delta::Text(t) => {
                let i = match self.open {
                    Some(Open::Text(i)) => i,
                    _ => {
                        self.close();
                        let i = self.blocks;
                        self.blocks += 1;
                        self.open = Some(Open::Text(i));
                        let start = json!({ "type": "content_block_start", "index": i, "content_block": { "type": "text", "text": "" } });
                        self.send("content_block_start", start);
                        i
                    }
                };
                let delta =
                    json!({ "type": "content_block_delta", "index": i, "delta": { "type": "text_delta", "text": t } });
                self.send("content_block_delta", delta);
            }
            Delta::Call { id, name, .. } => {
                self.close();
                let i = self.blocks;
                self.blocks += 1;
                self.open = Some(Open::Tool(i));
                let block = json!({ "type": "tool_use", "id": tool_use_id(&id), "name": name, "input": {} });
                self.send(
                    "content_block_start",
                    json!({ "type": "content_block_start", "index": i, "content_block": block }),
                );
            }
            Delta::Arguments { json, .. } => {
                if let Some(Open::Tool(i)) = self.open {
                    let delta = json!({ "type": "content_block_delta", "index": i, "delta": { "type": "input_json_delta", "partial_json": json } });
                    self.send("content_block_delta", delta);
                }
            }
        }
    }

    async fn next(&mut self) -> Option<SseEvent> {
        loop {
            if let Some(e) = self.outbox.pop_front() {
                return Some(e);
            }
            if self.ended {
                return None;
            }
            if !self.started {
                self.started = true;
                let message = self.head.message(Vec::new(), Value::Null, Value::Null, self.prompt_tokens, 0);
                self.send("message_start", json!({ "type": "message_start", "message": message }));
                self.send("ping", json!({ "type": "ping" }));
                continue;
            }
            match self.choices.next().await {
                Some((_, Event::Text(t))) => {
                    for d in self.calls.push(&t) {
                        self.delta(d);
                    }
                }
                Some((_, Event::Token(_))) => {}
                Some((_, Event::Done { reason, stop, completion_tokens, .. })) => {
                    for d in self.calls.finish() {
                        self.delta(d);
                    }
                    self.close();
                    let (reason, sequence) = stop_reason(reason, stop.as_deref(), self.calls.calls());
                    let delta = json!({ "type": "message_delta", "delta": { "stop_reason": reason, "stop_sequence": sequence },
                        "usage": { "output_tokens": completion_tokens } });
                    self.send("message_delta", delta);
                    self.send("message_stop", json!({ "type": "message_stop" }));
                    self.ended = true;
                }
                Some((_, Event::Failed(err))) => {
                    let body = crate::error::anthropic_body(&err);
                    self.send("error", body);
                    self.ended = true;
                }
                None => self.ended = true,
            }
        }
    }
}
