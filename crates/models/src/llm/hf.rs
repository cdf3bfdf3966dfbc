//! Text generation models from Hugging Face directories (`config.json`, `tokenizer.json`,
//! safetensors): llama-family decoders (`llama`, `mistral`, `qwen2`) run by [`Llama`], and T5
//! encoder-decoders run by [`super::t5`]. The chat template comes from `chat_template.jinja` or
//! `tokenizer_config.json`, stop tokens from `generation_config.json` and `config.json`.

use std::path::Path;
use std::sync::Arc;

use aiserve_core::chat::ChatTemplate;
use aiserve_core::generate::{GeneratorInfo, GeneratorSpec};
use aiserve_core::LoadError;
use serde_json::Value;
use tokenizers::Tokenizer;

use super::kv::KvDtype;
use super::llama::{Layer, Llama, LlamaConfig};
use super::rope::{Llama3, RopePairs};
use super::tokenizer::GenTokenizer;
use crate::quant::Matrix;
use crate::text::hf_dir::{model_type, read_json};
use crate::text::weights::Weights;

/// `model_type`s of decoder-only generators.
pub const DECODERS: [&str; 4] = ["llama", "mistral", "qwen2", "qwen3"];
/// `model_type`s of encoder-decoder generators.
pub const SEQ2SEQ: [&str; 1] = ["t5"];

/// True when the `config.json` describes a text generation model this build runs.
pub fn is_generator(config: &Value) -> bool {
    model_type(config).is_ok_and(|t| DECODERS.contains(&t) || SEQ2SEQ.contains(&t))
}

fn uint(config: &Value, key: &str) -> Option<usize> {
    config.get(key).and_then(Value::as_u64).map(|v| v as usize)
}

fn need(config: &Value, key: &str) -> Result<usize, LoadError> {
    uint(config, key).ok_or_else(|| LoadError::Config(format!("config.json has no `{key}`")))
}

/// Ids from a field holding one id or a list of them.
fn ids(v: Option<&Value>) -> Vec<u32> {
    match v {
        Some(Value::Number(n)) => n.as_u64().map(|x| vec![x as u32]).unwrap_or_default(),
        Some(Value::Array(items)) => items.iter().filter_map(|x| x.as_u64().map(|x| x as u32)).collect(),
        _ => Vec::new(),
    }
}

/// A special token's text from `tokenizer_config.json` (a string or `{"content": ...}`).
fn token_text(v: Option<&Value>) -> String {
    match v {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Object(o)) => o.get("content").and_then(Value::as_str).unwrap_or_default().to_owned(),
        _ => String::new(),
    }
}

/// The shapes of a llama-family decoder from its `config.json`.
pub fn llama_config(config: &Value) -> Result<LlamaConfig, LoadError> {
    let hidden = need(config, "hidden_size")?;
    let heads = need(config, "num_attention_heads")?;
    let head_dim = uint(config, "head_dim").unwrap_or(hidden / heads.max(1));
    let rope_theta = config.get("rope_theta").and_then(Value::as_f64).unwrap_or(10_000.0) as f32;
    let mut max_context = uint(config, "max_position_embeddings").unwrap_or(2048);
    if let Some(window) = uint(config, "sliding_window") {
        // Sliding-window attention equals full attention up to the window.
        max_context = max_context.min(window);
    }
    let cfg = LlamaConfig {
        hidden,
        intermediate: need(config, "intermediate_size")?,
        layers: need(config, "num_hidden_layers")?,
        heads,
        kv_heads: uint(config, "num_key_value_heads").unwrap_or(heads),
        head_dim,
        vocab: need(config, "vocab_size")?,
        rms_eps: config.get("rms_norm_eps").and_then(Value::as_f64).unwrap_or(1e-6) as f32,
        rope_theta,
        max_context,
        rope_pairs: RopePairs::Halves,
        rope_divisors: rope_divisors(config, head_dim, rope_theta)?,
        kv: KvDtype::default(),
        variant: Default::default(),
    };
    cfg.validate().map_err(LoadError::Config)?;
    Ok(cfg)
}

/// What each rotary frequency is divided by, from `rope_scaling` in config.json (as
/// transformers reads it): `linear` divides them all by `factor`, `llama3` as [`Llama3`].
fn rope_divisors(config: &Value, head_dim: usize, theta: f32) -> Result<Option<Vec<f64>>, LoadError> {
    let Some(scaling) = config.get("rope_scaling").filter(|v| !v.is_null()) else { return Ok(None) };
    let kind = scaling.get("rope_type").or_else(|| scaling.get("type")).and_then(Value::as_str).unwrap_or("default");
    let number = |key: &str| {
        scaling.get(key).and_then(Value::as_f64).filter(|v| v.is_finite() && *v > 0.0).ok_or_else(|| {
            LoadError::Config(format!(
                "`rope_scaling` of type `{kind}` needs a positive number `{key}`, got {}",
                scaling.get(key).map_or("nothing".into(), Value::to_string)
            ))
        })
    };
    match kind {
        "default" => Ok(None),
        "linear" => Ok(Some(vec![number("factor")?; head_dim / 2])),
        "llama3" => {
            let l = Llama3 {
                factor: number("factor")?,
                low_freq_factor: number("low_freq_factor")?,
                high_freq_factor: number("high_freq_factor")?,
                original_context: number("original_max_position_embeddings")?,
            };
            if l.high_freq_factor <= l.low_freq_factor {
                return Err(LoadError::Config(format!(
                    "`rope_scaling`: `high_freq_factor` ({}) must exceed `low_freq_factor` ({})",
                    l.high_freq_factor, l.low_freq_factor
                )));
            }
            Ok(Some(l.divisors(head_dim, theta)))
        }
        other => Err(LoadError::Unsupported(format!(
            "`rope_scaling` of type `{other}` in config.json (supported: linear, llama3)"
        ))),
    }
}

/// Limits, tokenizer and chat template of the generation model in `dir` (no weights read).
pub fn describe(dir: &Path, kv: KvDtype) -> Result<GeneratorSpec, LoadError> {
    let config = read_json(dir, "config.json")?.ok_or_else(|| LoadError::Config("config.json is missing".into()))?;
    let architecture = model_type(&config)?.to_owned();
    let tok_path = dir.join("tokenizer.json");
    if !tok_path.is_file() {
        return Err(LoadError::Config("tokenizer.json is missing (save the model with a fast tokenizer)".into()));
    }
    let mut tokenizer =
        Tokenizer::from_file(&tok_path).map_err(|e| LoadError::Config(format!("tokenizer.json: {e}")))?;
    tokenizer.with_padding(None);
    tokenizer.with_truncation(None).map_err(|e| LoadError::Config(format!("tokenizer.json: {e}")))?;
    let tok_cfg = read_json(dir, "tokenizer_config.json")?.unwrap_or(Value::Null);
    let template_src = match std::fs::read_to_string(dir.join("chat_template.jinja")) {
        Ok(t) => Some(t),
        Err(_) => match tok_cfg.get("chat_template") {
            Some(Value::String(t)) => Some(t.clone()),
            Some(Value::Array(named)) => named
                .iter()
                .find(|t| t.get("name").and_then(Value::as_str) == Some("default"))
                .and_then(|t| t.get("template").and_then(Value::as_str))
                .map(str::to_owned),
            _ => None,
        },
    };
    let (bos, eos) = (token_text(tok_cfg.get("bos_token")), token_text(tok_cfg.get("eos_token")));
    let chat_template = match template_src {
        Some(src) => Some(Arc::new(
            ChatTemplate::new(&src, &bos, &eos).map_err(|e| LoadError::Config(format!("chat template: {e}")))?,
        )),
        None => None,
    };
    let mut stop_tokens = ids(read_json(dir, "generation_config.json")?.as_ref().and_then(|g| g.get("eos_token_id")));
    stop_tokens.extend(ids(config.get("eos_token_id")));
    stop_tokens.extend(tokenizer.token_to_id(&eos));
    stop_tokens.sort_unstable();
    stop_tokens.dedup();
    let vocab = need(&config, "vocab_size")?;
    stop_tokens.retain(|t| (*t as usize) < vocab);
    let info = if SEQ2SEQ.contains(&architecture.as_str()) {
        let cfg = super::t5::config(&config)?;
        GeneratorInfo {
            architecture,
            max_context: uint(&config, "n_positions").unwrap_or(512),
            vocab_size: vocab,
            kv_bytes_per_token: super::t5::kv_bytes_per_token(&cfg),
            stop_tokens,
            chunked_prefill: false,
        }
    } else if DECODERS.contains(&architecture.as_str()) {
        let cfg = llama_config(&config)?;
        GeneratorInfo {
            architecture,
            max_context: cfg.max_context,
            vocab_size: cfg.vocab,
            kv_bytes_per_token: LlamaConfig { kv, ..cfg }.kv_bytes_per_token(),
            stop_tokens,
            chunked_prefill: true,
        }
    } else {
        return Err(LoadError::Unsupported(format!("text generation model_type `{architecture}`")));
    };
    Ok(GeneratorSpec { info, tokenizer: Arc::new(GenTokenizer::new(tokenizer, None)), chat_template })
}

/// Loads the llama-family decoder in `dir`.
pub fn load_llama(dir: &Path, config: &Value, kv: KvDtype) -> Result<Llama, LoadError> {
    let cfg = LlamaConfig { kv, ..llama_config(config)? };
    let w = Weights::open(dir)?;
    let (h, q, kv, i) = (cfg.hidden, cfg.q_dim(), cfg.kv_dim(), cfg.intermediate);
    let matrix = |name: &str, rows: usize, cols: usize| -> Result<Matrix, LoadError> {
        Matrix::f32(rows, cols, w.get(name, &[rows, cols])?).map_err(|e| LoadError::Weights(format!("`{name}`: {e}")))
    };
    let stack = |parts: Vec<Matrix>| Matrix::stack(parts).map_err(LoadError::Weights);
    let mut layers = Vec::with_capacity(cfg.layers);
    for l in 0..cfg.layers {
        let p = format!("model.layers.{l}");
        let qkv_bias = if w.has(&format!("{p}.self_attn.q_proj.bias")) {
            let mut b = w.get(&format!("{p}.self_attn.q_proj.bias"), &[q])?;
            b.extend(w.get(&format!("{p}.self_attn.k_proj.bias"), &[kv])?);
            b.extend(w.get(&format!("{p}.self_attn.v_proj.bias"), &[kv])?);
            Some(b)
        } else {
            None
        };
        let qk_norm = if w.has(&format!("{p}.self_attn.q_norm.weight")) {
            let hd = cfg.head_dim;
            Some((
                w.get(&format!("{p}.self_attn.q_norm.weight"), &[hd])?,
                w.get(&format!("{p}.self_attn.k_norm.weight"), &[hd])?,
            ))
        } else {
            None
        };
        layers.push(Layer {
            attn_norm: w.get(&format!("{p}.input_layernorm.weight"), &[h])?,
            qk_norm,
            qkv: stack(vec![
                matrix(&format!("{p}.self_attn.q_proj.weight"), q, h)?,
                matrix(&format!("{p}.self_attn.k_proj.weight"), kv, h)?,
                matrix(&format!("{p}.self_attn.v_proj.weight"), kv, h)?,
            ])?,
            qkv_bias,
            wo: matrix(&format!("{p}.self_attn.o_proj.weight"), h, q)?,
            ffn_norm: w.get(&format!("{p}.post_attention_layernorm.weight"), &[h])?,
            gate_up: stack(vec![
                matrix(&format!("{p}.mlp.gate_proj.weight"), i, h)?,
                matrix(&format!("{p}.mlp.up_proj.weight"), i, h)?,
            ])?,
            down: matrix(&format!("{p}.mlp.down_proj.weight"), h, i)?,
            post_norms: None,
        });
    }
    let embed = matrix("model.embed_tokens.weight", cfg.vocab, h)?;
    let tied = config.get("tie_word_embeddings").and_then(Value::as_bool).unwrap_or(false) || !w.has("lm_head.weight");
    let output = if tied { None } else { Some(matrix("lm_head.weight", cfg.vocab, h)?) };
    let norm = w.get("model.norm.weight", &[h])?;
    Llama::new(cfg, embed, layers, norm, output).map_err(LoadError::Weights)
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    /// A one-head config with 128-value heads (Llama 3.1's size) and `rope_scaling`.
    fn config(scaling: Value) -> Value {
        json!({
            "hidden_size": 128, "num_attention_heads": 1, "intermediate_size": 256, "num_hidden_layers": 1,
            "vocab_size": 10, "rope_theta": 500000.0, "rope_scaling": scaling,
        })
    }

    #[test]
    fn rope_scaling_is_read_from_config_json() {
        let llama3 = json!({
            "rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
            "original_max_position_embeddings": 8192,
        });
        let want = Llama3 { factor: 8.0, low_freq_factor: 1.0, high_freq_factor: 4.0, original_context: 8192.0 };
        assert_eq!(llama_config(&config(llama3)).unwrap().rope_divisors, Some(want.divisors(128, 500000.0)));
        // Older configs name the kind `type`.
        let linear = llama_config(&config(json!({"type": "linear", "factor": 4.0}))).unwrap();
        assert_eq!(linear.rope_divisors, Some(vec![4.0; 64]));
        assert_eq!(llama_config(&config(Value::Null)).unwrap().rope_divisors, None);
        assert_eq!(llama_config(&config(json!({"rope_type": "default"}))).unwrap().rope_divisors, None);
    }

    #[test]
    fn unsupported_or_malformed_rope_scaling_is_refused_by_name() {
        let llama3_without = |missing: &str| {
            let mut s = json!({
                "rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                "original_max_position_embeddings": 8192,
            });
            s.as_object_mut().unwrap().remove(missing);
            s
        };
        let inverted = json!({
            "rope_type": "llama3", "factor": 8.0, "low_freq_factor": 4.0, "high_freq_factor": 1.0,
            "original_max_position_embeddings": 8192,
        });
        for (scaling, says) in [
            (json!({"rope_type": "dynamic", "factor": 2.0}), "`dynamic`"),
            (json!({"rope_type": "yarn", "factor": 4.0}), "`yarn`"),
            (llama3_without("low_freq_factor"), "positive number `low_freq_factor`, got nothing"),
            (json!({"rope_type": "linear", "factor": -2}), "positive number `factor`, got -2"),
            (inverted, "`high_freq_factor` (1) must exceed `low_freq_factor` (4)"),
        ] {
            let err = llama_config(&config(scaling)).unwrap_err().to_string();
            assert!(err.contains(says), "{err}");
        }
    }
}
