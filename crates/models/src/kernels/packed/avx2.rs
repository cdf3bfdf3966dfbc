//! The 6 x 16 register tiles of [`super`] on AVX2 and FMA.

use std::arch::x86_64::*;

use super::{Act, Epi, Start, NR};

/// One `R x 16` register tile over `kc` steps: 2·R accumulators, two weight loads and R
/// broadcasts (one from each of `R` rows of `x`, `lda` apart) per step; then written into
/// `out` as `epi` says (vector operations for a whole panel).
///
/// # Safety
/// AVX2 and FMA must be available; `a` must point to `R` readable rows `lda` apart of `kc`
/// values each, `b` hold `kc * NR` values, and `out` `R` writable rows `ldc` apart of `cols`
/// values each (a bias in `epi` `cols` values).
#[target_feature(enable = "avx2,fma")]
#[allow(clippy::too_many_arguments)]
pub unsafe fn tile<const R: usize>(
    a: *const f32,
    lda: usize,
    b: &[f32],
    kc: usize,
    out: *mut f32,
    ldc: usize,
    cols: usize,
    epi: Epi,
) {
    let b = b.as_ptr();
    let rows: [*const f32; R] = std::array::from_fn(|r| a.wrapping_add(r * lda));
    let mut c0 = [_mm256_setzero_ps(); R];
    let mut c1 = [_mm256_setzero_ps(); R];
    // Two steps per iteration (fewer loop instructions between the FMAs), then the odd one.
    let step = |p: usize, c0: &mut [__m256; R], c1: &mut [__m256; R]| {
        // SAFETY: `p < kc`, `r < R`: inside the rows of `a` and `b` by the caller's contract.
        unsafe {
            // The weight arrives from memory for a single text: ask for it 8 steps ahead
            // (prefetches past the end of the panel are hints, never faults).
            _mm_prefetch::<_MM_HINT_T0>(b.wrapping_add((p + 8) * NR) as *const i8);
            let b0 = _mm256_loadu_ps(b.add(p * NR));
            let b1 = _mm256_loadu_ps(b.add(p * NR + 8));
            for r in 0..R {
                let av = _mm256_broadcast_ss(&*rows[r].add(p));
                c0[r] = _mm256_fmadd_ps(av, b0, c0[r]);
                c1[r] = _mm256_fmadd_ps(av, b1, c1[r]);
            }
        }
    };
    let mut p = 0;
    while p + 2 <= kc {
        step(p, &mut c0, &mut c1);
        step(p + 1, &mut c0, &mut c1);
        p += 2;
    }
    if p < kc {
        step(p, &mut c0, &mut c1);
    }
    // SAFETY: the caller's contract on `out` and the bias.
    unsafe { finish_tile(&c0, &c1, out, ldc, cols, epi) };
}

/// One `R x 16` tile of an implicit-GEMM convolution (see `super::conv_tile`): the taps
/// step through the kernel's rows and columns, and pixel `r`'s values of a tap lie `offs[r]`
/// past the tap's place in the picture, so nothing is packed on the input side.
///
/// # Safety
/// AVX2 and FMA must be available; `offs` must hold `R` offsets, `a` and `b` every value read
/// (the caller bounds them), and `out` `R` writable rows `ldc` apart of `cols` values each.
#[target_feature(enable = "avx2,fma")]
#[allow(clippy::too_many_arguments)]
pub unsafe fn conv_tile<const R: usize>(
    a: &[f32],
    offs: &[usize],
    width: usize,
    c: usize,
    kh: usize,
    kw: usize,
    b: &[f32],
    out: *mut f32,
    ldc: usize,
    cols: usize,
    epi: Epi,
) {
    let px: [*const f32; R] = std::array::from_fn(|r| a.as_ptr().wrapping_add(offs[r]));
    let b = b.as_ptr();
    let mut c0 = [_mm256_setzero_ps(); R];
    let mut c1 = [_mm256_setzero_ps(); R];
    let mut p = 0;
    for ky in 0..kh {
        for kx in 0..kw {
            // SAFETY: the tap's values for the `R` pixels and `c` channels, and its weight
            // rows, lie inside `a` and `b` (the caller's contract).
            unsafe {
                let tap = (ky * width + kx) * c;
                for ci in 0..c {
                    let b0 = _mm256_loadu_ps(b.add(p * NR));
                    let b1 = _mm256_loadu_ps(b.add(p * NR + 8));
                    for r in 0..R {
                        let av = _mm256_broadcast_ss(&*px[r].add(tap + ci));
                        c0[r] = _mm256_fmadd_ps(av, b0, c0[r]);
                        c1[r] = _mm256_fmadd_ps(av, b1, c1[r]);
                    }
                    p += 1;
                }
            }
        }
    }
    // SAFETY: the caller's contract on `out` (and on the bias in `epi`).
    unsafe { finish_tile(&c0, &c1, out, ldc, cols, epi) };
}

/// Writes the accumulators into the `R x cols` output tile as `epi` says (vector operations for
/// a whole panel).
///
/// # Safety
/// AVX2 must be available; `out` must hold `R` writable rows `ldc` apart of `cols` values, and
/// a bias in `epi` `cols` values.
#[target_feature(enable = "avx2,fma")]
unsafe fn finish_tile<const R: usize>(
    c0: &[__m256; R],
    c1: &[__m256; R],
    out: *mut f32,
    ldc: usize,
    cols: usize,
    epi: Epi,
) {
    for r in 0..R {
        // SAFETY: row `r` of the output tile holds `cols` values, a bias `cols` (the caller's
        // contract).
        unsafe {
            let row = out.add(r * ldc);
            if cols == NR && epi.act != Act::GeluErf {
                let (v0, v1) = match epi.start {
                    Start::Old => {
                        (_mm256_add_ps(_mm256_loadu_ps(row), c0[r]), _mm256_add_ps(_mm256_loadu_ps(row.add(8)), c1[r]))
                    }
                    Start::Zero => (c0[r], c1[r]),
                    Start::Bias(b) => {
                        (_mm256_add_ps(c0[r], _mm256_loadu_ps(b)), _mm256_add_ps(c1[r], _mm256_loadu_ps(b.add(8))))
                    }
                };
                let (v0, v1) = if epi.act == Act::Relu {
                    (_mm256_max_ps(v0, _mm256_setzero_ps()), _mm256_max_ps(v1, _mm256_setzero_ps()))
                } else {
                    (v0, v1)
                };
                _mm256_storeu_ps(row, v0);
                _mm256_storeu_ps(row.add(8), v1);
            } else {
                let mut t = [0.0f32; NR];
                _mm256_storeu_ps(t.as_mut_ptr(), c0[r]);
                _mm256_storeu_ps(t.as_mut_ptr().add(8), c1[r]);
                for (c, v) in t.iter().enumerate().take(cols) {
                    *row.add(c) = epi.apply(*row.add(c), *v, c);
                }
            }
        }
    }
}
