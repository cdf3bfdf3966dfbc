//! [`PromptTokenizer`] over a `tokenizers::Tokenizer`, built from a GGUF file's metadata or
//! read from a `tokenizer.json`.

use aiserve_core::generate::PromptTokenizer;
use tokenizers::Tokenizer;

pub struct GenTokenizer {
    tokenizer: Tokenizer,
    /// Special (control) tokens' texts, by id: the added tokens marked special.
    special: std::collections::HashMap<u32, String>,
    /// Put before plain prompts by hand (GGUF `add_bos_token`); `tokenizer.json` files say it in
    /// their own post-processor instead.
    bos: Option<u32>,
}

impl GenTokenizer {
    pub fn new(tokenizer: Tokenizer, bos: Option<u32>) -> Self {
        let special = tokenizer
            .get_added_tokens_decoder()
            .into_iter()
            .filter(|(_, t)| t.special)
            .map(|(id, t)| (id, t.content))
            .collect();
        Self { tokenizer, special, bos }
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

    /// Byte-level vocabularies (GPT-2, Llama 3, Qwen, SmolLM) spell each byte as one printable
    /// character; SentencePiece byte fallback spells it `<0xNN>`. Either way the raw bytes come
    /// from the vocabulary entry, so a token holding half of a character reports its own bytes
    /// rather than U+FFFD.
    fn token_bytes(&self, id: u32) -> Vec<u8> {
        let piece = self.tokenizer.id_to_token(id);
        if let Some(b) = piece.as_deref().and_then(byte_fallback) {
            return vec![b];
        }
        if let (Some(piece), true) = (&piece, self.byte_level()) {
            if let Some(bytes) = piece.chars().map(byte_of_char).collect::<Option<Vec<u8>>>() {
                return bytes;
            }
        }
        // SentencePiece spells a space `▁`; decoding one token alone would drop a leading one.
        if let Some(piece) = piece.filter(|p| p.contains('\u{2581}') && !self.special.contains_key(&id)) {
            return piece.replace('\u{2581}', " ").into_bytes();
        }
        self.decode(&[id]).map(String::into_bytes).unwrap_or_default()
    }

    fn special_text(&self, id: u32) -> Option<String> {
        self.special.get(&id).cloned()
    }
}

impl GenTokenizer {
    fn byte_level(&self) -> bool {
        use tokenizers::DecoderWrapper;
        match self.tokenizer.get_decoder() {
            Some(DecoderWrapper::ByteLevel(_)) => true,
            Some(DecoderWrapper::Sequence(seq)) => {
                seq.get_decoders().iter().any(|d| matches!(d, DecoderWrapper::ByteLevel(_)))
            }
            _ => false,
        }
    }
}

/// `<0xNN>`: SentencePiece's spelling of a raw byte.
fn byte_fallback(piece: &str) -> Option<u8> {
    let hex = piece.strip_prefix("<0x")?.strip_suffix('>')?;
    (hex.len() == 2).then(|| u8::from_str_radix(hex, 16).ok()).flatten()
}

/// The byte a GPT-2 byte-level character stands for: printable Latin-1 bytes stand for
/// themselves, the other 68 bytes are spelt U+0100 upwards in byte order.
fn byte_of_char(c: char) -> Option<u8> {
    let printable = |b: u32| (0x21..=0x7e).contains(&b) || (0xa1..=0xac).contains(&b) || (0xae..=0xff).contains(&b);
    let c = c as u32;
    if c < 0x100 {
        return printable(c).then_some(c as u8);
    }
    (0u32..256).filter(|&b| !printable(b)).nth((c - 0x100) as usize).map(|b| b as u8)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn byte_level_characters_map_back_to_bytes() {
        assert_eq!(byte_of_char('a'), Some(b'a'));
        assert_eq!(byte_of_char('\u{0120}'), Some(b' ')); // GPT-2's "Ġ"
        assert_eq!(byte_of_char('\u{010a}'), Some(b'\n')); // "Ċ"
        assert_eq!(byte_of_char('\u{0100}'), Some(0));
        assert_eq!(byte_of_char('\u{0143}'), Some(0xad));
        assert_eq!(byte_of_char('\u{0144}'), None);
        assert_eq!(byte_of_char('\u{00e9}'), Some(0xe9));
        assert_eq!(byte_fallback("<0xE2>"), Some(0xe2));
        assert_eq!(byte_fallback("<0xE>"), None);
    }
}
