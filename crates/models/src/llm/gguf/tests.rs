//! Tiny llama GGUFs written in the test (seeded weights, any format): rotary scaling, K-quant
//! and 5-bit weights against their values as f32, Qwen 3's head norms, refusals.

use aiserve_core::generate::{GenItem, TextGenerator};
use candle_core::quantized::gguf_file::{self, Value};
use candle_core::quantized::QTensor;
use candle_core::Tensor;

use super::*;

const HIDDEN: usize = 64;
const HEAD_DIM: usize = 32;

/// A tiny llama GGUF (f32 weights from a fixed formula, 2 heads of 32) with `extra`
/// metadata and tensors.
fn tiny(extra_meta: &[(&str, Value)], extra_tensors: &[(&str, Vec<f32>)]) -> tempfile::NamedTempFile {
    tiny_with(HIDDEN, Weights::F32, extra_meta, extra_tensors)
}

/// [`tiny`] of architecture `arch`, its query projection scaled by `q_scale`.
fn tiny_arch(arch: &str, q_scale: f32, extra_tensors: &[(&str, Vec<f32>)]) -> tempfile::NamedTempFile {
    let rename = |k: &str| k.replacen("llama.", &format!("{arch}."), 1);
    write_tiny(HIDDEN, Weights::F32, arch, q_scale, &[], extra_tensors, &rename)
}

/// How [`tiny_with`] stores its matrices.
#[derive(Clone, Copy, PartialEq)]
enum Weights {
    F32,
    /// Quantized to this format.
    Quantized(GgmlDType),
    /// Quantized to this format and back: the same values as f32.
    Dequantized(GgmlDType),
}

fn tiny_with(
    hidden: usize,
    weights: Weights,
    extra_meta: &[(&str, Value)],
    extra_tensors: &[(&str, Vec<f32>)],
) -> tempfile::NamedTempFile {
    write_tiny(hidden, weights, "llama", 1.0, extra_meta, extra_tensors, &|k| k.to_owned())
}

fn write_tiny(
    hidden: usize,
    weights: Weights,
    arch: &str,
    q_scale: f32,
    extra_meta: &[(&str, Value)],
    extra_tensors: &[(&str, Vec<f32>)],
    key: &dyn Fn(&str) -> String,
) -> tempfile::NamedTempFile {
    let (inter, vocab) = (2 * hidden, 40);
    let mut meta = vec![
        ("general.architecture", Value::String(arch.into())),
        ("llama.attention.head_count", Value::U32(2)),
        ("llama.embedding_length", Value::U32(hidden as u32)),
        ("llama.feed_forward_length", Value::U32(inter as u32)),
        ("llama.block_count", Value::U32(1)),
        ("llama.context_length", Value::U32(64)),
    ];
    meta.extend(extra_meta.iter().map(|(k, v)| (*k, v.clone())));
    let meta: Vec<(String, Value)> = meta.into_iter().map(|(k, v)| (key(k), v)).collect();
    let values = |n: usize, seed: usize| -> Vec<f32> {
        let mut state = seed as u64 + 1;
        (0..n)
            .map(|_| {
                state = state.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                ((state >> 40) as f32 / (1u64 << 24) as f32 - 0.5) * 0.4
            })
            .collect()
    };
    let mut shapes: Vec<(&str, Vec<usize>)> = vec![
        ("token_embd.weight", vec![vocab, hidden]),
        ("blk.0.attn_q.weight", vec![hidden, hidden]),
        ("blk.0.attn_k.weight", vec![hidden, hidden]),
        ("blk.0.attn_v.weight", vec![hidden, hidden]),
        ("blk.0.attn_output.weight", vec![hidden, hidden]),
        ("blk.0.ffn_gate.weight", vec![inter, hidden]),
        ("blk.0.ffn_up.weight", vec![inter, hidden]),
        ("blk.0.ffn_down.weight", vec![hidden, inter]),
    ];
    let mut tensors: Vec<(&str, Vec<usize>, Vec<f32>)> = shapes
        .drain(..)
        .enumerate()
        .map(|(seed, (name, shape))| {
            let mut v = values(shape.iter().product(), seed);
            if name == "blk.0.attn_q.weight" {
                v.iter_mut().for_each(|x| *x *= q_scale);
            }
            (name, shape.clone(), v)
        })
        .collect();
    for norm in ["blk.0.attn_norm.weight", "blk.0.ffn_norm.weight", "output_norm.weight"] {
        tensors.push((norm, vec![hidden], vec![1.0; hidden]));
    }
    tensors.extend(extra_tensors.iter().map(|(name, v)| (*name, vec![v.len()], v.clone())));
    let q: Vec<(&str, QTensor)> = tensors
        .into_iter()
        .map(|(name, shape, v)| {
            let t = Tensor::from_vec(v, shape.clone(), &Device::Cpu).unwrap();
            let q = |dtype| QTensor::quantize(&t, dtype).unwrap();
            let q = match weights {
                _ if shape.len() == 1 => q(GgmlDType::F32),
                Weights::F32 => q(GgmlDType::F32),
                Weights::Quantized(dtype) => q(dtype),
                Weights::Dequantized(dtype) => {
                    let back = q(dtype).dequantize(&Device::Cpu).unwrap();
                    QTensor::quantize(&back, GgmlDType::F32).unwrap()
                }
            };
            (name, q)
        })
        .collect();
    let file = tempfile::NamedTempFile::new().unwrap();
    let meta_refs: Vec<(&str, &Value)> = meta.iter().map(|(k, v)| (k.as_str(), v)).collect();
    let tensor_refs: Vec<(&str, &QTensor)> = q.iter().map(|(k, t)| (*k, t)).collect();
    gguf_file::write(&mut file.reopen().unwrap(), &meta_refs, &tensor_refs).unwrap();
    file
}

/// Logits after a five-token prompt.
fn logits(file: &tempfile::NamedTempFile) -> Vec<f32> {
    let mut model = load(file.path(), Options::default()).unwrap();
    let mut seq = model.new_sequence();
    let ids = [1, 5, 9, 2, 7];
    let item = GenItem::new(&mut seq, &ids, ids.len());
    model.forward(&mut [item]).unwrap().remove(0)
}

fn error(file: &tempfile::NamedTempFile) -> String {
    load(file.path(), Options::default()).err().expect("the file should be refused").to_string()
}

#[test]
fn rope_frequency_factors_and_linear_scaling_turn_the_same_angles() {
    let plain = logits(&tiny(&[], &[]));
    let ones = logits(&tiny(&[], &[("rope_freqs.weight", vec![1.0; HEAD_DIM / 2])]));
    assert_eq!(ones, plain, "divisors of 1 change nothing");
    let halved = logits(&tiny(&[], &[("rope_freqs.weight", vec![2.0; HEAD_DIM / 2])]));
    let worst = halved.iter().zip(&plain).map(|(a, b)| (a - b).abs()).fold(0.0, f32::max);
    assert!(worst > 1e-3, "scaled frequencies must change the logits (by {worst})");
    let linear = tiny(
        &[("llama.rope.scaling.type", Value::String("linear".into())), ("llama.rope.scaling.factor", Value::F32(2.0))],
        &[],
    );
    assert_eq!(logits(&linear), halved, "linear factor 2 = every frequency divided by 2");
}

/// What Q5_0 weights load as on this CPU ([`crate::quant::q5::native`]).
fn q5_0_name() -> &'static str {
    if crate::quant::q5::native() {
        "Q5_0"
    } else {
        "Q8_0"
    }
}

#[test]
fn k_and_5_bit_quant_weights_give_the_logits_of_their_values() {
    for (dtype, name) in
        [(GgmlDType::Q4K, "Q4K"), (GgmlDType::Q5K, "Q5K"), (GgmlDType::Q6K, "Q6K"), (GgmlDType::Q5_0, q5_0_name())]
    {
        // K-quants' rows are whole super-blocks of 256 values.
        let quantized = logits(&tiny_with(256, Weights::Quantized(dtype), &[], &[]));
        let values = logits(&tiny_with(256, Weights::Dequantized(dtype), &[], &[]));
        let scale = values.iter().fold(0.0f32, |m, v| m.max(v.abs()));
        let worst = quantized.iter().zip(&values).map(|(a, b)| (a - b).abs()).fold(0.0, f32::max);
        // Only the activations' 16-bit rounding differs.
        assert!(worst < 1e-3 * scale, "{name} logits differ from its values' by {worst} (of {scale})");
        let model = load(tiny_with(256, Weights::Quantized(dtype), &[], &[]).path(), Options::default());
        assert_eq!(model.unwrap().layers[0].down.format_name(), name);
    }
}

#[test]
fn qwen3_normalises_query_and_key_heads() {
    let norms = [("blk.0.attn_q_norm.weight", vec![1.0; HEAD_DIM]), ("blk.0.attn_k_norm.weight", vec![1.0; HEAD_DIM])];
    // Each query head is scaled to unit RMS before attention: scaling the projection changes
    // nothing (but for the norm's epsilon)...
    let (plain, scaled) = (logits(&tiny_arch("qwen3", 1.0, &norms)), logits(&tiny_arch("qwen3", 3.0, &norms)));
    let worst = plain.iter().zip(&scaled).map(|(a, b)| (a - b).abs()).fold(0.0, f32::max);
    assert!(worst < 1e-4, "qwen3 logits moved by {worst}");
    // ... where a llama's attention sharpens.
    let (plain, scaled) = (logits(&tiny_arch("llama", 1.0, &[])), logits(&tiny_arch("llama", 3.0, &[])));
    let moved = plain.iter().zip(&scaled).map(|(a, b)| (a - b).abs()).fold(0.0, f32::max);
    assert!(moved > 1e-2, "llama logits moved by only {moved}");
    let short = [("blk.0.attn_q_norm.weight", vec![1.0; 3]), ("blk.0.attn_k_norm.weight", vec![1.0; HEAD_DIM])];
    let err = error(&tiny_arch("qwen3", 1.0, &short));
    assert!(err.contains("attn_q_norm.weight") && err.contains("3 values"), "{err}");
}

#[test]
fn loaded_sizes_count_kernel_formats_as_held_and_the_rest_as_f32() {
    assert_eq!(loaded_bytes(GgmlDType::Q4K, 256), 8 * 24);
    assert_eq!(loaded_bytes(GgmlDType::Q5_0, 32), if crate::quant::q5::native() { 22 } else { 34 });
    assert_eq!(loaded_bytes(GgmlDType::Q3K, 256), 1024);
    assert_eq!(loaded_bytes(GgmlDType::F16, 10), 40);
}

#[test]
fn unsupported_or_malformed_rope_scaling_is_refused_by_name() {
    let short = error(&tiny(&[], &[("rope_freqs.weight", vec![1.0; 3])]));
    assert!(short.contains("rope_freqs.weight") && short.contains("3 values"), "{short}");
    let negative = error(&tiny(&[], &[("rope_freqs.weight", vec![-1.0; HEAD_DIM / 2])]));
    assert!(negative.contains("must be positive"), "{negative}");
    let yarn = error(&tiny(&[("llama.rope.scaling.type", Value::String("yarn".into()))], &[]));
    assert!(yarn.contains("`yarn`"), "{yarn}");
    let no_factor = error(&tiny(&[("llama.rope.scaling.type", Value::String("linear".into()))], &[]));
    assert!(no_factor.contains("llama.rope.scaling.factor"), "{no_factor}");
}

/// Gemma's departures from Llama read from metadata, with llama.cpp's defaults where it is silent.
#[test]
fn gemma_variants_follow_llama_cpp_defaults() {
    let content = |arch: &str, extra: &[(&str, Value)]| {
        let mut metadata: std::collections::HashMap<String, Value> = extra
            .iter()
            .map(|(k, v)| (format!("{arch}.{k}"), v.clone()))
            .chain([("general.architecture".to_string(), Value::String(arch.into()))])
            .collect();
        for (k, v) in [("attention.head_count", 4), ("embedding_length", 640), ("block_count", 12)] {
            metadata.entry(format!("{arch}.{k}")).or_insert(Value::U32(v));
        }
        gguf_file::Content {
            magic: gguf_file::VersionedMagic::GgufV3,
            metadata,
            tensor_infos: Default::default(),
            tensor_data_offset: 0,
        }
    };
    // Gemma 3 270M's keys: five sliding layers of six at base 10 000, head size from key_length.
    let g3 =
        content("gemma3", &[("attention.sliding_window", Value::U32(512)), ("attention.key_length", Value::U32(256))]);
    let v = gemma(&g3, "gemma3", 640, 4, 256, 12, 1e6).unwrap();
    let s = v.sliding.clone().unwrap();
    assert_eq!((s.window, s.rope_theta), (512, 10_000.0));
    let global = |l: &[bool]| l.iter().enumerate().filter(|(_, s)| !**s).map(|(i, _)| i).collect::<Vec<_>>();
    assert_eq!(global(&s.layers), [5, 11]);
    assert_eq!((v.embed_scale, v.attn_scale), (Some(640f32.sqrt()), Some(1.0 / 16.0)));
    assert_eq!((v.attn_softcap, v.final_softcap, v.gate), (None, None, Gate::GeluTanh));
    // Gemma 2: every other layer slides over 4096, scores capped at 50 and logits at 30.
    let v = gemma(&content("gemma2", &[]), "gemma2", 640, 4, 256, 12, 1e4).unwrap();
    let s = v.sliding.unwrap();
    assert_eq!((s.window, s.rope_theta, s.layers[..4].to_vec()), (4096, 1e4, vec![true, false, true, false]));
    assert_eq!((v.attn_softcap, v.final_softcap), (Some(50.0), Some(30.0)));
    // An explicit per-layer pattern wins.
    let flags = Value::Array((0..12).map(|l| Value::Bool(l % 3 != 0)).collect());
    let g3 =
        content("gemma3", &[("attention.sliding_window", Value::U32(64)), ("attention.sliding_window_pattern", flags)]);
    let s = gemma(&g3, "gemma3", 640, 4, 256, 12, 1e6).unwrap().sliding.unwrap();
    assert_eq!(global(&s.layers), [0, 3, 6, 9]);
}
