//! `out += x · wᵀ` for a few rows of `x`: the product of small text batches with a linear
//! layer's weight, `w` in PyTorch's `[out_features, in_features]` layout.
//!
//! With few rows (one short sentence is ~15 tokens) a general GEMM spends its time packing and
//! in half-empty register tiles (measured: the `gemm` crate at ~25% of the FMA peak on a
//! 15-row product); the work is really streaming the weight once. Here each weight row is read
//! once and multiplied into every input row while it is in L1: tiles of 2 weight rows × 4 input
//! rows keep 8 eight-wide accumulators in registers. Output columns are split across rayon's
//! pool. The FMA path is chosen at run time; the fallback is the same code without fused
//! multiply-add.

use super::gemm::{matmul_strided, MatRef};

/// Above this many rows the general GEMM is faster (measured crossover on 2 Zen 4 cores).
pub const MAX_ROWS: usize = 32;

/// Weight rows per parallel task.
const ROWS_PER_TASK: usize = 64;

/// `out (m x n) += x (m x k) · wᵀ` with `w` row-major `n x k`.
pub fn matmul_wt_acc(x: &[f32], k: usize, w: &[f32], n: usize, out: &mut [f32]) {
    let m = x.len() / k;
    assert_eq!(x.len(), m * k, "skinny: x is not m x k");
    assert_eq!(w.len(), n * k, "skinny: w is not n x k");
    assert_eq!(out.len(), m * n, "skinny: out is not m x n");
    if m > MAX_ROWS {
        // outᵀ = w · xᵀ: the weight is the packed left operand, the output written transposed
        // (measured faster than x · wᵀ with a transposed right operand).
        matmul_strided(MatRef::row_major(w, n, k), MatRef::row_major(x, m, k).t(), out, (1, n), true);
        return;
    }
    // Each task computes a block of output columns transposed (contiguous), then they are added in.
    let mut out_t = vec![0.0f32; n * m];
    super::for_each_chunk_mut(&mut out_t, ROWS_PER_TASK * m, |b, chunk| {
        let rows = &w[b * ROWS_PER_TASK * k..((b + 1) * ROWS_PER_TASK).min(n) * k];
        block(x, m, k, rows, chunk);
    });
    for (j, col) in out_t.chunks_exact(m).enumerate() {
        for (i, v) in col.iter().enumerate() {
            out[i * n + j] += v;
        }
    }
}

fn block(x: &[f32], m: usize, k: usize, w: &[f32], out_t: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma") {
        // SAFETY: the CPU supports the features `avx2::block` is compiled for (checked above).
        unsafe { avx2::block(x, m, k, w, out_t) };
        return;
    }
    block_portable(x, m, k, w, out_t);
}

/// Plain loops: one dot product per output (CPUs without AVX2/FMA).
fn block_portable(x: &[f32], m: usize, k: usize, w: &[f32], out_t: &mut [f32]) {
    for (j, wr) in w.chunks_exact(k).enumerate() {
        for (i, xr) in x.chunks_exact(k).enumerate() {
            out_t[j * m + i] += wr.iter().zip(xr).map(|(a, b)| a * b).sum::<f32>();
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod avx2 {
    use std::arch::x86_64::*;

    const LANES: usize = 8;

    /// Tiles of 2 weight rows × up to 4 input rows; each tile's 8 accumulators stay in registers.
    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn block(x: &[f32], m: usize, k: usize, w: &[f32], out_t: &mut [f32]) {
        let rows = w.len() / k;
        assert!(x.len() >= m * k && out_t.len() >= rows * m, "skinny: block bounds");
        let mut j = 0;
        while j < rows {
            // An odd last weight row is paired with itself; its second result is dropped.
            let (w0, w1) = (j, if j + 1 < rows { j + 1 } else { j });
            let mut i = 0;
            while i < m {
                let r = (m - i).min(4);
                // SAFETY: weight rows `w0 <= w1 < rows` lie in `w`, input rows `i..i + r` (`r`
                // of them, `i + r <= m`) in `x` (asserted above), and the CPU has AVX2 and FMA
                // (this function's features, checked by the caller).
                let sums = unsafe {
                    match r {
                        4 => tile::<4>(w, w0, w1, x, i, k),
                        3 => tile::<3>(w, w0, w1, x, i, k),
                        2 => tile::<2>(w, w0, w1, x, i, k),
                        _ => tile::<1>(w, w0, w1, x, i, k),
                    }
                };
                for q in 0..r {
                    out_t[w0 * m + i + q] += sums[0][q];
                    if w1 != w0 {
                        out_t[w1 * m + i + q] += sums[1][q];
                    }
                }
                i += r;
            }
            j += 2;
        }
    }

    /// Dot products of weight rows `w0`, `w1` with input rows `i..i + R` (each `k` long).
    ///
    /// # Safety
    /// `w0` and `w1` must be below `w.len() / k` and `(i + R)·k <= x.len()`; the CPU must have
    /// AVX2 and FMA.
    #[inline]
    #[target_feature(enable = "avx2,fma")]
    unsafe fn tile<const R: usize>(w: &[f32], w0: usize, w1: usize, x: &[f32], i: usize, k: usize) -> [[f32; 4]; 2] {
        debug_assert!(w0 <= w1 && (w1 + 1) * k <= w.len() && (i + R) * k <= x.len());
        // SAFETY: the starts of weight rows `w0`, `w1` and input row `i`, each with `k` values
        // (rows `i..i + R` for the input) after it in its slice (this function's contract).
        let (a, b, xs) = unsafe { (w.as_ptr().add(w0 * k), w.as_ptr().add(w1 * k), x.as_ptr().add(i * k)) };
        let mut acc0 = [_mm256_setzero_ps(); R];
        let mut acc1 = [_mm256_setzero_ps(); R];
        let full = k / LANES * LANES;
        let mut c = 0;
        while c < full {
            // SAFETY: `c + 8 <= full <= k`: values `c..c + 8` of the two weight rows and of
            // input rows `q < R`.
            unsafe {
                let va = _mm256_loadu_ps(a.add(c));
                let vb = _mm256_loadu_ps(b.add(c));
                for q in 0..R {
                    let vx = _mm256_loadu_ps(xs.add(q * k + c));
                    acc0[q] = _mm256_fmadd_ps(va, vx, acc0[q]);
                    acc1[q] = _mm256_fmadd_ps(vb, vx, acc1[q]);
                }
            }
            c += LANES;
        }
        let mut out = [[0.0f32; 4]; 2];
        for q in 0..R {
            let (mut s0, mut s1) = (hsum(acc0[q]), hsum(acc1[q]));
            for t in full..k {
                // SAFETY: `t < k`: value `t` of the two weight rows and of input row `q < R`.
                let (xv, av, bv) = unsafe { (*xs.add(q * k + t), *a.add(t), *b.add(t)) };
                s0 += av * xv;
                s1 += bv * xv;
            }
            out[0][q] = s0;
            out[1][q] = s1;
        }
        out
    }

    #[inline]
    #[target_feature(enable = "avx2,fma")]
    fn hsum(v: __m256) -> f32 {
        let s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
        let s = _mm_add_ps(s, _mm_movehl_ps(s, s));
        let s = _mm_add_ss(s, _mm_shuffle_ps(s, s, 1));
        _mm_cvtss_f32(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::gemm::matmul;

    #[test]
    fn matches_the_general_gemm_for_every_row_count() {
        let (k, n) = (37, 11); // odd sizes: lane tails, an unpaired weight row
        let w: Vec<f32> = (0..n * k).map(|i| ((i * 31 % 17) as f32 - 8.0) / 9.0).collect();
        for m in [1, 2, 3, 4, 5, 15, 33] {
            let x: Vec<f32> = (0..m * k).map(|i| ((i * 7 % 13) as f32 - 6.0) / 5.0).collect();
            let mut got = vec![1.0; m * n];
            matmul_wt_acc(&x, k, &w, n, &mut got);
            let mut want = vec![1.0; m * n];
            matmul(MatRef::row_major(&x, m, k), MatRef::row_major(&w, n, k).t(), &mut want, true);
            let worst = got.iter().zip(&want).map(|(a, b)| (a - b).abs()).fold(0.0, f32::max);
            assert!(worst < 1e-4, "m={m}: max diff {worst}");
        }
    }
}
