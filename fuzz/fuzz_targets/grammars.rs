//! Request grammars (structured outputs) compiled by llguidance over a byte vocabulary: JSON
//! schemas, regexes, Lark grammars and choices from arbitrary text, then a few masks and commits
//! driven by the input's bytes. A grammar is the request's to send; compiling and following it
//! must end in a mask or an error, never a panic or a hang.
#![no_main]
use std::sync::{Arc, OnceLock};

use aiserve_core::generate::PromptTokenizer;
use aiserve_runtime::generation::grammar::{Grammar, GrammarRequest, Grammars};
use libfuzzer_sys::fuzz_target;

/// Tokens 0..=255 are bytes; 256 is the end token.
struct Bytes;
impl PromptTokenizer for Bytes {
    fn encode(&self, text: &str, _: bool) -> Result<Vec<u32>, String> {
        Ok(text.bytes().map(u32::from).collect())
    }
    fn decode(&self, ids: &[u32]) -> Result<String, String> {
        Ok(String::from_utf8_lossy(&ids.iter().filter(|i| **i < 256).map(|i| *i as u8).collect::<Vec<_>>()).into_owned())
    }
    fn token_bytes(&self, id: u32) -> Vec<u8> {
        if id < 256 { vec![id as u8] } else { Vec::new() }
    }
    fn special_text(&self, id: u32) -> Option<String> {
        (id == 256).then(|| "<end>".to_string())
    }
}

fn grammars() -> &'static Grammars {
    static G: OnceLock<Grammars> = OnceLock::new();
    G.get_or_init(|| Grammars::new(Arc::new(Bytes), 257, &[256]).unwrap())
}

fuzz_target!(|data: &[u8]| {
    let Some((&kind, rest)) = data.split_first() else { return };
    let text = String::from_utf8_lossy(rest);
    let (source, steps) = text.split_once('\u{1}').unwrap_or((&text, ""));
    let grammar = match kind % 4 {
        0 => match serde_json::from_str(source) {
            Ok(schema) => Grammar::JsonSchema(schema),
            Err(_) => return,
        },
        1 => Grammar::Regex(source.to_string()),
        2 => Grammar::Lark(source.to_string()),
        _ => Grammar::Choice(source.split('|').map(str::to_owned).collect()),
    };
    let Ok(mut c) = grammars().compile(GrammarRequest { grammar, field: "f".into() }) else { return };
    for b in steps.bytes().take(64) {
        let Ok(mask) = c.mask() else { return };
        // The byte the input names if allowed, else the first allowed token.
        let t = if mask.is_allowed(b as u32) { b as u32 } else { mask.first_bit_set().map_or(256, |t| t as u32) };
        if t == 256 || c.commit(t).is_err() || c.is_done() {
            return;
        }
    }
});
