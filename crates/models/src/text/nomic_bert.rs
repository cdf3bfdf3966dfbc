//! The NomicBERT encoder family (`model_type: nomic_bert`: nomic-embed-text-v1 and v1.5,
//! nomic-bert-2048), an encoder with rotary positions, run on packed sequences.
//!
//! It is BERT's post-norm layer with three changes, all read from the checkpoint's own
//! `trust_remote_code` config (GPT-2 field names: `n_embd`, `n_head`, `n_layer`, `n_inner`,
//! `n_positions`, `layer_norm_epsilon`):
//! - no position table: queries and keys are rotated by their position within their own text
//!   (`rotary_emb_base`, on the first `rotary_emb_fraction` of each head, rotate-half or
//!   interleaved pairs as `rotary_emb_interleaved` says);
//! - one fused `attn.Wqkv` product (queries, keys and values stacked) and an `attn.out_proj`,
//!   biases only where `qkv_proj_bias` says;
//! - a SwiGLU feed-forward: `fc2(fc11(x) · silu(fc12(x)))`.
//!
//! Embeddings are the word and token-type rows, layer-normalised by `emb_ln`. Dynamic NTK
//! scaling (`rotary_scaling_factor`) and pre-norm variants are refused at load.

use aiserve_core::LoadError;
use serde::Deserialize;

use super::attention::attention;
use super::ops;
use super::weights::Weights;
use super::Encoder;
use crate::kernels::packed::{Act, PackedLinear};

#[derive(Debug, Deserialize)]
pub struct NomicConfig {
    pub vocab_size: usize,
    pub n_embd: usize,
    pub n_head: usize,
    pub n_layer: usize,
    #[serde(default)]
    pub n_inner: Option<usize>,
    pub n_positions: usize,
    #[serde(default = "default_eps")]
    pub layer_norm_epsilon: f64,
    #[serde(default = "default_act")]
    pub activation_function: String,
    #[serde(default)]
    pub rotary_emb_fraction: f64,
    #[serde(default = "default_base")]
    pub rotary_emb_base: f64,
    #[serde(default)]
    pub rotary_emb_interleaved: bool,
    #[serde(default)]
    pub rotary_scaling_factor: Option<f64>,
    #[serde(default = "yes")]
    pub qkv_proj_bias: bool,
    #[serde(default = "yes")]
    pub mlp_fc1_bias: bool,
    #[serde(default = "yes")]
    pub mlp_fc2_bias: bool,
    #[serde(default)]
    pub prenorm: bool,
    #[serde(default = "default_types")]
    pub type_vocab_size: usize,
    #[serde(default = "one")]
    pub pad_vocab_size_multiple: usize,
}

fn default_eps() -> f64 {
    1e-5
}
fn default_act() -> String {
    "swiglu".into()
}
fn default_base() -> f64 {
    10_000.0
}
fn yes() -> bool {
    true
}
fn default_types() -> usize {
    2
}
fn one() -> usize {
    1
}

impl NomicConfig {
    pub fn parse(config: &serde_json::Value) -> Result<Self, LoadError> {
        let cfg: Self =
            serde_json::from_value(config.clone()).map_err(|e| LoadError::Config(format!("config.json: {e}")))?;
        let bad = |m: String| Err(LoadError::Config(format!("config.json: {m}")));
        if cfg.n_head == 0 || !cfg.n_embd.is_multiple_of(cfg.n_head) {
            return bad(format!("n_embd {} is not a multiple of n_head {}", cfg.n_embd, cfg.n_head));
        }
        if cfg.activation_function != "swiglu" {
            return Err(LoadError::Unsupported(format!(
                "nomic_bert activation_function `{}` (only `swiglu`)",
                cfg.activation_function
            )));
        }
        if cfg.prenorm {
            return Err(LoadError::Unsupported("nomic_bert with prenorm: true".into()));
        }
        if let Some(f) = cfg.rotary_scaling_factor {
            return Err(LoadError::Unsupported(format!(
                "nomic_bert rotary_scaling_factor {f} (dynamic NTK scaling); serve it with `null` and at most \
                 max_trained_positions tokens"
            )));
        }
        let head = cfg.n_embd / cfg.n_head;
        let rotary = cfg.rotary_dim();
        if !(cfg.rotary_emb_fraction > 0.0 && cfg.rotary_emb_fraction <= 1.0)
            || rotary == 0
            || !rotary.is_multiple_of(2)
        {
            return bad(format!(
                "rotary_emb_fraction {} of head size {head} must give an even number of rotated dimensions (this \
                 family has no position table)",
                cfg.rotary_emb_fraction
            ));
        }
        if !(cfg.rotary_emb_base > 1.0 && cfg.rotary_emb_base.is_finite()) {
            return bad(format!("rotary_emb_base must be above 1, got {}", cfg.rotary_emb_base));
        }
        if cfg.type_vocab_size == 0 || cfg.pad_vocab_size_multiple == 0 {
            return bad("type_vocab_size and pad_vocab_size_multiple must be positive".into());
        }
        Ok(cfg)
    }

    fn rotary_dim(&self) -> usize {
        ((self.n_embd / self.n_head.max(1)) as f64 * self.rotary_emb_fraction) as usize
    }

    fn inner(&self) -> usize {
        self.n_inner.unwrap_or(4 * self.n_embd)
    }

    /// Rows of the word table: the vocabulary rounded up to `pad_vocab_size_multiple`.
    fn padded_vocab(&self) -> usize {
        self.vocab_size.div_ceil(self.pad_vocab_size_multiple) * self.pad_vocab_size_multiple
    }
}

struct Layer {
    qkv_w: PackedLinear, // [3·hidden, hidden]
    qkv_b: Vec<f32>,     // zeros without qkv_proj_bias
    out_w: PackedLinear,
    out_b: Vec<f32>,
    norm1: (Vec<f32>, Vec<f32>),
    /// fc11 (the value) and fc12 (the gate) stacked: [2·inner, hidden].
    fc1_w: PackedLinear,
    fc1_b: Vec<f32>,
    fc2_w: PackedLinear, // [hidden, inner]
    fc2_b: Vec<f32>,
    norm2: (Vec<f32>, Vec<f32>),
}

pub struct NomicBert {
    hidden: usize,
    heads: usize,
    inner: usize,
    max_positions: usize,
    vocab: usize,
    eps: f32,
    rotary: Rotary,
    word: Vec<f32>,
    token_type: Vec<f32>,
    emb_ln: (Vec<f32>, Vec<f32>),
    layers: Vec<Layer>,
}

impl NomicBert {
    pub fn load(cfg: &NomicConfig, w: &mut Weights) -> Result<Self, LoadError> {
        w.detect_prefix("bert.", "embeddings.word_embeddings.weight");
        let w = &*w;
        let (h, i) = (cfg.n_embd, cfg.inner());
        let ln = |name: &str| -> Result<(Vec<f32>, Vec<f32>), LoadError> {
            Ok((w.get(&format!("{name}.weight"), &[h])?, w.get(&format!("{name}.bias"), &[h])?))
        };
        let bias = |on: bool, name: String, n: usize| if on { w.get(&name, &[n]) } else { Ok(vec![0.0; n]) };
        let mut layers = Vec::with_capacity(cfg.n_layer);
        for l in 0..cfg.n_layer {
            let p = format!("encoder.layers.{l}");
            let fc1_w =
                [w.get(&format!("{p}.mlp.fc11.weight"), &[i, h])?, w.get(&format!("{p}.mlp.fc12.weight"), &[i, h])?]
                    .concat();
            let fc1_w = PackedLinear::new(&fc1_w, 2 * i, h);
            let fc1_b = [
                bias(cfg.mlp_fc1_bias, format!("{p}.mlp.fc11.bias"), i)?,
                bias(cfg.mlp_fc1_bias, format!("{p}.mlp.fc12.bias"), i)?,
            ]
            .concat();
            layers.push(Layer {
                qkv_w: PackedLinear::new(&w.get(&format!("{p}.attn.Wqkv.weight"), &[3 * h, h])?, 3 * h, h),
                qkv_b: bias(cfg.qkv_proj_bias, format!("{p}.attn.Wqkv.bias"), 3 * h)?,
                out_w: PackedLinear::new(&w.get(&format!("{p}.attn.out_proj.weight"), &[h, h])?, h, h),
                out_b: bias(cfg.qkv_proj_bias, format!("{p}.attn.out_proj.bias"), h)?,
                norm1: ln(&format!("{p}.norm1"))?,
                fc1_w,
                fc1_b,
                fc2_w: PackedLinear::new(&w.get(&format!("{p}.mlp.fc2.weight"), &[h, i])?, h, i),
                fc2_b: bias(cfg.mlp_fc2_bias, format!("{p}.mlp.fc2.bias"), h)?,
                norm2: ln(&format!("{p}.norm2"))?,
            });
        }
        let padded = cfg.padded_vocab();
        Ok(Self {
            hidden: h,
            heads: cfg.n_head,
            inner: i,
            max_positions: cfg.n_positions,
            vocab: cfg.vocab_size,
            eps: cfg.layer_norm_epsilon as f32,
            rotary: Rotary::new(h / cfg.n_head, cfg.rotary_dim(), cfg.rotary_emb_base, cfg.rotary_emb_interleaved),
            word: w.get("embeddings.word_embeddings.weight", &[padded, h])?,
            token_type: w.get("embeddings.token_type_embeddings.weight", &[cfg.type_vocab_size, h])?,
            emb_ln: ln("emb_ln")?,
            layers,
        })
    }
}

/// Rotary position embedding on the first `dim` values of each head.
struct Rotary {
    head: usize,
    dim: usize,
    /// `1 / base^(2j / dim)` for `j < dim / 2`.
    inv_freq: Vec<f64>,
    interleaved: bool,
}

impl Rotary {
    fn new(head: usize, dim: usize, base: f64, interleaved: bool) -> Self {
        let inv_freq = (0..dim / 2).map(|j| 1.0 / base.powf(2.0 * j as f64 / dim as f64)).collect();
        Self { head, dim, inv_freq, interleaved }
    }

    /// `(cos, sin)` of every position below `len` and every frequency, `len x dim/2`.
    fn table(&self, len: usize) -> Vec<(f32, f32)> {
        (0..len)
            .flat_map(|pos| {
                self.inv_freq.iter().map(move |f| {
                    let a = pos as f64 * f;
                    (a.cos() as f32, a.sin() as f32)
                })
            })
            .collect()
    }

    /// Rotates one row of queries (or keys), all heads, by the angles `cos_sin` of its position.
    fn apply(&self, row: &mut [f32], cos_sin: &[(f32, f32)]) {
        let half = self.dim / 2;
        for head in row.chunks_exact_mut(self.head) {
            for (j, &(c, s)) in cos_sin.iter().enumerate() {
                let (a, b) = if self.interleaved { (2 * j, 2 * j + 1) } else { (j, j + half) };
                let (x1, x2) = (head[a], head[b]);
                head[a] = x1 * c - x2 * s;
                head[b] = x2 * c + x1 * s;
            }
        }
    }
}

impl Encoder for NomicBert {
    fn hidden_size(&self) -> usize {
        self.hidden
    }

    fn max_positions(&self) -> usize {
        self.max_positions
    }

    fn vocab_size(&self) -> usize {
        self.vocab
    }

    fn forward(&self, ids: &[u32], lens: &[usize], seconds: Option<&[usize]>) -> Vec<f32> {
        let (h, tokens) = (self.hidden, ids.len());
        let mut x = ops::embed_tokens(h, (&self.word, &self.token_type), None, ids, lens, seconds);
        // Each token's position within its own text, for the rotation.
        let positions: Vec<usize> = lens.iter().flat_map(|&len| 0..len).collect();
        let zero = vec![0.0; h];
        ops::bias_layer_norm(&mut x, &zero, &self.emb_ln.0, &self.emb_ln.1, self.eps);
        let half = self.rotary.dim / 2;
        let angles = self.rotary.table(lens.iter().copied().max().unwrap_or(0));
        // Each buffer is written whole (the products from their bias, attention every row, the
        // gate every value) before it is read.
        let sizes = [tokens * 3 * h, tokens * h, tokens * 2 * self.inner, tokens * self.inner];
        ops::with_buffers(sizes, |[qkv, ctx, fc1, act]| {
            for l in &self.layers {
                l.qkv_w.matmul_bias(&x, &l.qkv_b, Act::Identity, qkv);
                for (r, &pos) in qkv.chunks_exact_mut(3 * h).zip(&positions) {
                    let cos_sin = &angles[pos * half..(pos + 1) * half];
                    self.rotary.apply(&mut r[..h], cos_sin); // queries
                    self.rotary.apply(&mut r[h..2 * h], cos_sin); // keys
                }
                attention(qkv, lens, self.heads, ctx);
                l.out_w.matmul_acc(ctx, &mut x); // residual: x += ctx · W_o
                ops::bias_layer_norm(&mut x, &l.out_b, &l.norm1.0, &l.norm1.1, self.eps);
                l.fc1_w.matmul_bias(&x, &l.fc1_b, Act::Identity, fc1);
                for (out, r) in act.chunks_exact_mut(self.inner).zip(fc1.chunks_exact(2 * self.inner)) {
                    let (value, gate) = r.split_at(self.inner);
                    for ((o, v), g) in out.iter_mut().zip(value).zip(gate) {
                        *o = v * g / (1.0 + (-g).exp()); // value · silu(gate)
                    }
                }
                l.fc2_w.matmul_acc(act, &mut x); // residual: x += mlp · W_2
                ops::bias_layer_norm(&mut x, &l.fc2_b, &l.norm2.0, &l.norm2.1, self.eps);
            }
        });
        x
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Rotate-half and interleaved rotations turn the same pairs by the same angles.
    #[test]
    fn rotations() {
        let r = Rotary::new(4, 4, 10_000.0, false);
        let mut row = [1.0, 0.0, 0.0, 1.0];
        let t = r.table(2);
        r.apply(&mut row, &t[..2]);
        assert_eq!(row, [1.0, 0.0, 0.0, 1.0], "position 0 is the identity");
        r.apply(&mut row, &t[2..]);
        // Pair (0, 2) turns by 1 radian, pair (1, 3) by 1/100.
        let (c, s) = (1f32.cos(), 1f32.sin());
        assert!((row[0] - c).abs() < 1e-6 && (row[2] - s).abs() < 1e-6, "{row:?}");
        let (c2, s2) = (0.01f32.cos(), 0.01f32.sin());
        assert!((row[1] + s2).abs() < 1e-6 && (row[3] - c2).abs() < 1e-6, "{row:?}");
        let i = Rotary::new(4, 4, 10_000.0, true);
        let mut row = [1.0, 0.0, 0.0, 1.0];
        i.apply(&mut row, &i.table(2)[2..]);
        assert!((row[0] - c).abs() < 1e-6 && (row[1] - s).abs() < 1e-6, "{row:?}");
    }
}
