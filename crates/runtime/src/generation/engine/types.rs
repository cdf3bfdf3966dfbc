//! What the engine takes and gives: its limits, a request, and the events of a sequence.

use aiserve_core::sampling::{SamplingParams, TokenLogprob};

use super::super::grammar::Constraint;
use crate::error::Error;

/// Engine limits of one model version.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EngineConfig {
    /// Memory all sequences' KV caches may take together.
    pub kv_cache_bytes: usize,
    /// Most sequences decoding together.
    pub max_seqs: usize,
    /// Most tokens (decodes plus prompt chunks) in one forward pass.
    pub max_step_tokens: usize,
    /// Most prompt tokens of one sequence per forward pass.
    pub prefill_chunk: usize,
    /// Most sequences admitted or waiting before new requests get 503.
    pub max_queued: usize,
    /// Most tokens a decoding sequence drafts per pass from its own context (prompt-lookup
    /// speculative decoding); 0 turns it off.
    pub draft_tokens: usize,
    /// Passes with more decoding sequences than this draft nothing: with many rows a pass is
    /// bound by arithmetic, not by reading the weights, and drafted rows cost what they save.
    pub draft_max_seqs: usize,
}

impl Default for EngineConfig {
    fn default() -> Self {
        Self {
            kv_cache_bytes: 1 << 30,
            max_seqs: 16,
            max_step_tokens: 512,
            prefill_chunk: 256,
            max_queued: 256,
            draft_tokens: 4,
            draft_max_seqs: 2,
        }
    }
}

/// One sequence to generate.
#[derive(Clone, Debug)]
pub struct GenRequest {
    pub prompt: Vec<u32>,
    pub max_tokens: usize,
    pub sampling: SamplingParams,
    pub stop: Vec<String>,
    /// Report each generated token's log-probability and this many alternatives'.
    pub logprobs: Option<usize>,
    /// A sequence that has not produced its first token by then fails with 504 (the request
    /// timeout bounds the wait in the queue and the prefill, as for every other model).
    pub deadline: Option<std::time::Instant>,
    /// The grammar its text must follow (structured outputs), compiled for this model.
    pub constraint: Option<Constraint>,
    /// Special tokens that are not end tokens come out as their text (a tool-call marker such
    /// as Mistral's `[TOOL_CALLS]` that the parser must see); otherwise they are left out.
    pub keep_special: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FinishReason {
    /// An end-of-sequence token or a stop string.
    Stop,
    /// `max_tokens` reached.
    Length,
}

impl FinishReason {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Stop => "stop",
            Self::Length => "length",
        }
    }
}

/// What a sequence's receiver gets: text pieces, then exactly one `Done` or `Failed`. With
/// `logprobs` asked, each generated token's (but an end token's) comes before the text it
/// completes, which may come later (held back as part of a character or a stop string).
#[derive(Debug)]
pub enum Event {
    Text(String),
    Token(TokenLogprob),
    /// `stop` is the stop string that ended the text, if one did.
    Done {
        reason: FinishReason,
        stop: Option<String>,
        prompt_tokens: usize,
        completion_tokens: usize,
        /// Prompt tokens whose KV was copied from the prefix cache.
        cached_tokens: usize,
    },
    Failed(Error),
}
