//! Text generation as the server runs it: the per-version [`engine::Engine`] (continuous
//! batching on its own thread), the request fields the protocols share ([`params`]), and the
//! glue the handlers use: prompts from chat messages, `n` choices per request, waiting for
//! complete answers or streaming them.

pub mod engine;
pub mod params;

use std::future::poll_fn;
use std::task::Poll;

use aiserve_core::chat::Message;
use aiserve_core::sampling::TokenLogprob;
use tokio::sync::mpsc::UnboundedReceiver;
use tokio::sync::Semaphore;

use self::engine::{Engine, Event, FinishReason, GenRequest};
use self::params::Params;
use crate::budget::{Hold, TOKENIZE_BYTES_PER_BYTE};
use crate::error::Error;

/// A text generation version.
pub struct GenModel {
    pub engine: Engine,
}

/// One finished choice.
#[derive(Debug)]
pub struct Completion {
    pub text: String,
    /// Each generated token's log-probability, when asked.
    pub logprobs: Vec<TokenLogprob>,
    pub reason: FinishReason,
    pub prompt_tokens: usize,
    pub completion_tokens: usize,
}

impl GenModel {
    /// Prompt token ids of a chat, rendered with the model's own template (on the bounded
    /// blocking pool behind `slots`; the tokenizer's memory counted against `hold` first).
    pub async fn chat_prompt(&self, messages: Vec<Message>, slots: &Semaphore, hold: &Hold) -> Result<Vec<u32>, Error> {
        let hold = hold.clone();
        let spec = self.engine.spec().clone();
        let template = spec.chat_template.clone().ok_or_else(|| {
            Error::invalid(
                "messages",
                "this model has no chat template; send a plain prompt to /v1/completions instead",
            )
        })?;
        crate::blocking::run(slots, "the chat template", move || {
            let text = template
                .render(&messages, true)
                .map_err(|e| Error::invalid("messages", format!("the chat template refused these messages: {e}")))?;
            hold.grow(text.len().saturating_mul(TOKENIZE_BYTES_PER_BYTE), "tokenizing the prompt")?;
            spec.tokenizer
                .encode(&text, false)
                .map_err(|e| Error::invalid("messages", format!("could not tokenize the prompt: {e}")))
        })
        .await
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
            Event::Done { reason, prompt_tokens, completion_tokens } => {
                return Ok(Completion { text, logprobs, reason, prompt_tokens, completion_tokens })
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
