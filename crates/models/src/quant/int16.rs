//! Products of quantized weights with activations rounded to 16 bits per block of 32 (scale
//! `d = max|x| / 32767`, so each value is within 1/65534 of its block's largest): integer
//! multiply-adds (`pmaddwd`, 16 per instruction) instead of float FMAs (8), with a precision
//! 256× finer than llama.cpp's 8-bit activations. The integer part is exact, so every
//! instruction set, tile size and batch gives the same bits for a row.
//!
//! For weight row `j` and activation row `i`, each block `b` adds, in block order and in this
//! order, `Σq·(dw·dx)` and `m·s` to one float with fused multiply-adds: `Σq` is the exact
//! integer sum of the block's products, `dw`, `dx` the scales, `m` the weight term added per
//! unit of activation (Q4_1: its minimum; Q4_0: `−8·dw`; Q8_0: none) and `s` the activation
//! block's exact float sum. Weights are in [`layout`]'s tiles: each activation pair is broadcast
//! to 16 weight rows at once.

use super::layout::{self, TILE};
use super::{Bits, Format, Out, BLOCK};

/// 16-bit values in 64-byte blocks, so that no load straddles two cache lines.
#[derive(Default)]
struct Aligned(Vec<Block>);

#[derive(Clone, Copy)]
#[repr(C, align(64))]
struct Block([i16; BLOCK]);

impl std::ops::Deref for Aligned {
    type Target = [i16];
    fn deref(&self) -> &[i16] {
        // SAFETY: `Block` is 32 `i16` with no padding (64 bytes, aligned to 64).
        unsafe { std::slice::from_raw_parts(self.0.as_ptr() as *const i16, self.0.len() * BLOCK) }
    }
}

impl std::ops::DerefMut for Aligned {
    fn deref_mut(&mut self) -> &mut [i16] {
        // SAFETY: as in `deref`.
        unsafe { std::slice::from_raw_parts_mut(self.0.as_mut_ptr() as *mut i16, self.0.len() * BLOCK) }
    }
}

/// Activation rows as 16-bit blocks: per block a scale `d` and the exact sum `s` of its values.
#[derive(Default)]
pub struct Acts {
    pub n: usize,
    pub nb: usize,
    q: Aligned,
    d: Vec<f32>,
    s: Vec<f32>,
}

impl Acts {
    /// The rounded values of row `i`.
    #[cfg(test)]
    pub fn values(&self, i: usize) -> Vec<i16> {
        self.q[i * self.nb * BLOCK..(i + 1) * self.nb * BLOCK].to_vec()
    }

    /// Quantizes `x` (`n × cols`, `cols` a multiple of 32).
    pub fn quantize(x: &[f32], n: usize, cols: usize) -> Self {
        let nb = cols / BLOCK;
        let mut a =
            Acts { n, nb, q: Aligned(vec![Block([0; BLOCK]); n * nb]), d: vec![0.0; n * nb], s: vec![0.0; n * nb] };
        for (j, (xb, qb)) in x.chunks_exact(BLOCK).zip(a.q.chunks_exact_mut(BLOCK)).enumerate().take(n * nb) {
            let (amax, sum) = super::block_stats(xb);
            let d = amax / 32767.0;
            let id = if d > 0.0 { 1.0 / d } else { 0.0 };
            round_block(xb, id, qb);
            a.d[j] = d;
            a.s[j] = sum;
        }
        a
    }
}

/// `q = round(x · id)` to the nearest integer, ties to even (what the CPU's conversion does), in
/// `[-32767, 32767]` because `|x · id| ≤ 32767` by construction.
fn round_block(x: &[f32], id: f32, q: &mut [i16]) {
    #[cfg(target_arch = "x86_64")]
    if super::avx2::available() {
        // SAFETY: the CPU has AVX2 (checked above); both slices hold one block.
        unsafe { simd::round_block(x, id, q) };
        return;
    }
    for (q, v) in q.iter_mut().zip(x) {
        *q = (v * id).round_ties_even() as i16;
    }
}

/// The products of weight tiles `tiles` (packed by [`layout::pack`], `nb` blocks per row) with
/// every activation row, written to `out`.
///
/// # Safety
/// `out.ptr` must be valid for writes of `acts.n` rows of `out.stride ≥ out.rows` floats, and
/// no other thread may write the columns of these tiles meanwhile.
pub unsafe fn dot_tiles(format: Format, packed: &[u8], tiles: std::ops::Range<usize>, acts: &Acts, out: &Out) {
    assert!(tiles.end * acts.nb * layout::tile_block_bytes(format) <= packed.len());
    assert!(tiles.end * TILE < out.rows + TILE && out.rows <= out.stride);
    #[cfg(target_arch = "x86_64")]
    if super::avx2::available() {
        // SAFETY: the CPU has the features (checked above) and the bounds were asserted.
        unsafe { simd::dot_tiles(format, packed, tiles, acts, out) };
        return;
    }
    unsafe { portable(format, packed, tiles, acts, out) }
}

/// The same sums in the same order without SIMD (and the reference the SIMD path must equal).
///
/// # Safety
/// As [`dot_tiles`].
pub unsafe fn portable(format: Format, packed: &[u8], tiles: std::ops::Range<usize>, acts: &Acts, out: &Out) {
    let nb = acts.nb;
    for r in tiles.start * TILE..(tiles.end * TILE).min(out.rows) {
        let blocks: Vec<_> = (0..nb).map(|b| layout::read_block(format, Bits::Sixteen, packed, nb, r, b)).collect();
        for i in 0..acts.n {
            let mut acc = 0.0f32;
            for (b, (dw, m, q)) in blocks.iter().enumerate() {
                let x = &acts.q[(i * nb + b) * BLOCK..(i * nb + b + 1) * BLOCK];
                let sum: i32 = q.iter().zip(x).map(|(q, x)| q * *x as i32).sum();
                acc = (sum as f32).mul_add(dw * acts.d[i * nb + b], acc);
                if format != Format::Q8_0 {
                    acc = m.mul_add(acts.s[i * nb + b], acc);
                }
            }
            // SAFETY: row `i`, column `r < rows ≤ stride`, inside `out` by the contract.
            unsafe { *out.ptr.add(i * out.stride + r) = acc };
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod simd {
    use std::arch::x86_64::*;

    use super::{Acts, Format, Out, BLOCK};
    use crate::quant::layout::{self, TILE};

    const Q4_0: u8 = 0;
    const Q4_1: u8 = 1;
    const Q8_0: u8 = 2;
    /// Most activation rows multiplied per unpacked pair row.
    const ROWS: usize = 8;

    #[target_feature(enable = "avx2,fma,f16c")]
    pub unsafe fn round_block(x: &[f32], id: f32, q: &mut [i16]) {
        assert!(x.len() == BLOCK && q.len() == BLOCK);
        let s = _mm256_set1_ps(id);
        let v = |j: usize| _mm256_cvtps_epi32(_mm256_mul_ps(_mm256_loadu_ps(x.as_ptr().add(j)), s));
        // packs interleaves 128-bit lanes; the permute puts the 16 values back in order.
        let lo = _mm256_permute4x64_epi64::<0b11_01_10_00>(_mm256_packs_epi32(v(0), v(8)));
        let hi = _mm256_permute4x64_epi64::<0b11_01_10_00>(_mm256_packs_epi32(v(16), v(24)));
        _mm256_storeu_si256(q.as_mut_ptr() as *mut __m256i, lo);
        _mm256_storeu_si256(q.as_mut_ptr().add(16) as *mut __m256i, hi);
    }

    /// Whether the CPU fuses a multiply-add and the sum it goes into (`vpdpwssd`, AVX-512 VNNI
    /// on 256-bit vectors, which also brings 32 vector registers). The integer results are the
    /// same either way, so the choice is only about speed. `AISERVE_NO_VNNI=1` turns it off.
    fn vnni() -> bool {
        static VNNI: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
        *VNNI.get_or_init(|| {
            std::env::var_os("AISERVE_NO_VNNI").is_none()
                && std::arch::is_x86_feature_detected!("avx512vnni")
                && std::arch::is_x86_feature_detected!("avx512vl")
        })
    }

    #[target_feature(enable = "avx2,fma,f16c")]
    pub unsafe fn dot_tiles(format: Format, packed: &[u8], tiles: std::ops::Range<usize>, acts: &Acts, out: &Out) {
        if vnni() {
            return dot_tiles_vnni(format, packed, tiles, acts, out);
        }
        match format {
            Format::Q4_0 => tiles_of::<Q4_0, false>(packed, tiles, acts, out),
            Format::Q4_1 => tiles_of::<Q4_1, false>(packed, tiles, acts, out),
            Format::Q8_0 => tiles_of::<Q8_0, false>(packed, tiles, acts, out),
        }
    }

    #[target_feature(enable = "avx2,fma,f16c,avx512vnni,avx512vl")]
    unsafe fn dot_tiles_vnni(format: Format, packed: &[u8], tiles: std::ops::Range<usize>, acts: &Acts, out: &Out) {
        match format {
            Format::Q4_0 => tiles_of::<Q4_0, true>(packed, tiles, acts, out),
            Format::Q4_1 => tiles_of::<Q4_1, true>(packed, tiles, acts, out),
            Format::Q8_0 => tiles_of::<Q8_0, true>(packed, tiles, acts, out),
        }
    }

    /// The format a kernel's constant stands for.
    const fn format(f: u8) -> Format {
        match f {
            Q4_0 => Format::Q4_0,
            Q4_1 => Format::Q4_1,
            _ => Format::Q8_0,
        }
    }

    /// Inlined into the entry points, which carry the target features.
    #[inline(always)]
    unsafe fn tiles_of<const F: u8, const VNNI: bool>(
        packed: &[u8],
        tiles: std::ops::Range<usize>,
        acts: &Acts,
        out: &Out,
    ) {
        let tile_bytes = acts.nb * layout::tile_block_bytes(format(F));
        for t in tiles {
            let tile = packed.as_ptr().add(t * tile_bytes);
            let mut i = 0;
            while i < acts.n {
                let take = (acts.n - i).min(ROWS);
                // Few rows: several independent chains per row keep the multipliers busy.
                let o = match take {
                    1 => rows::<F, VNNI, 1, 4>(tile, acts, i),
                    2 => rows::<F, VNNI, 2, 2>(tile, acts, i),
                    3 => rows::<F, VNNI, 3, 1>(tile, acts, i),
                    4 => rows::<F, VNNI, 4, 1>(tile, acts, i),
                    5 => rows::<F, VNNI, 5, 1>(tile, acts, i),
                    6 => rows::<F, VNNI, 6, 1>(tile, acts, i),
                    7 => rows::<F, VNNI, 7, 1>(tile, acts, i),
                    _ => rows::<F, VNNI, ROWS, 1>(tile, acts, i),
                };
                let valid = (out.rows - t * TILE).min(TILE);
                for (k, o) in o[..take].iter().enumerate() {
                    let dst = out.ptr.add((i + k) * out.stride + t * TILE);
                    if valid == TILE {
                        _mm256_storeu_ps(dst, o[0]);
                        _mm256_storeu_ps(dst.add(8), o[1]);
                    } else {
                        let mut all = [0.0f32; TILE];
                        _mm256_storeu_ps(all.as_mut_ptr(), o[0]);
                        _mm256_storeu_ps(all.as_mut_ptr().add(8), o[1]);
                        std::ptr::copy_nonoverlapping(all.as_ptr(), dst, valid);
                    }
                }
                i += take;
            }
        }
    }

    /// One tile (16 weight rows) times activation rows `i0..i0 + R`, each row's integer sums
    /// split over `K` chains: per row, the 16 outputs in two vectors of 8.
    // `h` picks the half of the header, the payload and the accumulators alike.
    #[allow(clippy::needless_range_loop)]
    #[inline(always)]
    unsafe fn rows<const F: u8, const VNNI: bool, const R: usize, const K: usize>(
        tile: *const u8,
        acts: &Acts,
        i0: usize,
    ) -> [[__m256; 2]; ROWS] {
        let nb = acts.nb;
        let mut acc = [[_mm256_setzero_ps(); 2]; ROWS];
        for b in 0..nb {
            let blk = tile.add(b * layout::tile_block_bytes(format(F)));
            let payload = blk.add(layout::header(format(F)));
            if i0 == 0 {
                crate::quant::avx2::prefetch(blk, layout::tile_block_bytes(format(F)));
            }
            // Both halves (rows 0..8 and 8..16 of the tile) at once: each broadcast activation
            // pair feeds two multiply-adds, and 2R chains of sums run side by side.
            let mut sums = [[[_mm256_setzero_si256(); K]; 2]; R];
            for c in 0..8 {
                // Pair rows c and c + 8 of both halves.
                let mut w = [[_mm256_setzero_si256(); 2]; 2];
                for (h, w) in w.iter_mut().enumerate() {
                    *w = if F == Q8_0 {
                        let at = |r: usize| {
                            _mm256_cvtepi8_epi16(_mm_loadu_si128(payload.add(32 * r + 16 * h) as *const __m128i))
                        };
                        [at(c), at(c + 8)]
                    } else {
                        let q = _mm256_cvtepu8_epi16(_mm_loadu_si128(payload.add(32 * c + 16 * h) as *const __m128i));
                        [_mm256_and_si256(q, _mm256_set1_epi16(0x0F)), _mm256_srli_epi16::<4>(q)]
                    };
                }
                for (k, s) in sums.iter_mut().enumerate() {
                    let x = acts.q.as_ptr().add(((i0 + k) * nb + b) * BLOCK) as *const i32;
                    let (xa, xb) = (_mm256_set1_epi32(*x.add(c)), _mm256_set1_epi32(*x.add(c + 8)));
                    for (s, w) in s.iter_mut().zip(&w) {
                        s[(2 * c) % K] = dot(s[(2 * c) % K], w[0], xa, VNNI);
                        s[(2 * c + 1) % K] = dot(s[(2 * c + 1) % K], w[1], xb, VNNI);
                    }
                }
            }
            for h in 0..2 {
                // Rows 8h..8h + 8 of the tile: scales, and the term per unit of activation.
                let dw = _mm256_cvtph_ps(_mm_loadu_si128(blk.add(16 * h) as *const __m128i));
                let m = match F {
                    Q4_1 => _mm256_cvtph_ps(_mm_loadu_si128(blk.add(2 * TILE + 16 * h) as *const __m128i)),
                    Q4_0 => _mm256_mul_ps(dw, _mm256_set1_ps(-8.0)),
                    _ => dw,
                };
                for (k, s) in sums.iter().enumerate() {
                    let s = &s[h];
                    let j = (i0 + k) * nb + b;
                    let sum = match K {
                        4 => _mm256_add_epi32(_mm256_add_epi32(s[0], s[1 % K]), _mm256_add_epi32(s[2 % K], s[3 % K])),
                        2 => _mm256_add_epi32(s[0], s[1 % K]),
                        _ => s[0],
                    };
                    let scale = _mm256_mul_ps(dw, _mm256_set1_ps(*acts.d.get_unchecked(j)));
                    let mut a = _mm256_fmadd_ps(_mm256_cvtepi32_ps(sum), scale, acc[k][h]);
                    if F != Q8_0 {
                        a = _mm256_fmadd_ps(m, _mm256_set1_ps(*acts.s.get_unchecked(j)), a);
                    }
                    acc[k][h] = a;
                }
            }
        }
        acc
    }

    /// `acc + Σ` of the pairwise products of `w` and `x` in each 32-bit lane (exact).
    #[inline(always)]
    unsafe fn dot(acc: __m256i, w: __m256i, x: __m256i, vnni: bool) -> __m256i {
        if vnni {
            _mm256_dpwssd_epi32(acc, w, x)
        } else {
            _mm256_add_epi32(acc, _mm256_madd_epi16(w, x))
        }
    }
}
