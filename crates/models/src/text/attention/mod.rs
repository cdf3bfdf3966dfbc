//! Multi-head self-attention over texts packed back to back (no padding, no mask): each
//! text's heads attend within the text.
//!
//! With AVX-512 and head widths of 16 to 128 values (MiniLM's 32, BERT-base's 64) a head runs
//! in [`avx512::head`]: its scores, softmax and weighted values in registers, written straight
//! into the output rows. Otherwise two products through [`crate::kernels::gemm`] and
//! [`softmax_rows`] between them.

use crate::kernels::gemm::{matmul, MatRef};
use crate::kernels::{avx512 as has_avx512, spread, team, SendPtr};

#[cfg(target_arch = "x86_64")]
mod avx512;

/// Attention below this many multiply-adds runs on the calling thread.
const PARALLEL_ATTENTION_MACS: usize = 1 << 20;

/// Multi-head self-attention for sequences packed back to back.
///
/// `qkv` is `tokens x 3·width` (queries, keys, values side by side, each `heads` blocks of
/// `width / heads`); `lens` are the sequence lengths in order; `ctx` (`tokens x width`) receives
/// each token's attention output. Tokens attend only within their own sequence, so no padding
/// or mask exists anywhere.
pub fn attention(qkv: &[f32], lens: &[usize], heads: usize, ctx: &mut [f32]) {
    let tokens: usize = lens.iter().sum();
    if tokens == 0 {
        return;
    }
    let width = ctx.len() / tokens;
    assert!(
        heads > 0 && width.is_multiple_of(heads) && ctx.len() == tokens * width && qkv.len() == tokens * 3 * width,
        "attention: qkv, ctx, lens and heads do not agree"
    );
    let d = width / heads;
    let scale = 1.0 / (d as f32).sqrt();
    let mut starts = Vec::with_capacity(lens.len());
    let mut at = 0;
    for &l in lens {
        starts.push(at);
        at += l;
    }
    let pairs: Vec<(usize, usize)> =
        (0..lens.len()).filter(|&s| lens[s] > 0).flat_map(|s| (0..heads).map(move |h| (s, h))).collect();
    #[cfg(target_arch = "x86_64")]
    let fast = has_avx512() && avx512::fits(d);
    #[cfg(not(target_arch = "x86_64"))]
    let fast = false;
    let out = SendPtr(ctx.as_mut_ptr());
    let task = |i: usize| {
        let (s, h) = pairs[i];
        let (start, len) = (starts[s], lens[s]);
        let rows = &qkv[start * 3 * width..(start + len) * 3 * width];
        // SAFETY: pair (s, h) writes rows `start..start + len`, columns `h * d..(h + 1) * d` of
        // `ctx` (inside it: asserted above), which no other pair writes, and `ctx` is not
        // otherwise used until every pair has finished.
        unsafe {
            let dst = out.get().add(start * width + h * d);
            #[cfg(target_arch = "x86_64")]
            if fast {
                avx512::head(rows, width, h * d, len, d, scale, dst, width);
                return;
            }
            let head = generic_head(rows, width, h * d, len, d, scale);
            for (i, src) in head.chunks_exact(d).enumerate() {
                std::ptr::copy_nonoverlapping(src.as_ptr(), dst.add(i * width), d);
            }
        }
    };
    // A short text's attention is a few microseconds: spreading it over threads costs more.
    let macs: usize = lens.iter().map(|l| l * l * width * 2).sum();
    if !spread(pairs.len()) || macs < PARALLEL_ATTENTION_MACS {
        (0..pairs.len()).for_each(task);
    } else {
        team::run(pairs.len(), &task);
    }
}

/// One head (its queries at column `col` of `rows`, `len` rows `3 * width` apart; keys and
/// values `width` and `2 * width` further) through two general products: `len x d` values.
fn generic_head(rows: &[f32], width: usize, col: usize, len: usize, d: usize, scale: f32) -> Vec<f32> {
    let view = |part: usize| MatRef {
        data: &rows[part * width + col..],
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
}

/// Each `len`-long row of `scores` replaced by `softmax(row · scale)` (the general path's
/// softmax): the maximum and the sum through [`aiserve_core::math`]'s lane-wise `max` and
/// `sum`, the exponentials through its `exp`, which vectorises.
#[multiversion::multiversion(targets("x86_64+avx512f+avx512bw+avx512vl", "x86_64+avx2+fma"))]
fn softmax_rows(scores: &mut [f32], len: usize, scale: f32) {
    use aiserve_core::math::{exp, max, sum};
    for row in scores.chunks_exact_mut(len) {
        let top = max(row);
        row.iter_mut().for_each(|v| *v = exp((*v - top) * scale));
        let inv = 1.0 / sum(row);
        row.iter_mut().for_each(|v| *v *= inv);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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

    /// The AVX-512 head gives the general path's values (to rounding), for texts shorter and
    /// longer than a 16-key chunk, head widths of 16, 32 and 64, and one token.
    #[cfg(target_arch = "x86_64")]
    #[test]
    fn the_avx512_head_matches_the_general_one() {
        if !has_avx512() {
            eprintln!("no AVX-512 here: nothing to compare");
            return;
        }
        for (heads, width) in [(2, 32), (12, 384), (2, 128)] {
            let lens = [1, 7, 15, 16, 17, 40];
            let tokens: usize = lens.iter().sum();
            let qkv: Vec<f32> = (0..tokens * 3 * width).map(|i| ((i * 37 % 101) as f32 - 50.0) / 13.0).collect();
            let mut fast = vec![f32::NAN; tokens * width];
            attention(&qkv, &lens, heads, &mut fast);
            let d = width / heads;
            let mut at = 0;
            for &len in &lens {
                let rows = &qkv[at * 3 * width..(at + len) * 3 * width];
                for h in 0..heads {
                    let want = generic_head(rows, width, h * d, len, d, 1.0 / (d as f32).sqrt());
                    for (i, w) in want.chunks_exact(d).enumerate() {
                        let got = &fast[(at + i) * width + h * d..][..d];
                        for (g, w) in got.iter().zip(w) {
                            // Scores reach ~±80 here: the summation orders differ, so do exponents
                            // in their last bits.
                            assert!(
                                (g - w).abs() <= 2e-4 * (1.0 + w.abs()),
                                "len {len} head {h}/{heads} row {i}: {g} vs {w}"
                            );
                        }
                    }
                }
                at += len;
            }
        }
    }
}
