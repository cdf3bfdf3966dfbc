//! A GGUF file's own tokenizer, rebuilt as a `tokenizers::Tokenizer` (what llama.cpp and Ollama
//! do), so a single `.gguf` is a complete model without a `tokenizer.json` beside it.
//!
//! Supported today: GPT-2-style byte-level BPE (`tokenizer.ggml.model = "gpt2"`) with the
//! pre-tokenizers llama.cpp calls `default`/`gpt2` (the GPT-2 regex), `smollm` (digits split
//! one by one, then the GPT-2 regex), `llama-bpe` (Llama 3's regex, numbers in groups of up to
//! three, words looked up whole before merging) and `qwen2` (Qwen 2's: digits one by one).
//! Control and user-defined tokens (`<|im_start|>` …) become special added tokens, so they are
//! matched in text and skipped when decoding. SentencePiece vocabularies (`llama`: Gemma, Llama 2,
//! Mistral, TinyLlama) are built in [`super::spm`]. Other vocabularies and pre-tokenizer regexes
//! are refused by name.

use std::collections::HashMap;

use aiserve_core::LoadError;
use candle_core::quantized::gguf_file::{Content, Value};
use tokenizers::decoders::byte_level::ByteLevel as ByteLevelDecoder;
use tokenizers::models::bpe::BPE;
use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::pre_tokenizers::digits::Digits;
use tokenizers::pre_tokenizers::sequence::Sequence;
use tokenizers::pre_tokenizers::split::{Split, SplitPattern};
use tokenizers::{AddedToken, PreTokenizerWrapper, SplitDelimiterBehavior, Tokenizer};

// GGUF `tokenizer.ggml.token_type` values that mark special tokens.
use super::spm::{CONTROL, USER_DEFINED};

/// Llama 3's pre-tokenizer regex, as its `tokenizer.json` holds it (llama.cpp runs the same
/// with the case-insensitive group spelled out).
const LLAMA3: &str = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";
/// Qwen 2's: Llama 3's with digits one by one.
const QWEN2: &str =
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";

/// The tokenizer plus the ids and template the GGUF declares.
pub struct GgufTokenizer {
    pub tokenizer: Tokenizer,
    pub bos: Option<u32>,
    pub eos: Option<u32>,
    pub chat_template: Option<String>,
}

fn meta<'a>(content: &'a Content, key: &str) -> Option<&'a Value> {
    content.metadata.get(key)
}

fn strings(content: &Content, key: &str) -> Result<Vec<String>, LoadError> {
    let v = meta(content, key).ok_or_else(|| LoadError::Config(format!("GGUF metadata has no `{key}`")))?;
    v.to_vec()
        .map_err(|e| LoadError::Config(format!("GGUF `{key}`: {e}")))?
        .iter()
        .map(|x| x.to_string().cloned().map_err(|e| LoadError::Config(format!("GGUF `{key}`: {e}"))))
        .collect()
}

fn u32_of(content: &Content, key: &str) -> Option<u32> {
    meta(content, key).and_then(|v| v.to_u32().ok())
}

/// Reads the tokenizer of the GGUF file at `path` (only its metadata is read).
pub fn read(path: &std::path::Path) -> Result<GgufTokenizer, LoadError> {
    let mut file = std::fs::File::open(path)?;
    let content = Content::read(&mut file).map_err(|e| LoadError::Weights(format!("GGUF header: {e}")))?;
    from_gguf(&content)
}

pub fn from_gguf(content: &Content) -> Result<GgufTokenizer, LoadError> {
    let model = meta(content, "tokenizer.ggml.model").and_then(|v| v.to_string().ok()).map(String::as_str);
    match model {
        Some("gpt2") => {}
        Some("llama") => return sentencepiece(content),
        _ => {
            return Err(LoadError::Unsupported(format!(
                "GGUF tokenizer model {model:?} (supported: `gpt2`, byte-level BPE; `llama`, SentencePiece)"
            )))
        }
    }
    let pre =
        meta(content, "tokenizer.ggml.pre").and_then(|v| v.to_string().ok()).map(String::as_str).unwrap_or("default");
    let byte_level = ByteLevel::new(false, true, true);
    // A regex split, then byte-level BPE's byte-to-character mapping without its own regex.
    let regex_then_bytes = |pattern: &str| -> Result<PreTokenizerWrapper, LoadError> {
        let split = Split::new(SplitPattern::Regex(pattern.into()), SplitDelimiterBehavior::Isolated, false)
            .map_err(|e| LoadError::Config(format!("pre-tokenizer regex: {e}")))?;
        Ok(Sequence::new(vec![split.into(), ByteLevel::new(false, true, false).into()]).into())
    };
    // Llama 3 looks a whole pre-token up in the vocabulary before merging (llama.cpp's and
    // transformers' `ignore_merges`).
    let (pre_tokenizer, ignore_merges): (PreTokenizerWrapper, bool) = match pre {
        "default" | "gpt2" => (byte_level.into(), false),
        "smollm" => (Sequence::new(vec![Digits::new(true).into(), byte_level.into()]).into(), false),
        "llama-bpe" | "llama3" | "llama-v3" => (regex_then_bytes(LLAMA3)?, true),
        "qwen2" | "deepseek-r1-qwen" => (regex_then_bytes(QWEN2)?, false),
        other => {
            return Err(LoadError::Unsupported(format!(
                "GGUF pre-tokenizer `{other}` (supported: default, gpt2, smollm, llama-bpe, qwen2)"
            )))
        }
    };
    let tokens = strings(content, "tokenizer.ggml.tokens")?;
    let merges: Vec<(String, String)> = strings(content, "tokenizer.ggml.merges")?
        .into_iter()
        .map(|m| {
            m.split_once(' ')
                .map(|(a, b)| (a.to_owned(), b.to_owned()))
                .ok_or_else(|| LoadError::Config(format!("GGUF merge {m:?} is not two tokens")))
        })
        .collect::<Result<_, _>>()?;
    let vocab: HashMap<String, u32> = tokens.iter().enumerate().map(|(i, t)| (t.clone(), i as u32)).collect();
    // Every merge joins two tokens into a third, all in the vocabulary. Checked here: the BPE
    // builder indexes out of bounds (panics) on a merge whose result is longer than any token.
    for (i, (a, b)) in merges.iter().enumerate() {
        let joined = format!("{a}{b}");
        let missing = [a.as_str(), b.as_str(), joined.as_str()].into_iter().find(|t| !vocab.contains_key(*t));
        if let Some(missing) = missing {
            return Err(LoadError::Config(format!(
                "GGUF merge {i} ({a:?} + {b:?}) uses {missing:?}, which is not in the vocabulary"
            )));
        }
    }
    let bpe = BPE::builder()
        .vocab_and_merges(vocab.into_iter().collect::<tokenizers::models::bpe::Vocab>(), merges)
        .ignore_merges(ignore_merges)
        .build()
        .map_err(|e| LoadError::Config(format!("GGUF BPE vocabulary: {e}")))?;
    let mut tokenizer = Tokenizer::new(bpe);
    tokenizer.with_pre_tokenizer(Some(pre_tokenizer));
    tokenizer.with_decoder(Some(ByteLevelDecoder::default()));
    if let Some(types) = meta(content, "tokenizer.ggml.token_type").and_then(|v| v.to_vec().ok()) {
        let special: Vec<AddedToken> = types
            .iter()
            .zip(&tokens)
            .filter(|(t, _)| matches!(t.to_i32(), Ok(CONTROL | USER_DEFINED)))
            .map(|(_, tok)| AddedToken::from(tok.clone(), true))
            .collect();
        tokenizer.add_special_tokens(special).map_err(|e| LoadError::Config(format!("GGUF special tokens: {e}")))?;
    }
    Ok(GgufTokenizer {
        tokenizer,
        bos: u32_of(content, "tokenizer.ggml.bos_token_id"),
        eos: u32_of(content, "tokenizer.ggml.eos_token_id"),
        chat_template: meta(content, "tokenizer.chat_template").and_then(|v| v.to_string().ok()).cloned(),
    })
}

/// A SentencePiece vocabulary (`tokenizer.ggml.model = "llama"`).
fn sentencepiece(content: &Content) -> Result<GgufTokenizer, LoadError> {
    let pieces = strings(content, "tokenizer.ggml.tokens")?;
    let numbers = |key: &str| -> Result<Vec<Value>, LoadError> {
        let v = meta(content, key).ok_or_else(|| LoadError::Config(format!("GGUF metadata has no `{key}`")))?;
        v.to_vec().cloned().map_err(|e| LoadError::Config(format!("GGUF `{key}`: {e}")))
    };
    let bad = |key: &str, e: candle_core::Error| LoadError::Config(format!("GGUF `{key}`: {e}"));
    let scores: Vec<f32> = numbers("tokenizer.ggml.scores")?
        .iter()
        .map(|v| v.to_f32().map_err(|e| bad("tokenizer.ggml.scores", e)))
        .collect::<Result<_, _>>()?;
    let types: Vec<i32> = numbers("tokenizer.ggml.token_type")?
        .iter()
        .map(|v| v.to_i32().map_err(|e| bad("tokenizer.ggml.token_type", e)))
        .collect::<Result<_, _>>()?;
    // llama.cpp's default for SentencePiece vocabularies when the key is absent.
    let add_space_prefix =
        meta(content, "tokenizer.ggml.add_space_prefix").and_then(|v| v.to_bool().ok()).unwrap_or(true);
    Ok(GgufTokenizer {
        tokenizer: super::spm::tokenizer(&pieces, &scores, &types, add_space_prefix)?,
        bos: u32_of(content, "tokenizer.ggml.bos_token_id"),
        eos: u32_of(content, "tokenizer.ggml.eos_token_id"),
        chat_template: meta(content, "tokenizer.chat_template").and_then(|v| v.to_string().ok()).cloned(),
    })
}

#[cfg(test)]
mod tests {
    use candle_core::quantized::gguf_file;

    use super::*;

    /// The pieces `text` becomes with a tiny vocabulary under pre-tokenizer `pre`. Merges rank
    /// `1 2` before `3 4` before `12 3`; `abc` is a token no merge makes.
    fn pieces(pre: &str, text: &str) -> Vec<String> {
        let tokens = ["1", "2", "3", "4", "12", "34", "123", "a", "b", "c", "ab", "abc"];
        let merges = ["1 2", "3 4", "12 3", "a b"];
        let strings = |v: &[&str]| Value::Array(v.iter().map(|s| Value::String(s.to_string())).collect());
        let meta = [
            ("tokenizer.ggml.model", Value::String("gpt2".into())),
            ("tokenizer.ggml.pre", Value::String(pre.into())),
            ("tokenizer.ggml.tokens", strings(&tokens)),
            ("tokenizer.ggml.merges", strings(&merges)),
        ];
        let file = tempfile::NamedTempFile::new().unwrap();
        let refs: Vec<(&str, &Value)> = meta.iter().map(|(k, v)| (*k, v)).collect();
        gguf_file::write(&mut file.reopen().unwrap(), &refs, &[]).unwrap();
        let t = read(file.path()).unwrap().tokenizer;
        let ids = t.encode(text, false).unwrap().get_ids().to_vec();
        ids.iter().map(|id| t.id_to_token(*id).unwrap()).collect()
    }

    #[test]
    fn each_pre_tokenizer_splits_as_llama_cpp_does() {
        // GPT-2's regex keeps "1234" whole, so 3 and 4 merge first.
        assert_eq!(pieces("gpt2", "1234"), ["12", "34"]);
        // Llama 3's splits numbers into groups of three: "123" and "4".
        assert_eq!(pieces("llama-bpe", "1234"), ["123", "4"]);
        // Qwen 2's splits every digit.
        assert_eq!(pieces("qwen2", "1234"), ["1", "2", "3", "4"]);
        // Llama 3 takes a pre-token found in the vocabulary whole; others merge.
        assert_eq!(pieces("llama-bpe", "abc"), ["abc"]);
        assert_eq!(pieces("qwen2", "abc"), ["ab", "c"]);
    }

    #[test]
    fn unknown_pre_tokenizers_are_refused_by_name() {
        let meta = [
            ("tokenizer.ggml.model", Value::String("gpt2".into())),
            ("tokenizer.ggml.pre", Value::String("tekken".into())),
        ];
        let file = tempfile::NamedTempFile::new().unwrap();
        let refs: Vec<(&str, &Value)> = meta.iter().map(|(k, v)| (*k, v)).collect();
        gguf_file::write(&mut file.reopen().unwrap(), &refs, &[]).unwrap();
        let err = read(file.path()).err().expect("refused").to_string();
        assert!(err.contains("`tekken`") && err.contains("llama-bpe"), "{err}");
    }
}
