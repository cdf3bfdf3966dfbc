//! Texts from a request turned into token sequences a text model accepts, with the limits every
//! text protocol shares: how many inputs, no empty text, and the model's token limit (a 400
//! naming it, or truncation when the server runs with `--auto-truncate`).

use aiserve_core::{BackendError, InputError};

use crate::error::ApiError;
use crate::servable::EmbedModel;
use crate::state::TextLimits;

/// Inputs as the client sent them.
pub enum Texts {
    Strings(Vec<String>),
    /// Pre-tokenised input (OpenAI's integer arrays): used as given, special tokens included.
    Tokens(Vec<Vec<u32>>),
}

impl Texts {
    fn len(&self) -> usize {
        match self {
            Self::Strings(v) => v.len(),
            Self::Tokens(v) => v.len(),
        }
    }
}

/// Token sequences ready for the model, and how many tokens they hold in all.
pub struct Tokenized {
    pub sequences: Vec<Vec<u32>>,
    pub tokens: usize,
}

/// Above this many bytes of text, tokenisation moves to the blocking pool.
const INLINE_TOKENIZE_BYTES: usize = 2 << 10;

/// Tokenises (or checks pre-tokenised) `texts` for `em` under `limits`. `field` names the input
/// in errors, e.g. `input` (OpenAI) or `inputs[0].data` (KServe); element `i` is `field[i]`.
pub async fn tokenize(em: &EmbedModel, texts: Texts, field: &str, limits: &TextLimits) -> Result<Tokenized, ApiError> {
    let n = texts.len();
    if n == 0 {
        return Err(ApiError::invalid(field, format!("`{field}` must hold at least one text, got an empty list")));
    }
    if n > limits.max_inputs {
        return Err(InputError::too_large(field, limits.max_inputs, n).into());
    }
    let (max, truncate, vocab) = (em.info.max_tokens, limits.auto_truncate, em.info.vocab_size);
    let sequences = match texts {
        Texts::Tokens(seqs) => seqs
            .into_iter()
            .enumerate()
            .map(|(i, mut s)| {
                let f = format!("{field}[{i}]");
                if s.is_empty() {
                    return Err(ApiError::invalid(&f, format!("`{f}` is an empty token list")));
                }
                if let Some(bad) = s.iter().find(|&&t| t as usize >= vocab) {
                    return Err(ApiError::invalid(&f, format!("`{f}` has token id {bad}; the vocabulary has {vocab}")));
                }
                if s.len() > max {
                    if !truncate {
                        return Err(too_long(&f, max, s.len()));
                    }
                    s.truncate(max);
                }
                Ok(s)
            })
            .collect::<Result<Vec<_>, _>>()?,
        Texts::Strings(strings) => {
            if let Some(i) = strings.iter().position(|s| s.is_empty()) {
                let f = format!("{field}[{i}]");
                return Err(ApiError::invalid(&f, format!("`{f}` is an empty string")));
            }
            let bytes: usize = strings.iter().map(String::len).sum();
            let tokenizer = em.tokenizer.clone();
            let field = field.to_owned();
            let work = move || -> Result<Vec<Vec<u32>>, ApiError> {
                strings
                    .iter()
                    .enumerate()
                    .map(|(i, s)| {
                        let f = format!("{field}[{i}]");
                        let fail = |e: String| ApiError::invalid(&f, format!("`{f}` could not be tokenised: {e}"));
                        let ids = tokenizer.encode(s).map_err(fail)?;
                        if ids.len() <= max {
                            Ok(ids)
                        } else if truncate {
                            tokenizer.encode_truncated(s).map_err(fail)
                        } else {
                            Err(too_long(&f, max, ids.len()))
                        }
                    })
                    .collect()
            };
            if bytes <= INLINE_TOKENIZE_BYTES {
                work()?
            } else {
                tokio::task::spawn_blocking(work).await.map_err(|_| {
                    ApiError::backend(&em.info.architecture, "", &BackendError("the tokenizer panicked".into()))
                })??
            }
        }
    };
    let tokens = sequences.iter().map(Vec::len).sum();
    Ok(Tokenized { sequences, tokens })
}

fn too_long(field: &str, max: usize, given: usize) -> ApiError {
    ApiError::invalid(
        field,
        format!(
            "`{field}` has {given} tokens; the model takes at most {max} (shorten it, or start the server with \
             --auto-truncate to cut long inputs)"
        ),
    )
}
