//! The register tiles of [`super`] on AVX-512: up to 12 rows by 32 columns (two panels side by
//! side).

use std::arch::x86_64::*;

use super::{Epi, NR};

/// One `R x (16 P)` register tile over `kc` steps, `P` panels side by side: R·P accumulators,
/// P weight loads and R broadcasts (one from each of `R` rows of `x`, `lda` apart) per step;
/// then added into `out` (masked past `cols`).
///
/// # Safety
/// AVX-512F must be available; `a` must point to `R` readable rows `lda` apart of `kc` values
/// each, each of the first `P` pointers in `b` to `kc * NR` values, and `out` to `R` writable
/// rows `ldc` apart of `cols` values each.
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
    // SAFETY: the caller's contract on `out`.
    unsafe { finish_tile(&acc, out, ldc, cols, Epi::Add) };
}

/// One `R x (16 P)` tile of an implicit-GEMM convolution (see `super::conv_tile`): the taps
/// step through the kernel's rows and columns, the `R` pixels' values of one tap lie `c`
/// apart in the picture.
///
/// # Safety
/// AVX-512F must be available; `a` and the first `P` panels in `b` must hold every value
/// read (the caller bounds them), and `out` `R` writable rows `ldc` apart of `cols` values.
#[target_feature(enable = "avx512f")]
#[allow(clippy::too_many_arguments)]
pub unsafe fn conv_tile<const R: usize, const P: usize>(
    a: &[f32],
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
    let a = a.as_ptr();
    let mut acc = [[_mm512_setzero_ps(); P]; R];
    let mut p = 0;
    for ky in 0..kh {
        for kx in 0..kw {
            // SAFETY: the tap's values for the `R` pixels and `c` channels, and its weight
            // rows, lie inside `a` and `b` (the caller's contract).
            unsafe {
                let tap = a.add((ky * width + kx) * c);
                for ci in 0..c {
                    let mut w = [_mm512_setzero_ps(); P];
                    for (j, w) in w.iter_mut().enumerate() {
                        *w = _mm512_loadu_ps(b[j].add(p * NR));
                    }
                    for (r, acc) in acc.iter_mut().enumerate() {
                        let av = _mm512_set1_ps(*tap.add(r * c + ci));
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
#[target_feature(enable = "avx512f")]
unsafe fn finish_tile<const R: usize, const P: usize>(
    acc: &[[__m512; P]; R],
    out: *mut f32,
    ldc: usize,
    cols: usize,
    epi: Epi,
) {
    for (r, acc) in acc.iter().enumerate() {
        for (j, v) in acc.iter().enumerate() {
            let left = cols.saturating_sub(j * NR).min(NR);
            let mask: __mmask16 = if left == NR { u16::MAX } else { (1u16 << left) - 1 };
            // SAFETY: the masked lanes are the row's columns `j * NR..cols` (the caller's
            // contract); masked-off lanes are neither read nor written.
            unsafe {
                let at = out.add(r * ldc + j * NR);
                let value = match epi {
                    Epi::Add => _mm512_add_ps(_mm512_maskz_loadu_ps(mask, at), *v),
                    Epi::Store => *v,
                    Epi::BiasRelu(bias) => _mm512_max_ps(
                        _mm512_add_ps(*v, _mm512_maskz_loadu_ps(mask, bias.add(j * NR))),
                        _mm512_setzero_ps(),
                    ),
                };
                _mm512_mask_storeu_ps(at, mask, value);
            }
        }
    }
}
