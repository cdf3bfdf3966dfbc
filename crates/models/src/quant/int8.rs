//! Products of 4-bit weights with activations rounded to 8 bits per block of 32 (scale
//! `d = max|x| / 127`), as llama.cpp does: four byte products per 32-bit lane and instruction
//! (`vpdpbusd`, or `pmaddubsw` + `pmaddwd`), twice the work of the 16-bit path per instruction.
//! The integer part is exact, so every instruction set, tile size and batch gives the same bits
//! for a row.
//!
//! The sums and their order are [`super::int16`]'s: per weight row and activation row, each
//! block adds `Σq·(dw·dx)` and then `m·s` to one float with fused multiply-adds. Weights are in
//! [`layout`]'s quad rows (unsigned 4-bit values, so they are the unsigned operand).

use super::layout::{self, TILE};
use super::{Bits, Format, Out, BLOCK};

#[derive(Clone, Copy)]
#[repr(C, align(32))]
struct Block([i8; BLOCK]);

/// Activation rows as 8-bit blocks: per block a scale `d` and the exact sum `s` of its values.
pub struct Acts {
    pub n: usize,
    pub nb: usize,
    q: Vec<Block>,
    d: Vec<f32>,
    s: Vec<f32>,
}

impl Acts {
    /// The rounded values of row `i`.
    #[cfg(test)]
    pub fn values(&self, i: usize) -> Vec<i8> {
        self.q[i * self.nb..(i + 1) * self.nb].iter().flat_map(|b| b.0).collect()
    }

    /// Quantizes `x` (`n × cols`, `cols` a multiple of 32).
    pub fn quantize(x: &[f32], n: usize, cols: usize) -> Self {
        let nb = cols / BLOCK;
        let mut a = Acts { n, nb, q: vec![Block([0; BLOCK]); n * nb], d: vec![0.0; n * nb], s: vec![0.0; n * nb] };
        for (j, (xb, qb)) in x.chunks_exact(BLOCK).zip(a.q.iter_mut()).enumerate().take(n * nb) {
            let (amax, sum) = super::block_stats(xb);
            let d = amax / 127.0;
            let id = if d > 0.0 { 1.0 / d } else { 0.0 };
            round_block(xb, id, &mut qb.0);
            a.d[j] = d;
            a.s[j] = sum;
        }
        a
    }
}

/// `q = round(x · id)` to the nearest integer, ties to even, in `[-127, 127]` because
/// `|x · id| ≤ 127` by construction.
fn round_block(x: &[f32], id: f32, q: &mut [i8; BLOCK]) {
    #[cfg(target_arch = "x86_64")]
    if super::avx2::available() {
        // SAFETY: the CPU has AVX2 (checked above); `x` holds one block.
        unsafe { simd::round_block(x, id, q) };
        return;
    }
    for (q, v) in q.iter_mut().zip(x) {
        *q = (v * id).round_ties_even() as i8;
    }
}

/// The products of weight tiles `tiles` (4-bit `format`, packed by [`layout::pack`] for 8-bit
/// activations) with every activation row, written to `out`.
///
/// # Safety
/// `out.ptr` must be valid for writes of `acts.n` rows of `out.stride ≥ out.rows` floats, and
/// no other thread may write the columns of these tiles meanwhile.
pub unsafe fn dot_tiles(format: Format, packed: &[u8], tiles: std::ops::Range<usize>, acts: &Acts, out: &Out) {
    assert!(format != Format::Q8_0, "8-bit weights take 16-bit activations");
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
        let blocks: Vec<_> = (0..nb).map(|b| layout::read_block(format, Bits::Eight, packed, nb, r, b)).collect();
        for i in 0..acts.n {
            let mut acc = 0.0f32;
            for (b, (dw, m, q)) in blocks.iter().enumerate() {
                let x = &acts.q[i * nb + b].0;
                let sum: i32 = q.iter().zip(x).map(|(q, x)| q * *x as i32).sum();
                acc = (sum as f32).mul_add(dw * acts.d[i * nb + b], acc);
                acc = m.mul_add(acts.s[i * nb + b], acc);
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
    /// Most activation rows multiplied per unpacked quad row.
    const ROWS: usize = 8;

    #[target_feature(enable = "avx2,fma,f16c")]
    pub unsafe fn round_block(x: &[f32], id: f32, q: &mut [i8; BLOCK]) {
        assert!(x.len() == BLOCK);
        let s = _mm256_set1_ps(id);
        let v = |j: usize| _mm256_cvtps_epi32(_mm256_mul_ps(_mm256_loadu_ps(x.as_ptr().add(j)), s));
        // Two packs interleave 128-bit lanes; the permute puts the 32 values back in order.
        let w = _mm256_packs_epi16(_mm256_packs_epi32(v(0), v(8)), _mm256_packs_epi32(v(16), v(24)));
        let w = _mm256_permutevar8x32_epi32(w, _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7));
        _mm256_storeu_si256(q.as_mut_ptr() as *mut __m256i, w);
    }

    /// Whether the CPU has `vpdpbusd` on 256-bit vectors (AVX-512 VNNI, which also brings 32
    /// vector registers). The integer results are the same either way. `AISERVE_NO_VNNI=1`
    /// turns it off.
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
            _ => tiles_of::<Q4_1, false>(packed, tiles, acts, out),
        }
    }

    #[target_feature(enable = "avx2,fma,f16c,avx512vnni,avx512vl")]
    unsafe fn dot_tiles_vnni(format: Format, packed: &[u8], tiles: std::ops::Range<usize>, acts: &Acts, out: &Out) {
        match format {
            Format::Q4_0 => tiles_of::<Q4_0, true>(packed, tiles, acts, out),
            _ => tiles_of::<Q4_1, true>(packed, tiles, acts, out),
        }
    }

    const fn format(f: u8) -> Format {
        if f == Q4_0 {
            Format::Q4_0
        } else {
            Format::Q4_1
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
        let nibble = _mm256_set1_epi8(0x0F);
        for b in 0..nb {
            let blk = tile.add(b * layout::tile_block_bytes(format(F)));
            let payload = blk.add(layout::header(format(F)));
            if i0 == 0 {
                crate::quant::avx2::prefetch(blk, layout::tile_block_bytes(format(F)));
            }
            // Both halves (rows 0..8 and 8..16 of the tile) at once: each broadcast activation
            // quad feeds two multiply-adds, and 2R chains of sums run side by side.
            let mut sums = [[[_mm256_setzero_si256(); K]; 2]; R];
            for c in 0..4 {
                // Quad rows c and c + 4 of both halves.
                let mut w = [[_mm256_setzero_si256(); 2]; 2];
                for (h, w) in w.iter_mut().enumerate() {
                    let q = _mm256_loadu_si256(payload.add(32 * (4 * h + c)) as *const __m256i);
                    *w = [_mm256_and_si256(q, nibble), _mm256_and_si256(_mm256_srli_epi16::<4>(q), nibble)];
                }
                for (k, s) in sums.iter_mut().enumerate() {
                    let x = acts.q.as_ptr().add((i0 + k) * nb + b) as *const i32;
                    let (xa, xb) = (_mm256_set1_epi32(*x.add(c)), _mm256_set1_epi32(*x.add(c + 4)));
                    for (s, w) in s.iter_mut().zip(&w) {
                        s[(2 * c) % K] = dot(s[(2 * c) % K], w[0], xa, VNNI);
                        s[(2 * c + 1) % K] = dot(s[(2 * c + 1) % K], w[1], xb, VNNI);
                    }
                }
            }
            for h in 0..2 {
                // Rows 8h..8h + 8 of the tile: scales, and the term per unit of activation.
                let dw = _mm256_cvtph_ps(_mm_loadu_si128(blk.add(16 * h) as *const __m128i));
                let m = if F == Q4_1 {
                    _mm256_cvtph_ps(_mm_loadu_si128(blk.add(2 * TILE + 16 * h) as *const __m128i))
                } else {
                    _mm256_mul_ps(dw, _mm256_set1_ps(-8.0))
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
                    let a = _mm256_fmadd_ps(_mm256_cvtepi32_ps(sum), scale, acc[k][h]);
                    acc[k][h] = _mm256_fmadd_ps(m, _mm256_set1_ps(*acts.s.get_unchecked(j)), a);
                }
            }
        }
        acc
    }

    /// `acc + Σ` of the four byte products of `w` (unsigned, < 16) and `x` (signed) in each
    /// 32-bit lane (exact: a pair of products is at most 2·15·127, far inside 16 bits).
    #[inline(always)]
    unsafe fn dot(acc: __m256i, w: __m256i, x: __m256i, vnni: bool) -> __m256i {
        if vnni {
            _mm256_dpbusd_epi32(acc, w, x)
        } else {
            _mm256_add_epi32(acc, _mm256_madd_epi16(_mm256_maddubs_epi16(w, x), _mm256_set1_epi16(1)))
        }
    }
}
