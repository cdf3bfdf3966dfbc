//! Turning generated token ids into text as it streams: incremental detokenisation that never
//! emits half a UTF-8 character, and stop strings matched across token boundaries (text that
//! could still become a stop string is held back until it cannot).

use crate::generate::PromptTokenizer;

/// Incremental decoding (the scheme of Hugging Face's text-generation-inference): decode a
/// window of recent tokens with and without the newest ones and emit the difference, so
/// tokenizers that merge bytes or strip spaces at the start of a decode still read right.
#[derive(Default)]
pub struct Detokenizer {
    ids: Vec<u32>,
    prefix: usize,
    read: usize,
}

impl Detokenizer {
    /// Adds a token; returns the new text it completes (empty while a character is incomplete).
    pub fn push(&mut self, tok: &dyn PromptTokenizer, id: u32) -> Result<String, String> {
        self.ids.push(id);
        let before = tok.decode(&self.ids[self.prefix..self.read])?;
        let after = tok.decode(&self.ids[self.prefix..])?;
        if after.len() > before.len() && !after.ends_with('\u{FFFD}') && after.is_char_boundary(before.len()) {
            let delta = after[before.len()..].to_string();
            self.prefix = self.read;
            self.read = self.ids.len();
            Ok(delta)
        } else {
            Ok(String::new())
        }
    }

    /// Text not emitted yet (a trailing incomplete character decodes as U+FFFD).
    pub fn flush(&mut self, tok: &dyn PromptTokenizer) -> Result<String, String> {
        let before = tok.decode(&self.ids[self.prefix..self.read])?;
        let after = tok.decode(&self.ids[self.prefix..])?;
        self.prefix = self.ids.len();
        self.read = self.ids.len();
        Ok(if after.len() > before.len() && after.is_char_boundary(before.len()) {
            after[before.len()..].to_string()
        } else {
            String::new()
        })
    }
}

/// Stop strings over streamed text.
pub struct StopStrings {
    stops: Vec<String>,
    pending: String,
    /// The stop string found, once one is.
    matched: Option<String>,
}

/// What [`StopStrings::push`] lets through.
#[derive(Debug, PartialEq, Eq)]
pub struct Released {
    pub text: String,
    /// A stop string was found: `text` ends right before it and generation should end.
    pub stopped: bool,
}

impl StopStrings {
    pub fn new(stops: Vec<String>) -> Self {
        Self { stops: stops.into_iter().filter(|s| !s.is_empty()).collect(), pending: String::new(), matched: None }
    }

    /// The stop string that ended the text (Anthropic's `stop_sequence`).
    pub fn matched(&self) -> Option<&str> {
        self.matched.as_deref()
    }

    pub fn push(&mut self, delta: &str) -> Released {
        self.pending.push_str(delta);
        if let Some((at, stop)) =
            self.stops.iter().filter_map(|s| self.pending.find(s.as_str()).map(|at| (at, s))).min_by_key(|(at, _)| *at)
        {
            self.matched = Some(stop.clone());
            let text = self.pending[..at].to_string();
            self.pending.clear();
            return Released { text, stopped: true };
        }
        // Hold back the longest tail that is the start of some stop string.
        let mut hold = 0;
        for s in &self.stops {
            for (k, _) in s.char_indices().skip(1) {
                if k > hold && self.pending.ends_with(&s[..k]) {
                    hold = k;
                }
            }
        }
        let cut = self.pending.len() - hold;
        let text = self.pending[..cut].to_string();
        self.pending.drain(..cut);
        Released { text, stopped: false }
    }

    /// Whatever was held back, at the end of generation.
    pub fn finish(&mut self) -> String {
        std::mem::take(&mut self.pending)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Tokens are bytes: id = byte value, so multi-byte characters span several tokens.
    struct Bytes;
    impl PromptTokenizer for Bytes {
        fn encode(&self, text: &str, _: bool) -> Result<Vec<u32>, String> {
            Ok(text.bytes().map(u32::from).collect())
        }
        fn decode(&self, ids: &[u32]) -> Result<String, String> {
            Ok(String::from_utf8_lossy(&ids.iter().map(|i| *i as u8).collect::<Vec<_>>()).into_owned())
        }
    }

    #[test]
    fn characters_split_over_tokens_are_emitted_whole() {
        let mut d = Detokenizer::default();
        let mut out = Vec::new();
        for b in "aé€!".bytes() {
            out.push(d.push(&Bytes, b as u32).unwrap());
        }
        assert_eq!(out, ["a", "", "é", "", "", "€", "!"]);
        assert_eq!(d.flush(&Bytes).unwrap(), "");
        // A dangling partial character comes out at the end as U+FFFD.
        d.push(&Bytes, 0xE2).unwrap();
        assert_eq!(d.flush(&Bytes).unwrap(), "\u{FFFD}");
    }

    #[test]
    fn stop_strings_match_across_pieces_and_hold_back_only_prefixes() {
        let mut s = StopStrings::new(vec!["\n\nUser:".into(), "END".into()]);
        assert_eq!(s.push("Hello").text, "Hello");
        assert_eq!(s.push(" wor").text, " wor");
        assert_eq!(s.push("ld\n").text, "ld");
        assert_eq!(s.push("\nUs").text, "");
        assert_eq!(s.push("er: hi"), Released { text: String::new(), stopped: true });
        assert_eq!(s.matched(), Some("\n\nUser:"));
        let mut s = StopStrings::new(vec!["END".into()]);
        assert_eq!(s.push("the E").text, "the ");
        assert_eq!(s.push("Nd").text, "ENd");
        assert_eq!(s.push("x EN").text, "x ");
        assert_eq!(s.finish(), "EN");
        let mut s = StopStrings::new(vec!["é!".into()]);
        assert_eq!(s.push("caféé").text, "café");
        assert_eq!(s.push("!"), Released { text: String::new(), stopped: true });
    }
}
