//! [`PromptTokenizer`] over a `tokenizers::Tokenizer`, built from a GGUF file's metadata or
//! read from a `tokenizer.json`.

use aiserve_core::generate::PromptTokenizer;
use tokenizers::Tokenizer;

pub struct GenTokenizer {
    tokenizer: Tokenizer,
    /// Put before plain prompts by hand (GGUF `add_bos_token`); `tokenizer.json` files say it in
    /// their own post-processor instead.
    bos: Option<u32>,
}

impl GenTokenizer {
    pub fn new(tokenizer: Tokenizer, bos: Option<u32>) -> Self {
        Self { tokenizer, bos }
    }

    pub fn token_id(&self, text: &str) -> Option<u32> {
        self.tokenizer.token_to_id(text)
    }
}

impl PromptTokenizer for GenTokenizer {
    fn encode(&self, text: &str, add_special: bool) -> Result<Vec<u32>, String> {
        let enc = self.tokenizer.encode(text, add_special).map_err(|e| e.to_string())?;
        let mut ids = Vec::with_capacity(enc.len() + 1);
        if add_special {
            ids.extend(self.bos);
        }
        ids.extend_from_slice(enc.get_ids());
        Ok(ids)
    }

    fn decode(&self, ids: &[u32]) -> Result<String, String> {
        self.tokenizer.decode(ids, true).map_err(|e| e.to_string())
    }
}
