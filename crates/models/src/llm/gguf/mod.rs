//! A llama-family or Gemma model from one GGUF file: shapes from its metadata, weights kept in
//! their quantized blocks where a kernel exists (Q4_0, Q4_1, Q8_0, K-quants; Q5 regrouped) and
//! dequantized to f32 by candle otherwise, tokenizer and chat template from the same file.

use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use aiserve_core::chat::ChatTemplate;
use aiserve_core::generate::{GeneratorInfo, GeneratorSpec};
use aiserve_core::LoadError;
use candle_core::quantized::gguf_file::{Content, TensorInfo, Value};
use candle_core::quantized::GgmlDType;
use candle_core::Device;

use super::kv::KvDtype;
use super::llama::{Gate, Layer, Llama, LlamaConfig, Sliding, Variant};
use super::rope::RopePairs;
use super::tokenizer::GenTokenizer;
use super::Options;
use crate::quant::argmax::ArgmaxHead;
use crate::quant::{q4_k, q5, q6_k, Bits, Format, Matrix, Regroup};
use crate::text::gguf_tokenizer;

/// Texts llama.cpp also treats as end of generation when the vocabulary marks them as control.
const END_TEXTS: [&str; 7] =
    ["<|endoftext|>", "<|im_end|>", "<|eot_id|>", "<|end|>", "</s>", "<end_of_turn>", "<|eom_id|>"];

/// The single `.gguf` file of a version directory, if it holds one.
pub fn find(dir: &Path) -> Result<Option<PathBuf>, LoadError> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        if path.extension().is_some_and(|e| e.eq_ignore_ascii_case("gguf")) && path.is_file() {
            found.push(path);
        }
    }
    match found.len() {
        0 => Ok(None),
        1 => Ok(found.pop()),
        n => Err(LoadError::Config(format!("a version directory must hold one .gguf file, found {n}"))),
    }
}

fn read_header(path: &Path) -> Result<(std::fs::File, Content), LoadError> {
    let mut file = std::fs::File::open(path)?;
    let content = Content::read(&mut file).map_err(|e| LoadError::Weights(format!("GGUF header: {e}")))?;
    Ok((file, content))
}

fn meta_u32(content: &Content, key: &str) -> Result<Option<usize>, LoadError> {
    match content.metadata.get(key) {
        None => Ok(None),
        Some(v) => v
            .to_u32()
            .or_else(|_| v.to_u64().map(|x| x as u32))
            .map(|x| Some(x as usize))
            .map_err(|e| LoadError::Config(format!("GGUF `{key}`: {e}"))),
    }
}

fn meta_f32(content: &Content, key: &str) -> Result<Option<f32>, LoadError> {
    match content.metadata.get(key) {
        None => Ok(None),
        Some(v) => v.to_f32().map(Some).map_err(|e| LoadError::Config(format!("GGUF `{key}`: {e}"))),
    }
}

fn required(content: &Content, key: &str) -> Result<usize, LoadError> {
    meta_u32(content, key)?.ok_or_else(|| LoadError::Config(format!("GGUF metadata has no `{key}`")))
}

/// The model's shapes from GGUF metadata (and the embedding table for the vocabulary size).
pub fn config(content: &Content) -> Result<LlamaConfig, LoadError> {
    let arch =
        content.metadata.get("general.architecture").and_then(|v| v.to_string().ok()).cloned().unwrap_or_default();
    let rope_pairs = match arch.as_str() {
        "llama" | "mistral" => RopePairs::Adjacent,
        "qwen2" | "qwen3" | "gemma" | "gemma2" | "gemma3" => RopePairs::Halves,
        other => {
            return Err(LoadError::Unsupported(format!(
                "GGUF architecture `{other}` (supported: llama, mistral, qwen2, qwen3, gemma, gemma2, gemma3)"
            )))
        }
    };
    let heads = required(content, &format!("{arch}.attention.head_count"))?;
    let hidden = required(content, &format!("{arch}.embedding_length"))?;
    let layers = required(content, &format!("{arch}.block_count"))?;
    let vocab = content
        .tensor_infos
        .get("token_embd.weight")
        .map(|t| t.shape.dims()[0])
        .ok_or_else(|| LoadError::Weights("GGUF has no `token_embd.weight`".into()))?;
    let head_dim = match meta_u32(content, &format!("{arch}.attention.key_length"))? {
        Some(k) => k,
        None => meta_u32(content, &format!("{arch}.rope.dimension_count"))?.unwrap_or(hidden / heads.max(1)),
    };
    if let Some(v) = meta_u32(content, &format!("{arch}.attention.value_length"))?.filter(|v| *v != head_dim) {
        return Err(LoadError::Unsupported(format!("GGUF value heads of {v} values with key heads of {head_dim}")));
    }
    let rope_theta = meta_f32(content, &format!("{arch}.rope.freq_base"))?.unwrap_or(10_000.0);
    let scaling_type = format!("{arch}.rope.scaling.type");
    let rope_divisors = match content.metadata.get(&scaling_type).and_then(|v| v.to_string().ok()).map(String::as_str) {
        None | Some("none") => None,
        Some("linear") => {
            let key = format!("{arch}.rope.scaling.factor");
            let factor = meta_f32(content, &key)?.filter(|f| f.is_finite() && *f > 0.0).ok_or_else(|| {
                LoadError::Config(format!("GGUF `{scaling_type}` is linear but `{key}` is missing or not positive"))
            })?;
            Some(vec![factor as f64; head_dim / 2])
        }
        Some(other) => {
            return Err(LoadError::Unsupported(format!(
                "GGUF `{scaling_type}` `{other}` (supported: none, linear, and Llama 3's `rope_freqs.weight`)"
            )))
        }
    };
    let cfg = LlamaConfig {
        hidden,
        intermediate: required(content, &format!("{arch}.feed_forward_length"))?,
        layers,
        heads,
        kv_heads: meta_u32(content, &format!("{arch}.attention.head_count_kv"))?.unwrap_or(heads),
        head_dim,
        vocab,
        rms_eps: meta_f32(content, &format!("{arch}.attention.layer_norm_rms_epsilon"))?.unwrap_or(1e-5),
        rope_theta,
        max_context: meta_u32(content, &format!("{arch}.context_length"))?.unwrap_or(2048),
        rope_pairs,
        rope_divisors,
        kv: KvDtype::default(),
        variant: match arch.as_str() {
            "gemma" | "gemma2" | "gemma3" => gemma(content, &arch, hidden, heads, head_dim, layers, rope_theta)?,
            _ => Variant::default(),
        },
    };
    cfg.validate().map_err(LoadError::Config)?;
    Ok(cfg)
}

/// How Gemma `arch` (`gemma`, `gemma2`, `gemma3`) departs from Llama, with llama.cpp's defaults
/// where the metadata is silent: Gemma 2 slides every other layer over 4096 positions and caps
/// attention scores at 50 and logits at 30; Gemma 3 slides five layers of six over
/// `sliding_window`, with a rotary base of 10 000 there; both 27B models scale queries by
/// `hidden / heads` rather than the head size.
fn gemma(
    content: &Content,
    arch: &str,
    hidden: usize,
    heads: usize,
    head_dim: usize,
    layers: usize,
    rope_theta: f32,
) -> Result<Variant, LoadError> {
    let (gemma2, gemma3) = (arch == "gemma2", arch == "gemma3");
    let positive = |v: Option<f32>| v.filter(|v| *v > 0.0);
    let window = match meta_u32(content, &format!("{arch}.attention.sliding_window"))? {
        Some(w) => Some(w).filter(|w| *w > 0),
        None if gemma2 => Some(4096),
        None => None,
    };
    let sliding = match window {
        Some(window) if gemma2 || gemma3 => {
            let key = format!("{arch}.attention.sliding_window_pattern");
            let flags = match content.metadata.get(&key) {
                Some(Value::Array(v)) => v
                    .iter()
                    .map(|b| b.to_bool().map_err(|e| LoadError::Config(format!("GGUF `{key}`: {e}"))))
                    .collect::<Result<Vec<bool>, _>>()?,
                _ => {
                    // Every `n`th layer attends to everything (llama.cpp's `set_swa_pattern`).
                    let n = meta_u32(content, &key)?.unwrap_or(if gemma2 { 2 } else { 6 });
                    (0..layers).map(|l| n == 0 || l % n < n - 1).collect()
                }
            };
            let base = meta_f32(content, &format!("{arch}.rope.freq_base_swa"))?;
            Some(Sliding {
                window,
                layers: flags,
                rope_theta: base.unwrap_or(if gemma3 { 10_000.0 } else { rope_theta }),
            })
        }
        _ => None,
    };
    let big = (gemma2 && layers == 46) || (gemma3 && layers == 62);
    let attn_softcap = positive(meta_f32(content, &format!("{arch}.attn_logit_softcapping"))?);
    let final_softcap = positive(meta_f32(content, &format!("{arch}.final_logit_softcapping"))?);
    Ok(Variant {
        gate: Gate::GeluTanh,
        embed_scale: Some((hidden as f32).sqrt()),
        attn_scale: Some(1.0 / if big { (hidden / heads.max(1)) as f32 } else { head_dim as f32 }.sqrt()),
        attn_softcap: if gemma2 { Some(attn_softcap.unwrap_or(50.0)) } else { attn_softcap },
        final_softcap: if gemma2 { Some(final_softcap.unwrap_or(30.0)) } else { final_softcap },
        sliding,
    })
}

/// Limits, tokenizer and chat template of the GGUF file at `path` (metadata only), for KV
/// caches of `kv`.
pub fn describe(path: &Path, kv: KvDtype) -> Result<GeneratorSpec, LoadError> {
    let (_, content) = read_header(path)?;
    let cfg = LlamaConfig { kv, ..config(&content)? };
    let tok = gguf_tokenizer::from_gguf(&content)?;
    let mut stop_tokens: Vec<u32> = tok.eos.into_iter().collect();
    for key in ["tokenizer.ggml.eot_token_id", "tokenizer.ggml.eom_token_id"] {
        stop_tokens.extend(meta_u32(&content, key)?.map(|v| v as u32));
    }
    let add_bos = content.metadata.get("tokenizer.ggml.add_bos_token").and_then(|v| v.to_bool().ok()).unwrap_or(false);
    let text_of = |id: Option<u32>| id.and_then(|i| tok.tokenizer.id_to_token(i)).unwrap_or_default();
    let (bos_text, eos_text) = (text_of(tok.bos), text_of(tok.eos));
    let chat_template = match &tok.chat_template {
        Some(src) => Some(Arc::new(
            ChatTemplate::new(src, &bos_text, &eos_text)
                .map_err(|e| LoadError::Config(format!("GGUF chat template: {e}")))?,
        )),
        None => None,
    };
    let tokenizer = GenTokenizer::new(tok.tokenizer, if add_bos { tok.bos } else { None });
    for text in END_TEXTS {
        if let Some(id) = tokenizer.token_id(text) {
            if !stop_tokens.contains(&id) {
                stop_tokens.push(id);
            }
        }
    }
    stop_tokens.retain(|t| (*t as usize) < cfg.vocab);
    let info = GeneratorInfo {
        architecture: content
            .metadata
            .get("general.architecture")
            .and_then(|v| v.to_string().ok())
            .cloned()
            .unwrap_or_default(),
        max_context: cfg.max_context,
        vocab_size: cfg.vocab,
        kv_bytes_per_token: cfg.kv_bytes_per_token(),
        stop_tokens,
        chunked_prefill: true,
    };
    Ok(GeneratorSpec { info, tokenizer: Arc::new(tokenizer), chat_template })
}

/// Reads tensors of one GGUF file.
struct Tensors {
    file: std::fs::File,
    content: Content,
    /// Activation width of the products with quantized weights.
    bits: Bits,
}

impl Tensors {
    fn info(&self, name: &str) -> Result<&TensorInfo, LoadError> {
        self.content.tensor_infos.get(name).ok_or_else(|| LoadError::Weights(format!("GGUF has no tensor `{name}`")))
    }

    fn has(&self, name: &str) -> bool {
        self.content.tensor_infos.contains_key(name)
    }

    fn raw(&mut self, name: &str) -> Result<(GgmlDType, Vec<usize>, Vec<u8>), LoadError> {
        let info = self.info(name)?;
        let (dtype, dims, offset) = (info.ggml_dtype, info.shape.dims().to_vec(), info.offset);
        let elems: usize = dims.iter().product();
        if !elems.is_multiple_of(dtype.block_size()) {
            return Err(LoadError::Weights(format!("`{name}`: {elems} values is not whole {dtype:?} blocks")));
        }
        let size = elems / dtype.block_size() * dtype.type_size();
        let start = self.content.tensor_data_offset.saturating_add(offset);
        let file_len = self.file.seek(SeekFrom::End(0))?;
        if start.saturating_add(size as u64) > file_len {
            return Err(LoadError::Weights(format!("`{name}` runs past the end of the file")));
        }
        let mut bytes = vec![0u8; size];
        self.file.seek(SeekFrom::Start(start))?;
        self.file.read_exact(&mut bytes)?;
        Ok((dtype, dims, bytes))
    }

    /// A 2-D weight as a [`Matrix`]: blocks as they are when a kernel exists, else f32.
    fn matrix(&mut self, name: &str) -> Result<Matrix, LoadError> {
        let info = self.info(name)?;
        let dims = info.shape.dims().to_vec();
        let [rows, cols] = dims[..] else {
            return Err(LoadError::Weights(format!("`{name}` should be a matrix, has shape {dims:?}")));
        };
        let bad = |e: String| LoadError::Weights(format!("`{name}`: {e}"));
        match kernel(info.ggml_dtype) {
            Some((format, convert)) => {
                let (_, _, bytes) = self.raw(name)?;
                Matrix::quantized(format, self.bits, rows, cols, convert(&bytes).map_err(bad)?).map_err(bad)
            }
            None => Matrix::f32(rows, cols, self.floats(name)?).map_err(bad),
        }
    }

    /// Any tensor as f32 values (candle dequantizes formats we have no kernel for).
    fn floats(&mut self, name: &str) -> Result<Vec<f32>, LoadError> {
        let info = self.info(name)?;
        if info.ggml_dtype == GgmlDType::F32 {
            let (_, _, bytes) = self.raw(name)?;
            return Ok(bytes.chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect());
        }
        let bad = |e: candle_core::Error| LoadError::Weights(format!("`{name}`: {e}"));
        let qt = self.content.tensor(&mut self.file, name, &Device::Cpu).map_err(bad)?;
        qt.dequantize(&Device::Cpu).and_then(|t| t.flatten_all()).and_then(|t| t.to_vec1::<f32>()).map_err(bad)
    }

    fn vector(&mut self, name: &str, len: usize) -> Result<Vec<f32>, LoadError> {
        let v = self.floats(name)?;
        if v.len() != len {
            return Err(LoadError::Weights(format!("`{name}` has {} values, expected {len}", v.len())));
        }
        Ok(v)
    }
}

/// The kernel format GGUF type `dtype` loads as, and how its blocks become that format's (as
/// they are, or regrouped at load time); `None` for types loaded as f32.
fn kernel(dtype: GgmlDType) -> Option<(Format, Regroup)> {
    let as_is: Regroup = |b| Ok(b.to_vec());
    match dtype {
        GgmlDType::Q4_0 => Some((Format::Q4_0, as_is)),
        GgmlDType::Q4_1 => Some((Format::Q4_1, as_is)),
        GgmlDType::Q8_0 => Some((Format::Q8_0, as_is)),
        GgmlDType::Q5_0 if q5::native() => Some((Format::Q5_0, as_is)),
        GgmlDType::Q5_0 => Some((Format::Q8_0, q5::q5_0_to_q8_0)),
        GgmlDType::Q5_1 => Some((Format::Q5K, q5::q5_1_to_blocks)),
        GgmlDType::Q4K => Some((Format::Q4K, q4_k::to_blocks)),
        GgmlDType::Q5K => Some((Format::Q5K, q5::q5_k_to_blocks)),
        GgmlDType::Q6K => Some((Format::Q6K, q6_k::to_blocks)),
        _ => None,
    }
}

/// Bytes a tensor of `n` values of type `dtype` takes once loaded.
fn loaded_bytes(dtype: GgmlDType, n: u64) -> u64 {
    kernel(dtype).map_or(4 * n, |(f, _)| n / 32 * f.block_bytes() as u64)
}

/// Loads the model in the GGUF file at `path` with the numerics of `opts`.
pub fn load(path: &Path, opts: Options) -> Result<Llama, LoadError> {
    let (file, content) = read_header(path)?;
    let mut need: u64 =
        content.tensor_infos.values().map(|t| loaded_bytes(t.ggml_dtype, t.shape.elem_count() as u64)).sum();
    // The output projection's greedy head, where one is made (`ArgmaxHead::of`).
    let output = content.tensor_infos.get("output.weight").or_else(|| content.tensor_infos.get("token_embd.weight"));
    if let Some((format, &[rows, cols])) = output.and_then(|t| Some((kernel(t.ggml_dtype)?.0, t.shape.dims()))) {
        need += ArgmaxHead::bytes_for(format, rows, cols) as u64;
    }
    let mut expanded: Vec<GgmlDType> = content
        .tensor_infos
        .values()
        .filter(|t| t.shape.dims().len() == 2 && t.ggml_dtype != GgmlDType::F32)
        .filter(|t| kernel(t.ggml_dtype).is_none())
        .map(|t| t.ggml_dtype)
        .collect();
    expanded.sort_by_key(|d| format!("{d:?}"));
    expanded.dedup();
    let why = if expanded.is_empty() {
        String::new()
    } else {
        format!(" (its {expanded:?} tensors have no kernel here and are expanded to f32)")
    };
    crate::memory::check(need, crate::memory::available(), &why)?;
    let mut cfg = LlamaConfig { kv: opts.kv, ..config(&content)? };
    let mut t = Tensors { file, content, bits: opts.bits };
    // Llama 3's frequency scaling, as llama.cpp's converter stores it: one divisor per
    // rotary frequency.
    if t.has("rope_freqs.weight") {
        let half = cfg.head_dim / 2;
        let factors = t.vector("rope_freqs.weight", half)?;
        let divisors = cfg.rope_divisors.get_or_insert_with(|| vec![1.0; half]);
        divisors.iter_mut().zip(factors).for_each(|(d, f)| *d *= f as f64);
        cfg.validate().map_err(LoadError::Config)?;
    }
    let stack =
        |parts: Vec<Matrix>, what: &str| Matrix::stack(parts).map_err(|e| LoadError::Weights(format!("{what}: {e}")));
    let mut layers = Vec::with_capacity(cfg.layers);
    for i in 0..cfg.layers {
        let p = format!("blk.{i}");
        let qkv = stack(
            vec![
                t.matrix(&format!("{p}.attn_q.weight"))?,
                t.matrix(&format!("{p}.attn_k.weight"))?,
                t.matrix(&format!("{p}.attn_v.weight"))?,
            ],
            &format!("{p} attention"),
        )?;
        let qkv_bias = if t.has(&format!("{p}.attn_q.bias")) {
            let mut b = t.vector(&format!("{p}.attn_q.bias"), cfg.q_dim())?;
            b.extend(t.vector(&format!("{p}.attn_k.bias"), cfg.kv_dim())?);
            b.extend(t.vector(&format!("{p}.attn_v.bias"), cfg.kv_dim())?);
            Some(b)
        } else {
            None
        };
        let qk_norm = if t.has(&format!("{p}.attn_q_norm.weight")) {
            Some((
                t.vector(&format!("{p}.attn_q_norm.weight"), cfg.head_dim)?,
                t.vector(&format!("{p}.attn_k_norm.weight"), cfg.head_dim)?,
            ))
        } else {
            None
        };
        layers.push(Layer {
            attn_norm: t.vector(&format!("{p}.attn_norm.weight"), cfg.hidden)?,
            qkv,
            qkv_bias,
            qk_norm,
            wo: t.matrix(&format!("{p}.attn_output.weight"))?,
            ffn_norm: t.vector(&format!("{p}.ffn_norm.weight"), cfg.hidden)?,
            gate_up: stack(
                vec![t.matrix(&format!("{p}.ffn_gate.weight"))?, t.matrix(&format!("{p}.ffn_up.weight"))?],
                &format!("{p} feed-forward"),
            )?,
            down: t.matrix(&format!("{p}.ffn_down.weight"))?,
            post_norms: if t.has(&format!("{p}.post_attention_norm.weight")) {
                Some((
                    t.vector(&format!("{p}.post_attention_norm.weight"), cfg.hidden)?,
                    t.vector(&format!("{p}.post_ffw_norm.weight"), cfg.hidden)?,
                ))
            } else {
                None
            },
        });
    }
    let embed = t.matrix("token_embd.weight")?;
    let norm = t.vector("output_norm.weight", cfg.hidden)?;
    let output = if t.has("output.weight") { Some(t.matrix("output.weight")?) } else { None };
    Llama::new(cfg, embed, layers, norm, output).map_err(LoadError::Weights)
}

#[cfg(test)]
mod tests;
