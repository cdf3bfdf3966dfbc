//! The `tokenizers` crate behind core's [`TextTokenizer`]: a model's own `tokenizer.json`.

use std::path::Path;

use aiserve_core::text::TextTokenizer;
use aiserve_core::LoadError;
use tokenizers::{Tokenizer, TruncationParams};

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
            .with_truncation(Some(TruncationParams { max_length: max_tokens, ..Default::default() }))
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
