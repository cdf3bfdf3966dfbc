//! Text generation as the server runs it: the per-version [`engine::Engine`] (continuous
//! batching on its own thread), the request fields the protocols share ([`params`]), and the
//! glue the handlers use: prompts from chat messages, `n` choices per request, waiting for
//! complete answers or streaming them.

pub mod draft;
pub mod engine;
pub mod grammar;
pub mod params;
pub mod prefix;
pub mod tools;

use std::future::poll_fn;
use std::task::Poll;

use aiserve_core::chat::Message;
use aiserve_core::sampling::TokenLogprob;
use tokio::sync::mpsc::UnboundedReceiver;
use tokio::sync::Semaphore;

use std::sync::Arc;

use self::engine::{Engine, Event, FinishReason, GenRequest};
use self::grammar::{Constraint, GrammarRequest, Grammars};
use self::params::Params;
use crate::budget::{Hold, TOKENIZE_BYTES_PER_BYTE};
use crate::error::Error;

/// A text generation version.
pub struct GenModel {
    pub engine: Engine,
    /// The grammar compiler over this model's vocabulary, built by the first request that
    /// asks for structured output (most versions never need one).
    grammars: tokio::sync::OnceCell<Arc<Grammars>>,
}

/// One finished choice.
#[derive(Debug)]
pub struct Completion {
    pub text: String,
    /// Each generated token's log-probability, when asked.
    pub logprobs: Vec<TokenLogprob>,
    pub reason: FinishReason,
    /// The stop string that ended the text, if one did.
    pub stop: Option<String>,
    pub prompt_tokens: usize,
    pub completion_tokens: usize,
    /// Prompt tokens whose KV came from the prefix cache.
    pub cached_tokens: usize,
}

impl GenModel {
    pub fn new(engine: Engine) -> Self {
        Self { engine, grammars: tokio::sync::OnceCell::new() }
    }

    /// The compiled grammar of `params`, if it asks for one.
    pub async fn params_constraint(&self, params: &Params, slots: &Semaphore) -> Result<Option<Constraint>, Error> {
        match &params.grammar {
            Some(g) => Ok(Some(self.constraint(g, slots).await?)),
            None => Ok(None),
        }
    }

    /// Compiles a request's grammar for this model (its vocabulary's trie built first if no
    /// request needed it before), on the blocking pool behind `slots`.
    pub async fn constraint(&self, req: &GrammarRequest, slots: &Semaphore) -> Result<Constraint, Error> {
        let grammars = self
            .grammars
            .get_or_try_init(|| async {
                let spec = self.engine.spec().clone();
                crate::blocking::run(slots, "building the grammar vocabulary", move || {
                    Grammars::new(spec.tokenizer.clone(), spec.info.vocab_size, &spec.info.stop_tokens)
                        .map(Arc::new)
                        .map_err(|e| {
                            Error::invalid("response_format", format!("this model cannot follow grammars: {e}"))
                        })
                })
                .await
            })
            .await?
            .clone();
        let req = req.clone();
        crate::blocking::run(slots, "compiling the grammar", move || grammars.compile(req)).await
    }

    /// The model's chat template, or the error a chat request gets without one.
    pub fn template(&self) -> Result<Arc<aiserve_core::chat::ChatTemplate>, Error> {
        self.engine.spec().chat_template.clone().ok_or_else(|| {
            Error::invalid(
                "messages",
                "this model has no chat template; send a plain prompt to /v1/completions instead",
            )
        })
    }

    /// Prompt token ids of a chat, rendered with the model's own template (on the bounded
    /// blocking pool behind `slots`; the tokenizer's memory counted against `hold` first).
    pub async fn chat_prompt(
        &self,
        messages: Vec<Message>,
        tools: Option<Vec<serde_json::Value>>,
        slots: &Semaphore,
        hold: &Hold,
    ) -> Result<Vec<u32>, Error> {
        let hold = hold.clone();
        let spec = self.engine.spec().clone();
        let template = self.template()?;
        crate::blocking::run(slots, "the chat template", move || {
            let text = template
                .render_with_tools(&messages, tools.as_deref(), true)
                .map_err(|e| Error::invalid("messages", format!("the chat template refused these messages: {e}")))?;
            hold.grow(text.len().saturating_mul(TOKENIZE_BYTES_PER_BYTE), "tokenizing the prompt")?;
            spec.tokenizer
                .encode(&text, false)
                .map_err(|e| Error::invalid("messages", format!("could not tokenize the prompt: {e}")))
        })
        .await
    }

    /// A chat with tools made ready to run, the same for every protocol: the tools reach the
    /// template (or a system prompt), a forced call's grammar goes into `params` (refused
    /// beside another output format), and the prompt is rendered and tokenized. Returns the
    /// prompt and how the answer becomes calls.
    pub async fn chat_request(
        &self,
        messages: Vec<Message>,
        tools: Option<&tools::ToolRequest>,
        params: &mut Params,
        choice_field: &str,
        slots: &Semaphore,
        hold: &Hold,
    ) -> Result<(Vec<u32>, Option<tools::CallOutput>), Error> {
        let prepared = tools::prepare(tools, self.template()?.as_ref(), messages, choice_field)?;
        if let Some(g) = prepared.grammar {
            if let Some(other) = &params.grammar {
                return Err(Error::invalid(
                    choice_field,
                    format!(
                        "a required or named `{choice_field}` fixes the output's form; it cannot be combined with `{}`",
                        other.field
                    ),
                ));
            }
            params.grammar = Some(g);
        }
        params.keep_special |= prepared.keep_special;
        let prompt = self.chat_prompt(prepared.messages, prepared.tools, slots, hold).await?;
        Ok((prompt, prepared.output))
    }

    /// Prompt token ids of plain text (with the model's BOS token if it uses one).
    pub async fn text_prompt(
        &self,
        text: String,
        field: &'static str,
        slots: &Semaphore,
        hold: &Hold,
    ) -> Result<Vec<u32>, Error> {
        hold.grow(text.len().saturating_mul(TOKENIZE_BYTES_PER_BYTE), "tokenizing the prompt")?;
        let tok = self.engine.spec().tokenizer.clone();
        crate::blocking::run(slots, "the tokenizer", move || {
            tok.encode(&text, true).map_err(|e| Error::invalid(field, format!("could not tokenize the prompt: {e}")))
        })
        .await
    }

    /// Starts `params.n` choices for one prompt. With a seed, choice `i` uses `seed + i`, so
    /// choices differ and the whole response is reproducible. A choice still waiting for its
    /// first token at `deadline` fails with 504.
    pub fn start(
        &self,
        prompt: Vec<u32>,
        params: &Params,
        deadline: std::time::Instant,
        constraint: Option<&Constraint>,
    ) -> Result<Vec<UnboundedReceiver<Event>>, Error> {
        let room = self.engine.max_sequence_tokens().saturating_sub(prompt.len());
        if room == 0 {
            return Err(Error::invalid(
                "prompt",
                format!(
                    "the prompt has {} tokens; this model holds at most {} in total",
                    prompt.len(),
                    self.engine.max_sequence_tokens()
                ),
            ));
        }
        let vocab = self.engine.spec().info.vocab_size;
        if let Some((id, _)) = params.sampling.logit_bias.iter().find(|(id, _)| *id as usize >= vocab) {
            return Err(Error::invalid(
                "logit_bias",
                format!("`logit_bias` names token {id}, outside this model's vocabulary of {vocab}"),
            ));
        }
        let max_tokens = params.max_tokens.unwrap_or(room);
        if params.n > self.engine.max_queued() {
            return Err(Error::invalid(
                "n",
                format!("`n` asks for {} sequences; this model queues at most {}", params.n, self.engine.max_queued()),
            ));
        }
        (0..params.n)
            .map(|i| {
                let mut sampling = params.sampling.clone();
                sampling.seed = sampling.seed.map(|s| s.wrapping_add(i as u64));
                self.engine.submit(GenRequest {
                    prompt: prompt.clone(),
                    max_tokens,
                    sampling,
                    stop: params.stop.clone(),
                    logprobs: params.logprobs,
                    deadline: Some(deadline),
                    constraint: constraint.cloned(),
                    keep_special: params.keep_special,
                })
            })
            .collect()
    }
}

/// Waits for one choice to finish.
pub async fn collect(mut rx: UnboundedReceiver<Event>) -> Result<Completion, Error> {
    let (mut text, mut logprobs) = (String::new(), Vec::new());
    while let Some(e) = rx.recv().await {
        match e {
            Event::Text(t) => text.push_str(&t),
            Event::Token(t) => logprobs.push(t),
            Event::Done { reason, stop, prompt_tokens, completion_tokens, cached_tokens } => {
                return Ok(Completion { text, logprobs, reason, stop, prompt_tokens, completion_tokens, cached_tokens })
            }
            Event::Failed(e) => return Err(e),
        }
    }
    Err(Error::internal("the generation engine stopped before the sequence ended"))
}

/// Waits for every choice, in order, giving up at `deadline` (which cancels them all).
pub async fn collect_all(
    rxs: Vec<UnboundedReceiver<Event>>,
    deadline: std::time::Instant,
) -> Result<Vec<Completion>, Error> {
    let all = futures_util::future::try_join_all(rxs.into_iter().map(collect));
    tokio::time::timeout_at(deadline.into(), all).await.map_err(|_| Error::Timeout)?
}

/// The events of several choices as they come: `(choice, event)`, `None` when all have ended.
pub struct Choices {
    rxs: Vec<Option<UnboundedReceiver<Event>>>,
}

impl Choices {
    pub fn new(rxs: Vec<UnboundedReceiver<Event>>) -> Self {
        Self { rxs: rxs.into_iter().map(Some).collect() }
    }

    pub async fn next(&mut self) -> Option<(usize, Event)> {
        poll_fn(|cx| {
            let mut open = false;
            for (i, slot) in self.rxs.iter_mut().enumerate() {
                if let Some(rx) = slot {
                    match rx.poll_recv(cx) {
                        Poll::Ready(Some(e)) => {
                            if matches!(e, Event::Done { .. } | Event::Failed(_)) {
                                *slot = None;
                            }
                            return Poll::Ready(Some((i, e)));
                        }
                        Poll::Ready(None) => *slot = None,
                        Poll::Pending => open = true,
                    }
                }
            }
            if open {
                Poll::Pending
            } else {
                Poll::Ready(None)
            }
        })
        .await
    }
}
