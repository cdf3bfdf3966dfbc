//! Structured outputs: a request's grammar (a JSON schema, any JSON object, a regular
//! expression, a Lark grammar or a list of choices) compiled by llguidance into a per-sequence
//! [`Constraint`] that says, before each token is sampled, which tokens keep the text inside
//! the grammar.
//!
//! [`Grammars`] belongs to one model version: llguidance's token trie is built once from the
//! model's own tokenizer (each token's raw bytes; special tokens marked apart so no grammar can
//! spell them as text), together with the precomputed vocabulary slices that make a mask cost
//! tens of microseconds. Building it and compiling a request's grammar both run on the blocking
//! pool; a constraint then lives in its sequence on the engine thread, which computes its masks
//! while the forward pass runs.

use std::sync::Arc;

use aiserve_core::generate::PromptTokenizer;
use llguidance::api::{ParserLimits, TopLevelGrammar};
use llguidance::toktrie::{SimpleVob, TokRxInfo, TokTrie, TokenId, TokenizerEnv};
use llguidance::{Matcher, ParserFactory};
use serde_json::Value;

use crate::error::Error;

/// What a request constrains its text to.
#[derive(Clone, Debug, PartialEq)]
pub enum Grammar {
    /// Any JSON object (`response_format: {"type": "json_object"}`).
    JsonObject,
    /// JSON that validates against this schema.
    JsonSchema(Value),
    /// A regular expression (Rust `regex` syntax) the whole text matches.
    Regex(String),
    /// A grammar in llguidance's Lark syntax.
    Lark(String),
    /// Exactly one of these strings.
    Choice(Vec<String>),
}

/// A grammar and the request field it came from (named by its errors).
#[derive(Clone, Debug, PartialEq)]
pub struct GrammarRequest {
    pub grammar: Grammar,
    pub field: String,
}

/// How JSON is spelt unless a schema says otherwise (llguidance's `x-guidance`): fixed
/// separators and no free whitespace, so a small model cannot wander into runs of blank lines
/// between keys.
fn json_style() -> Value {
    serde_json::json!({ "whitespace_flexible": false, "item_separator": ", ", "key_separator": ": " })
}

/// One model version's vocabulary as llguidance sees it.
struct Vocabulary {
    trie: TokTrie,
    tokenizer: Arc<dyn PromptTokenizer>,
}

impl TokenizerEnv for Vocabulary {
    fn tok_trie(&self) -> &TokTrie {
        &self.trie
    }

    fn tokenize_bytes(&self, s: &[u8]) -> Vec<TokenId> {
        match std::str::from_utf8(s).ok().and_then(|t| self.tokenizer.encode(t, false).ok()) {
            Some(ids) => ids,
            None => self.trie.greedy_tokenize(s),
        }
    }
}

/// The grammar compiler of one model version.
pub struct Grammars {
    factory: ParserFactory,
}

impl Grammars {
    /// Builds the token trie of `vocab_size` tokens (ids the tokenizer does not know stay
    /// unreachable) with `stop_tokens` as the ends a finished grammar allows.
    pub fn new(tokenizer: Arc<dyn PromptTokenizer>, vocab_size: usize, stop_tokens: &[u32]) -> Result<Self, String> {
        let words: Vec<Vec<u8>> = (0..vocab_size as u32)
            .map(|id| match tokenizer.special_text(id) {
                Some(text) => [&[TokTrie::SPECIAL_TOKEN_MARKER][..], text.as_bytes()].concat(),
                None => tokenizer.token_bytes(id),
            })
            .collect();
        let eos = *stop_tokens.first().ok_or("the model has no end token to finish a grammar with")?;
        let info = TokRxInfo::new(vocab_size as u32, eos);
        let trie = TokTrie::from(&info, &words).with_eos_tokens(stop_tokens);
        let env: llguidance::toktrie::TokEnv = Arc::new(Vocabulary { trie, tokenizer });
        let mut factory = ParserFactory::new_simple(&env).map_err(|e| e.to_string())?;
        factory.quiet();
        *factory.limits_mut() = ParserLimits { verbose_errors: false, ..ParserLimits::default() };
        Ok(Self { factory })
    }

    /// Compiles a request's grammar; a schema keyword or grammar llguidance cannot enforce is
    /// the request's error, naming its field.
    pub fn compile(&self, req: GrammarRequest) -> Result<Constraint, Error> {
        let top = match req.grammar {
            Grammar::JsonObject => TopLevelGrammar::from_json_schema(with_style(serde_json::json!({"type": "object"}))),
            Grammar::JsonSchema(schema) => TopLevelGrammar::from_json_schema(with_style(schema)),
            Grammar::Regex(rx) => TopLevelGrammar::from_regex(&rx),
            Grammar::Lark(lark) => TopLevelGrammar::from_lark(lark),
            Grammar::Choice(options) => {
                let alts: Vec<String> = options.iter().map(|o| Value::from(o.as_str()).to_string()).collect();
                TopLevelGrammar::from_lark(format!("start: {}", alts.join(" | ")))
            }
        };
        let parser = self.factory.create_parser(top).map_err(|e| {
            Error::invalid(&req.field, format!("`{}` cannot be enforced: {}", req.field, first_line(&e.to_string())))
        })?;
        let matcher = Matcher::new(Ok(parser));
        if let Some(e) = matcher.get_error() {
            return Err(Error::invalid(&req.field, format!("`{}` cannot be enforced: {}", req.field, first_line(&e))));
        }
        Ok(Constraint { matcher })
    }
}

/// A schema with aiserve's JSON spelling, unless it sets its own `x-guidance`, and its
/// integers held to 64 bits.
fn with_style(mut schema: Value) -> Value {
    bound_integers(&mut schema);
    if let Value::Object(m) = &mut schema {
        m.entry("x-guidance").or_insert_with(json_style);
    }
    schema
}

/// The bound given to integers that have none: the largest 18-digit number, inside the 64 bits
/// most JSON readers hold integers in (llguidance cannot build the range of the full 64 bits).
const INTEGER_BOUND: i64 = 999_999_999_999_999_999;

/// Gives every `integer` without a bound [`INTEGER_BOUND`]. An unbounded integer lets a small
/// model write digits until `max_tokens` runs out (SmolLM2 asked for a city's population writes
/// `1111…`); bounded, the grammar ends the number after 18 digits.
fn bound_integers(v: &mut Value) {
    match v {
        Value::Object(m) => {
            let integer = match m.get("type") {
                Some(Value::String(t)) => t == "integer",
                Some(Value::Array(ts)) => ts.iter().any(|t| t == "integer"),
                _ => false,
            };
            if integer {
                if !m.contains_key("minimum") && !m.contains_key("exclusiveMinimum") {
                    m.insert("minimum".into(), (-INTEGER_BOUND).into());
                }
                if !m.contains_key("maximum") && !m.contains_key("exclusiveMaximum") {
                    m.insert("maximum".into(), INTEGER_BOUND.into());
                }
            }
            for (k, child) in m.iter_mut() {
                // Values, not schemas.
                if !matches!(k.as_str(), "enum" | "const" | "default" | "examples" | "x-guidance") {
                    bound_integers(child);
                }
            }
        }
        Value::Array(items) => items.iter_mut().for_each(bound_integers),
        _ => {}
    }
}

fn first_line(s: &str) -> &str {
    s.lines().next().unwrap_or(s)
}

/// One sequence's grammar state.
#[derive(Clone)]
pub struct Constraint {
    matcher: Matcher,
}

impl std::fmt::Debug for Constraint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Constraint")
    }
}

impl Constraint {
    /// The tokens allowed next (only the end tokens once the grammar is complete).
    pub fn mask(&mut self) -> Result<SimpleVob, String> {
        self.matcher.compute_mask_or_eos().map_err(|e| first_line(&e.to_string()).to_string())
    }

    /// Advances past a sampled token.
    pub fn commit(&mut self, token: u32) -> Result<(), String> {
        self.matcher.consume_token(token).map_err(|e| first_line(&e.to_string()).to_string())
    }

    /// The text is complete: nothing but an end token may follow.
    pub fn is_done(&self) -> bool {
        self.matcher.is_stopped()
    }
}

/// Sets every token the mask does not allow to minus infinity (tokens past the mask too).
pub fn apply_mask(mask: &SimpleVob, logits: &mut [f32]) {
    let words = mask.as_slice();
    for (w, chunk) in logits.chunks_mut(32).enumerate() {
        let bits = words.get(w).copied().unwrap_or(0);
        if bits == u32::MAX {
            continue;
        }
        for (b, l) in chunk.iter_mut().enumerate() {
            if bits & (1 << b) == 0 {
                *l = f32::NEG_INFINITY;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Tokens 0..=255 are bytes; 256 is a special end token, 257 a special token that is no end.
    struct Bytes;
    impl PromptTokenizer for Bytes {
        fn encode(&self, text: &str, _: bool) -> Result<Vec<u32>, String> {
            Ok(text.bytes().map(u32::from).collect())
        }
        fn decode(&self, ids: &[u32]) -> Result<String, String> {
            Ok(String::from_utf8_lossy(&ids.iter().filter(|i| **i < 256).map(|i| *i as u8).collect::<Vec<_>>())
                .into_owned())
        }
        fn token_bytes(&self, id: u32) -> Vec<u8> {
            if id < 256 {
                vec![id as u8]
            } else {
                Vec::new()
            }
        }
        fn special_text(&self, id: u32) -> Option<String> {
            match id {
                256 => Some("<end>".into()),
                257 => Some("<other>".into()),
                _ => None,
            }
        }
    }

    fn grammars() -> Grammars {
        Grammars::new(Arc::new(Bytes), 260, &[256]).unwrap()
    }

    /// Greedy decoding where the "model" always prefers `wish`'s next byte, so every
    /// departure from it is the grammar's doing.
    fn run(c: &mut Constraint, wish: &str) -> String {
        let mut out = Vec::new();
        for step in 0..200 {
            if c.is_done() {
                break;
            }
            let mut logits = vec![0.0f32; 260];
            if let Some(b) = wish.as_bytes().get(step) {
                logits[*b as usize] = 10.0;
            }
            logits[256] = 5.0;
            let mask = c.mask().unwrap();
            apply_mask(&mask, &mut logits);
            let t = aiserve_core::sampling::argmax(&logits);
            if t == 256 {
                break;
            }
            c.commit(t).unwrap();
            out.push(t as u8);
        }
        String::from_utf8(out).unwrap()
    }

    fn req(grammar: Grammar) -> GrammarRequest {
        GrammarRequest { grammar, field: "response_format".into() }
    }

    #[test]
    fn text_follows_the_schema_whatever_the_model_prefers() {
        let g = grammars();
        let schema = serde_json::json!({
            "type": "object",
            "properties": { "city": {"type": "string", "enum": ["Paris", "Rome"]}, "n": {"type": "integer"} },
            "required": ["city", "n"], "additionalProperties": false
        });
        let mut c = g.compile(req(Grammar::JsonSchema(schema))).unwrap();
        let text = run(&mut c, "{\"city\": \"Rome\", \"n\": 42}");
        assert_eq!(text, "{\"city\": \"Rome\", \"n\": 42}");
        let mut c = g.compile(req(Grammar::JsonSchema(serde_json::json!({"type": "integer"})))).unwrap();
        // The model wants prose; the grammar holds it to digits (and the end once it may).
        let text = run(&mut c, "12ab");
        assert_eq!(text, "12");
        let mut c = g.compile(req(Grammar::Choice(vec!["yes".into(), "no".into()]))).unwrap();
        assert_eq!(run(&mut c, "nope"), "no");
        let mut c = g.compile(req(Grammar::Regex("[0-9]{3}-[a-z]+".into()))).unwrap();
        assert_eq!(run(&mut c, "123-abc!"), "123-abc");
        let mut c = g.compile(req(Grammar::JsonObject)).unwrap();
        let text = run(&mut c, "{\"a\": [1, 2]}");
        assert!(serde_json::from_str::<serde_json::Map<String, Value>>(&text).is_ok(), "{text}");
    }

    #[test]
    fn integers_without_bounds_end_after_18_digits() {
        let g = grammars();
        let schema = serde_json::json!({"type": "object", "properties": {"n": {"type": "integer"}, "m": {"type": "integer", "maximum": 5}},
            "required": ["n", "m"], "additionalProperties": false});
        let mut c = g.compile(req(Grammar::JsonSchema(schema))).unwrap();
        let text = run(&mut c, &format!("{{\"n\": {}", "1".repeat(40)));
        let v: Value = serde_json::from_str(&text).unwrap();
        assert_eq!(v["n"].as_i64(), Some(111_111_111_111_111_111), "{text}");
        assert!(v["m"].as_i64().unwrap() <= 5, "{text}");
    }

    #[test]
    fn special_tokens_are_never_text_and_the_end_comes_only_when_complete() {
        let g = grammars();
        let mut c = g.compile(req(Grammar::JsonSchema(serde_json::json!({"type": "boolean"})))).unwrap();
        let mask = c.mask().unwrap();
        assert!(!mask.is_allowed(256) && !mask.is_allowed(257) && mask.is_allowed(b't' as u32));
        for b in b"true" {
            c.commit(*b as u32).unwrap();
        }
        let mask = c.mask().unwrap();
        assert!(mask.is_allowed(256) && !mask.is_allowed(257));
    }

    #[test]
    fn what_cannot_be_enforced_is_refused_by_name() {
        let g = grammars();
        let bad = serde_json::json!({"type": "object", "properties": {"a": {"type": "string"}}, "patternPropertiesX": 1, "unevaluatedItems": false});
        let err = g
            .compile(GrammarRequest { grammar: Grammar::JsonSchema(bad), field: "response_format.json_schema".into() });
        let msg = err.unwrap_err().to_string();
        assert!(msg.contains("response_format.json_schema") && msg.contains("unevaluatedItems"), "{msg}");
        let err = g.compile(req(Grammar::Lark("start: (".into()))).unwrap_err().to_string();
        assert!(err.contains("cannot be enforced"), "{err}");
    }
}
