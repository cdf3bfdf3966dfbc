//! Activations rounded to 16 bits per block of 32 (scale `d = max|x| / LEVELS`, so each value is
//! within 1/65278 of its block's largest), multiplied with weights by integer multiply-adds
//! (`pmaddwd`/`vpdpwssd`, 16 per instruction, against 8 float FMAs), with a precision 256×
//! finer than llama.cpp's 8-bit activations. Each pair of values is broadcast to a tile's
//! pair rows ([`super::layout`]); the products themselves are [`super::tiles`]'.

use super::tiles::{Scales, Wide, Width};
use super::{Bits, BLOCK};

/// Steps on each side of zero: 127·257, so that every value splits into two signed bytes
/// `x = 256·hi + lo` (`hi` and `lo` in `-128..=127`), which the tile-multiply unit
/// ([`super::amx`]) multiplies in one instruction.
pub const LEVELS: i16 = 127 * 257;

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
pub struct Acts {
    pub scales: Scales,
    q: Aligned,
    /// The values split for the tile-multiply unit, when it will take these rows.
    split: Option<super::amx::Rows>,
}

impl Acts {
    /// The rounded values of row `i`.
    #[cfg(test)]
    pub fn values(&self, i: usize) -> Vec<i16> {
        self.q[i * self.scales.nb * BLOCK..(i + 1) * self.scales.nb * BLOCK].to_vec()
    }

    /// Quantizes `x` (`n × cols`, `cols` a multiple of 32).
    pub fn quantize(x: &[f32], n: usize, cols: usize) -> Self {
        let mut q = Aligned(vec![Block([0; BLOCK]); n * cols / BLOCK]);
        let scales = Scales::quantize(x, n, cols, LEVELS as f32, |j, xb, id| {
            round_block(xb, id, &mut q[j * BLOCK..(j + 1) * BLOCK])
        });
        let split = (n >= super::amx::MIN_ROWS && super::amx::available())
            .then(|| super::amx::Rows::split(&q, n, cols / BLOCK));
        Acts { scales, q, split }
    }
}

/// `q = round(x · id)` to the nearest integer, ties to even (what the CPU's conversion does), in
/// `[-LEVELS, LEVELS]` because `|x · id| ≤ LEVELS` by construction.
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

/// The 16-bit activation width for [`super::tiles`].
pub struct Sixteen;

impl Width for Sixteen {
    const BITS: Bits = Bits::Sixteen;
    type Acts = Acts;

    fn scales(a: &Acts) -> &Scales {
        &a.scales
    }

    fn value(a: &Acts, j: usize, p: usize) -> i32 {
        a.q[j * BLOCK + p] as i32
    }

    #[cfg(target_arch = "x86_64")]
    fn words(a: &Acts, j: usize) -> *const i32 {
        a.q.as_ptr().wrapping_add(j * BLOCK) as *const i32
    }

    #[cfg(target_arch = "x86_64")]
    unsafe fn amx(
        format: super::Format,
        packed: &[u8],
        tiles: std::ops::Range<usize>,
        acts: &Acts,
        out: &super::Out,
    ) -> bool {
        let Some(split) = &acts.split else { return false };
        if format.split_scales() || format.high_bits() {
            // The unit's sums cover whole blocks, which these need apart; its weight loads
            // have no fifth bits.
            return false;
        }
        // SAFETY: the split exists only where the unit is available.
        unsafe { super::amx::dot_tiles(format, packed, tiles, &acts.scales, split, out) };
        true
    }

    // Pair rows c and c + 8 (values 2c, 2c + 1 and 2c + 16, 2c + 17).
    #[cfg(target_arch = "x86_64")]
    const STEPS: usize = 8;
    #[cfg(target_arch = "x86_64")]
    const SECOND: usize = 8;

    #[cfg(target_arch = "x86_64")]
    #[inline(always)]
    unsafe fn weights<const F: u8>(payload: *const u8, h: usize, c: usize) -> [std::arch::x86_64::__m256i; 2] {
        use std::arch::x86_64::*;
        // SAFETY: the 16-byte loads read half `h` of 32-byte pair rows `c`, `c + 8 < 16` (byte
        // formats) or of chunk `c < 8` (4-bit ones), and Q5_0's fifth bits 2 bytes at
        // `4r + 2h < 64` of its plane, inside the tile block's payload, and the CPU has AVX2 (both
        // this function's contract).
        unsafe {
            if super::tiles::signed(F) {
                let at =
                    |r: usize| _mm256_cvtepi8_epi16(_mm_loadu_si128(payload.add(32 * r + 16 * h) as *const __m128i));
                [at(c), at(c + 8)]
            } else {
                let q = _mm256_cvtepu8_epi16(_mm_loadu_si128(payload.add(32 * c + 16 * h) as *const __m128i));
                let v = [_mm256_and_si256(q, _mm256_set1_epi16(0x0F)), _mm256_srli_epi16::<4>(q)];
                if !super::tiles::high(F) {
                    return v;
                }
                // Fifth bits of pair rows c and c + 8, half h: 16 bits each in the plane.
                let plane = payload.add(super::layout::HIGH_PLANE);
                let fifth = |r: usize| super::tiles::simd::fifth16(plane.add(4 * r + 2 * h));
                [_mm256_or_si256(v[0], fifth(c)), _mm256_or_si256(v[1], fifth(c + 8))]
            }
        }
    }

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
            if VNNI {
                _mm256_dpwssd_epi32(acc, w, x)
            } else {
                _mm256_add_epi32(acc, _mm256_madd_epi16(w, x))
            }
        }
    }
}

impl Wide for Sixteen {
    /// Pair rows `c` and `c + 8` of all 16 rows: a pair row's 32 bytes widened to 32 words.
    #[cfg(target_arch = "x86_64")]
    #[inline(always)]
    unsafe fn weights16<const F: u8>(payload: *const u8, c: usize) -> [std::arch::x86_64::__m512i; 2] {
        use std::arch::x86_64::*;
        // SAFETY: the 32-byte loads read pair rows `c`, `c + 8 < 16` (byte formats) or chunk
        // `c < 8` (4-bit ones), and Q5_0's fifth bits 4 bytes at `4r < 64` of its plane, inside
        // the tile block's payload, and the CPU has AVX-512 F and BW (both this function's
        // contract).
        unsafe {
            let at = |r: usize| _mm256_loadu_si256(payload.add(32 * r) as *const __m256i);
            if super::tiles::signed(F) {
                return [_mm512_cvtepi8_epi16(at(c)), _mm512_cvtepi8_epi16(at(c + 8))];
            }
            let q = _mm512_cvtepu8_epi16(at(c));
            let v = [_mm512_and_si512(q, _mm512_set1_epi16(0x0F)), _mm512_srli_epi16::<4>(q)];
            if !super::tiles::high(F) {
                return v;
            }
            // Fifth bits of pair rows c and c + 8: 32 bits each in the plane, one per lane.
            let plane = payload.add(super::layout::HIGH_PLANE);
            let add = |v: __m512i, r: usize| {
                let bits = std::ptr::read_unaligned(plane.add(4 * r) as *const u32);
                _mm512_mask_add_epi16(v, bits, v, _mm512_set1_epi16(16))
            };
            [add(v[0], c), add(v[1], c + 8)]
        }
    }

    #[cfg(target_arch = "x86_64")]
    // Inlined into its callers, which have these features.
    #[inline]
    #[target_feature(enable = "avx512f,avx512vnni")]
    unsafe fn dot16<const F: u8>(
        acc: std::arch::x86_64::__m512i,
        w: std::arch::x86_64::__m512i,
        x: std::arch::x86_64::__m512i,
    ) -> std::arch::x86_64::__m512i {
        // SAFETY: the CPU has AVX-512 F and VNNI (this function's contract).
        unsafe { super::tiles::simd::vpdpwssd512(acc, w, x) }
    }
}

#[cfg(target_arch = "x86_64")]
mod simd {
    use std::arch::x86_64::*;

    use super::BLOCK;

    #[target_feature(enable = "avx2,fma,f16c")]
    pub unsafe fn round_block(x: &[f32], id: f32, q: &mut [i16]) {
        assert!(x.len() == BLOCK && q.len() == BLOCK);
        let s = _mm256_set1_ps(id);
        // SAFETY: `j` is 0, 8, 16 or 24, so each load of 8 is inside `x` (32 values, asserted).
        let v = |j: usize| _mm256_cvtps_epi32(_mm256_mul_ps(unsafe { _mm256_loadu_ps(x.as_ptr().add(j)) }, s));
        // packs interleaves 128-bit lanes; the permute puts the 16 values back in order.
        let lo = _mm256_permute4x64_epi64::<0b11_01_10_00>(_mm256_packs_epi32(v(0), v(8)));
        let hi = _mm256_permute4x64_epi64::<0b11_01_10_00>(_mm256_packs_epi32(v(16), v(24)));
        // SAFETY: the two stores of 16 values fill `q` (32 values, asserted above).
        unsafe {
            _mm256_storeu_si256(q.as_mut_ptr() as *mut __m256i, lo);
            _mm256_storeu_si256(q.as_mut_ptr().add(16) as *mut __m256i, hi);
        }
    }
}
