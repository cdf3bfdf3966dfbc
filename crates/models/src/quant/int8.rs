//! Activations rounded to 8 bits per block of 32 (scale `d = max|x| / 127`), as llama.cpp does,
//! for 4-bit weights: four byte products per 32-bit lane and instruction (`vpdpbusd`, or
//! `pmaddubsw` + `pmaddwd`), twice the work of [`super::int16`] per instruction. Each group of
//! four values is broadcast to a tile's quad rows ([`super::layout`]; the weights' unsigned
//! 4-bit values are the unsigned operand); the products themselves are [`super::tiles`]'.

use super::tiles::{Scales, Wide, Width};
use super::{Bits, BLOCK};

#[derive(Clone, Copy)]
#[repr(C, align(32))]
struct Block([i8; BLOCK]);

/// Activation rows as 8-bit blocks: per block a scale `d` and the exact sum `s` of its values.
pub struct Acts {
    pub scales: Scales,
    q: Vec<Block>,
}

impl Acts {
    /// The rounded values of row `i`.
    #[cfg(test)]
    pub fn values(&self, i: usize) -> Vec<i8> {
        self.q[i * self.scales.nb..(i + 1) * self.scales.nb].iter().flat_map(|b| b.0).collect()
    }

    /// Quantizes `x` (`n × cols`, `cols` a multiple of 32).
    pub fn quantize(x: &[f32], n: usize, cols: usize) -> Self {
        let mut q = vec![Block([0; BLOCK]); n * cols / BLOCK];
        let scales = Scales::quantize(x, n, cols, 127.0, |j, xb, id| round_block(xb, id, &mut q[j].0));
        Acts { scales, q }
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

/// The 8-bit activation width for [`super::tiles`].
pub struct Eight;

impl Width for Eight {
    const BITS: Bits = Bits::Eight;
    type Acts = Acts;

    fn scales(a: &Acts) -> &Scales {
        &a.scales
    }

    fn value(a: &Acts, j: usize, p: usize) -> i32 {
        a.q[j].0[p] as i32
    }

    #[cfg(target_arch = "x86_64")]
    fn words(a: &Acts, j: usize) -> *const i32 {
        a.q.as_ptr().wrapping_add(j) as *const i32
    }

    // Quad rows c and c + 4 (values 4c..4c + 4 and 4c + 16..4c + 20).
    #[cfg(target_arch = "x86_64")]
    const STEPS: usize = 4;
    #[cfg(target_arch = "x86_64")]
    const SECOND: usize = 4;

    #[cfg(target_arch = "x86_64")]
    #[inline(always)]
    unsafe fn weights<const F: u8>(payload: *const u8, h: usize, c: usize) -> [std::arch::x86_64::__m256i; 2] {
        use std::arch::x86_64::*;
        // SAFETY: the 32-byte loads read quad row `8h + c` or `8h + c + 4 < 16` (byte formats)
        // or chunk `4h + c < 8` (4-bit ones), and Q5_0's fifth bits 4 bytes at `16c + 4h` and
        // `16c + 8 + 4h` (`< 64`) of its plane, inside the tile block's payload, and the CPU has
        // AVX2 (both this function's contract).
        unsafe {
            if super::tiles::signed(F) {
                // Quad rows c and c + 4 of half h, as they are (signed).
                let at = |r: usize| _mm256_loadu_si256(payload.add(32 * (8 * h + r)) as *const __m256i);
                return [at(c), at(c + 4)];
            }
            let nibble = _mm256_set1_epi8(0x0F);
            let q = _mm256_loadu_si256(payload.add(32 * (4 * h + c)) as *const __m256i);
            let v = [_mm256_and_si256(q, nibble), _mm256_and_si256(_mm256_srli_epi16::<4>(q), nibble)];
            if !super::tiles::high(F) {
                return v;
            }
            // Fifth bits of chunk 4h + c's low and high nibbles: 32 bits each in the plane.
            let plane = payload.add(super::layout::HIGH_PLANE + 16 * c + 4 * h);
            let fifth = |at: usize| super::tiles::simd::fifth8(plane.add(at));
            [_mm256_or_si256(v[0], fifth(0)), _mm256_or_si256(v[1], fifth(8))]
        }
    }

    /// Exact: a pair of products is at most 2·128·127, inside the 16 bits `pmaddubsw` keeps.
    /// Signed (Q8_0) weights multiply as |w| times x with w's sign.
    #[cfg(target_arch = "x86_64")]
    #[inline(always)]
    unsafe fn dot<const F: u8, const VNNI: bool>(
        acc: std::arch::x86_64::__m256i,
        w: std::arch::x86_64::__m256i,
        x: std::arch::x86_64::__m256i,
    ) -> std::arch::x86_64::__m256i {
        use std::arch::x86_64::*;
        // SAFETY: the CPU has AVX2, and AVX-512 VNNI and VL with `VNNI` (this function's
        // contract).
        unsafe {
            let (w, x) = if super::tiles::signed(F) { (_mm256_abs_epi8(w), _mm256_sign_epi8(x, w)) } else { (w, x) };
            if VNNI {
                _mm256_dpbusd_epi32(acc, w, x)
            } else {
                _mm256_add_epi32(acc, _mm256_madd_epi16(_mm256_maddubs_epi16(w, x), _mm256_set1_epi16(1)))
            }
        }
    }
}

impl Wide for Eight {
    /// Rows 0..8 come from chunk `c` and rows 8..16 from chunk `4 + c` (see [`super::layout`]).
    #[cfg(target_arch = "x86_64")]
    #[inline(always)]
    unsafe fn weights16<const F: u8>(payload: *const u8, c: usize) -> [std::arch::x86_64::__m512i; 2] {
        use std::arch::x86_64::*;
        // SAFETY: as in `weights`, for both halves `h` (Q5_0's fifth bits: 8 bytes at `16c` and
        // `16c + 8`); the CPU has AVX-512 F and BW (this function's contract).
        unsafe {
            if super::tiles::signed(F) {
                let at = |h: usize, r: usize| _mm256_loadu_si256(payload.add(32 * (8 * h + r)) as *const __m256i);
                let both = |r: usize| _mm512_inserti64x4::<1>(_mm512_castsi256_si512(at(0, r)), at(1, r));
                return [both(c), both(c + 4)];
            }
            let nibble = _mm512_set1_epi8(0x0F);
            let half = |h: usize| _mm256_loadu_si256(payload.add(32 * (4 * h + c)) as *const __m256i);
            let q = _mm512_inserti64x4::<1>(_mm512_castsi256_si512(half(0)), half(1));
            let v = [_mm512_and_si512(q, nibble), _mm512_and_si512(_mm512_srli_epi16::<4>(q), nibble)];
            if !super::tiles::high(F) {
                return v;
            }
            // Fifth bits of chunks c and 4 + c's low and high nibbles: 64 bits each in the plane.
            let plane = payload.add(super::layout::HIGH_PLANE + 16 * c);
            let add = |v: __m512i, at: usize| {
                let bits = std::ptr::read_unaligned(plane.add(at) as *const u64);
                _mm512_mask_add_epi8(v, bits, v, _mm512_set1_epi8(16))
            };
            [add(v[0], 0), add(v[1], 8)]
        }
    }

    #[cfg(target_arch = "x86_64")]
    #[inline(always)]
    unsafe fn dot16<const F: u8>(
        acc: std::arch::x86_64::__m512i,
        w: std::arch::x86_64::__m512i,
        x: std::arch::x86_64::__m512i,
    ) -> std::arch::x86_64::__m512i {
        use std::arch::x86_64::*;
        // SAFETY: the CPU has AVX-512 F, BW and VNNI (this function's contract).
        unsafe {
            if super::tiles::signed(F) {
                // Signed weights: |w| times x with w's sign (x is never −128, so negating is exact).
                let negative = _mm512_movepi8_mask(w);
                let x = _mm512_mask_sub_epi8(x, negative, _mm512_setzero_si512(), x);
                return _mm512_dpbusd_epi32(acc, _mm512_abs_epi8(w), x);
            }
            _mm512_dpbusd_epi32(acc, w, x)
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod simd {
    use std::arch::x86_64::*;

    use super::BLOCK;

    #[target_feature(enable = "avx2,fma,f16c")]
    pub unsafe fn round_block(x: &[f32], id: f32, q: &mut [i8; BLOCK]) {
        assert!(x.len() == BLOCK);
        let s = _mm256_set1_ps(id);
        // SAFETY: `j` is 0, 8, 16 or 24, so each load of 8 is inside `x` (32 values, asserted).
        let v = |j: usize| _mm256_cvtps_epi32(_mm256_mul_ps(unsafe { _mm256_loadu_ps(x.as_ptr().add(j)) }, s));
        // Two packs interleave 128-bit lanes; the permute puts the 32 values back in order.
        let w = _mm256_packs_epi16(_mm256_packs_epi32(v(0), v(8)), _mm256_packs_epi32(v(16), v(24)));
        let w = _mm256_permutevar8x32_epi32(w, _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7));
        // SAFETY: one store of 32 bytes fills `q`, an array of 32.
        unsafe { _mm256_storeu_si256(q.as_mut_ptr() as *mut __m256i, w) };
    }
}
