//! Texts from a request turned into token sequences a text model accepts, with the limits every
//! text protocol shares: how many inputs, no empty text, and the model's token limit (a 400
//! naming it, or truncation when the server runs with `--auto-truncate`).

use aiserve_core::InputError;

use crate::budget::{Hold, TOKENIZE_BYTES_PER_BYTE};
use crate::error::Error;
use crate::runtime::Runtime;
use crate::servable::EmbedModel;

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
pub(crate) const INLINE_TOKENIZE_BYTES: usize = 2 << 10;

/// The server's text limits on how many items one request holds: at least one `what` (`text`,
/// `document`) and at most `--max-inputs`, `field` named in the error.
pub(crate) fn check_count(rt: &Runtime, field: &str, n: usize, what: &str) -> Result<(), Error> {
    let max = rt.limits.text.max_inputs;
    if n == 0 {
        return Err(Error::invalid(field, format!("`{field}` must hold at least one {what}, got an empty list")));
    }
    if n > max {
        return Err(InputError::too_large(field, max, n).into());
    }
    Ok(())
}

/// Tokenises (or checks pre-tokenised) `texts` for `em` under the server's text limits. `field`
/// names the input in errors, e.g. `input` (OpenAI) or `inputs[0].data` (KServe); element `i` is
/// `field[i]`. The token ids are counted against `hold` (at most one per byte of text, or as
/// many as were sent) before tokenising; long texts tokenise on the bounded decoder pool.
pub async fn tokenize(
    rt: &Runtime,
    em: &EmbedModel,
    texts: Texts,
    field: &str,
    hold: &Hold,
) -> Result<Tokenized, Error> {
    let limits = &rt.limits.text;
    check_count(rt, field, texts.len(), "text")?;
    let (max, truncate, vocab) = (em.info.max_tokens, limits.auto_truncate, em.info.vocab_size);
    let sequences = match texts {
        Texts::Tokens(seqs) => seqs
            .into_iter()
            .enumerate()
            .map(|(i, mut s)| {
                let f = format!("{field}[{i}]");
                if s.is_empty() {
                    return Err(Error::invalid(&f, format!("`{f}` is an empty token list")));
                }
                if let Some(bad) = s.iter().find(|&&t| t as usize >= vocab) {
                    return Err(Error::invalid(&f, format!("`{f}` has token id {bad}; the vocabulary has {vocab}")));
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
                return Err(Error::invalid(&f, format!("`{f}` is an empty string")));
            }
            let bytes: usize = strings.iter().map(String::len).sum();
            // A tokenizer makes at most a few ids per byte (byte fallback: one; special tokens
            // and added BOS/EOS: two more per text), plus its own encoding's working memory.
            hold.grow((bytes + 2 * strings.len()) * TOKENIZE_BYTES_PER_BYTE, "tokenizing the texts")?;
            let tokenizer = em.tokenizer.clone();
            let field = field.to_owned();
            let work = move || -> Result<Vec<Vec<u32>>, Error> {
                strings
                    .iter()
                    .enumerate()
                    .map(|(i, s)| {
                        let f = format!("{field}[{i}]");
                        let fail = |e: String| Error::invalid(&f, format!("`{f}` could not be tokenised: {e}"));
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
                rt.decode("the tokenizer", work).await?
            }
        }
    };
    let tokens = sequences.iter().map(Vec::len).sum();
    Ok(Tokenized { sequences, tokens })
}

fn too_long(field: &str, max: usize, given: usize) -> Error {
    Error::invalid(
        field,
        format!(
            "`{field}` has {given} tokens; the model takes at most {max} (shorten it, or start the server with \
             --auto-truncate to cut long inputs)"
        ),
    )
}
