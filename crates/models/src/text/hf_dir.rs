//! Recognising a Hugging Face / sentence-transformers model directory and reading what it says
//! about serving: the encoder config, the pooling mode, normalisation, the length limit and the
//! tokenizer. Copying such a directory into `<repo>/<model>/<version>/` is all a user does.
//!
//! - `config.json`: `model_type` picks the encoder family; `max_position_embeddings` bounds length.
//! - `modules.json` (sentence-transformers): the pipeline; a `Pooling` module's folder holds
//!   `config.json` with `pooling_mode_*`; a `Normalize` module means unit-length vectors. Modules
//!   we cannot run (e.g. `Dense`) are refused rather than silently skipped.
//! - `sentence_bert_config.json` `max_seq_length`, else `tokenizer_config.json`
//!   `model_max_length`, else the position table size, is the token limit.
//! - Without `modules.json` the directory is a bare encoder: mean pooling, no normalisation (what
//!   sentence-transformers does with such a model).

use std::path::Path;
use std::sync::Arc;

use aiserve_core::config::MAX_CONFIG_BYTES;
use aiserve_core::text::{EmbedderInfo, Pooling};
use aiserve_core::LoadError;
use serde_json::Value;

use super::tokenizer::HfTokenizer;

/// True when `dir` looks like a Hugging Face model directory (it has a `config.json`).
pub fn is_hf_dir(dir: &Path) -> bool {
    dir.join("config.json").is_file()
}

/// Reads a JSON file of the directory with the config size cap; `Ok(None)` if it is absent.
pub fn read_json(dir: &Path, name: &str) -> Result<Option<Value>, LoadError> {
    let path = dir.join(name);
    let meta = match std::fs::metadata(&path) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(LoadError::Config(format!("{name}: {e}"))),
    };
    if meta.len() > MAX_CONFIG_BYTES {
        return Err(LoadError::Config(format!("{name} must be at most {MAX_CONFIG_BYTES} bytes, got {}", meta.len())));
    }
    let text = std::fs::read_to_string(&path).map_err(|e| LoadError::Config(format!("{name}: {e}")))?;
    serde_json::from_str(&text).map(Some).map_err(|e| LoadError::Config(format!("{name}: {e}")))
}

pub fn model_type(config: &Value) -> Result<&str, LoadError> {
    config
        .get("model_type")
        .and_then(Value::as_str)
        .ok_or_else(|| LoadError::Config("config.json has no `model_type` string".into()))
}

/// What serving needs to know about the embedding model in `dir`, and its tokenizer.
pub struct EmbedderDir {
    pub info: EmbedderInfo,
    pub tokenizer: Arc<HfTokenizer>,
}

pub fn describe(dir: &Path) -> Result<EmbedderDir, LoadError> {
    let enc = describe_encoder(dir)?;
    let (pooling, normalize) = pipeline(dir, enc.hidden)?;
    let info = EmbedderInfo {
        architecture: enc.architecture,
        dim: enc.hidden,
        max_tokens: enc.max_tokens,
        vocab_size: enc.vocab_size,
        pooling,
        normalize,
    };
    Ok(EmbedderDir { info, tokenizer: enc.tokenizer })
}

/// What every encoder directory says, whatever its head: the family, sizes, the token limit and
/// the tokenizer.
pub struct EncoderDir {
    pub config: Value,
    pub architecture: String,
    pub hidden: usize,
    pub max_tokens: usize,
    pub vocab_size: usize,
    pub tokenizer: Arc<HfTokenizer>,
}

pub fn describe_encoder(dir: &Path) -> Result<EncoderDir, LoadError> {
    let config = read_json(dir, "config.json")?.ok_or_else(|| LoadError::Config("config.json is missing".into()))?;
    let architecture = model_type(&config)?.to_owned();
    if !super::FAMILIES.contains(&architecture.as_str()) {
        return Err(super::unsupported_family(&architecture));
    }
    let field = |name: &str| {
        config
            .get(name)
            .and_then(Value::as_u64)
            .map(|v| v as usize)
            .ok_or_else(|| LoadError::Config(format!("config.json has no `{name}`")))
    };
    let [hidden, positions, vocab] = super::dims(&architecture);
    let (hidden, table, vocab_size) = (field(hidden)?, field(positions)?, field(vocab)?);
    let positions = table.saturating_sub(super::position_offset(&architecture, &config)?);

    let max_tokens = max_tokens(dir)?.unwrap_or(positions).min(positions);
    if max_tokens == 0 {
        return Err(LoadError::Config("the model's maximum sequence length is 0".into()));
    }
    let tok_path = dir.join("tokenizer.json");
    if !tok_path.is_file() {
        return Err(LoadError::Config(
            "tokenizer.json is missing (save the model with a fast tokenizer: `tokenizer.save_pretrained`)".into(),
        ));
    }
    let tokenizer = Arc::new(HfTokenizer::from_file(&tok_path, max_tokens)?);
    if tokenizer.vocab_size() > vocab_size {
        return Err(LoadError::Config(format!(
            "tokenizer.json has {} tokens but the model's vocab_size is {vocab_size}",
            tokenizer.vocab_size()
        )));
    }
    Ok(EncoderDir { config, architecture, hidden, max_tokens, vocab_size, tokenizer })
}

/// Pooling mode and normalisation from the sentence-transformers module list.
fn pipeline(dir: &Path, hidden: usize) -> Result<(Pooling, bool), LoadError> {
    let Some(modules) = read_json(dir, "modules.json")? else { return Ok((Pooling::Mean, false)) };
    let list = modules.as_array().ok_or_else(|| LoadError::Config("modules.json must be a list".into()))?;
    let (mut pooling, mut normalize) = (None, false);
    for (i, m) in list.iter().enumerate() {
        let kind = m.get("type").and_then(Value::as_str).unwrap_or_default();
        let short = kind.rsplit('.').next().unwrap_or(kind);
        match short {
            "Transformer" => {}
            "Pooling" => {
                let path = m.get("path").and_then(Value::as_str).unwrap_or("1_Pooling");
                if path.contains("..") || path.starts_with('/') {
                    return Err(LoadError::Config(format!("modules.json[{i}].path {path:?} leaves the directory")));
                }
                pooling = Some(pooling_mode(dir, path, hidden)?);
            }
            "Normalize" => normalize = true,
            other => {
                return Err(LoadError::Unsupported(format!(
                    "sentence-transformers module `{other}` (modules.json[{i}]); supported: Transformer, Pooling, Normalize"
                )))
            }
        }
    }
    Ok((pooling.unwrap_or(Pooling::Mean), normalize))
}

fn pooling_mode(dir: &Path, path: &str, hidden: usize) -> Result<Pooling, LoadError> {
    let name = format!("{path}/config.json");
    let Some(cfg) = read_json(dir, &name)? else { return Ok(Pooling::Mean) };
    if let Some(dim) = cfg.get("word_embedding_dimension").and_then(Value::as_u64) {
        if dim as usize != hidden {
            return Err(LoadError::Config(format!(
                "{name}: word_embedding_dimension {dim} differs from the encoder's hidden_size {hidden}"
            )));
        }
    }
    let on = |k: &str| cfg.get(k).and_then(Value::as_bool).unwrap_or(false);
    let modes: Vec<Pooling> = [
        ("pooling_mode_cls_token", Pooling::Cls),
        ("pooling_mode_mean_tokens", Pooling::Mean),
        ("pooling_mode_max_tokens", Pooling::Max),
        ("pooling_mode_mean_sqrt_len_tokens", Pooling::MeanSqrtLen),
    ]
    .into_iter()
    .filter(|(k, _)| on(k))
    .map(|(_, p)| p)
    .collect();
    if let Some(mode) = cfg.get("pooling_mode").and_then(Value::as_str) {
        return match mode {
            "mean" => Ok(Pooling::Mean),
            "cls" => Ok(Pooling::Cls),
            "max" => Ok(Pooling::Max),
            "mean_sqrt_len_tokens" => Ok(Pooling::MeanSqrtLen),
            other => Err(LoadError::Unsupported(format!("{name}: pooling_mode `{other}`"))),
        };
    }
    match modes.as_slice() {
        [] => Ok(Pooling::Mean),
        [one] => Ok(*one),
        _ => Err(LoadError::Unsupported(format!("{name}: several pooling modes at once (concatenated vectors)"))),
    }
}

/// The token limit sentence-transformers or the tokenizer config declares, if any.
fn max_tokens(dir: &Path) -> Result<Option<usize>, LoadError> {
    if let Some(st) = read_json(dir, "sentence_bert_config.json")? {
        if let Some(n) = st.get("max_seq_length").and_then(Value::as_u64) {
            return Ok(Some(n as usize));
        }
    }
    if let Some(tc) = read_json(dir, "tokenizer_config.json")? {
        // Tokenizers without a limit store a huge sentinel (1e30); ignore anything absurd.
        if let Some(n) = tc.get("model_max_length").and_then(Value::as_u64).filter(|&n| n <= 1 << 20) {
            return Ok(Some(n as usize));
        }
    }
    Ok(None)
}
