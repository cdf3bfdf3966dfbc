//! Text generation models from Hugging Face directories (`config.json`, `tokenizer.json`,
//! safetensors): llama-family decoders (`llama`, `mistral`, `qwen2`, `qwen3`) and Gemma 3
//! (`gemma3_text`) run by [`Llama`], and T5
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
use super::llama::{Gate, Layer, Llama, LlamaConfig, Sliding, Variant};
use super::rope::{Llama3, RopePairs};
use super::tokenizer::GenTokenizer;
use crate::quant::Matrix;
use crate::text::hf_dir::{model_type, read_json};
use crate::text::weights::Weights;

/// `model_type`s of decoder-only generators.
pub const DECODERS: [&str; 5] = ["llama", "mistral", "qwen2", "qwen3", "gemma3_text"];
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
    let layers = need(config, "num_hidden_layers")?;
    let gemma = model_type(config).ok() == Some("gemma3_text");
    if let Some(window) = uint(config, "sliding_window").filter(|_| !gemma) {
        // Sliding-window attention equals full attention up to the window.
        max_context = max_context.min(window);
    }
    let cfg = LlamaConfig {
        hidden,
        intermediate: need(config, "intermediate_size")?,
        layers,
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
        variant: if gemma { gemma3(config, hidden, layers)? } else { Variant::default() },
    };
    cfg.validate().map_err(LoadError::Config)?;
    Ok(cfg)
}

/// Gemma 3's departures from Llama as its `config.json` states them (transformers'
/// `Gemma3TextConfig` defaults where it is silent): sliding layers from `layer_types` (or
/// every `sliding_window_pattern`th layer global) with their own `rope_local_base_freq`,
/// queries scaled by `query_pre_attn_scalar`, soft-capping where set.
fn gemma3(config: &Value, hidden: usize, layers: usize) -> Result<Variant, LoadError> {
    let float = |key: &str| config.get(key).and_then(Value::as_f64).map(|v| v as f32);
    let flags = match config.get("layer_types").and_then(Value::as_array) {
        Some(types) => types
            .iter()
            .map(|t| match t.as_str() {
                Some("sliding_attention") => Ok(true),
                Some("full_attention") => Ok(false),
                _ => Err(LoadError::Config(format!("`layer_types` holds {t}, not a kind of attention"))),
            })
            .collect::<Result<Vec<bool>, _>>()?,
        None => {
            let n = uint(config, "sliding_window_pattern").unwrap_or(6).max(1);
            (0..layers).map(|l| (l + 1) % n != 0).collect()
        }
    };
    let sliding = uint(config, "sliding_window").filter(|w| *w > 0).map(|window| Sliding {
        window,
        layers: flags,
        rope_theta: float("rope_local_base_freq").unwrap_or(10_000.0),
    });
    if let Some(act) = config.get("hidden_activation").and_then(Value::as_str).filter(|a| *a != "gelu_pytorch_tanh") {
        return Err(LoadError::Unsupported(format!(
            "Gemma `hidden_activation` `{act}` (supported: gelu_pytorch_tanh)"
        )));
    }
    Ok(Variant {
        gate: Gate::GeluTanh,
        embed_scale: Some((hidden as f32).sqrt()),
        attn_scale: Some(1.0 / float("query_pre_attn_scalar").unwrap_or(256.0).sqrt()),
        attn_softcap: float("attn_logit_softcapping").filter(|c| *c > 0.0),
        final_softcap: float("final_logit_softcapping").filter(|c| *c > 0.0),
        sliding,
    })
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
    // Gemma's RMS norms multiply by `1 + weight`.
    let gemma = cfg.variant.gate == Gate::GeluTanh;
    let norm = |name: &str, len: usize| -> Result<Vec<f32>, LoadError> {
        let mut v = w.get(name, &[len])?;
        if gemma {
            v.iter_mut().for_each(|x| *x += 1.0);
        }
        Ok(v)
    };
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
                norm(&format!("{p}.self_attn.q_norm.weight"), hd)?,
                norm(&format!("{p}.self_attn.k_norm.weight"), hd)?,
            ))
        } else {
            None
        };
        // Gemma normalises after attention and around the feed-forward; in Llama's names
        // `post_attention_layernorm` is the feed-forward's input norm.
        let (ffn_norm, post_norms) = if gemma {
            (
                norm(&format!("{p}.pre_feedforward_layernorm.weight"), h)?,
                Some((
                    norm(&format!("{p}.post_attention_layernorm.weight"), h)?,
                    norm(&format!("{p}.post_feedforward_layernorm.weight"), h)?,
                )),
            )
        } else {
            (norm(&format!("{p}.post_attention_layernorm.weight"), h)?, None)
        };
        layers.push(Layer {
            attn_norm: norm(&format!("{p}.input_layernorm.weight"), h)?,
            qk_norm,
            qkv: stack(vec![
                matrix(&format!("{p}.self_attn.q_proj.weight"), q, h)?,
                matrix(&format!("{p}.self_attn.k_proj.weight"), kv, h)?,
                matrix(&format!("{p}.self_attn.v_proj.weight"), kv, h)?,
            ])?,
            qkv_bias,
            wo: matrix(&format!("{p}.self_attn.o_proj.weight"), h, q)?,
            ffn_norm,
            gate_up: stack(vec![
                matrix(&format!("{p}.mlp.gate_proj.weight"), i, h)?,
                matrix(&format!("{p}.mlp.up_proj.weight"), i, h)?,
            ])?,
            down: matrix(&format!("{p}.mlp.down_proj.weight"), h, i)?,
            post_norms,
        });
    }
    let embed = matrix("model.embed_tokens.weight", cfg.vocab, h)?;
    let tied = config.get("tie_word_embeddings").and_then(Value::as_bool).unwrap_or(false) || !w.has("lm_head.weight");
    let output = if tied { None } else { Some(matrix("lm_head.weight", cfg.vocab, h)?) };
    let final_norm = norm("model.norm.weight", h)?;
    Llama::new(cfg, embed, layers, final_norm, output).map_err(LoadError::Weights)
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

/// A tiny Gemma 3 written both ways, as transformers saves it (`1 + weight` norms, Hugging Face
/// names) and as llama.cpp's converter writes it (norms shifted by one, GGUF names): the two
/// loaders build the same model, sliding window (4 positions, passed by a 9-token prompt),
/// local rotary base and all.
#[cfg(test)]
mod gemma3_tests {
    use std::collections::HashMap;

    use aiserve_core::generate::{GenItem, TextGenerator};
    use candle_core::quantized::gguf_file::{self, Value as Meta};
    use candle_core::quantized::{GgmlDType, QTensor};
    use candle_core::{Device, Tensor};
    use serde_json::json;

    use super::*;

    const H: usize = 32;
    const HD: usize = 16;
    const I: usize = 48;
    const V: usize = 20;
    const L: usize = 3;

    fn values(n: usize, seed: usize) -> Vec<f32> {
        let mut state = seed as u64 * 7919 + 1;
        (0..n)
            .map(|_| {
                state = state.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                ((state >> 40) as f32 / (1u64 << 24) as f32 - 0.5) * 0.5
            })
            .collect()
    }

    /// Hugging Face name → (GGUF name, shape, whether a norm).
    fn tensors() -> Vec<(String, String, Vec<usize>, bool)> {
        let mut t = vec![
            ("model.embed_tokens.weight".to_string(), "token_embd.weight".to_string(), vec![V, H], false),
            ("model.norm.weight".into(), "output_norm.weight".into(), vec![H], true),
        ];
        for l in 0..L {
            let (p, g) = (format!("model.layers.{l}"), format!("blk.{l}"));
            for (hf, gg, shape, norm) in [
                ("self_attn.q_proj.weight", "attn_q.weight", vec![2 * HD, H], false),
                ("self_attn.k_proj.weight", "attn_k.weight", vec![HD, H], false),
                ("self_attn.v_proj.weight", "attn_v.weight", vec![HD, H], false),
                ("self_attn.o_proj.weight", "attn_output.weight", vec![H, 2 * HD], false),
                ("self_attn.q_norm.weight", "attn_q_norm.weight", vec![HD], true),
                ("self_attn.k_norm.weight", "attn_k_norm.weight", vec![HD], true),
                ("mlp.gate_proj.weight", "ffn_gate.weight", vec![I, H], false),
                ("mlp.up_proj.weight", "ffn_up.weight", vec![I, H], false),
                ("mlp.down_proj.weight", "ffn_down.weight", vec![H, I], false),
                ("input_layernorm.weight", "attn_norm.weight", vec![H], true),
                ("post_attention_layernorm.weight", "post_attention_norm.weight", vec![H], true),
                ("pre_feedforward_layernorm.weight", "ffn_norm.weight", vec![H], true),
                ("post_feedforward_layernorm.weight", "post_ffw_norm.weight", vec![H], true),
            ] {
                t.push((format!("{p}.{hf}"), format!("{g}.{gg}"), shape, norm));
            }
        }
        t
    }

    fn logits(model: &mut dyn TextGenerator, ids: &[u32]) -> Vec<Vec<f32>> {
        let mut seq = model.new_sequence();
        let mut item = [GenItem::new(&mut seq, ids, ids.len())];
        model.forward_rows(&mut item, &[ids.len()]).unwrap()
    }

    #[test]
    fn gemma3_text_loads_as_its_gguf_conversion_does() {
        let dir = tempfile::tempdir().unwrap();
        let config = json!({
            "model_type": "gemma3_text", "hidden_size": H, "intermediate_size": I, "num_hidden_layers": L,
            "num_attention_heads": 2, "num_key_value_heads": 1, "head_dim": HD, "vocab_size": V,
            "rms_norm_eps": 1e-6, "rope_theta": 1000000.0, "rope_local_base_freq": 10000.0,
            "sliding_window": 4, "layer_types": ["sliding_attention", "sliding_attention", "full_attention"],
            "query_pre_attn_scalar": HD, "hidden_activation": "gelu_pytorch_tanh",
            "max_position_embeddings": 64, "tie_word_embeddings": true,
            "final_logit_softcapping": null, "attn_logit_softcapping": null,
        });
        let mut hf: HashMap<String, Tensor> = HashMap::new();
        let mut gguf: Vec<(String, QTensor)> = Vec::new();
        for (seed, (name, gname, shape, norm)) in tensors().into_iter().enumerate() {
            let v = values(shape.iter().product(), seed);
            // GGUF stores `1 + weight` for every norm (llama.cpp's `norm_shift`).
            let g: Vec<f32> = if norm { v.iter().map(|x| x + 1.0).collect() } else { v.clone() };
            hf.insert(name, Tensor::from_vec(v, shape.clone(), &Device::Cpu).unwrap());
            let t = Tensor::from_vec(g, shape, &Device::Cpu).unwrap();
            gguf.push((gname, QTensor::quantize(&t, GgmlDType::F32).unwrap()));
        }
        candle_core::safetensors::save(&hf, dir.path().join("model.safetensors")).unwrap();
        let mut from_hf = load_llama(dir.path(), &config, KvDtype::F32).unwrap();
        let cfg = llama_config(&config).unwrap();
        assert_eq!(
            cfg.variant.sliding.as_ref().map(|s| (s.window, s.layers.clone())),
            Some((4, vec![true, true, false]))
        );
        let meta: Vec<(&str, Meta)> = vec![
            ("general.architecture", Meta::String("gemma3".into())),
            ("gemma3.embedding_length", Meta::U32(H as u32)),
            ("gemma3.feed_forward_length", Meta::U32(I as u32)),
            ("gemma3.block_count", Meta::U32(L as u32)),
            ("gemma3.attention.head_count", Meta::U32(2)),
            ("gemma3.attention.head_count_kv", Meta::U32(1)),
            ("gemma3.attention.key_length", Meta::U32(HD as u32)),
            ("gemma3.attention.value_length", Meta::U32(HD as u32)),
            ("gemma3.attention.layer_norm_rms_epsilon", Meta::F32(1e-6)),
            ("gemma3.rope.freq_base", Meta::F32(1e6)),
            ("gemma3.context_length", Meta::U32(64)),
            ("gemma3.attention.sliding_window", Meta::U32(4)),
            (
                "gemma3.attention.sliding_window_pattern",
                Meta::Array(vec![Meta::Bool(true), Meta::Bool(true), Meta::Bool(false)]),
            ),
        ];
        let file = tempfile::NamedTempFile::new().unwrap();
        let meta_refs: Vec<(&str, &Meta)> = meta.iter().map(|(k, v)| (*k, v)).collect();
        let tensor_refs: Vec<(&str, &QTensor)> = gguf.iter().map(|(k, t)| (k.as_str(), t)).collect();
        gguf_file::write(&mut file.reopen().unwrap(), &meta_refs, &tensor_refs).unwrap();
        let mut from_gguf = super::super::gguf::load(file.path(), Default::default()).unwrap();
        let ids = [2u32, 7, 11, 3, 19, 5, 5, 8, 1];
        let (a, b) = (logits(&mut from_hf, &ids), logits(&mut from_gguf, &ids));
        assert_eq!(a.len(), ids.len());
        for (pos, (x, y)) in a.iter().zip(&b).enumerate() {
            let d = x.iter().zip(y).map(|(x, y)| (x - y).abs()).fold(0.0f32, f32::max);
            assert!(d < 1e-4, "position {pos}: logits differ by {d}");
        }
        // The window matters: past 4 positions, a model attending to everything answers otherwise.
        let mut wide = config.clone();
        wide["sliding_window"] = json!(64);
        let mut unwindowed = load_llama(dir.path(), &wide, KvDtype::F32).unwrap();
        let c = logits(&mut unwindowed, &ids);
        assert_eq!(c[..4], a[..4]);
        assert!(c[8].iter().zip(&a[8]).any(|(x, y)| (x - y).abs() > 1e-3));
    }
}
