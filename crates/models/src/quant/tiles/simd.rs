//! The x86 paths of [`super`]'s products: 256-bit vectors with or without AVX-512 VNNI for every
//! width, and 512-bit ones ([`super::Wide`]) where the CPU has AVX-512; the format and row-count
//! dispatch.

use std::arch::x86_64::*;

use super::Width;
use crate::quant::layout::{self, TILE};
use crate::quant::{Format, Out};

pub const Q4_0: u8 = 0;
pub const Q4_1: u8 = 1;
pub const Q8_0: u8 = 2;
pub const Q4K: u8 = 3;
pub const Q6K: u8 = 4;
pub const Q5K: u8 = 5;
pub const Q5_0: u8 = 6;

/// Whether format `f`'s values are (signed) bytes, else unsigned 4-bit values.
pub const fn signed(f: u8) -> bool {
    f == Q8_0 || f == Q6K || f == Q5K
}

/// Whether format `f`'s blocks add a term per unit of activation.
pub const fn term(f: u8) -> bool {
    f == Q4_0 || f == Q4_1 || f == Q4K || f == Q5K || f == Q5_0
}

/// Whether format `f`'s values have a fifth bit in a plane of their own ([`layout::HIGH_PLANE`]).
pub const fn high(f: u8) -> bool {
    f == Q5_0
}

/// Whether format `f`'s block halves have scales of their own.
pub const fn split(f: u8) -> bool {
    f == Q6K
}
/// Most activation rows multiplied per unpacked weight vector (4 and 6 measured slower).
const ROWS: usize = 8;

/// `$body` with the kernel constant `$f` of `format` (each format's constant has its name).
macro_rules! by_format {
    ($format:expr, |$f:ident| $body:expr) => {
        by_format!(@ $format, $f, $body, Q4_0, Q4_1, Q8_0, Q4K, Q6K, Q5K, Q5_0)
    };
    (@ $format:expr, $f:ident, $body:expr, $($name:ident),*) => {
        match $format {
            $($crate::quant::Format::$name => {
                const $f: u8 = $crate::quant::tiles::simd::$name;
                $body
            })*
        }
    };
}
pub(crate) use by_format;

/// `$body` for a pass over `take` (1..=ROWS) activation rows, with `$r` rows and `$k` chains
/// of sums per row, at least `$min` (a literal): few rows get several chains, so the multipliers
/// never wait on one; formats whose block halves are scaled apart ([`split`]) need two, the
/// first half's sums in even chains and the second's in odd ones.
macro_rules! by_rows {
    ($take:expr, $min:literal, |$r:ident, $k:ident| $body:expr) => {
        match $take {
            1 => by_rows!(@ 1, 4, $min, $r, $k, $body),
            2 => by_rows!(@ 2, 2, $min, $r, $k, $body),
            3 => by_rows!(@ 3, 1, $min, $r, $k, $body),
            4 => by_rows!(@ 4, 1, $min, $r, $k, $body),
            5 => by_rows!(@ 5, 1, $min, $r, $k, $body),
            6 => by_rows!(@ 6, 1, $min, $r, $k, $body),
            7 => by_rows!(@ 7, 1, $min, $r, $k, $body),
            _ => by_rows!(@ ROWS, 1, $min, $r, $k, $body),
        }
    };
    (@ $rv:expr, $kv:expr, $min:literal, $r:ident, $k:ident, $body:expr) => {{
        const $r: usize = $rv;
        const $k: usize = if $kv > $min { $kv } else { $min };
        $body
    }};
}

/// Most activation rows per pass for [`split`] formats on 256-bit vectors, where two chains
/// per row and half tile fill the 16 or 32 registers at 4 rows.
const ROWS_SPLIT: usize = 4;

/// The format a kernel's constant stands for.
pub const fn format(f: u8) -> Format {
    match f {
        Q4_0 => Format::Q4_0,
        Q4_1 => Format::Q4_1,
        Q4K => Format::Q4K,
        Q6K => Format::Q6K,
        Q5K => Format::Q5K,
        Q5_0 => Format::Q5_0,
        _ => Format::Q8_0,
    }
}

/// Whether the CPU fuses a multiply-add and the sum it goes into (`vpdpwssd`/`vpdpbusd`,
/// AVX-512 VNNI on 256-bit vectors, which also brings 32 vector registers). The integer
/// results are the same either way, so the choice is only about speed. `AISERVE_NO_VNNI=1`
/// turns it off.
fn vnni() -> bool {
    static VNNI: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *VNNI.get_or_init(|| {
        std::env::var_os("AISERVE_NO_VNNI").is_none()
            && std::arch::is_x86_feature_detected!("avx512vnni")
            && std::arch::is_x86_feature_detected!("avx512vl")
    })
}

/// Whether the CPU runs 512-bit vectors with VNNI ([`super::Wide`]). `AISERVE_NO_AVX512=1` turns
/// them off (the same bits either way).
pub(crate) fn avx512() -> bool {
    static YES: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *YES.get_or_init(|| {
        std::env::var_os("AISERVE_NO_AVX512").is_none()
            && vnni()
            && std::arch::is_x86_feature_detected!("avx512f")
            && std::arch::is_x86_feature_detected!("avx512bw")
    })
}

/// `_mm512_dpwssd_epi32`, which LLVM would split into `vpmaddwd` and `vpaddd` (two
/// instructions for one: the 512-bit 16-bit products then gained nothing, measured), written out.
///
/// # Safety
/// The CPU must have AVX-512 F and VNNI.
#[inline]
#[target_feature(enable = "avx512f,avx512vnni")]
pub unsafe fn vpdpwssd512(mut acc: __m512i, w: __m512i, x: __m512i) -> __m512i {
    // SAFETY: `vpdpwssd` only computes in registers; the CPU has the features (the contract).
    unsafe {
        std::arch::asm!(
            "vpdpwssd {acc}, {w}, {x}",
            acc = inout(zmm_reg) acc,
            w = in(zmm_reg) w,
            x = in(zmm_reg) x,
            options(pure, nomem, nostack, preserves_flags),
        )
    };
    acc
}

/// [`super::dot_tiles`] on 512-bit vectors where the CPU has them, else 256-bit ones.
///
/// # Safety
/// As [`super::dot_tiles`], after its checks (the CPU has AVX2, FMA and F16C, and the bounds
/// are asserted in [`super::vectors`]).
#[target_feature(enable = "avx2,fma,f16c")]
pub unsafe fn dot_tiles<W: Width>(
    format: Format,
    packed: &[u8],
    tiles: std::ops::Range<usize>,
    acts: &W::Acts,
    out: &Out,
) {
    if avx512() {
        // SAFETY: the CPU has AVX-512 F, BW, VL and VNNI (checked by `avx512`); the rest is
        // this function's contract.
        return unsafe { dot_tiles_zmm::<W>(format, packed, tiles, acts, out) };
    }
    if vnni() {
        // SAFETY: the CPU has AVX-512 VNNI and VL (checked by `vnni`); the rest is this
        // function's contract.
        return unsafe { dot_tiles_vnni::<W>(format, packed, tiles, acts, out) };
    }
    // SAFETY: this function's contract is `tiles_of`'s without VNNI.
    by_format!(format, |F| unsafe { tiles_of::<W, F, false>(packed, tiles, acts, out) })
}

/// # Safety
/// As [`dot_tiles`], and the CPU must have AVX-512 VNNI and VL.
#[target_feature(enable = "avx2,fma,f16c,avx512vnni,avx512vl")]
unsafe fn dot_tiles_vnni<W: Width>(
    format: Format,
    packed: &[u8],
    tiles: std::ops::Range<usize>,
    acts: &W::Acts,
    out: &Out,
) {
    // SAFETY: this function's contract is `tiles_of`'s with VNNI.
    by_format!(format, |F| unsafe { tiles_of::<W, F, true>(packed, tiles, acts, out) })
}

/// # Safety
/// As [`dot_tiles`], and the CPU must have AVX-512 F, BW, VL and VNNI.
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
unsafe fn dot_tiles_zmm<W: Width>(
    format: Format,
    packed: &[u8],
    tiles: std::ops::Range<usize>,
    acts: &W::Acts,
    out: &Out,
) {
    // SAFETY: this function's contract is `tiles_zmm`'s.
    by_format!(format, |F| unsafe { tiles_zmm::<W, F>(packed, tiles, acts, out) })
}

/// [`tiles_of`] on 512-bit vectors.
///
/// # Safety
/// As [`dot_tiles_zmm`], into which it is inlined.
#[inline(always)]
unsafe fn tiles_zmm<W: Width, const F: u8>(packed: &[u8], tiles: std::ops::Range<usize>, acts: &W::Acts, out: &Out) {
    let (n, nb) = (W::scales(acts).n, W::scales(acts).nb);
    let tile_bytes = nb * layout::tile_block_bytes(format(F));
    for t in tiles {
        // SAFETY: tile `t < tiles.end` lies inside `packed` (asserted in `vectors`).
        let tile = unsafe { packed.as_ptr().add(t * tile_bytes) };
        let mut i = 0;
        while i < n {
            let take = (n - i).min(ROWS);
            // SAFETY: `tile` is a whole tile of `nb` blocks and rows `i..i + take` exist; the
            // CPU has the features (this function's contract).
            let o = unsafe {
                if split(F) {
                    by_rows!(take, 2, |R, K| rows_zmm::<W, F, R, K>(tile, acts, i))
                } else {
                    by_rows!(take, 1, |R, K| rows_zmm::<W, F, R, K>(tile, acts, i))
                }
            };
            let valid = (out.rows - t * TILE).min(TILE);
            let mask: __mmask16 = if valid == TILE { !0 } else { (1 << valid) - 1 };
            for (k, o) in o[..take].iter().enumerate() {
                // SAFETY: the store writes row `i + k < n`, columns `16t..16t + valid` of `out`
                // (`16t + valid ≤ out.rows`; the mask leaves the rest), which is valid for writes
                // and this thread's alone (the contract); the CPU has AVX-512 F.
                unsafe { _mm512_mask_storeu_ps(out.row(i + k).add(t * TILE), mask, *o) };
            }
            i += take;
        }
    }
}

/// [`rows`] on 512-bit vectors: per row, the tile's 16 outputs in one vector.
///
/// # Safety
/// As [`dot_tiles_zmm`], into which it is inlined; `tile` must point at a whole tile of
/// `nb` blocks and activation rows `i0..i0 + R` must exist.
#[inline(always)]
unsafe fn rows_zmm<W: Width, const F: u8, const R: usize, const K: usize>(
    tile: *const u8,
    acts: &W::Acts,
    i0: usize,
) -> [__m512; ROWS] {
    let super::Scales { nb, d: dx, s: sx, .. } = W::scales(acts);
    let nb = *nb;
    // SAFETY: the CPU has AVX-512 F (this function's contract).
    let mut acc = unsafe { [_mm512_setzero_ps(); ROWS] };
    for b in 0..nb {
        // SAFETY: block `b < nb` of the tile and its payload, inside it (the contract).
        let (blk, payload) = unsafe {
            let blk = tile.add(b * layout::tile_block_bytes(format(F)));
            (blk, blk.add(layout::header(format(F))))
        };
        if i0 == 0 {
            crate::quant::avx2::prefetch(blk, layout::tile_block_bytes(format(F)));
        }
        // SAFETY: `payload` is a whole block's payload of format `F`; `x` points at block
        // `(i0 + k)·nb + b` of row `i0 + k < n`, and words `c` and `c + SECOND` lie inside it
        // (`STEPS + SECOND` words per block); the CPU has AVX-512 F, BW and VNNI (the contract).
        let sums = unsafe {
            let mut sums = [[_mm512_setzero_si512(); K]; R];
            for c in 0..W::STEPS {
                let w = W::weights16::<F>(payload, c);
                for (k, s) in sums.iter_mut().enumerate() {
                    let x = W::words(acts, (i0 + k) * nb + b);
                    let (xa, xb) = (_mm512_set1_epi32(*x.add(c)), _mm512_set1_epi32(*x.add(c + W::SECOND)));
                    s[(2 * c) % K] = W::dot16::<F>(s[(2 * c) % K], w[0], xa);
                    s[(2 * c + 1) % K] = W::dot16::<F>(s[(2 * c + 1) % K], w[1], xb);
                }
            }
            sums
        };
        // SAFETY: `blk` is a whole tile block of format `F`; `j < n·nb`, the length of `dx`
        // and `sx`; the CPU has AVX-512 F (the contract).
        unsafe {
            let (dw, m) = header16::<F>(blk);
            for (k, s) in sums.iter().enumerate() {
                let j = (i0 + k) * nb + b;
                let x = _mm512_set1_ps(*dx.get_unchecked(j));
                if split(F) {
                    // Even chains hold values 0..16, odd ones 16..32.
                    let (first, second) = match K {
                        4 => (_mm512_add_epi32(s[0], s[2 % K]), _mm512_add_epi32(s[1 % K], s[3 % K])),
                        _ => (s[0], s[1 % K]),
                    };
                    let a = _mm512_fmadd_ps(_mm512_cvtepi32_ps(first), _mm512_mul_ps(dw, x), acc[k]);
                    acc[k] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(second), _mm512_mul_ps(m, x), a);
                    continue;
                }
                let sum = match K {
                    4 => _mm512_add_epi32(_mm512_add_epi32(s[0], s[1 % K]), _mm512_add_epi32(s[2 % K], s[3 % K])),
                    2 => _mm512_add_epi32(s[0], s[1 % K]),
                    _ => s[0],
                };
                let mut a = _mm512_fmadd_ps(_mm512_cvtepi32_ps(sum), _mm512_mul_ps(dw, x), acc[k]);
                if term(F) {
                    a = _mm512_fmadd_ps(m, _mm512_set1_ps(*sx.get_unchecked(j)), a);
                }
                acc[k] = a;
            }
        }
    }
    acc
}

/// 16 in each 16-bit lane `l` whose bit `l` of the 16 bits at `at` is set, else 0: the fifth
/// bits of a 256-bit vector of 16-bit values ([`layout::high_bit`]).
///
/// # Safety
/// `at` must be valid for reading 2 bytes, and the CPU must have AVX2.
#[inline(always)]
pub unsafe fn fifth16(at: *const u8) -> __m256i {
    // SAFETY: the read is the contract's 2 bytes; the CPU has AVX2 (the contract).
    unsafe {
        let bits = std::ptr::read_unaligned(at as *const u16);
        let lanes = _mm256_setr_epi16(1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096, 8192, 16384, -32768);
        let set = _mm256_cmpeq_epi16(_mm256_and_si256(_mm256_set1_epi16(bits as i16), lanes), lanes);
        _mm256_and_si256(set, _mm256_set1_epi16(16))
    }
}

/// [`fifth16`] for 32 bytes and the 32 bits at `at`.
///
/// # Safety
/// `at` must be valid for reading 4 bytes, and the CPU must have AVX2.
#[inline(always)]
pub unsafe fn fifth8(at: *const u8) -> __m256i {
    // SAFETY: the read is the contract's 4 bytes; the CPU has AVX2 (the contract).
    unsafe {
        let bits = std::ptr::read_unaligned(at as *const u32);
        // Byte `i` gets byte `i / 8` of the bits (each 128-bit half of the broadcast has all four).
        let spread = _mm256_setr_epi8(
            0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1, 2, 2, 2, 2, 2, 2, 2, 2, 3, 3, 3, 3, 3, 3, 3, 3,
        );
        let b = _mm256_shuffle_epi8(_mm256_set1_epi32(bits as i32), spread);
        let lanes = _mm256_set1_epi64x(0x8040_2010_0804_0201u64 as i64);
        let set = _mm256_cmpeq_epi8(_mm256_and_si256(b, lanes), lanes);
        _mm256_and_si256(set, _mm256_set1_epi8(16))
    }
}

/// Rows `8h..8h + 8` of a tile block's header: their scales, and the term each adds per
/// unit of activation (Q4_0: `−8·d`; Q8_0: none, the scales returned in its place; Q6K: the
/// scales of values 16..32).
///
/// # Safety
/// `blk` must point at a whole tile block of format `F`, `h` be 0 or 1, and the CPU must have
/// AVX2 and F16C.
#[inline(always)]
unsafe fn header8<const F: u8>(blk: *const u8, h: usize) -> (__m256, __m256) {
    // SAFETY: the loads read 8 of the header's 16 f32 scales and terms (K formats, 128 bytes)
    // or f16 scales and minimums (32 bytes each), inside the block; the CPU has the features
    // (both this function's contract).
    unsafe {
        if F == Q4K || F == Q6K || F == Q5K {
            let at = |i: usize| _mm256_loadu_ps(blk.add(i) as *const f32);
            return (at(32 * h), at(4 * TILE + 32 * h));
        }
        let dw = _mm256_cvtph_ps(_mm_loadu_si128(blk.add(16 * h) as *const __m128i));
        let m = match F {
            Q4_1 => _mm256_cvtph_ps(_mm_loadu_si128(blk.add(2 * TILE + 16 * h) as *const __m128i)),
            Q4_0 => _mm256_mul_ps(dw, _mm256_set1_ps(-8.0)),
            Q5_0 => _mm256_mul_ps(dw, _mm256_set1_ps(-16.0)),
            _ => dw,
        };
        (dw, m)
    }
}

/// [`header8`] for all 16 rows (AVX-512 F).
///
/// # Safety
/// `blk` must point at a whole tile block of format `F`, and the CPU must have AVX-512 F.
#[inline(always)]
pub unsafe fn header16<const F: u8>(blk: *const u8) -> (__m512, __m512) {
    // SAFETY: as in `header8`, for all 16 rows.
    unsafe {
        if F == Q4K || F == Q6K || F == Q5K {
            let at = |i: usize| _mm512_loadu_ps(blk.add(i) as *const f32);
            return (at(0), at(4 * TILE));
        }
        let dw = _mm512_cvtph_ps(_mm256_loadu_si256(blk as *const __m256i));
        let m = match F {
            Q4_1 => _mm512_cvtph_ps(_mm256_loadu_si256(blk.add(2 * TILE) as *const __m256i)),
            Q4_0 => _mm512_mul_ps(dw, _mm512_set1_ps(-8.0)),
            Q5_0 => _mm512_mul_ps(dw, _mm512_set1_ps(-16.0)),
            _ => dw,
        };
        (dw, m)
    }
}

/// Inlined into the entry points, which carry the target features.
///
/// # Safety
/// As [`dot_tiles`] (with `VNNI`, [`dot_tiles_vnni`]), into which it is inlined.
#[inline(always)]
unsafe fn tiles_of<W: Width, const F: u8, const VNNI: bool>(
    packed: &[u8],
    tiles: std::ops::Range<usize>,
    acts: &W::Acts,
    out: &Out,
) {
    let (n, nb) = (W::scales(acts).n, W::scales(acts).nb);
    let tile_bytes = nb * layout::tile_block_bytes(format(F));
    for t in tiles {
        // SAFETY: tile `t < tiles.end` lies inside `packed` (asserted in `vectors`).
        let tile = unsafe { packed.as_ptr().add(t * tile_bytes) };
        let mut i = 0;
        while i < n {
            let take = (n - i).min(if split(F) { ROWS_SPLIT } else { ROWS });
            // SAFETY: `tile` is a whole tile of `nb` blocks and rows `i..i + take` exist; the
            // CPU has the features (this function's contract).
            let o = unsafe {
                if split(F) {
                    by_rows!(take, 2, |R, K| rows::<W, F, VNNI, R, K>(tile, acts, i))
                } else {
                    by_rows!(take, 1, |R, K| rows::<W, F, VNNI, R, K>(tile, acts, i))
                }
            };
            let valid = (out.rows - t * TILE).min(TILE);
            for (k, o) in o[..take].iter().enumerate() {
                // SAFETY: `dst` is row `i + k < n`, column `16t` of `out`, and the stores write
                // its columns `16t..16t + valid` (`16t + valid ≤ out.rows`), valid for writes
                // and this thread's alone (the contract); `all` is 16 floats; the CPU has AVX.
                unsafe {
                    let dst = out.row(i + k).add(t * TILE);
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
            }
            i += take;
        }
    }
}

/// One tile (16 weight rows) times activation rows `i0..i0 + R`, each row's integer sums
/// split over `K` chains per half: per row, the 16 outputs in two vectors of 8.
///
/// # Safety
/// As [`tiles_of`], into which it is inlined; `tile` must point at a whole tile of `nb`
/// blocks and activation rows `i0..i0 + R` must exist.
// `h` picks the half of the header and the accumulators alike.
#[allow(clippy::needless_range_loop)]
#[inline(always)]
unsafe fn rows<W: Width, const F: u8, const VNNI: bool, const R: usize, const K: usize>(
    tile: *const u8,
    acts: &W::Acts,
    i0: usize,
) -> [[__m256; 2]; ROWS] {
    let super::Scales { nb, d: dx, s: sx, .. } = W::scales(acts);
    let nb = *nb;
    // SAFETY: the CPU has AVX (this function's contract).
    let mut acc = unsafe { [[_mm256_setzero_ps(); 2]; ROWS] };
    for b in 0..nb {
        // SAFETY: block `b < nb` of the tile and its payload, inside it (the contract).
        let (blk, payload) = unsafe {
            let blk = tile.add(b * layout::tile_block_bytes(format(F)));
            (blk, blk.add(layout::header(format(F))))
        };
        if i0 == 0 {
            crate::quant::avx2::prefetch(blk, layout::tile_block_bytes(format(F)));
        }
        // Both halves (rows 0..8 and 8..16 of the tile) at once: each broadcast word feeds
        // two multiply-adds, and 2R chains of sums run side by side.
        // SAFETY: `payload` is a whole block's payload of format `F`; `x` points at block
        // `(i0 + k)·nb + b` of row `i0 + k < n`, and words `c` and `c + SECOND` lie inside it
        // (`STEPS + SECOND` words per block); the CPU has AVX2, and with `VNNI` AVX-512 VNNI
        // and VL (the contract).
        let sums = unsafe {
            let mut sums = [[[_mm256_setzero_si256(); K]; 2]; R];
            for c in 0..W::STEPS {
                let w = [W::weights::<F>(payload, 0, c), W::weights::<F>(payload, 1, c)];
                for (k, s) in sums.iter_mut().enumerate() {
                    let x = W::words(acts, (i0 + k) * nb + b);
                    let (xa, xb) = (_mm256_set1_epi32(*x.add(c)), _mm256_set1_epi32(*x.add(c + W::SECOND)));
                    for (s, w) in s.iter_mut().zip(&w) {
                        s[(2 * c) % K] = W::dot::<F, VNNI>(s[(2 * c) % K], w[0], xa);
                        s[(2 * c + 1) % K] = W::dot::<F, VNNI>(s[(2 * c + 1) % K], w[1], xb);
                    }
                }
            }
            sums
        };
        for h in 0..2 {
            // SAFETY: `blk` is a whole tile block of format `F`; `j < n·nb`, the length of
            // `dx` and `sx`; the CPU has AVX2, FMA and F16C (the contract).
            unsafe {
                let (dw, m) = header8::<F>(blk, h);
                for (k, sums) in sums.iter().enumerate() {
                    let s4 = &sums[h];
                    let j = (i0 + k) * nb + b;
                    let x = _mm256_set1_ps(*dx.get_unchecked(j));
                    if split(F) {
                        // Even chains hold values 0..16, odd ones 16..32.
                        let (first, second) = match K {
                            4 => (_mm256_add_epi32(s4[0], s4[2 % K]), _mm256_add_epi32(s4[1 % K], s4[3 % K])),
                            _ => (s4[0], s4[1 % K]),
                        };
                        let a = _mm256_fmadd_ps(_mm256_cvtepi32_ps(first), _mm256_mul_ps(dw, x), acc[k][h]);
                        acc[k][h] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(second), _mm256_mul_ps(m, x), a);
                        continue;
                    }
                    let sum = match K {
                        4 => {
                            _mm256_add_epi32(_mm256_add_epi32(s4[0], s4[1 % K]), _mm256_add_epi32(s4[2 % K], s4[3 % K]))
                        }
                        2 => _mm256_add_epi32(s4[0], s4[1 % K]),
                        _ => s4[0],
                    };
                    let mut a = _mm256_fmadd_ps(_mm256_cvtepi32_ps(sum), _mm256_mul_ps(dw, x), acc[k][h]);
                    if term(F) {
                        a = _mm256_fmadd_ps(m, _mm256_set1_ps(*sx.get_unchecked(j)), a);
                    }
                    acc[k][h] = a;
                }
            }
        }
    }
    acc
}
