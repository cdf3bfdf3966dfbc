//! The BERT encoder family (BERT, MiniLM, BGE, E5, GTE-base and other `model_type: bert`
//! checkpoints), run on packed sequences.
//!
//! All texts of a batch are laid back to back in one `tokens x hidden` buffer: every linear
//! layer is one large product over all tokens of all texts, and attention runs per text. No
//! padding exists, so texts of very different lengths never pay for each other, and a text
//! gives the same vector alone or in any batch.

use aiserve_core::LoadError;
use serde::Deserialize;

use super::attention::attention;
use super::ops::{self, Activation};
use super::weights::Weights;
use super::Encoder;
use crate::kernels::packed::{Act, PackedLinear};

/// The fields of `config.json` the forward pass needs.
#[derive(Debug, Deserialize)]
pub struct BertConfig {
    pub vocab_size: usize,
    pub hidden_size: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    pub intermediate_size: usize,
    #[serde(default = "default_act")]
    pub hidden_act: String,
    pub max_position_embeddings: usize,
    #[serde(default = "default_type_vocab")]
    pub type_vocab_size: usize,
    #[serde(default = "default_eps")]
    pub layer_norm_eps: f64,
    #[serde(default)]
    pub position_embedding_type: Option<String>,
}

fn default_act() -> String {
    "gelu".into()
}
fn default_type_vocab() -> usize {
    2
}
fn default_eps() -> f64 {
    1e-12
}

/// Where a checkpoint of the BERT shape keeps its tensors and how it numbers positions: BERT
/// itself, or RoBERTa's (`roberta.` names, positions offset past the padding index).
#[derive(Clone, Copy, Debug)]
pub struct Layout {
    /// The prefix of a task model's encoder tensors (`bert.` in `BertForSequenceClassification`).
    pub prefix: &'static str,
    /// Row of the position table used for a text's first token.
    pub position_offset: usize,
}

impl Layout {
    pub const BERT: Self = Self { prefix: "bert.", position_offset: 0 };
}

struct Layer {
    // Linear weights packed from PyTorch's [out_features, in_features] layout.
    qkv_w: PackedLinear, // [3·hidden, hidden]
    qkv_b: Vec<f32>,
    out_w: PackedLinear, // [hidden, hidden]
    out_b: Vec<f32>,
    ln1: (Vec<f32>, Vec<f32>),
    ff1_w: PackedLinear, // [intermediate, hidden]
    ff1_b: Vec<f32>,
    ff2_w: PackedLinear, // [hidden, intermediate]
    ff2_b: Vec<f32>,
    ln2: (Vec<f32>, Vec<f32>),
}

pub struct Bert {
    hidden: usize,
    heads: usize,
    intermediate: usize,
    max_positions: usize,
    position_offset: usize,
    vocab: usize,
    eps: f32,
    act: Activation,
    word: Vec<f32>,
    position: Vec<f32>,
    /// `type_vocab_size` rows of `hidden`.
    token_type: Vec<f32>,
    emb_ln: (Vec<f32>, Vec<f32>),
    layers: Vec<Layer>,
}

impl BertConfig {
    pub fn parse(config: &serde_json::Value) -> Result<Self, LoadError> {
        let cfg: Self =
            serde_json::from_value(config.clone()).map_err(|e| LoadError::Config(format!("config.json: {e}")))?;
        if cfg.num_attention_heads == 0 || !cfg.hidden_size.is_multiple_of(cfg.num_attention_heads) {
            return Err(LoadError::Config(format!(
                "config.json: hidden_size {} is not a multiple of num_attention_heads {}",
                cfg.hidden_size, cfg.num_attention_heads
            )));
        }
        if let Some(p) = cfg.position_embedding_type.as_deref().filter(|p| *p != "absolute") {
            return Err(LoadError::Unsupported(format!(
                "position_embedding_type `{p}` (only `absolute` is supported)"
            )));
        }
        if Activation::from_hf(&cfg.hidden_act).is_none() {
            return Err(LoadError::Unsupported(format!("hidden_act `{}`", cfg.hidden_act)));
        }
        Ok(cfg)
    }
}

impl Bert {
    pub fn load(cfg: &BertConfig, w: &mut Weights, layout: Layout) -> Result<Self, LoadError> {
        w.detect_prefix(layout.prefix, "embeddings.word_embeddings.weight");
        if cfg.max_position_embeddings <= layout.position_offset || cfg.type_vocab_size == 0 {
            return Err(LoadError::Config(format!(
                "config.json: max_position_embeddings {} leaves no positions past the offset {} (or type_vocab_size \
                 is 0)",
                cfg.max_position_embeddings, layout.position_offset
            )));
        }
        let w = &*w;
        let (h, i) = (cfg.hidden_size, cfg.intermediate_size);
        let ln = |name: &str| -> Result<(Vec<f32>, Vec<f32>), LoadError> {
            Ok((w.get(&format!("{name}.weight"), &[h])?, w.get(&format!("{name}.bias"), &[h])?))
        };
        let mut layers = Vec::with_capacity(cfg.num_hidden_layers);
        for l in 0..cfg.num_hidden_layers {
            let p = format!("encoder.layer.{l}");
            let (q, k, v) = (
                w.get(&format!("{p}.attention.self.query.weight"), &[h, h])?,
                w.get(&format!("{p}.attention.self.key.weight"), &[h, h])?,
                w.get(&format!("{p}.attention.self.value.weight"), &[h, h])?,
            );
            // [3·hidden, hidden]: query, key and value output features stacked, one product.
            let qkv_w = PackedLinear::new(&[q, k, v].concat(), 3 * h, h);
            let qkv_b = [
                w.get(&format!("{p}.attention.self.query.bias"), &[h])?,
                w.get(&format!("{p}.attention.self.key.bias"), &[h])?,
                w.get(&format!("{p}.attention.self.value.bias"), &[h])?,
            ]
            .concat();
            layers.push(Layer {
                qkv_w,
                qkv_b,
                out_w: PackedLinear::new(&w.get(&format!("{p}.attention.output.dense.weight"), &[h, h])?, h, h),
                out_b: w.get(&format!("{p}.attention.output.dense.bias"), &[h])?,
                ln1: ln(&format!("{p}.attention.output.LayerNorm"))?,
                ff1_w: PackedLinear::new(&w.get(&format!("{p}.intermediate.dense.weight"), &[i, h])?, i, h),
                ff1_b: w.get(&format!("{p}.intermediate.dense.bias"), &[i])?,
                ff2_w: PackedLinear::new(&w.get(&format!("{p}.output.dense.weight"), &[h, i])?, h, i),
                ff2_b: w.get(&format!("{p}.output.dense.bias"), &[h])?,
                ln2: ln(&format!("{p}.output.LayerNorm"))?,
            });
        }
        Ok(Self {
            hidden: h,
            heads: cfg.num_attention_heads,
            intermediate: i,
            max_positions: cfg.max_position_embeddings - layout.position_offset,
            position_offset: layout.position_offset,
            vocab: cfg.vocab_size,
            eps: cfg.layer_norm_eps as f32,
            act: Activation::from_hf(&cfg.hidden_act).expect("checked in parse"),
            word: w.get("embeddings.word_embeddings.weight", &[cfg.vocab_size, h])?,
            position: w.get("embeddings.position_embeddings.weight", &[cfg.max_position_embeddings, h])?,
            token_type: w.get("embeddings.token_type_embeddings.weight", &[cfg.type_vocab_size, h])?,
            emb_ln: ln("embeddings.LayerNorm")?,
            layers,
        })
    }
}

impl Encoder for Bert {
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
        debug_assert_eq!(lens.iter().sum::<usize>(), tokens);
        let table = Some((self.position.as_slice(), self.position_offset));
        let mut x = ops::embed_tokens(h, (&self.word, &self.token_type), table, ids, lens, seconds);
        let zero = vec![0.0; h];
        ops::bias_layer_norm(&mut x, &zero, &self.emb_ln.0, &self.emb_ln.1, self.eps);
        // Each buffer is written whole (the products from their bias, attention every row)
        // before it is read.
        ops::with_buffers([tokens * 3 * h, tokens * h, tokens * self.intermediate], |[qkv, ctx, inter]| {
            for l in &self.layers {
                l.qkv_w.matmul_bias(&x, &l.qkv_b, Act::Identity, qkv);
                attention(qkv, lens, self.heads, ctx);
                l.out_w.matmul_acc(ctx, &mut x); // residual: x += ctx · W_o
                ops::bias_layer_norm(&mut x, &l.out_b, &l.ln1.0, &l.ln1.1, self.eps);
                self.act.after_linear(&l.ff1_w, &x, &l.ff1_b, inter);
                l.ff2_w.matmul_acc(inter, &mut x); // residual: x += ff · W_2
                ops::bias_layer_norm(&mut x, &l.ff2_b, &l.ln2.0, &l.ln2.1, self.eps);
            }
        });
        x
    }
}
