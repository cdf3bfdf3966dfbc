//! The register tiles of [`super`] on AVX-512: up to 12 rows by 32 columns (two panels side by
//! side).

use std::arch::x86_64::*;

use aiserve_core::math::{ERF_P, ERF_Q};

use super::{Act, Epi, Start, NR};

/// One `R x (16 P)` register tile over `kc` steps, `P` panels side by side: R·P accumulators,
/// P weight loads and R broadcasts (one from each of `R` rows of `x`, `lda` apart) per step;
/// then written into `out` as `epi` says (masked past `cols`).
///
/// # Safety
/// AVX-512F must be available; `a` must point to `R` readable rows `lda` apart of `kc` values
/// each, each of the first `P` pointers in `b` to `kc * NR` values, and `out` to `R` writable
/// rows `ldc` apart of `cols` values each (a bias in `epi` to `cols` values).
#[target_feature(enable = "avx512f")]
#[allow(clippy::too_many_arguments)]
pub unsafe fn tile<const R: usize, const P: usize>(
    a: *const f32,
    lda: usize,
    b: [*const f32; 2],
    kc: usize,
    out: *mut f32,
    ldc: usize,
    cols: usize,
    epi: Epi,
) {
    let rows: [*const f32; R] = std::array::from_fn(|r| a.wrapping_add(r * lda));
    let mut acc = [[_mm512_setzero_ps(); P]; R];
    for p in 0..kc {
        // SAFETY: `p < kc`, `r < R`: inside the rows of `a` and the `P` panel blocks (the
        // caller's contract); prefetches past a block's end are hints, never faults.
        unsafe {
            let mut w = [_mm512_setzero_ps(); P];
            for (j, w) in w.iter_mut().enumerate() {
                _mm_prefetch::<_MM_HINT_T0>(b[j].wrapping_add((p + 8) * NR) as *const i8);
                *w = _mm512_loadu_ps(b[j].add(p * NR));
            }
            for (r, acc) in acc.iter_mut().enumerate() {
                let av = _mm512_set1_ps(*rows[r].add(p));
                for (acc, w) in acc.iter_mut().zip(&w) {
                    *acc = _mm512_fmadd_ps(av, *w, *acc);
                }
            }
        }
    }
    // SAFETY: the caller's contract on `out` and the bias.
    unsafe { finish_tile(&acc, out, ldc, cols, epi) };
}

/// One `R x (16 P)` tile of an implicit-GEMM convolution (see `super::conv_tile`): the taps
/// step through the kernel's rows and columns; pixel `r`'s values of a tap lie `offs[r]` past
/// the tap's place in the picture.
///
/// # Safety
/// AVX-512F must be available; `offs` must hold `R` offsets, `a` and the first `P` panels in
/// `b` every value read (the caller bounds them), and `out` `R` writable rows `ldc` apart of
/// `cols` values.
#[target_feature(enable = "avx512f")]
#[allow(clippy::too_many_arguments)]
pub unsafe fn conv_tile<const R: usize, const P: usize>(
    a: &[f32],
    offs: &[usize],
    width: usize,
    c: usize,
    kh: usize,
    kw: usize,
    b: [*const f32; 2],
    out: *mut f32,
    ldc: usize,
    cols: usize,
    epi: Epi,
) {
    let px: [*const f32; R] = std::array::from_fn(|r| a.as_ptr().wrapping_add(offs[r]));
    let mut acc = [[_mm512_setzero_ps(); P]; R];
    let mut p = 0;
    for ky in 0..kh {
        for kx in 0..kw {
            // SAFETY: the tap's values for the `R` pixels and `c` channels, and its weight
            // rows, lie inside `a` and `b` (the caller's contract).
            unsafe {
                let tap = (ky * width + kx) * c;
                for ci in 0..c {
                    let mut w = [_mm512_setzero_ps(); P];
                    for (j, w) in w.iter_mut().enumerate() {
                        *w = _mm512_loadu_ps(b[j].add(p * NR));
                    }
                    for (r, acc) in acc.iter_mut().enumerate() {
                        let av = _mm512_set1_ps(*px[r].add(tap + ci));
                        for (acc, w) in acc.iter_mut().zip(&w) {
                            *acc = _mm512_fmadd_ps(av, *w, *acc);
                        }
                    }
                    p += 1;
                }
            }
        }
    }
    // SAFETY: the caller's contract on `out` (and on the bias in `epi`).
    unsafe { finish_tile(&acc, out, ldc, cols, epi) };
}

/// Writes the accumulators into the `R x cols` output tile as `epi` says, masking the columns
/// past `cols`.
///
/// # Safety
/// AVX-512F must be available; `out` must hold `R` writable rows `ldc` apart of `cols` values,
/// and a bias in `epi` `cols` values.
#[inline(always)]
unsafe fn finish_tile<const R: usize, const P: usize>(
    acc: &[[__m512; P]; R],
    out: *mut f32,
    ldc: usize,
    cols: usize,
    epi: Epi,
) {
    // One straight-line body for every epilogue (masks, not branches, choose what is added
    // and whether ReLU clamps), so that the tiles inline it and keep their accumulators in
    // registers: a `match` per value made it large enough to stay a call, and every tile then
    // zeroed a stack copy of the accumulators (1.8% of an encode).
    let (src, src_ldc, adds) = match epi.start {
        Start::Old => (out as *const f32, ldc, true),
        Start::Zero => (out as *const f32, 0, false),
        Start::Bias(bias) => (bias, 0, true),
    };
    let relu: __mmask16 = if epi.act == Act::Relu { u16::MAX } else { 0 };
    for (r, acc) in acc.iter().enumerate() {
        for (j, v) in acc.iter().enumerate() {
            let left = cols.saturating_sub(j * NR).min(NR);
            let mask: __mmask16 = if left == NR { u16::MAX } else { (1u16 << left) - 1 };
            let add = if adds { mask } else { 0 };
            // SAFETY: the masked lanes are the row's columns `j * NR..cols` of the output, or
            // of the bias (the caller's contract); masked-off lanes are neither read nor written.
            unsafe {
                let at = out.add(r * ldc + j * NR);
                let start = _mm512_maskz_loadu_ps(add, src.add(r * src_ldc + j * NR));
                let value = _mm512_mask_add_ps(*v, add, *v, start);
                let value = _mm512_mask_max_ps(value, relu, value, _mm512_setzero_ps());
                _mm512_mask_storeu_ps(at, mask, value);
            }
        }
    }
    if epi.act == Act::GeluErf {
        // SAFETY: the same tile (the caller's contract).
        unsafe { gelu_tile(out, R, ldc, cols) };
    }
}

/// GELU over an `rows x cols` tile of `out` just written: a call of its own, so that the
/// tiles' code stays small enough to keep their accumulators in registers (with the GELU
/// inlined, every tile zeroed a stack copy of them first: 1.8% of an encode).
///
/// # Safety
/// AVX-512F must be available; `out` must hold `rows` writable rows `ldc` apart of `cols`
/// values.
#[inline(never)]
#[target_feature(enable = "avx512f")]
unsafe fn gelu_tile(out: *mut f32, rows: usize, ldc: usize, cols: usize) {
    for r in 0..rows {
        for j in (0..cols).step_by(NR) {
            let left = (cols - j).min(NR);
            let mask: __mmask16 = if left == NR { u16::MAX } else { (1u16 << left) - 1 };
            // SAFETY: the masked lanes are columns `j..j + left` of row `r` (the caller's
            // contract).
            unsafe {
                let at = out.add(r * ldc + j);
                _mm512_mask_storeu_ps(at, mask, gelu_erf(_mm512_maskz_loadu_ps(mask, at)));
            }
        }
    }
}

/// [`aiserve_core::math::gelu_erf`] on 16 lanes: the same operations in the same order, so the
/// same bits (`x.clamp(lo, hi)` is `min(max(x, lo), hi)` for numbers; a NaN stays a NaN
/// through the final product).
#[inline]
#[target_feature(enable = "avx512f")]
pub(super) fn gelu_erf(v: __m512) -> __m512 {
    let x = _mm512_mul_ps(v, _mm512_set1_ps(std::f32::consts::FRAC_1_SQRT_2));
    let x = _mm512_min_ps(_mm512_max_ps(x, _mm512_set1_ps(-4.0)), _mm512_set1_ps(4.0));
    let x2 = _mm512_mul_ps(x, x);
    let mut p = _mm512_set1_ps(ERF_P[0]);
    for c in &ERF_P[1..] {
        p = _mm512_fmadd_ps(p, x2, _mm512_set1_ps(*c));
    }
    let mut q = _mm512_set1_ps(ERF_Q[0]);
    for c in &ERF_Q[1..] {
        q = _mm512_fmadd_ps(q, x2, _mm512_set1_ps(*c));
    }
    let erf = _mm512_div_ps(_mm512_mul_ps(x, p), q);
    _mm512_mul_ps(_mm512_mul_ps(_mm512_set1_ps(0.5), v), _mm512_add_ps(_mm512_set1_ps(1.0), erf))
}
