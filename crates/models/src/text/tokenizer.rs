//! The `tokenizers` crate behind core's [`TextTokenizer`]: a model's own `tokenizer.json`.

use std::path::Path;

use aiserve_core::text::{PairTokenizer, PairTokens, TextTokenizer};
use aiserve_core::LoadError;
use tokenizers::{Encoding, Tokenizer, TruncationParams, TruncationStrategy};

/// Two copies of the model's tokenizer: one that never truncates (so over-long input can be
/// refused with its real length) and one that cuts to the model's limit the model's own way.
pub struct HfTokenizer {
    full: Tokenizer,
    truncating: Tokenizer,
}

impl HfTokenizer {
    pub fn from_file(path: &Path, max_tokens: usize) -> Result<Self, LoadError> {
        let mut full = Tokenizer::from_file(path).map_err(|e| LoadError::Config(format!("tokenizer.json: {e}")))?;
        // A tokenizer.json may carry padding or truncation settings from training; requests are
        // never padded and are truncated only on purpose.
        full.with_padding(None);
        full.with_truncation(None).map_err(|e| LoadError::Config(format!("tokenizer.json: {e}")))?;
        let mut truncating = full.clone();
        truncating
            .with_truncation(Some(TruncationParams {
                max_length: max_tokens,
                strategy: TruncationStrategy::LongestFirst,
                ..Default::default()
            }))
            .map_err(|e| LoadError::Config(format!("tokenizer.json: {e}")))?;
        Ok(Self { full, truncating })
    }

    pub fn vocab_size(&self) -> usize {
        self.full.get_vocab_size(true)
    }
}

impl TextTokenizer for HfTokenizer {
    fn encode(&self, text: &str) -> Result<Vec<u32>, String> {
        Ok(self.full.encode(text, true).map_err(|e| e.to_string())?.get_ids().to_vec())
    }

    fn encode_truncated(&self, text: &str) -> Result<Vec<u32>, String> {
        Ok(self.truncating.encode(text, true).map_err(|e| e.to_string())?.get_ids().to_vec())
    }
}

impl PairTokenizer for HfTokenizer {
    fn encode_pair(&self, first: &str, second: &str, truncate: bool) -> Result<PairTokens, String> {
        let tokenizer = if truncate { &self.truncating } else { &self.full };
        let encoding = tokenizer.encode((first, second), true).map_err(|e| e.to_string())?;
        Ok(pair_tokens(&encoding))
    }
}

/// The ids of a pair's encoding and where its second segment starts: the first token the
/// post-processor gave a non-zero type id (BERT's `[SEP]`-joined pairs), else the start of the
/// second sequence's own tokens (RoBERTa's processor, whose type ids are all 0).
fn pair_tokens(encoding: &Encoding) -> PairTokens {
    let ids = encoding.get_ids().to_vec();
    let typed = encoding.get_type_ids().iter().position(|&t| t != 0);
    let by_sequence = || encoding.get_sequence_ids().iter().position(|&s| s == Some(1));
    let second = typed.or_else(by_sequence).unwrap_or(ids.len());
    PairTokens { ids, second }
}
