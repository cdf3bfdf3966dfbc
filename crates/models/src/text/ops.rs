//! The row-wise pieces of a transformer encoder on packed `tokens x width` buffers: bias
//! rows, layer norm, GELU and multi-head self-attention over sequences laid back to back.
//!
//! Every op walks plain `f32` slices and spreads rows over rayon's pool (sequentially when
//! already on a pool thread); attention's products go through [`crate::kernels::gemm`] and small
//! heads through [`linear_acc`] (the linear layers use [`crate::kernels::packed`]). Nothing here
//! allocates per token.

use std::sync::OnceLock;

use crate::kernels::gemm::{matmul, MatRef};
use crate::kernels::packed::{Act, PackedLinear};
use crate::kernels::team;
use crate::kernels::{for_each_chunk_mut, spread};

/// Rows per parallel task for the cheap row-wise ops.
const ROWS_PER_TASK: usize = 32;

/// Attention below this many multiply-adds runs on the calling thread.
const PARALLEL_ATTENTION_MACS: usize = 1 << 20;

/// `out` (`rows x n`) = each row set to `bias`.
pub fn fill_rows(out: &mut [f32], bias: &[f32]) {
    for_each_chunk_mut(out, ROWS_PER_TASK * bias.len(), |_, chunk| {
        chunk.chunks_exact_mut(bias.len()).for_each(|row| row.copy_from_slice(bias));
    });
}

/// `out += x · wᵀ` with `x` `rows x k` and the linear weight `w` `n x k` (both row-major).
pub fn linear_acc(x: &[f32], k: usize, w: &[f32], n: usize, out: &mut [f32]) {
    crate::kernels::skinny::matmul_wt_acc(x, k, w, n, out);
}

/// The `h`-wide input rows of packed sequences (`ids` laid back to back, `lens` each): each token's word
/// vector plus its token-type vector (type 1 from its sequence's `seconds` index on; a family
/// with one type reads both segments as type 0, as Hugging Face's models do, whose tokenizers
/// send no token_type_ids for it), plus its position's row in `positions` (`(table, offset)`: the first
/// token at row `offset`) in families with a position table.
pub fn embed_tokens(
    h: usize,
    (word, token_type): (&[f32], &[f32]),
    positions: Option<(&[f32], usize)>,
    ids: &[u32],
    lens: &[usize],
    seconds: Option<&[usize]>,
) -> Vec<f32> {
    let types = token_type.len() / h;
    let mut x = vec![0.0; ids.len() * h];
    let mut row = 0;
    for (s, &len) in lens.iter().enumerate() {
        let second = seconds.map_or(len, |v| v[s]);
        for pos in 0..len {
            let id = ids[row] as usize;
            let t = usize::from(pos >= second).min(types - 1);
            let out = &mut x[row * h..(row + 1) * h];
            out.copy_from_slice(&word[id * h..(id + 1) * h]);
            out.iter_mut().zip(&token_type[t * h..(t + 1) * h]).for_each(|(o, v)| *o += v);
            if let Some((table, offset)) = positions {
                let at = pos + offset;
                out.iter_mut().zip(&table[at * h..(at + 1) * h]).for_each(|(o, v)| *o += v);
            }
            row += 1;
        }
    }
    x
}

/// Adds `bias` to every row of `x`, then layer-normalises each row with `gamma`, `beta`, `eps`.
pub fn bias_layer_norm(x: &mut [f32], bias: &[f32], gamma: &[f32], beta: &[f32], eps: f32) {
    let width = gamma.len();
    for_each_chunk_mut(x, ROWS_PER_TASK * width, |_, chunk| layer_norm_rows(chunk, bias, gamma, beta, eps));
}

#[multiversion::multiversion(targets("x86_64+avx512f+avx512bw+avx512vl", "x86_64+avx2+fma"))]
fn layer_norm_rows(chunk: &mut [f32], bias: &[f32], gamma: &[f32], beta: &[f32], eps: f32) {
    let width = gamma.len();
    for row in chunk.chunks_exact_mut(width) {
        row.iter_mut().zip(bias).for_each(|(v, b)| *v += b);
        let mean = lanes_sum(row, |v| v) / width as f32;
        let var = lanes_sum(row, |v| (v - mean) * (v - mean)) / width as f32;
        let inv = 1.0 / (var + eps).sqrt();
        for ((v, g), b) in row.iter_mut().zip(gamma).zip(beta) {
            *v = (*v - mean) * inv * g + b;
        }
    }
}

/// The sum of `f(v)` over `row` in 16 lanes, folded in halves: `iter().sum()` adds one value
/// after another (each add waiting for the last), which made layer norm 4.5% of an encode.
#[inline(always)]
fn lanes_sum(row: &[f32], f: impl Fn(f32) -> f32) -> f32 {
    let mut lanes = [0.0f32; 16];
    let chunks = row.chunks_exact(16);
    let tail: f32 = chunks.remainder().iter().map(|&v| f(v)).sum();
    for c in chunks {
        for k in 0..16 {
            lanes[k] += f(c[k]);
        }
    }
    for half in [8, 4, 2, 1] {
        for k in 0..half {
            lanes[k] += lanes[k + half];
        }
    }
    lanes[0] + tail
}

/// The activation between the two feed-forward products.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Activation {
    /// `x·Φ(x)` with the exact error function (BERT's `gelu`).
    GeluErf,
    /// The tanh approximation (`gelu_new`, `gelu_pytorch_tanh`).
    GeluTanh,
    Relu,
}

impl Activation {
    pub fn from_hf(name: &str) -> Option<Self> {
        match name {
            "gelu" => Some(Self::GeluErf),
            "gelu_new" | "gelu_pytorch_tanh" | "gelu_fast" => Some(Self::GeluTanh),
            "relu" => Some(Self::Relu),
            _ => None,
        }
    }

    /// `out = self(x · wᵀ + bias)`: the bias, and GELU (erf) or ReLU, applied by the product's
    /// register tiles as they write; the tanh GELU as a pass of its own.
    pub fn after_linear(self, w: &PackedLinear, x: &[f32], bias: &[f32], out: &mut [f32]) {
        match self {
            Self::GeluErf => w.matmul_bias(x, bias, Act::GeluErf, out),
            Self::Relu => w.matmul_bias(x, bias, Act::Relu, out),
            Self::GeluTanh => {
                w.matmul_bias(x, bias, Act::Identity, out);
                self.apply(out);
            }
        }
    }

    pub fn apply(self, x: &mut [f32]) {
        for_each_chunk_mut(x, 1 << 14, |_, chunk| match self {
            Self::GeluErf => gelu_erf(chunk),
            Self::GeluTanh => chunk.iter_mut().for_each(|v| {
                let x = *v;
                *v = 0.5 * x * (1.0 + (0.797_884_6 * (x + 0.044_715 * x * x * x)).tanh());
            }),
            Self::Relu => chunk.iter_mut().for_each(|v| *v = v.max(0.0)),
        });
    }
}

#[multiversion::multiversion(targets("x86_64+avx512f+avx512bw+avx512vl", "x86_64+avx2+fma"))]
fn gelu_erf(chunk: &mut [f32]) {
    chunk.iter_mut().for_each(|v| *v = aiserve_core::math::gelu_erf(*v))
}

/// Each `len`-long row of `scores` replaced by `softmax(row · scale)`: the exponentials through
/// [`aiserve_core::math::exp`]'s polynomial, which vectorises (libm's `expf`, one call a value,
/// was 1.3% of an encode). A row of up to 16 values (a text of up to 16 tokens) is worked in
/// one 16-lane array; longer rows in 16 lanes and a tail. Either way the maximum and the sum
/// fold lanes instead of adding one value after another (3.4% of an encode before).
#[multiversion::multiversion(targets("x86_64+avx512f+avx512bw+avx512vl", "x86_64+avx2+fma"))]
fn softmax_rows(scores: &mut [f32], len: usize, scale: f32) {
    use aiserve_core::math::exp;
    for row in scores.chunks_exact_mut(len) {
        if len <= 16 {
            let mut v = [f32::NEG_INFINITY; 16];
            v[..len].copy_from_slice(row);
            let mut top = v;
            for half in [8, 4, 2, 1] {
                for k in 0..half {
                    top[k] = top[k].max(top[k + half]);
                }
            }
            for (k, e) in v.iter_mut().enumerate() {
                *e = if k < len { exp((*e - top[0]) * scale) } else { 0.0 };
            }
            let mut sum = v;
            for half in [8, 4, 2, 1] {
                for k in 0..half {
                    sum[k] += sum[k + half];
                }
            }
            let inv = 1.0 / sum[0];
            row.iter_mut().zip(&v).for_each(|(r, e)| *r = e * inv);
        } else {
            let max = lanes_max(row);
            row.iter_mut().for_each(|v| *v = exp((*v - max) * scale));
            let inv = 1.0 / lanes_sum(row, |v| v);
            row.iter_mut().for_each(|v| *v *= inv);
        }
    }
}

/// The largest value of `row` (−∞ for none), in 16 lanes as [`lanes_sum`].
#[inline(always)]
fn lanes_max(row: &[f32]) -> f32 {
    let mut lanes = [f32::NEG_INFINITY; 16];
    let chunks = row.chunks_exact(16);
    let tail = chunks.remainder().iter().fold(f32::NEG_INFINITY, |m, &v| m.max(v));
    for c in chunks {
        for k in 0..16 {
            lanes[k] = lanes[k].max(c[k]);
        }
    }
    for half in [8, 4, 2, 1] {
        for k in 0..half {
            lanes[k] = lanes[k].max(lanes[k + half]);
        }
    }
    lanes[0].max(tail)
}

/// Multi-head self-attention for sequences packed back to back.
///
/// `qkv` is `tokens x 3·width` (queries, keys, values side by side, each `heads` blocks of
/// `width / heads`); `lens` are the sequence lengths in order; `ctx` (`tokens x width`) receives
/// each token's attention output. Tokens attend only within their own sequence, so no padding
/// or mask exists anywhere.
pub fn attention(qkv: &[f32], lens: &[usize], heads: usize, ctx: &mut [f32]) {
    let width = ctx.len() / lens.iter().sum::<usize>().max(1);
    let d = width / heads;
    let scale = 1.0 / (d as f32).sqrt();
    let mut starts = Vec::with_capacity(lens.len());
    let mut at = 0;
    for &l in lens {
        starts.push(at);
        at += l;
    }
    let task = |(s, h): (usize, usize)| -> Vec<f32> {
        let (start, len) = (starts[s], lens[s]);
        let rows = &qkv[start * 3 * width..(start + len) * 3 * width];
        let view = |part: usize| MatRef {
            data: &rows[part * width + h * d..],
            rows: len,
            cols: d,
            row_stride: 3 * width,
            col_stride: 1,
        };
        let mut scores = vec![0.0; len * len];
        matmul(view(0), view(1).t(), &mut scores, false);
        softmax_rows(&mut scores, len, scale);
        let mut out = vec![0.0; len * d];
        matmul(MatRef::row_major(&scores, len, len), view(2), &mut out, false);
        out
    };
    let pairs: Vec<(usize, usize)> = (0..lens.len()).flat_map(|s| (0..heads).map(move |h| (s, h))).collect();
    // A short text's attention is a few microseconds: spreading it over threads costs more.
    let macs: usize = lens.iter().map(|l| l * l * width * 2).sum();
    let outs: Vec<Vec<f32>> = if !spread(pairs.len()) || macs < PARALLEL_ATTENTION_MACS {
        pairs.iter().copied().map(task).collect()
    } else {
        let outs: Vec<OnceLock<Vec<f32>>> = pairs.iter().map(|_| OnceLock::new()).collect();
        team::run(pairs.len(), &|i| {
            let _ = outs[i].set(task(pairs[i]));
        });
        outs.into_iter().map(|o| o.into_inner().expect("the team ran every pair")).collect()
    };
    for (&(s, h), out) in pairs.iter().zip(&outs) {
        for (i, src) in out.chunks_exact(d).enumerate() {
            let row = (starts[s] + i) * width + h * d;
            ctx[row..row + d].copy_from_slice(src);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layer_norm_rows() {
        let mut x = vec![1.0, 2.0, 3.0, 4.0, 0.0, 0.0, 0.0, 0.0];
        bias_layer_norm(&mut x, &[0.0, 0.0, 0.0, 1.0], &[1.0; 4], &[0.5; 4], 1e-12);
        let row = &x[..4];
        assert!(row.iter().map(|v| v - 0.5).sum::<f32>().abs() < 1e-5);
        assert!(x[4..7].iter().all(|&v| v < 0.5) && x[7] > 0.5);
    }

    /// Attention over two packed sequences equals attention over each alone.
    #[test]
    fn packed_attention_keeps_sequences_apart() {
        let (heads, width) = (2, 4);
        let lens = [3, 2];
        let qkv: Vec<f32> = (0..5 * 3 * width).map(|i| ((i * 37 % 23) as f32 - 11.0) / 7.0).collect();
        let mut packed = vec![0.0; 5 * width];
        attention(&qkv, &lens, heads, &mut packed);
        let mut first = vec![0.0; 3 * width];
        attention(&qkv[..3 * 3 * width], &[3], heads, &mut first);
        let mut second = vec![0.0; 2 * width];
        attention(&qkv[3 * 3 * width..], &[2], heads, &mut second);
        assert_eq!(&packed[..3 * width], &first[..]);
        assert_eq!(&packed[3 * width..], &second[..]);
        // A single token attends only to itself: its output is its own value vector.
        let mut one = vec![0.0; width];
        attention(&qkv[..3 * width], &[1], heads, &mut one);
        assert_eq!(&one[..], &qkv[2 * width..3 * width]);
    }
}
