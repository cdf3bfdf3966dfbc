//! The row-wise pieces of a transformer encoder on packed `tokens x width` buffers: bias
//! rows, embeddings, layer norm and the feed-forward activation (attention is
//! [`super::attention`]).
//!
//! Every op walks plain `f32` slices and spreads rows over the kernels' threads; small heads go
//! through [`linear_acc`] (the linear layers use [`crate::kernels::packed`]). Nothing here
//! allocates per token.

use crate::kernels::for_each_chunk_mut;
use crate::kernels::packed::{Act, PackedLinear};

/// Rows per parallel task for the cheap row-wise ops.
const ROWS_PER_TASK: usize = 32;

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

/// Values of spare buffers a thread keeps for its next forward pass (16 MiB: a batch of 32
/// texts of 15 tokens takes 6 MiB in MiniLM).
const KEEP_SPARE: usize = 1 << 22;

thread_local! {
    /// The buffers of this thread's last forward pass, in the order it asked for them.
    static SPARE: std::cell::RefCell<Vec<Vec<f32>>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// Runs `f` with `N` buffers of `lens` values taken from the thread's spares (allocated where
/// none is left), then keeps them for the next call up to [`KEEP_SPARE`] values in all: an
/// encoder's intermediate buffers, which each forward pass allocated and zeroed afresh (1–2%
/// of a batch-32 MiniLM encode in allocation, zeroing and page faults). What they hold on entry
/// is arbitrary (zeros or an earlier pass's values): `f` must write every value before reading it.
pub fn with_buffers<const N: usize, R>(lens: [usize; N], f: impl FnOnce(&mut [Vec<f32>; N]) -> R) -> R {
    let mut spare = SPARE.with_borrow_mut(std::mem::take).into_iter();
    let mut bufs: [Vec<f32>; N] = std::array::from_fn(|_| spare.next().unwrap_or_default());
    for (b, &len) in bufs.iter_mut().zip(&lens) {
        b.resize(len, 0.0);
    }
    let out = f(&mut bufs);
    if bufs.iter().map(Vec::capacity).sum::<usize>() <= KEEP_SPARE {
        SPARE.with_borrow_mut(|s| *s = bufs.into());
    }
    out
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
}
