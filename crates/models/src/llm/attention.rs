//! Rotary position embeddings and causal attention of packed token rows against per-sequence
//! KV caches (grouped-query: several query heads share one key/value head).

use super::llama::LlamaConfig;
use crate::quant::team::Team;

/// Which elements of a head rotate together.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RopePairs {
    /// `(x[2i], x[2i+1])`: GGUF llama files (llama.cpp's converter permutes q/k to this order).
    Adjacent,
    /// `(x[i], x[i + d/2])`: Hugging Face checkpoints (`rotate_half`), and GGUF qwen2.
    Halves,
}

pub struct Rope {
    head_dim: usize,
    inv_freq: Vec<f64>,
    pairs: RopePairs,
}

impl Rope {
    pub fn new(head_dim: usize, theta: f32, pairs: RopePairs) -> Self {
        let inv_freq = (0..head_dim / 2).map(|i| (theta as f64).powf(-2.0 * i as f64 / head_dim as f64)).collect();
        Self { head_dim, inv_freq, pairs }
    }

    pub fn half(&self) -> usize {
        self.head_dim / 2
    }

    /// Cosines and sines for each position, `half()` values per position.
    pub fn tables(&self, positions: impl Iterator<Item = usize>) -> (Vec<f32>, Vec<f32>) {
        let (mut cos, mut sin) = (Vec::new(), Vec::new());
        for p in positions {
            for f in &self.inv_freq {
                let (s, c) = (p as f64 * f).sin_cos();
                cos.push(c as f32);
                sin.push(s as f32);
            }
        }
        (cos, sin)
    }

    /// Rotates every head in `heads` (back to back, `head_dim` each) by one position's angles.
    pub fn apply(&self, heads: &mut [f32], cos: &[f32], sin: &[f32]) {
        let half = self.half();
        for head in heads.chunks_exact_mut(self.head_dim) {
            for i in 0..half {
                let (a, b) = match self.pairs {
                    RopePairs::Adjacent => (2 * i, 2 * i + 1),
                    RopePairs::Halves => (i, i + half),
                };
                let (x, y) = (head[a], head[b]);
                head[a] = x * cos[i] - y * sin[i];
                head[b] = x * sin[i] + y * cos[i];
            }
        }
    }
}

/// A token row of the batch: the piece (sequence) it belongs to and its position in it.
#[derive(Clone, Copy, Debug)]
pub struct Row {
    pub piece: usize,
    pub pos: usize,
}

/// Attention below this many multiply-adds runs on the calling thread.
const PARALLEL_MACS: usize = 1 << 15;

/// `out` (`rows × q_dim`): each row's query heads attend to its sequence's keys and values at
/// positions `0..=pos`. `qkv` rows hold `[q | k | v]`; `caches[piece]` are `(keys, values)`,
/// `len × kv_dim` each, already holding this step's tokens.
///
/// Work is split by (row, KV head): the query heads sharing a KV head are one task, so each
/// key and value is read once for the whole group, and even a single decoding sequence spreads
/// over the cores.
pub fn causal(team: &Team, cfg: &LlamaConfig, rows: &[Row], qkv: &[f32], caches: &[(&[f32], &[f32])], out: &mut [f32]) {
    let job = Job { cfg, rows, qkv, caches };
    let macs: usize = rows.iter().map(|r| (r.pos + 1) * cfg.q_dim() * 2).sum();
    let chunk = cfg.heads / cfg.kv_heads * cfg.head_dim;
    if macs < PARALLEL_MACS {
        out.chunks_exact_mut(chunk).enumerate().for_each(|(t, o)| attend(&job, t, o));
    } else {
        team.chunks_mut(out, chunk, |t, o| attend(&job, t, o));
    }
}

/// What every attention task reads.
struct Job<'a> {
    cfg: &'a LlamaConfig,
    rows: &'a [Row],
    qkv: &'a [f32],
    caches: &'a [(&'a [f32], &'a [f32])],
}

/// Task `task` = (row, KV head): the group's query heads against the row's keys and values,
/// written to `o` (`group × head_dim`). Compiled for AVX2 too (chosen at run time); the same
/// operations in the same order either way, so the bits do not depend on the CPU.
#[multiversion::multiversion(targets("x86_64+avx2+fma"))]
fn attend(job: &Job, task: usize, o: &mut [f32]) {
    let cfg = job.cfg;
    let (qd, kvd, hd) = (cfg.q_dim(), cfg.kv_dim(), cfg.head_dim);
    let stride = qd + 2 * kvd;
    let group = cfg.heads / cfg.kv_heads;
    let scale = 1.0 / (hd as f32).sqrt();
    let (i, kvh) = (task / cfg.kv_heads, task % cfg.kv_heads);
    let row = job.rows[i];
    let (keys, values) = job.caches[row.piece];
    let ctx = row.pos + 1;
    let mut scores = vec![0.0f32; ctx * group];
    for g in 0..group {
        let h = kvh * group + g;
        let qh = &job.qkv[i * stride + h * hd..i * stride + (h + 1) * hd];
        let s = &mut scores[g * ctx..(g + 1) * ctx];
        let mut max = f32::NEG_INFINITY;
        for (t, v) in s.iter_mut().enumerate() {
            *v = dot(qh, &keys[t * kvd + kvh * hd..t * kvd + (kvh + 1) * hd]) * scale;
            max = max.max(*v);
        }
        let mut sum = 0.0;
        for v in s.iter_mut() {
            *v = (*v - max).exp();
            sum += *v;
        }
        s.iter_mut().for_each(|v| *v /= sum);
    }
    o.fill(0.0);
    for t in 0..ctx {
        let v = &values[t * kvd + kvh * hd..t * kvd + (kvh + 1) * hd];
        for (g, oh) in o.chunks_exact_mut(hd).enumerate() {
            let p = scores[g * ctx + t];
            oh.iter_mut().zip(v).for_each(|(o, v)| *o += p * v);
        }
    }
}

/// Dot product in eight independent lanes (vectorised by the compiler; inlined into `attend`'s
/// versions).
#[inline(always)]
fn dot(a: &[f32], b: &[f32]) -> f32 {
    let mut acc = [0.0f32; 8];
    let (ca, cb) = (a.chunks_exact(8), b.chunks_exact(8));
    let tail: f32 = ca.remainder().iter().zip(cb.remainder()).map(|(x, y)| x * y).sum();
    for (x, y) in ca.zip(cb) {
        for j in 0..8 {
            acc[j] += x[j] * y[j];
        }
    }
    acc.iter().sum::<f32>() + tail
}
