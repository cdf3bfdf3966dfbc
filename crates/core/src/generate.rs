//! What a text generation model offers the engine: its limits, its tokenizer, and one forward
//! pass over pieces of several sequences at once (continuous batching).
//!
//! The engine owns the sequences. Each holds an opaque state from
//! [`TextGenerator::new_sequence`] (its KV cache); a step hands the model, for every sequence in
//! the batch, the tokens to append (a prompt chunk or the last sampled token) and whether it
//! wants the next-token logits. Dropping a state frees its cache.

use std::any::Any;
use std::sync::Arc;

use crate::chat::ChatTemplate;
use crate::error::BackendError;

/// What a generation model is, read before its weights.
#[derive(Clone, Debug, PartialEq)]
pub struct GeneratorInfo {
    pub architecture: String,
    /// Longest sequence (prompt plus generated tokens) the model takes.
    pub max_context: usize,
    pub vocab_size: usize,
    /// KV cache bytes one token of one sequence holds.
    pub kv_bytes_per_token: usize,
    /// Token ids that end a generation (end of text, end of turn).
    pub stop_tokens: Vec<u32>,
    /// False when a prompt must be fed in one piece (an encoder-decoder's encoder sees it whole).
    pub chunked_prefill: bool,
}

/// Text to token ids and back, for prompts and generated text.
pub trait PromptTokenizer: Send + Sync {
    /// Token ids of `text`. Special tokens written in the text (`<|im_start|>`) are recognised;
    /// `add_special` adds what the model puts around a plain prompt (e.g. a BOS token).
    fn encode(&self, text: &str, add_special: bool) -> Result<Vec<u32>, String>;
    /// The text of `ids`, special tokens left out.
    fn decode(&self, ids: &[u32]) -> Result<String, String>;
    /// The raw bytes one token stands for, which may be part of a character (OpenAI's
    /// `logprobs[].bytes`). The default is the token's decoded text, which is right for
    /// tokenizers whose tokens are always whole characters.
    fn token_bytes(&self, id: u32) -> Vec<u8> {
        self.decode(&[id]).map(String::into_bytes).unwrap_or_default()
    }
    /// The text of a special (control) token such as `<|im_end|>` or `[TOOL_CALLS]`, which
    /// [`decode`](Self::decode) leaves out; `None` for ordinary tokens. Grammars keep special
    /// tokens apart from text, and tool-call parsers read the ones that mark a call.
    fn special_text(&self, _id: u32) -> Option<String> {
        None
    }
}

/// A generation model's description: limits, tokenizer and chat template (if it has one).
#[derive(Clone)]
pub struct GeneratorSpec {
    pub info: GeneratorInfo,
    pub tokenizer: Arc<dyn PromptTokenizer>,
    pub chat_template: Option<Arc<ChatTemplate>>,
}

/// One sequence's state inside the model (its KV cache), owned by the engine.
pub type SeqState = Box<dyn Any + Send>;

/// One sequence's part of a forward pass.
pub struct GenItem<'a> {
    pub state: &'a mut SeqState,
    /// Tokens to append after what the state holds.
    pub tokens: &'a [u32],
    /// How many of the sequence's tokens are its prompt. Decoder-only models ignore it; an
    /// encoder-decoder feeds those to its encoder (they always arrive in the first call).
    pub prompt_len: usize,
    /// Whether to return the logits that follow the last of `tokens`.
    pub logits: bool,
    /// Whether only the index of the largest logit matters (greedy sampling that nothing else
    /// reads the logits for): a model may then return, in each row, the exact logit at that
    /// index (the first largest) and any value no larger, −∞ included, elsewhere.
    pub argmax_only: bool,
}

impl<'a> GenItem<'a> {
    /// `tokens` after what `state` holds, with every logit after the last of them.
    pub fn new(state: &'a mut SeqState, tokens: &'a [u32], prompt_len: usize) -> Self {
        GenItem { state, tokens, prompt_len, logits: true, argmax_only: false }
    }
}

/// A loaded generation model. Called from a single dedicated thread.
pub trait TextGenerator: Send {
    /// A fresh, empty sequence.
    fn new_sequence(&self) -> SeqState;
    /// Runs every item's tokens as one batch; returns `vocab_size` logits for each item that
    /// asked, in item order. On error the states of this batch are unspecified (the engine
    /// drops them).
    fn forward(&mut self, items: &mut [GenItem<'_>]) -> Result<Vec<Vec<f32>>, BackendError>;
    /// Whether [`forward_rows`](Self::forward_rows) returns logits after several tokens of an
    /// item and [`truncate`](Self::truncate) drops positions: what speculative decoding needs
    /// to verify drafted tokens in one pass.
    fn verifies_drafts(&self) -> bool {
        false
    }
    /// [`forward`](Self::forward), returning for item `i` the logits after each of its last
    /// `rows[i]` tokens (none for 0), items in order and positions in order. The default serves
    /// at most one row per item.
    fn forward_rows(&mut self, items: &mut [GenItem<'_>], rows: &[usize]) -> Result<Vec<Vec<f32>>, BackendError> {
        if rows.len() != items.len() || rows.iter().any(|r| *r > 1) {
            return Err(BackendError("this model returns one row of logits per sequence".into()));
        }
        items.iter_mut().zip(rows).for_each(|(item, r)| item.logits = *r == 1);
        self.forward(items)
    }
    /// Keeps only the first `len` positions of `state` (drafted tokens that were not accepted
    /// go); false where the model cannot or `state` holds fewer.
    fn truncate(&self, _state: &mut SeqState, _len: usize) -> bool {
        false
    }
    /// Whether [`fork`](Self::fork) copies prefixes (prefix caching): the engine lets a
    /// sequence wait for another's prompt only where it does.
    fn shares_prefixes(&self) -> bool {
        false
    }
    /// How many positions `state` holds, where this model can share them through
    /// [`fork`](Self::fork) (prefix caching); `None` where it cannot (an encoder-decoder's
    /// state depends on its whole prompt).
    fn shared_len(&self, _state: &SeqState) -> Option<usize> {
        None
    }
    /// A new sequence holding a copy of the first `len` positions of `state`, as if those
    /// tokens had been fed to a fresh one; `None` where the model cannot or `state` holds fewer.
    fn fork(&self, _state: &SeqState, _len: usize) -> Option<SeqState> {
        None
    }
}
