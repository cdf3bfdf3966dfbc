//! The llama-family decoder block (Llama, SmolLM, Mistral, Qwen2/3): RMS norm, rotary attention
//! with grouped KV heads, SwiGLU feed-forward, on packed `tokens × width` rows; and Gemma 3's
//! variant of it ([`Variant`]): scaled embeddings, norms after attention and feed-forward too,
//! GeGLU, sliding-window layers with their own rotary base, soft-capped scores where configured.
//!
//! A forward pass takes pieces of several sequences at once: every linear layer is one product
//! over all their tokens (so weights are read once per step, whatever the batch), and attention
//! runs per token against its own sequence's KV cache. Sequences never see each other's tokens
//! and nothing is padded, so a sequence gets the same logits alone or in any batch.

use aiserve_core::generate::{GenItem, SeqState, TextGenerator};
use aiserve_core::BackendError;

use super::act::{geglu, swiglu};
use super::attention;
use super::kv::{Elem, KvDtype, Rows};
use super::rope::{Rope, RopePairs};
use crate::quant::argmax::ArgmaxHead;
use crate::quant::team::Team;
use crate::quant::Matrix;

/// Shapes and constants of a llama-family model.
#[derive(Clone, Debug, PartialEq)]
pub struct LlamaConfig {
    pub hidden: usize,
    pub intermediate: usize,
    pub layers: usize,
    pub heads: usize,
    pub kv_heads: usize,
    pub head_dim: usize,
    pub vocab: usize,
    pub rms_eps: f32,
    pub rope_theta: f32,
    pub max_context: usize,
    pub rope_pairs: RopePairs,
    /// What each rotary frequency is divided by, for checkpoints that stretch their context
    /// (`head_dim / 2` values; `None`: unscaled).
    pub rope_divisors: Option<Vec<f64>>,
    /// What the KV caches store.
    pub kv: KvDtype,
    /// Where the model departs from Llama (all off for the llama family).
    pub variant: Variant,
}

/// What Gemma-style decoders change in the llama block.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Variant {
    /// The feed-forward gate's activation.
    pub gate: Gate,
    /// Token embeddings are multiplied by this (Gemma: `sqrt(hidden)`); `None`: by 1.
    pub embed_scale: Option<f32>,
    /// Attention scores' scale; `None`: `1 / sqrt(head_dim)`.
    pub attn_scale: Option<f32>,
    /// Attention scores become `cap · tanh(score / cap)` (Gemma 2).
    pub attn_softcap: Option<f32>,
    /// Logits become `cap · tanh(logit / cap)` (Gemma 2).
    pub final_softcap: Option<f32>,
    /// Layers that attend to a window of recent positions only.
    pub sliding: Option<Sliding>,
}

/// Sliding-window attention layers (Gemma 2 and 3).
#[derive(Clone, Debug, PartialEq)]
pub struct Sliding {
    /// A token attends to positions less than this far back.
    pub window: usize,
    /// Which layers slide; the others attend to every position.
    pub layers: Vec<bool>,
    /// The rotary base of sliding layers (the others use `rope_theta`).
    pub rope_theta: f32,
}

/// The feed-forward gate's activation.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Gate {
    /// SwiGLU: `silu(gate) · up`.
    #[default]
    Silu,
    /// GeGLU: `gelu(gate) · up`, GELU's tanh approximation (Gemma).
    GeluTanh,
}

impl LlamaConfig {
    /// Whether layer `l` attends to a sliding window.
    pub fn slides(&self, l: usize) -> bool {
        self.variant.sliding.as_ref().is_some_and(|s| s.layers.get(l).copied().unwrap_or(false))
    }

    pub fn q_dim(&self) -> usize {
        self.heads * self.head_dim
    }

    pub fn kv_dim(&self) -> usize {
        self.kv_heads * self.head_dim
    }

    pub fn kv_bytes_per_token(&self) -> usize {
        2 * self.layers * self.kv_dim() * self.kv.bytes()
    }

    pub fn validate(&self) -> Result<(), String> {
        if self.hidden == 0 || self.layers == 0 || self.heads == 0 || self.kv_heads == 0 || self.head_dim == 0 {
            return Err(format!("model sizes must be positive: {self:?}"));
        }
        if !self.heads.is_multiple_of(self.kv_heads) {
            return Err(format!("{} attention heads cannot share {} KV heads evenly", self.heads, self.kv_heads));
        }
        if !self.head_dim.is_multiple_of(2) {
            return Err(format!("rotary embeddings need an even head size, got {}", self.head_dim));
        }
        if let Some(d) = &self.rope_divisors {
            if d.len() != self.head_dim / 2 {
                return Err(format!(
                    "rotary frequency scaling has {} factors for {} frequencies (head size {})",
                    d.len(),
                    self.head_dim / 2,
                    self.head_dim
                ));
            }
            if let Some(bad) = d.iter().find(|v| !(v.is_finite() && **v > 0.0)) {
                return Err(format!("rotary frequency scaling factors must be positive, got {bad}"));
            }
        }
        let v = &self.variant;
        for (what, x) in [
            ("embedding scale", v.embed_scale),
            ("attention scale", v.attn_scale),
            ("attention soft-cap", v.attn_softcap),
            ("logit soft-cap", v.final_softcap),
        ] {
            if let Some(x) = x.filter(|x| !(x.is_finite() && *x > 0.0)) {
                return Err(format!("the {what} must be positive, got {x}"));
            }
        }
        if let Some(s) = &v.sliding {
            if s.window == 0 || s.layers.len() != self.layers || !(s.rope_theta.is_finite() && s.rope_theta > 0.0) {
                return Err(format!(
                    "sliding-window attention needs a positive window and rotary base and a flag per layer \
                     ({} layers): {s:?}",
                    self.layers
                ));
            }
        }
        Ok(())
    }
}

/// One decoder block's weights. Query, key and value are one stacked matrix, as are the gate and
/// up projections, so each is one product.
pub struct Layer {
    pub attn_norm: Vec<f32>,
    pub qkv: Matrix,
    pub qkv_bias: Option<Vec<f32>>,
    /// Qwen 3's RMS norms of each query and key head (`head_dim` weights each), before rotary.
    pub qk_norm: Option<(Vec<f32>, Vec<f32>)>,
    pub wo: Matrix,
    pub ffn_norm: Vec<f32>,
    pub gate_up: Matrix,
    pub down: Matrix,
    /// Gemma's RMS norms of the attention's and the feed-forward's outputs, before each is
    /// added to the residual.
    pub post_norms: Option<(Vec<f32>, Vec<f32>)>,
}

pub struct Llama {
    pub cfg: LlamaConfig,
    pub embed: Matrix,
    pub layers: Vec<Layer>,
    pub norm: Vec<f32>,
    /// The output projection; `None` when tied to the embeddings.
    pub output: Option<Matrix>,
    rope: Rope,
    /// The rotary embedding of sliding-window layers, where their base differs.
    local_rope: Option<Rope>,
    /// The output projection's high bits, for greedy steps ([`ArgmaxHead`]), where it pays.
    head: Option<ArgmaxHead>,
    team: Team,
}

/// One sequence's KV cache: per layer, keys and values of every position (`len × kv_dim`).
pub struct Seq {
    len: usize,
    k: Vec<Rows>,
    v: Vec<Rows>,
}

impl Llama {
    pub fn new(
        cfg: LlamaConfig,
        embed: Matrix,
        layers: Vec<Layer>,
        norm: Vec<f32>,
        output: Option<Matrix>,
    ) -> Result<Self, String> {
        cfg.validate()?;
        let (h, q, kv, i) = (cfg.hidden, cfg.q_dim(), cfg.kv_dim(), cfg.intermediate);
        let shape = |m: &Matrix, rows: usize, cols: usize, what: &str| {
            if m.rows() != rows || m.cols() != cols {
                return Err(format!("{what} is {}x{}, expected {rows}x{cols}", m.rows(), m.cols()));
            }
            Ok(())
        };
        shape(&embed, cfg.vocab, h, "the token embedding")?;
        if let Some(out) = &output {
            shape(out, cfg.vocab, h, "the output projection")?;
        }
        if layers.len() != cfg.layers {
            return Err(format!("{} blocks, expected {}", layers.len(), cfg.layers));
        }
        for (n, l) in layers.iter().enumerate() {
            shape(&l.qkv, q + 2 * kv, h, &format!("block {n} query/key/value"))?;
            shape(&l.wo, h, q, &format!("block {n} attention output"))?;
            shape(&l.gate_up, 2 * i, h, &format!("block {n} gate/up"))?;
            shape(&l.down, h, i, &format!("block {n} down"))?;
            if l.attn_norm.len() != h || l.ffn_norm.len() != h {
                return Err(format!("block {n} norms must have {h} values"));
            }
            if l.qk_norm.as_ref().is_some_and(|(q, k)| q.len() != cfg.head_dim || k.len() != cfg.head_dim) {
                return Err(format!("block {n} query/key norms must have {} values (the head size)", cfg.head_dim));
            }
            if l.qkv_bias.as_ref().is_some_and(|b| b.len() != q + 2 * kv) {
                return Err(format!("block {n} query/key/value bias must have {} values", q + 2 * kv));
            }
            if l.post_norms.as_ref().is_some_and(|(a, f)| a.len() != h || f.len() != h) {
                return Err(format!("block {n} post-attention and post-feed-forward norms must have {h} values"));
            }
        }
        if norm.len() != h {
            return Err(format!("the final norm must have {h} values"));
        }
        let rope = Rope::new(cfg.head_dim, cfg.rope_theta, cfg.rope_pairs, cfg.rope_divisors.as_deref());
        // Sliding layers turn by their own base, unscaled (llama.cpp's `freq_base_swa`).
        let local_rope =
            cfg.variant.sliding.as_ref().map(|s| Rope::new(cfg.head_dim, s.rope_theta, cfg.rope_pairs, None));
        // Soft-capped logits would need the cap's rounding in the bound: no head for those.
        let head =
            cfg.variant.final_softcap.is_none().then(|| ArgmaxHead::of(output.as_ref().unwrap_or(&embed))).flatten();
        let team = Team::new(crate::compute_threads());
        Ok(Self { cfg, embed, layers, norm, output, rope, local_rope, head, team })
    }

    /// Bytes of weights read per decoded token.
    pub fn weight_bytes(&self) -> usize {
        let blocks: usize =
            self.layers.iter().map(|l| l.qkv.bytes() + l.wo.bytes() + l.gate_up.bytes() + l.down.bytes()).sum();
        blocks + self.output.as_ref().unwrap_or(&self.embed).bytes()
    }

    fn empty_seq(&self) -> Seq {
        let rows = || (0..self.cfg.layers).map(|_| Rows::new(self.cfg.kv)).collect();
        Seq { len: 0, k: rows(), v: rows() }
    }

    /// Bytes the greedy head holds beside the weights (0 without one).
    pub fn head_bytes(&self) -> usize {
        self.head.as_ref().map_or(0, ArgmaxHead::bytes)
    }

    /// Runs `pieces` (a sequence, its new tokens, after how many of its last tokens it wants
    /// logits) as one batch. With `argmax_only`, only each row's largest logit and its index
    /// are exact ([`GenItem::argmax_only`]).
    pub fn forward_seqs(
        &mut self,
        pieces: &mut [(&mut Seq, &[u32], usize)],
        argmax_only: bool,
    ) -> Result<Vec<Vec<f32>>, String> {
        let cfg = self.cfg.clone();
        let (h, qd, kvd) = (cfg.hidden, cfg.q_dim(), cfg.kv_dim());
        // Token rows of the batch: which piece each belongs to and its position.
        let mut rows = Vec::new();
        for (p, (seq, tokens, _)) in pieces.iter().enumerate() {
            if seq.k.len() != cfg.layers || seq.k.iter().chain(&seq.v).any(|r| r.dtype() != cfg.kv) {
                return Err("sequence state of another model (other layers or KV cache type)".into());
            }
            if seq.len + tokens.len() > cfg.max_context {
                return Err(format!(
                    "sequence of {} tokens exceeds the context of {}",
                    seq.len + tokens.len(),
                    cfg.max_context
                ));
            }
            if let Some(t) = tokens.iter().find(|t| **t as usize >= cfg.vocab) {
                return Err(format!("token id {t} is outside the vocabulary of {}", cfg.vocab));
            }
            if pieces[p].2 > tokens.len() {
                return Err(format!("logits after {} of {} tokens", pieces[p].2, tokens.len()));
            }
            rows.extend((0..tokens.len()).map(|j| attention::Row { piece: p, pos: seq.len + j }));
        }
        let n = rows.len();
        if n == 0 {
            return Ok(Vec::new());
        }
        let mut x = vec![0.0f32; n * h];
        for (row, t) in x.chunks_exact_mut(h).zip(pieces.iter().flat_map(|p| p.1.iter())) {
            self.embed.row_into(*t as usize, row);
            if let Some(scale) = cfg.variant.embed_scale {
                row.iter_mut().for_each(|v| *v *= scale);
            }
        }
        let (cos, sin) = self.rope.tables(rows.iter().map(|r| r.pos));
        let local = self.local_rope.as_ref().map(|r| r.tables(rows.iter().map(|r| r.pos)));
        let mut normed = vec![0.0f32; n * h];
        let mut qkv = vec![0.0f32; n * (qd + 2 * kvd)];
        let mut att = vec![0.0f32; n * qd];
        let mut proj = vec![0.0f32; n * h];
        let mut gate_up = vec![0.0f32; n * 2 * cfg.intermediate];
        let mut act = vec![0.0f32; n * cfg.intermediate];
        for (l, layer) in self.layers.iter().enumerate() {
            rms_norm(&x, &layer.attn_norm, cfg.rms_eps, &mut normed);
            layer.qkv.matmul(&mut self.team, &normed, n, &mut qkv);
            if let Some(bias) = &layer.qkv_bias {
                qkv.chunks_exact_mut(bias.len()).for_each(|r| r.iter_mut().zip(bias).for_each(|(v, b)| *v += b));
            }
            if let Some((qn, kn)) = &layer.qk_norm {
                let mut normed_heads = vec![0.0f32; qd + kvd];
                for row in qkv.chunks_exact_mut(qd + 2 * kvd) {
                    rms_norm(&row[..qd], qn, cfg.rms_eps, &mut normed_heads[..qd]);
                    rms_norm(&row[qd..qd + kvd], kn, cfg.rms_eps, &mut normed_heads[qd..]);
                    row[..qd + kvd].copy_from_slice(&normed_heads);
                }
            }
            let slides = cfg.slides(l);
            let (rope, cos, sin) = match (&self.local_rope, &local) {
                (Some(rope), Some((c, s))) if slides => (rope, c, s),
                _ => (&self.rope, &cos, &sin),
            };
            for (i, row) in qkv.chunks_exact_mut(qd + 2 * kvd).enumerate() {
                let (c, s) = (&cos[i * rope.half()..], &sin[i * rope.half()..]);
                rope.apply(&mut row[..qd + kvd], c, s);
            }
            // Append this layer's keys and values to each sequence's cache.
            let mut offset = 0;
            for (seq, tokens, _) in pieces.iter_mut() {
                let new = &qkv[offset * (qd + 2 * kvd)..(offset + tokens.len()) * (qd + 2 * kvd)];
                seq.k[l].extend(new.chunks_exact(qd + 2 * kvd).map(|r| &r[qd..qd + kvd]), kvd);
                seq.v[l].extend(new.chunks_exact(qd + 2 * kvd).map(|r| &r[qd + kvd..]), kvd);
                offset += tokens.len();
            }
            // Each sequence's cache of this layer, as the model's element type.
            fn caches<'a, T: Elem>(pieces: &'a [(&mut Seq, &[u32], usize)], l: usize) -> Vec<(&'a [T], &'a [T])> {
                pieces.iter().map(|(s, _, _)| (T::of(&s.k[l]), T::of(&s.v[l]))).collect()
            }
            let scope = attention::Scope::of(&cfg, l);
            match cfg.kv {
                KvDtype::F32 => {
                    attention::causal(&mut self.team, &cfg, scope, &rows, &qkv, &caches::<f32>(pieces, l), &mut att)
                }
                KvDtype::F16 => attention::causal(
                    &mut self.team,
                    &cfg,
                    scope,
                    &rows,
                    &qkv,
                    &caches::<half::f16>(pieces, l),
                    &mut att,
                ),
            }
            layer.wo.matmul(&mut self.team, &att, n, &mut proj);
            let post = layer.post_norms.as_ref();
            add_residual(&mut x, &proj, post.map(|p| &p.0[..]), cfg.rms_eps, &mut normed);
            rms_norm(&x, &layer.ffn_norm, cfg.rms_eps, &mut normed);
            layer.gate_up.matmul(&mut self.team, &normed, n, &mut gate_up);
            let inter = cfg.intermediate;
            let gate = match cfg.variant.gate {
                Gate::Silu => swiglu,
                Gate::GeluTanh => geglu,
            };
            self.team.chunks_mut(&mut act, inter, |i, o| gate(&gate_up[i * 2 * inter..(i + 1) * 2 * inter], inter, o));
            layer.down.matmul(&mut self.team, &act, n, &mut proj);
            add_residual(&mut x, &proj, post.map(|p| &p.1[..]), cfg.rms_eps, &mut normed);
        }
        // Logits only after the last tokens of the pieces that want them.
        let mut last_rows = Vec::new();
        let mut end = 0;
        for (seq, tokens, want) in pieces.iter_mut() {
            end += tokens.len();
            seq.len += tokens.len();
            last_rows.extend_from_slice(&x[(end - *want) * h..end * h]);
        }
        let m = last_rows.len() / h;
        let mut finals = vec![0.0f32; m * h];
        rms_norm(&last_rows, &self.norm, cfg.rms_eps, &mut finals);
        // Each sequence's logits straight into its own buffer (no zero fill, no copy: 8 MB a
        // step for 8 sequences of a 262,144-token vocabulary).
        let mut logits = vec![Vec::new(); m];
        let output = self.output.as_ref().unwrap_or(&self.embed);
        match &self.head {
            Some(head) if argmax_only => head.argmax_rows(output, &mut self.team, &finals, &mut logits),
            _ => output.matmul_rows(&mut self.team, &finals, &mut logits),
        }
        if let Some(cap) = cfg.variant.final_softcap {
            logits.iter_mut().flatten().for_each(|v| *v = cap * (*v / cap).tanh());
        }
        Ok(logits)
    }
}

impl TextGenerator for Llama {
    fn new_sequence(&self) -> SeqState {
        Box::new(self.empty_seq())
    }

    fn forward(&mut self, items: &mut [GenItem<'_>]) -> Result<Vec<Vec<f32>>, BackendError> {
        let argmax_only = items.iter().all(|i| !i.logits || i.argmax_only);
        let mut pieces = Vec::with_capacity(items.len());
        for item in items.iter_mut() {
            let seq = item
                .state
                .downcast_mut::<Seq>()
                .ok_or_else(|| BackendError("sequence state of another model".into()))?;
            pieces.push((seq, item.tokens, item.logits as usize));
        }
        self.forward_seqs(&mut pieces, argmax_only).map_err(BackendError)
    }

    fn verifies_drafts(&self) -> bool {
        true
    }

    fn forward_rows(&mut self, items: &mut [GenItem<'_>], rows: &[usize]) -> Result<Vec<Vec<f32>>, BackendError> {
        if rows.len() != items.len() {
            return Err(BackendError(format!("{} row counts for {} items", rows.len(), items.len())));
        }
        let argmax_only = items.iter().zip(rows).all(|(i, want)| *want == 0 || i.argmax_only);
        let mut pieces = Vec::with_capacity(items.len());
        for (item, want) in items.iter_mut().zip(rows) {
            let seq = item
                .state
                .downcast_mut::<Seq>()
                .ok_or_else(|| BackendError("sequence state of another model".into()))?;
            pieces.push((seq, item.tokens, *want));
        }
        self.forward_seqs(&mut pieces, argmax_only).map_err(BackendError)
    }

    fn truncate(&self, state: &mut SeqState, len: usize) -> bool {
        let Some(seq) = state.downcast_mut::<Seq>().filter(|s| s.len >= len) else { return false };
        let width = self.cfg.kv_dim();
        seq.k.iter_mut().chain(seq.v.iter_mut()).for_each(|r| r.truncate(len * width));
        seq.len = len;
        true
    }

    fn shares_prefixes(&self) -> bool {
        true
    }

    fn shared_len(&self, state: &SeqState) -> Option<usize> {
        state.downcast_ref::<Seq>().map(|s| s.len)
    }

    /// Keys and values of the first `len` positions, copied: every position's depend only on
    /// the tokens up to it, so they are what feeding those tokens afresh would compute.
    fn fork(&self, state: &SeqState, len: usize) -> Option<SeqState> {
        let seq = state.downcast_ref::<Seq>().filter(|s| s.len >= len)?;
        let width = self.cfg.kv_dim();
        let copy = |rows: &[Rows]| rows.iter().map(|r| r.prefix(len * width)).collect();
        Some(Box::new(Seq { len, k: copy(&seq.k), v: copy(&seq.v) }))
    }
}

/// `x += out`, or `x += rms_norm(out) · norm` where a norm is given (Gemma's post-norms;
/// `scratch` holds the normed rows, as long as `out`).
fn add_residual(x: &mut [f32], out: &[f32], norm: Option<&[f32]>, eps: f32, scratch: &mut [f32]) {
    let add = match norm {
        Some(w) => {
            rms_norm(out, w, eps, scratch);
            &*scratch
        }
        None => out,
    };
    x.iter_mut().zip(add).for_each(|(a, b)| *a += b);
}

/// `out` = each row of `x` scaled to unit RMS, times `weight`.
#[multiversion::multiversion(targets("x86_64+avx2+fma"))]
pub fn rms_norm(x: &[f32], weight: &[f32], eps: f32, out: &mut [f32]) {
    let w = weight.len();
    for (row, o) in x.chunks_exact(w).zip(out.chunks_exact_mut(w)) {
        let ms = row.iter().map(|v| v * v).sum::<f32>() / w as f32;
        let inv = 1.0 / (ms + eps).sqrt();
        o.iter_mut().zip(row).zip(weight).for_each(|((o, v), g)| *o = v * inv * g);
    }
}
