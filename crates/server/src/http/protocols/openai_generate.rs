//! OpenAI text generation: `POST /v1/chat/completions` and `POST /v1/completions`, whole or
//! streamed as server-sent events, for the official clients unmodified.
//!
//! Chat prompts are rendered with the model's own template; completion prompts are a string,
//! a list of strings, token ids or a list of token-id lists (each prompt gets `n` choices,
//! indexed prompt by prompt). Streams send the role first, then text deltas, a last chunk per
//! choice with its `finish_reason`, the usage chunk when `stream_options.include_usage` asks,
//! and `[DONE]`. A client that goes away drops the stream, which cancels its sequences.

use std::collections::{HashMap, VecDeque};
use std::convert::Infallible;
use std::sync::Arc;
use std::time::UNIX_EPOCH;

use aiserve_core::generate::PromptTokenizer;
use aiserve_core::sampling::TokenLogprob;
use axum::body::Body;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use serde_json::{json, Map, Value};

use super::openai_input::{parse_messages, parse_prompts, parse_tools, Prompt};
use crate::error::Error;
use crate::error::OpenAiError;
use crate::http::metrics::{tag, Served};
use crate::http::state::{parse_json, AppState};
use aiserve_runtime::budget::Hold;
use aiserve_runtime::generation::engine::{Event, FinishReason};
use aiserve_runtime::generation::params::{self, Params};
use aiserve_runtime::generation::tools::{self as gen_tools, CallOutput, CallStream, Delta};
use aiserve_runtime::generation::{collect_all, Choices};
use aiserve_runtime::metrics::METRICS;
use aiserve_runtime::servable::Servable;

pub fn routes() -> Router<AppState> {
    Router::new().route("/v1/chat/completions", post(chat)).route("/v1/completions", post(completions))
}

const COMMON_FIELDS: [&str; 20] = [
    "structured_outputs",
    "model",
    "max_tokens",
    "temperature",
    "top_p",
    "top_k",
    "n",
    "stream",
    "stream_options",
    "stop",
    "seed",
    "frequency_penalty",
    "presence_penalty",
    "logprobs",
    "top_logprobs",
    "logit_bias",
    "user",
    "response_format",
    "store",
    "metadata",
];
const CHAT_FIELDS: [&str; 7] =
    ["messages", "max_completion_tokens", "tools", "tool_choice", "functions", "function_call", "parallel_tool_calls"];
const COMPLETION_FIELDS: [&str; 4] = ["prompt", "echo", "best_of", "suffix"];

/// Which of the two APIs a response is shaped for.
#[derive(Clone)]
struct Shape {
    chat: bool,
    id: String,
    created: u64,
    model: String,
    /// How a chat answer's text becomes tool calls (none for completions or without tools).
    output: Option<CallOutput>,
}

impl Shape {
    fn new(chat: bool, model: &str) -> Self {
        let prefix = if chat { "chatcmpl" } else { "cmpl" };
        let created = std::time::SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
        Self {
            chat,
            id: format!("{prefix}-{}", uuid::Uuid::new_v4().simple()),
            created,
            model: model.into(),
            output: None,
        }
    }

    fn object(&self, stream: bool) -> &'static str {
        match (self.chat, stream) {
            (true, false) => "chat.completion",
            (true, true) => "chat.completion.chunk",
            (false, _) => "text_completion",
        }
    }

    fn envelope(&self, stream: bool, choices: Vec<Value>) -> Map<String, Value> {
        let mut m = Map::new();
        m.insert("id".into(), self.id.clone().into());
        m.insert("object".into(), self.object(stream).into());
        m.insert("created".into(), self.created.into());
        m.insert("model".into(), self.model.clone().into());
        m.insert("system_fingerprint".into(), Value::Null);
        m.insert("choices".into(), choices.into());
        m
    }

    /// A streamed choice: text delta (and the role, first time) or its finish reason, with the
    /// log-probabilities of the tokens it completes.
    fn chunk_choice(
        &self,
        index: usize,
        role: bool,
        text: Option<&str>,
        finish: Option<&str>,
        logprobs: Value,
    ) -> Value {
        if self.chat {
            let mut delta = Map::new();
            if role {
                delta.insert("role".into(), "assistant".into());
            }
            if let Some(t) = text {
                delta.insert("content".into(), t.into());
            }
            json!({ "index": index, "delta": delta, "logprobs": logprobs, "finish_reason": finish })
        } else {
            json!({ "index": index, "text": text.unwrap_or(""), "logprobs": logprobs, "finish_reason": finish })
        }
    }

    /// A streamed chat choice's call delta, as OpenAI sends them: the id, type and name when
    /// a call starts (arguments empty), then pieces of its arguments.
    fn call_choice(&self, index: usize, delta: &Delta) -> Value {
        let call = match delta {
            Delta::Call { index, id, name } => {
                json!({ "index": index, "id": id, "type": "function", "function": { "name": name, "arguments": "" } })
            }
            Delta::Arguments { index, json } => json!({ "index": index, "function": { "arguments": json } }),
            Delta::Text(_) => Value::Null,
        };
        json!({ "index": index, "delta": { "tool_calls": [call] }, "logprobs": null, "finish_reason": null })
    }
}

/// A choice's finish reason: `tool_calls` when a call ended it.
fn finish_reason(reason: FinishReason, calls: usize) -> &'static str {
    if calls > 0 && reason == FinishReason::Stop {
        "tool_calls"
    } else {
        reason.as_str()
    }
}

/// A whole chat answer's message: text (null when only calls came) and calls.
fn chat_message(output: Option<&CallOutput>, text: &str) -> (Value, usize) {
    let (content, calls) = gen_tools::settle(output, text);
    let mut m = Map::new();
    m.insert("role".into(), "assistant".into());
    m.insert("content".into(), content.map_or(Value::Null, Value::from));
    if !calls.is_empty() {
        let calls_json: Vec<Value> = calls
            .iter()
            .map(
                |c| json!({ "id": c.id, "type": "function", "function": { "name": c.name, "arguments": c.arguments } }),
            )
            .collect();
        m.insert("tool_calls".into(), calls_json.into());
    }
    (Value::Object(m), calls.len())
}

/// Tokens' log-probabilities in the two APIs' shapes, each token as the text the model's
/// tokenizer makes of it alone.
struct Logprobs {
    tokenizer: Arc<dyn PromptTokenizer>,
    chat: bool,
}

impl Logprobs {
    fn text(&self, id: u32) -> String {
        self.tokenizer.decode(&[id]).unwrap_or_default()
    }

    /// `tokens` as a choice's `logprobs`; for completions, `offset` is where their text starts
    /// in the choice's (in characters), and moves past it.
    fn value(&self, tokens: &[TokenLogprob], offset: &mut usize) -> Value {
        if self.chat {
            let entry = |id: u32, logprob: f32| {
                let bytes = self.tokenizer.token_bytes(id);
                json!({ "token": self.text(id), "logprob": logprob, "bytes": bytes })
            };
            let content: Vec<Value> = tokens
                .iter()
                .map(|t| {
                    let mut e = entry(t.token, t.logprob);
                    e["top_logprobs"] = t.top.iter().map(|(id, lp)| entry(*id, *lp)).collect();
                    e
                })
                .collect();
            return json!({ "content": content });
        }
        let texts: Vec<String> = tokens.iter().map(|t| self.text(t.token)).collect();
        let text_offset: Vec<usize> = texts
            .iter()
            .map(|t| {
                let at = *offset;
                *offset += t.chars().count();
                at
            })
            .collect();
        let top: Vec<Map<String, Value>> =
            tokens.iter().map(|t| t.top.iter().map(|(id, lp)| (self.text(*id), json!(lp))).collect()).collect();
        json!({
            "tokens": texts,
            "token_logprobs": tokens.iter().map(|t| t.logprob).collect::<Vec<_>>(),
            "top_logprobs": top,
            "text_offset": text_offset,
        })
    }
}

/// OpenAI's usage object; `cached` prompt tokens came from the prefix cache.
fn usage(prompt: usize, completion: usize, cached: usize) -> Value {
    json!({ "prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion,
        "prompt_tokens_details": { "cached_tokens": cached } })
}

/// Cached prompt tokens of a request: per prompt, the most any of its `n` choices copied (each
/// choice holds the prompt once), summed over the prompts. `by_choice` is in choice order
/// (prompt by prompt).
fn cached_prompt_tokens(by_choice: &[usize], n: usize) -> usize {
    by_choice.chunks(n.max(1)).map(|c| c.iter().copied().max().unwrap_or(0)).sum()
}

/// Parses the body, resolves the model and checks the fields both routes share.
async fn start(
    state: &AppState,
    body: Body,
    route: &str,
    own: &[&str],
) -> Result<(Map<String, Value>, Arc<Servable>, Params, Hold), Error> {
    let body = state.read_body(body).await?;
    let req: Map<String, Value> = parse_json(&body.bytes, &body.hold)?;
    let known: Vec<&str> = COMMON_FIELDS.iter().chain(own).copied().collect();
    params::check_fields(&req, &known, route)?;
    params::refuse_unless_default(&req)?;
    let model = match req.get("model") {
        Some(Value::String(m)) => m.clone(),
        Some(other) => {
            return Err(Error::invalid(
                "model",
                format!("`model` must be a string, got {}", crate::error::shown(other)),
            ))
        }
        None => return Err(Error::invalid("model", "`model` is required")),
    };
    let servable = state.registry.resolve(&model, None)?;
    servable.generator()?;
    let max_fields: &[&str] =
        if own.contains(&"max_completion_tokens") { &["max_completion_tokens", "max_tokens"] } else { &["max_tokens"] };
    let mut p = params::parse(&req, max_fields)?;
    if own.contains(&"prompt") && p.max_tokens.is_none() {
        // OpenAI's default for the legacy completions API.
        p.max_tokens = Some(16);
    }
    Ok((req, servable, p, body.hold))
}

async fn chat(State(state): State<AppState>, headers: HeaderMap, body: Body) -> Result<Response, OpenAiError> {
    // The hold lives as long as the parsed request it counts.
    let (mut req, servable, mut p, hold) = start(&state, body, "/v1/chat/completions", &CHAT_FIELDS).await?;
    let messages = parse_messages(req.remove("messages"))?;
    let tools = parse_tools(&req)?;
    let gen = servable.generator()?;
    let (prompt, output) =
        gen.chat_request(messages, tools.as_ref(), &mut p, "tool_choice", &state.decoders, &hold).await?;
    let shape = Shape { output, ..Shape::new(true, servable.model.as_str()) };
    respond(&state, &headers, servable.clone(), shape, vec![prompt], vec![String::new()], p).await.map_err(Into::into)
}

async fn completions(State(state): State<AppState>, headers: HeaderMap, body: Body) -> Result<Response, OpenAiError> {
    let (mut req, servable, p, hold) = start(&state, body, "/v1/completions", &COMPLETION_FIELDS).await?;
    let gen = servable.generator()?;
    let inputs = parse_prompts(req.remove("prompt"))?;
    let limit = state.limits.text.max_inputs;
    if inputs.len() > limit {
        return Err(
            Error::invalid("prompt", format!("at most {limit} prompts per request, got {}", inputs.len())).into()
        );
    }
    let echo = match req.get("echo") {
        None | Some(Value::Null) | Some(Value::Bool(false)) => false,
        Some(Value::Bool(true)) => true,
        Some(other) => {
            return Err(Error::invalid(
                "echo",
                format!("`echo` must be true or false, got {}", crate::error::shown(other)),
            )
            .into())
        }
    };
    let (mut prompts, mut echoed) = (Vec::new(), Vec::new());
    for input in inputs {
        let (ids, text) = match input {
            Prompt::Text(t) => (gen.text_prompt(t.clone(), "prompt", &state.decoders, &hold).await?, t),
            Prompt::Tokens(ids) => {
                let text =
                    gen.engine.spec().tokenizer.decode(&ids).map_err(|e| {
                        Error::invalid("prompt", format!("could not decode the prompt's token ids: {e}"))
                    })?;
                (ids, text)
            }
        };
        prompts.push(ids);
        echoed.push(if echo { text } else { String::new() });
    }
    let shape = Shape::new(false, servable.model.as_str());
    respond(&state, &headers, servable.clone(), shape, prompts, echoed, p).await.map_err(Into::into)
}

/// Runs `n` choices per prompt and answers whole or as a stream, each choice's text after its
/// prompt's `echo` (empty unless completions' `echo` asks for the prompt back).
async fn respond(
    state: &AppState,
    headers: &HeaderMap,
    servable: Arc<Servable>,
    shape: Shape,
    prompts: Vec<Vec<u32>>,
    echo: Vec<String>,
    p: Params,
) -> Result<Response, Error> {
    // Choice `i` answers prompt `i / n`.
    let echo: Vec<String> = echo.into_iter().flat_map(|e| std::iter::repeat_n(e, p.n)).collect();
    let gen = servable.generator()?;
    // Every choice of every prompt is a sequence: refuse what could never all be queued
    // before starting any of them.
    let sequences = prompts.len().saturating_mul(p.n);
    if sequences > gen.engine.max_queued() {
        return Err(Error::invalid(
            "n",
            format!(
                "{} prompts times `n` {} asks for {sequences} sequences; this model queues at most {}",
                prompts.len(),
                p.n,
                gen.engine.max_queued()
            ),
        ));
    }
    let prompt_tokens: usize = prompts.iter().map(Vec::len).sum();
    METRICS.tokens.with_label_values(&[servable.model.as_str(), "prompt"]).inc_by(prompt_tokens as u64);
    let deadline = state.deadline(headers, None)?;
    let constraint = gen.params_constraint(&p, &state.decoders).await?;
    let mut rxs = Vec::new();
    for prompt in prompts {
        rxs.extend(gen.start(prompt, &p, deadline, constraint.as_ref())?);
    }
    let served = Served::of(&servable);
    let logprobs = p.logprobs.map(|_| Logprobs { tokenizer: gen.engine.spec().tokenizer.clone(), chat: shape.chat });
    if !p.stream {
        let done = collect_all(rxs, deadline).await?;
        let completion_tokens: usize = done.iter().map(|c| c.completion_tokens).sum();
        let by_choice: Vec<usize> = done.iter().map(|c| c.cached_tokens).collect();
        let cached_tokens = cached_prompt_tokens(&by_choice, p.n);
        let choices: Vec<Value> = done
            .iter()
            .enumerate()
            .map(|(i, c)| {
                let logprobs = logprobs.as_ref().map_or(Value::Null, |l| l.value(&c.logprobs, &mut 0));
                if shape.chat {
                    let (message, calls) = chat_message(shape.output.as_ref(), &c.text);
                    json!({ "index": i, "message": message, "logprobs": logprobs, "finish_reason": finish_reason(c.reason, calls) })
                } else {
                    let text = format!("{}{}", echo[i], c.text);
                    json!({ "index": i, "text": text, "logprobs": logprobs, "finish_reason": c.reason.as_str() })
                }
            })
            .collect();
        let mut body = shape.envelope(false, choices);
        body.insert("usage".into(), usage(prompt_tokens, completion_tokens, cached_tokens));
        return Ok(tag(Json(Value::Object(body)).into_response(), served));
    }
    let stream = ChunkStream {
        shape,
        choices: Choices::new(rxs),
        started: Vec::new(),
        outbox: VecDeque::new(),
        prompt_tokens,
        completion_tokens: 0,
        cached_tokens: vec![0; sequences],
        n: p.n,
        include_usage: p.include_usage,
        ended: false,
        logprobs,
        pending: HashMap::new(),
        echo,
        calls: HashMap::new(),
        _servable: servable,
    };
    let events =
        futures_util::stream::unfold(
            stream,
            |mut s| async move { s.next().await.map(|e| (Ok::<_, Infallible>(e), s)) },
        );
    Ok(tag(Sse::new(events).keep_alive(KeepAlive::default()).into_response(), served))
}

/// The SSE events of a streamed response, built from the choices' engine events.
struct ChunkStream {
    shape: Shape,
    choices: Choices,
    started: Vec<usize>,
    outbox: VecDeque<SseEvent>,
    prompt_tokens: usize,
    completion_tokens: usize,
    /// Prompt tokens the prefix cache supplied, by choice.
    cached_tokens: Vec<usize>,
    /// Choices per prompt.
    n: usize,
    include_usage: bool,
    ended: bool,
    logprobs: Option<Logprobs>,
    /// Per choice: tokens whose text has not gone out yet, and where the next text starts.
    pending: HashMap<usize, (Vec<TokenLogprob>, usize)>,
    /// Per choice, the prompt text its first chunk repeats (completions' `echo`).
    echo: Vec<String>,
    /// Per choice, its text turned into text and tool calls.
    calls: HashMap<usize, CallStream>,
    /// Keeps the version loaded while its stream runs.
    _servable: Arc<Servable>,
}

impl ChunkStream {
    /// The `logprobs` of choice `i`'s next chunk: the tokens it has waiting.
    fn take_logprobs(&mut self, i: usize) -> Value {
        let Some(l) = &self.logprobs else { return Value::Null };
        let (tokens, offset) = self.pending.entry(i).or_default();
        let v = l.value(tokens, offset);
        tokens.clear();
        v
    }

    fn stream_of(&mut self, i: usize) -> &mut CallStream {
        let output = self.shape.output.as_ref();
        self.calls.entry(i).or_insert_with(|| CallStream::new(output))
    }

    /// Choice `i`'s text and call deltas as chunks; the tokens waiting go with the first.
    fn send_deltas(&mut self, i: usize, deltas: Vec<Delta>) {
        for d in deltas {
            let c = match &d {
                Delta::Text(t) if t.is_empty() => continue,
                Delta::Text(t) => {
                    let logprobs = self.take_logprobs(i);
                    self.shape.chunk_choice(i, false, Some(t), None, logprobs)
                }
                call => self.shape.call_choice(i, call),
            };
            let e = self.data(self.shape.envelope(true, vec![c]));
            self.outbox.push_back(e);
        }
    }

    fn data(&self, mut body: Map<String, Value>) -> SseEvent {
        if self.include_usage {
            body.entry("usage").or_insert(Value::Null);
        }
        SseEvent::default().data(Value::Object(body).to_string())
    }

    async fn next(&mut self) -> Option<SseEvent> {
        loop {
            if let Some(e) = self.outbox.pop_front() {
                return Some(e);
            }
            if self.ended {
                return None;
            }
            match self.choices.next().await {
                Some((i, event)) => {
                    if !self.started.contains(&i) {
                        self.started.push(i);
                        // Chat's first chunk carries the role; completions' the echoed prompt.
                        let first = match self.echo.get(i).filter(|e| !e.is_empty()) {
                            _ if self.shape.chat => Some(self.shape.chunk_choice(i, true, Some(""), None, Value::Null)),
                            Some(e) => Some(self.shape.chunk_choice(i, false, Some(e), None, Value::Null)),
                            None => None,
                        };
                        if let Some(c) = first {
                            let e = self.data(self.shape.envelope(true, vec![c]));
                            self.outbox.push_back(e);
                        }
                    }
                    match event {
                        Event::Token(t) => self.pending.entry(i).or_default().0.push(t),
                        Event::Text(t) => {
                            let deltas = self.stream_of(i).push(&t);
                            self.send_deltas(i, deltas);
                        }
                        Event::Done { reason, completion_tokens, cached_tokens, .. } => {
                            let deltas = self.stream_of(i).finish();
                            self.send_deltas(i, deltas);
                            let calls = self.stream_of(i).calls();
                            self.completion_tokens += completion_tokens;
                            if let Some(c) = self.cached_tokens.get_mut(i) {
                                *c = cached_tokens;
                            }
                            // Tokens whose text never came (cut by a stop string) go with the end.
                            let logprobs = match self.pending.get(&i) {
                                Some((t, _)) if !t.is_empty() => self.take_logprobs(i),
                                _ => Value::Null,
                            };
                            let c =
                                self.shape.chunk_choice(i, false, None, Some(finish_reason(reason, calls)), logprobs);
                            let e = self.data(self.shape.envelope(true, vec![c]));
                            self.outbox.push_back(e);
                        }
                        Event::Failed(err) => {
                            // Mid-stream failures end the stream with an error object (as vLLM does).
                            let error = json!({ "error": { "message": err.to_string(), "type": "server_error", "param": null, "code": null } });
                            self.outbox.push_back(SseEvent::default().data(error.to_string()));
                            self.outbox.push_back(SseEvent::default().data("[DONE]"));
                            self.ended = true;
                        }
                    }
                }
                None => {
                    if self.include_usage {
                        let mut body = self.shape.envelope(true, Vec::new());
                        body.insert(
                            "usage".into(),
                            usage(
                                self.prompt_tokens,
                                self.completion_tokens,
                                cached_prompt_tokens(&self.cached_tokens, self.n),
                            ),
                        );
                        self.outbox.push_back(SseEvent::default().data(Value::Object(body).to_string()));
                    }
                    self.outbox.push_back(SseEvent::default().data("[DONE]"));
                    self.ended = true;
                }
            }
        }
    }
}
