//! AVX2 block kernels (with FMA, and F16C for the scales), chosen at run time.
//!
//! One weight block is unpacked once into 32 floats (`d·q + m`, four vectors) and multiplied
//! into up to [`TILE`] activation rows. Each row sums a block as `(w0·x0 + w1·x1) + (w2·x2 +
//! w3·x3)` and adds that to one accumulator: the same operations in the same order whatever the
//! tile size, so a row gets bit-identical results alone or batched with others, and the
//! accumulator chain is one add per block, short enough for a single row to run at memory speed.

use super::{Format, BLOCK};

/// Most activation rows multiplied per unpacked weight block.
const TILE: usize = 8;

/// Bytes of activation rows one tile may read per weight row: they must stay in L1 while the
/// weight rows stream past (8 rows of a 1536-wide down projection would not).
const TILE_BYTES: usize = 24 * 1024;

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
pub use imp::{dot_rows, dot_rows_f32};

#[cfg(not(target_arch = "x86_64"))]
pub unsafe fn dot_rows(_: Format, _: &[u8], _: usize, _: std::ops::Range<usize>, _: &[f32], _: usize, _: &mut [f32]) {
    unreachable!("avx2 kernels exist on x86_64 only")
}

#[cfg(not(target_arch = "x86_64"))]
pub unsafe fn dot_rows_f32(_: &[f32], _: usize, _: std::ops::Range<usize>, _: &[f32], _: usize, _: &mut [f32]) {
    unreachable!("avx2 kernels exist on x86_64 only")
}

#[cfg(target_arch = "x86_64")]
mod imp {
    use std::arch::x86_64::*;

    use super::{Format, BLOCK, TILE, TILE_BYTES};

    const Q4_0: u8 = 0;
    const Q4_1: u8 = 1;
    const Q8_0: u8 = 2;
    /// Plain f32 weights (a block is 32 floats), for checkpoints stored unquantized.
    const F32: u8 = 3;

    /// `out_t[(r - rows.start) * n + i]` = weight row `r` · row `i` of `x` (`n × cols`).
    ///
    /// # Safety
    /// The CPU must support AVX2, FMA and F16C (see [`super::available`]).
    #[target_feature(enable = "avx2,fma,f16c")]
    pub unsafe fn dot_rows(
        format: Format,
        bytes: &[u8],
        cols: usize,
        rows: std::ops::Range<usize>,
        x: &[f32],
        n: usize,
        out_t: &mut [f32],
    ) {
        match format {
            Format::Q4_0 => rows_of::<Q4_0>(bytes, cols, rows, x, n, out_t),
            Format::Q4_1 => rows_of::<Q4_1>(bytes, cols, rows, x, n, out_t),
            Format::Q8_0 => rows_of::<Q8_0>(bytes, cols, rows, x, n, out_t),
        }
    }

    /// The same for an f32 matrix (`cols` a multiple of 32).
    ///
    /// # Safety
    /// As [`dot_rows`].
    #[target_feature(enable = "avx2,fma,f16c")]
    pub unsafe fn dot_rows_f32(
        w: &[f32],
        cols: usize,
        rows: std::ops::Range<usize>,
        x: &[f32],
        n: usize,
        out_t: &mut [f32],
    ) {
        let bytes = std::slice::from_raw_parts(w.as_ptr() as *const u8, std::mem::size_of_val(w));
        rows_of::<F32>(bytes, cols, rows, x, n, out_t)
    }

    const fn block_bytes(f: u8) -> usize {
        match f {
            Q4_0 => Format::Q4_0.block_bytes(),
            Q4_1 => Format::Q4_1.block_bytes(),
            Q8_0 => Format::Q8_0.block_bytes(),
            _ => 4 * BLOCK,
        }
    }

    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn rows_of<const F: u8>(
        bytes: &[u8],
        cols: usize,
        rows: std::ops::Range<usize>,
        x: &[f32],
        n: usize,
        out_t: &mut [f32],
    ) {
        let nb = cols / BLOCK;
        let row_bytes = nb * block_bytes(F);
        // The bounds every raw read below stays within.
        assert!(
            cols % BLOCK == 0
                && rows.end * row_bytes <= bytes.len()
                && x.len() >= n * cols
                && out_t.len() >= rows.len() * n
        );
        let tile_rows = (TILE_BYTES / (cols * 4)).clamp(1, TILE);
        for (k, r) in rows.enumerate() {
            let row = bytes.as_ptr().add(r * row_bytes);
            let out = &mut out_t[k * n..(k + 1) * n];
            let mut i = 0;
            while i < n {
                let take = (n - i).min(tile_rows);
                let xs = x.as_ptr().add(i * cols);
                match take {
                    1 => out[i] = tile::<F, 1>(row, nb, xs, cols)[0],
                    2 => out[i..i + 2].copy_from_slice(&tile::<F, 2>(row, nb, xs, cols)),
                    3 => out[i..i + 3].copy_from_slice(&tile::<F, 3>(row, nb, xs, cols)),
                    4 => out[i..i + 4].copy_from_slice(&tile::<F, 4>(row, nb, xs, cols)),
                    5 => out[i..i + 5].copy_from_slice(&tile::<F, 5>(row, nb, xs, cols)),
                    6 => out[i..i + 6].copy_from_slice(&tile::<F, 6>(row, nb, xs, cols)),
                    7 => out[i..i + 7].copy_from_slice(&tile::<F, 7>(row, nb, xs, cols)),
                    _ => out[i..i + TILE].copy_from_slice(&tile::<F, TILE>(row, nb, xs, cols)),
                }
                i += take;
            }
        }
    }

    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn f16_at(p: *const u8) -> f32 {
        _mm_cvtss_f32(_mm_cvtph_ps(_mm_cvtsi32_si128(u16::from_le_bytes(*(p as *const [u8; 2])) as i32)))
    }

    /// The block's 32 weights as floats, in four vectors of eight.
    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn unpack<const F: u8>(blk: *const u8) -> [__m256; 4] {
        if F == F32 {
            let p = blk as *const f32;
            return [
                _mm256_loadu_ps(p),
                _mm256_loadu_ps(p.add(8)),
                _mm256_loadu_ps(p.add(16)),
                _mm256_loadu_ps(p.add(24)),
            ];
        }
        let d = _mm256_set1_ps(f16_at(blk));
        if F == Q8_0 {
            let q = blk.add(2);
            let v = |o: usize| _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_loadl_epi64(q.add(o) as *const __m128i)));
            return [_mm256_mul_ps(v(0), d), _mm256_mul_ps(v(8), d), _mm256_mul_ps(v(16), d), _mm256_mul_ps(v(24), d)];
        }
        let (m, qs) = if F == Q4_1 {
            (_mm256_set1_ps(f16_at(blk.add(2))), blk.add(4))
        } else {
            (_mm256_mul_ps(d, _mm256_set1_ps(-8.0)), blk.add(2))
        };
        let q = _mm_loadu_si128(qs as *const __m128i);
        let lo = _mm_and_si128(q, _mm_set1_epi8(0x0F));
        let hi = _mm_and_si128(_mm_srli_epi16::<4>(q), _mm_set1_epi8(0x0F));
        let v = |b: __m128i| _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(b));
        [
            _mm256_fmadd_ps(v(lo), d, m),
            _mm256_fmadd_ps(v(_mm_srli_si128::<8>(lo)), d, m),
            _mm256_fmadd_ps(v(hi), d, m),
            _mm256_fmadd_ps(v(_mm_srli_si128::<8>(hi)), d, m),
        ]
    }

    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn tile<const F: u8, const R: usize>(row: *const u8, nb: usize, x: *const f32, cols: usize) -> [f32; R] {
        let bb = block_bytes(F);
        let mut acc = [_mm256_setzero_ps(); R];
        for b in 0..nb {
            let w = unpack::<F>(row.add(b * bb));
            for (k, a) in acc.iter_mut().enumerate() {
                let xb = x.add(k * cols + b * BLOCK);
                let p = _mm256_fmadd_ps(w[1], _mm256_loadu_ps(xb.add(8)), _mm256_mul_ps(w[0], _mm256_loadu_ps(xb)));
                let q = _mm256_fmadd_ps(
                    w[3],
                    _mm256_loadu_ps(xb.add(24)),
                    _mm256_mul_ps(w[2], _mm256_loadu_ps(xb.add(16))),
                );
                *a = _mm256_add_ps(*a, _mm256_add_ps(p, q));
            }
        }
        let mut out = [0.0f32; R];
        for k in 0..R {
            out[k] = hsum(acc[k]);
        }
        out
    }

    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn hsum(v: __m256) -> f32 {
        let s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps::<1>(v));
        let s = _mm_add_ps(s, _mm_movehl_ps(s, s));
        let s = _mm_add_ss(s, _mm_movehdup_ps(s));
        _mm_cvtss_f32(s)
    }
}
