//! The AVX2 kernel for f32 weights (checkpoints stored unquantized), chosen at run time, and
//! small x86 helpers the quantized kernels share.
//!
//! A block of 32 weights (four vectors) is loaded once and multiplied into up to [`TILE`]
//! activation rows. Each row sums a block as `(w0·x0 + w1·x1) + (w2·x2 + w3·x3)` and adds that
//! to one accumulator: the same operations in the same order whatever the tile size, so a row
//! gets bit-identical results alone or batched with others.

/// Most activation rows multiplied per weight block.
const TILE: usize = 8;

/// Bytes of activation rows one tile may read per weight row: they must stay in L1 while the
/// weight rows stream past (8 rows of a 1536-wide down projection would not).
const TILE_BYTES: usize = 24 * 1024;

/// AVX2 with FMA and F16C (the quantized kernels read f16 scales with it).
pub fn available() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::arch::is_x86_feature_detected!("avx2")
            && std::arch::is_x86_feature_detected!("fma")
            && std::arch::is_x86_feature_detected!("f16c")
    }
    #[cfg(not(target_arch = "x86_64"))]
    false
}

#[cfg(target_arch = "x86_64")]
pub use imp::{block_stats, dot_rows_f32, prefetch};

#[cfg(target_arch = "x86_64")]
mod imp {
    use std::arch::x86_64::*;

    use super::{TILE, TILE_BYTES};
    use crate::quant::BLOCK;

    /// Asks for the weights `PREFETCH` bytes past the `len` at `at` (a tile block). The kernel
    /// is busy enough that the hardware prefetchers fall behind: without this, memory and
    /// arithmetic take turns (measured with `--bench quant_matmul`, `LAYERS=64 THREADS=2`: 8
    /// rows 9.7 → 8.1 ms, 1 row 2.8 → 2.3 ms; 1, 1.5, 3 and 4 KiB ahead did no better).
    #[inline(always)]
    pub fn prefetch(at: *const u8, len: usize) {
        const PREFETCH: usize = 2048;
        for line in (0..len).step_by(64) {
            // SAFETY: a prefetch reads nothing the program sees and never faults, even past
            // the end of the weights (hence `wrapping_add`).
            unsafe { _mm_prefetch::<_MM_HINT_T0>(at.wrapping_add(PREFETCH + line) as *const i8) };
        }
    }

    /// [`crate::quant::block_stats`]: largest magnitude and sum of 32 values.
    ///
    /// # Safety
    /// The CPU must support AVX2 (see [`super::available`]).
    #[target_feature(enable = "avx2")]
    pub unsafe fn block_stats(x: &[f32]) -> (f32, f32) {
        assert!(x.len() == BLOCK);
        let p = x.as_ptr();
        // SAFETY: `x` holds 32 values (asserted above): the four loads of 8 read exactly them.
        let v = unsafe {
            [_mm256_loadu_ps(p), _mm256_loadu_ps(p.add(8)), _mm256_loadu_ps(p.add(16)), _mm256_loadu_ps(p.add(24))]
        };
        let sum = _mm256_add_ps(_mm256_add_ps(_mm256_add_ps(v[0], v[1]), v[2]), v[3]);
        let abs = |v: __m256| _mm256_andnot_ps(_mm256_set1_ps(-0.0), v);
        let max = _mm256_max_ps(_mm256_max_ps(abs(v[0]), abs(v[1])), _mm256_max_ps(abs(v[2]), abs(v[3])));
        let m = _mm_max_ps(_mm256_castps256_ps128(max), _mm256_extractf128_ps::<1>(max));
        let m = _mm_max_ps(m, _mm_movehl_ps(m, m));
        let m = _mm_max_ss(m, _mm_movehdup_ps(m));
        let s = _mm_add_ps(_mm256_castps256_ps128(sum), _mm256_extractf128_ps::<1>(sum));
        let s = _mm_add_ps(s, _mm_movehl_ps(s, s));
        let s = _mm_add_ss(s, _mm_movehdup_ps(s));
        (_mm_cvtss_f32(m), _mm_cvtss_f32(s))
    }

    /// `out_t[(r - rows.start) * n + i]` = weight row `r` · row `i` of `x` (`n × cols`, `cols` a
    /// multiple of 32).
    ///
    /// # Safety
    /// The CPU must support AVX2 and FMA (see [`super::available`]).
    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn dot_rows_f32(
        w: &[f32],
        cols: usize,
        rows: std::ops::Range<usize>,
        x: &[f32],
        n: usize,
        out_t: &mut [f32],
    ) {
        // The bounds every raw read below stays within.
        assert!(
            cols.is_multiple_of(BLOCK)
                && rows.end * cols <= w.len()
                && x.len() >= n * cols
                && out_t.len() >= rows.len() * n
        );
        let nb = cols / BLOCK;
        let tile_rows = (TILE_BYTES / (cols * 4)).clamp(1, TILE);
        for (k, r) in rows.enumerate() {
            // SAFETY: `r < rows.end` and `rows.end * cols <= w.len()` (asserted above), so the
            // row starts inside `w` with `cols` values after it.
            let row = unsafe { w.as_ptr().add(r * cols) };
            let out = &mut out_t[k * n..(k + 1) * n];
            let mut i = 0;
            while i < n {
                let take = (n - i).min(tile_rows);
                // SAFETY: `i < n` and `x` holds `n * cols` values (asserted above).
                let xs = unsafe { x.as_ptr().add(i * cols) };
                // SAFETY (every arm): `row` has `nb` blocks of weights; `xs` has the `take` rows
                // of `cols` that a tile of that many rows reads (`i + take <= n`); the CPU has
                // AVX2 and FMA (this function's contract).
                unsafe {
                    match take {
                        1 => out[i] = tile::<1>(row, nb, xs, cols)[0],
                        2 => out[i..i + 2].copy_from_slice(&tile::<2>(row, nb, xs, cols)),
                        3 => out[i..i + 3].copy_from_slice(&tile::<3>(row, nb, xs, cols)),
                        4 => out[i..i + 4].copy_from_slice(&tile::<4>(row, nb, xs, cols)),
                        5 => out[i..i + 5].copy_from_slice(&tile::<5>(row, nb, xs, cols)),
                        6 => out[i..i + 6].copy_from_slice(&tile::<6>(row, nb, xs, cols)),
                        7 => out[i..i + 7].copy_from_slice(&tile::<7>(row, nb, xs, cols)),
                        _ => out[i..i + TILE].copy_from_slice(&tile::<TILE>(row, nb, xs, cols)),
                    }
                }
                i += take;
            }
        }
    }

    /// Weight row `row` (`nb` blocks) times the `R` activation rows at `x`, `cols` apart.
    ///
    /// # Safety
    /// The CPU must support AVX2 and FMA; `row` must be valid for reads of `nb * 32` values and
    /// `x` of `R` rows of `cols ≥ nb * 32` values.
    #[target_feature(enable = "avx2,fma")]
    unsafe fn tile<const R: usize>(row: *const f32, nb: usize, x: *const f32, cols: usize) -> [f32; R] {
        let mut acc = [_mm256_setzero_ps(); R];
        for b in 0..nb {
            // SAFETY: block `b < nb` of the row: 32 values inside it (this function's contract).
            let w = unsafe {
                let p = row.add(b * BLOCK);
                [_mm256_loadu_ps(p), _mm256_loadu_ps(p.add(8)), _mm256_loadu_ps(p.add(16)), _mm256_loadu_ps(p.add(24))]
            };
            for (k, a) in acc.iter_mut().enumerate() {
                // SAFETY: the loads read block `b` of activation row `k < R`, 32 values inside
                // it (this function's contract).
                let (p, q) = unsafe {
                    let xb = x.add(k * cols + b * BLOCK);
                    let p = _mm256_fmadd_ps(w[1], _mm256_loadu_ps(xb.add(8)), _mm256_mul_ps(w[0], _mm256_loadu_ps(xb)));
                    let q = _mm256_fmadd_ps(
                        w[3],
                        _mm256_loadu_ps(xb.add(24)),
                        _mm256_mul_ps(w[2], _mm256_loadu_ps(xb.add(16))),
                    );
                    (p, q)
                };
                *a = _mm256_add_ps(*a, _mm256_add_ps(p, q));
            }
        }
        let mut out = [0.0f32; R];
        for k in 0..R {
            let s = _mm_add_ps(_mm256_castps256_ps128(acc[k]), _mm256_extractf128_ps::<1>(acc[k]));
            let s = _mm_add_ps(s, _mm_movehl_ps(s, s));
            out[k] = _mm_cvtss_f32(_mm_add_ss(s, _mm_movehdup_ps(s)));
        }
        out
    }
}
