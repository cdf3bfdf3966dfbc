//! Products of quantized weights with activations rounded to 16 bits per block of 32 (scale
//! `d = max|x| / 32767`, so each value is within 1/65534 of its block's largest): integer
//! multiply-adds (`pmaddwd`, 16 per instruction) instead of float FMAs (8), with a precision
//! 256× finer than llama.cpp's 8-bit activations. The integer part is exact, so every
//! instruction set, tile size and batch gives the same bits for a row.
//!
//! `w · x` over a block is `dw·dx·Σ q_w q_x + m·Σx`, where the weight is `dw·q_w + m` (Q4_1:
//! its minimum; Q4_0: `m = −8·dw`; Q8_0: `m = 0`) and `Σx` is the block's exact float sum.

use super::{Format, BLOCK};

/// Activation rows as 16-bit blocks: per block a scale `d`, the exact sum `s` of its values,
/// and 32 integers.
#[derive(Default)]
pub struct Acts {
    pub n: usize,
    pub nb: usize,
    q: Vec<i16>,
    d: Vec<f32>,
    s: Vec<f32>,
}

impl Acts {
    /// The rounded values, row after row.
    pub fn values(&self) -> &[i16] {
        &self.q
    }

    /// Quantizes `x` (`n × cols`, `cols` a multiple of 32).
    pub fn quantize(x: &[f32], n: usize, cols: usize) -> Self {
        let blocks = n * cols / BLOCK;
        let mut a =
            Acts { n, nb: cols / BLOCK, q: vec![0; blocks * BLOCK], d: vec![0.0; blocks], s: vec![0.0; blocks] };
        for (b, (xb, qb)) in x.chunks_exact(BLOCK).zip(a.q.chunks_exact_mut(BLOCK)).enumerate() {
            let amax = xb.iter().fold(0.0f32, |m, v| m.max(v.abs()));
            let d = amax / 32767.0;
            let id = if d > 0.0 { 1.0 / d } else { 0.0 };
            round_block(xb, id, qb);
            a.d[b] = d;
            a.s[b] = xb.iter().sum();
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

fn f16_at(b: &[u8], at: usize) -> f32 {
    half::f16::from_bits(u16::from_le_bytes([b[at], b[at + 1]])).to_f32()
}

/// `out_t[(r - rows.start) * n + i]` = weight row `r` · activation row `i`.
pub fn dot_rows(
    format: Format,
    bytes: &[u8],
    cols: usize,
    rows: std::ops::Range<usize>,
    acts: &Acts,
    out_t: &mut [f32],
) {
    assert!(cols == acts.nb * BLOCK && out_t.len() >= rows.len() * acts.n);
    assert!(rows.end * (cols / BLOCK) * format.block_bytes() <= bytes.len());
    #[cfg(target_arch = "x86_64")]
    if super::avx2::available() {
        // SAFETY: the CPU has the features (checked above) and the bounds were asserted.
        unsafe { simd::dot_rows(format, bytes, cols, rows, acts, out_t) };
        return;
    }
    portable(format, bytes, cols, rows, acts, out_t)
}

/// The same sums in the same order without SIMD (and the reference the SIMD path must equal).
pub fn portable(
    format: Format,
    bytes: &[u8],
    cols: usize,
    rows: std::ops::Range<usize>,
    acts: &Acts,
    out_t: &mut [f32],
) {
    let (bb, nb, n) = (format.block_bytes(), cols / BLOCK, acts.n);
    for (k, r) in rows.enumerate() {
        let row = &bytes[r * nb * bb..(r + 1) * nb * bb];
        for i in 0..n {
            // Eight lanes as the SIMD path keeps them, summed in its order at the end.
            let mut acc = [0.0f32; 8];
            let mut ms = vec![0.0f32; nb];
            for (b, blk) in row.chunks_exact(bb).enumerate() {
                let xb = i * nb + b;
                let xq = &acts.q[xb * BLOCK..(xb + 1) * BLOCK];
                let dw = f16_at(blk, 0);
                let (w, m): ([i32; 32], f32) = match format {
                    Format::Q4_0 => (std::array::from_fn(|j| nibble(&blk[2..], j)), -8.0 * dw),
                    Format::Q4_1 => (std::array::from_fn(|j| nibble(&blk[4..], j)), f16_at(blk, 2)),
                    Format::Q8_0 => (std::array::from_fn(|j| blk[2 + j] as i8 as i32), 0.0),
                };
                // Lane l of pmaddwd on the low half holds pairs (2l, 2l+1); on the high half
                // (16+2l, 17+2l); the two are added lane by lane.
                let scale = dw * acts.d[xb];
                for (l, a) in acc.iter_mut().enumerate() {
                    let p = w[2 * l] * xq[2 * l] as i32
                        + w[2 * l + 1] * xq[2 * l + 1] as i32
                        + (w[16 + 2 * l] * xq[16 + 2 * l] as i32 + w[17 + 2 * l] * xq[17 + 2 * l] as i32);
                    *a = (p as f32).mul_add(scale, *a);
                }
                ms[b] = m;
            }
            let mins = if format == Format::Q8_0 { 0.0 } else { min_terms(&ms, &acts.s[i * nb..(i + 1) * nb]) };
            out_t[k * n + i] = hsum8(&acc) + mins;
        }
    }
}

/// `Σ m_b·s_b` over a row's blocks in eight lanes (the order both paths use): the weight
/// minimums times the activation block sums.
pub fn min_terms(m: &[f32], s: &[f32]) -> f32 {
    let mut acc = [0.0f32; 8];
    let (cm, cs) = (m.chunks_exact(8), s.chunks_exact(8));
    let tail = cm.remainder().iter().zip(cs.remainder()).fold(0.0f32, |t, (a, b)| a.mul_add(*b, t));
    for (a, b) in cm.zip(cs) {
        for l in 0..8 {
            acc[l] = a[l].mul_add(b[l], acc[l]);
        }
    }
    hsum8(&acc) + tail
}

/// Horizontal sum in the order of the SIMD path's reduction.
fn hsum8(a: &[f32; 8]) -> f32 {
    let s: [f32; 4] = std::array::from_fn(|j| a[j] + a[j + 4]);
    let t = [s[0] + s[2], s[1] + s[3]];
    t[0] + t[1]
}

fn nibble(qs: &[u8], j: usize) -> i32 {
    (if j < 16 { qs[j] & 0x0F } else { qs[j - 16] >> 4 }) as i32
}

#[cfg(target_arch = "x86_64")]
mod simd {
    use std::arch::x86_64::*;

    use super::{Acts, Format, BLOCK};

    const Q4_0: u8 = 0;
    const Q4_1: u8 = 1;
    const Q8_0: u8 = 2;
    /// Most activation rows multiplied per unpacked weight block.
    const TILE: usize = 8;

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

    /// Whether the CPU fuses the two multiply-adds and their sum into `vpdpwssd` (AVX-512 VNNI
    /// on 256-bit vectors). The integer results are the same either way, so the choice is only
    /// about speed: measured on Zen 4, the fused form is ~20% faster for one or two activation
    /// rows (fewer instructions per block) and a few percent slower for eight (`pmaddwd` issues
    /// on two pipes).
    fn vnni() -> bool {
        static VNNI: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
        *VNNI.get_or_init(|| {
            std::env::var_os("AISERVE_NO_VNNI").is_none()
                && std::arch::is_x86_feature_detected!("avx512vnni")
                && std::arch::is_x86_feature_detected!("avx512vl")
        })
    }

    #[target_feature(enable = "avx2,fma,f16c")]
    pub unsafe fn dot_rows(
        format: Format,
        bytes: &[u8],
        cols: usize,
        rows: std::ops::Range<usize>,
        acts: &Acts,
        out_t: &mut [f32],
    ) {
        if acts.n <= 2 && vnni() {
            return dot_rows_vnni(format, bytes, cols, rows, acts, out_t);
        }
        match format {
            Format::Q4_0 => rows_of::<Q4_0, false>(bytes, cols, rows, acts, out_t),
            Format::Q4_1 => rows_of::<Q4_1, false>(bytes, cols, rows, acts, out_t),
            Format::Q8_0 => rows_of::<Q8_0, false>(bytes, cols, rows, acts, out_t),
        }
    }

    #[target_feature(enable = "avx2,fma,f16c,avx512vnni,avx512vl")]
    unsafe fn dot_rows_vnni(
        format: Format,
        bytes: &[u8],
        cols: usize,
        rows: std::ops::Range<usize>,
        acts: &Acts,
        out_t: &mut [f32],
    ) {
        match format {
            Format::Q4_0 => rows_of::<Q4_0, true>(bytes, cols, rows, acts, out_t),
            Format::Q4_1 => rows_of::<Q4_1, true>(bytes, cols, rows, acts, out_t),
            Format::Q8_0 => rows_of::<Q8_0, true>(bytes, cols, rows, acts, out_t),
        }
    }

    const fn block_bytes(f: u8) -> usize {
        match f {
            Q4_0 => Format::Q4_0.block_bytes(),
            Q4_1 => Format::Q4_1.block_bytes(),
            _ => Format::Q8_0.block_bytes(),
        }
    }

    /// Inlined into the entry points, which carry the target features.
    #[inline(always)]
    unsafe fn rows_of<const F: u8, const VNNI: bool>(
        bytes: &[u8],
        cols: usize,
        rows: std::ops::Range<usize>,
        acts: &Acts,
        out_t: &mut [f32],
    ) {
        let nb = cols / BLOCK;
        let row_bytes = nb * block_bytes(F);
        let n = acts.n;
        let mut ms = vec![0.0f32; nb];
        let ms = &mut ms[..];
        for (k, r) in rows.enumerate() {
            let row = bytes.as_ptr().add(r * row_bytes);
            let out = &mut out_t[k * n..(k + 1) * n];
            let mut i = 0;
            while i < n {
                let take = (n - i).min(TILE);
                match take {
                    1 => out[i] = tile::<F, VNNI, 1>(row, nb, acts, i, ms)[0],
                    2 => out[i..i + 2].copy_from_slice(&tile::<F, VNNI, 2>(row, nb, acts, i, ms)),
                    3 => out[i..i + 3].copy_from_slice(&tile::<F, VNNI, 3>(row, nb, acts, i, ms)),
                    4 => out[i..i + 4].copy_from_slice(&tile::<F, VNNI, 4>(row, nb, acts, i, ms)),
                    5 => out[i..i + 5].copy_from_slice(&tile::<F, VNNI, 5>(row, nb, acts, i, ms)),
                    6 => out[i..i + 6].copy_from_slice(&tile::<F, VNNI, 6>(row, nb, acts, i, ms)),
                    7 => out[i..i + 7].copy_from_slice(&tile::<F, VNNI, 7>(row, nb, acts, i, ms)),
                    _ => out[i..i + TILE].copy_from_slice(&tile::<F, VNNI, TILE>(row, nb, acts, i, ms)),
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

    /// The block's weights as two vectors of 16 i16 (values 0..16 and 16..32), its scale, and
    /// the factor of the activation sum.
    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn unpack<const F: u8>(blk: *const u8) -> (__m256i, __m256i, f32, f32) {
        let d = f16_at(blk);
        if F == Q8_0 {
            let lo = _mm256_cvtepi8_epi16(_mm_loadu_si128(blk.add(2) as *const __m128i));
            let hi = _mm256_cvtepi8_epi16(_mm_loadu_si128(blk.add(18) as *const __m128i));
            return (lo, hi, d, 0.0);
        }
        let (m, qs) = if F == Q4_1 { (f16_at(blk.add(2)), blk.add(4)) } else { (-8.0 * d, blk.add(2)) };
        let q = _mm_loadu_si128(qs as *const __m128i);
        let lo = _mm_and_si128(q, _mm_set1_epi8(0x0F));
        let hi = _mm_and_si128(_mm_srli_epi16::<4>(q), _mm_set1_epi8(0x0F));
        (_mm256_cvtepu8_epi16(lo), _mm256_cvtepu8_epi16(hi), d, m)
    }

    #[inline(always)]
    unsafe fn tile<const F: u8, const VNNI: bool, const R: usize>(
        row: *const u8,
        nb: usize,
        acts: &Acts,
        i0: usize,
        ms: &mut [f32],
    ) -> [f32; R] {
        let bb = block_bytes(F);
        let mut acc = [_mm256_setzero_ps(); R];
        let (q, ad) = (acts.q.as_ptr(), acts.d.as_ptr());
        for b in 0..nb {
            let (wl, wh, dw, m) = unpack::<F>(row.add(b * bb));
            *ms.get_unchecked_mut(b) = m;
            let dw = _mm256_set1_ps(dw);
            for (k, a) in acc.iter_mut().enumerate() {
                let xb = (i0 + k) * nb + b;
                let xl = _mm256_loadu_si256(q.add(xb * BLOCK) as *const __m256i);
                let xh = _mm256_loadu_si256(q.add(xb * BLOCK + 16) as *const __m256i);
                let p = if VNNI {
                    _mm256_dpwssd_epi32(_mm256_dpwssd_epi32(_mm256_setzero_si256(), wl, xl), wh, xh)
                } else {
                    _mm256_add_epi32(_mm256_madd_epi16(wl, xl), _mm256_madd_epi16(wh, xh))
                };
                let scale = _mm256_mul_ps(dw, _mm256_broadcast_ss(&*ad.add(xb)));
                *a = _mm256_fmadd_ps(_mm256_cvtepi32_ps(p), scale, *a);
            }
        }
        let mut out = [0.0f32; R];
        for (k, (o, a)) in out.iter_mut().zip(&acc).enumerate() {
            let i = i0 + k;
            *o = hsum(*a) + if F == Q8_0 { 0.0 } else { min_terms(&ms[..nb], &acts.s[i * nb..(i + 1) * nb]) };
        }
        out
    }

    /// [`super::min_terms`] with vector FMAs (the same fused operations, lane by lane).
    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn min_terms(m: &[f32], s: &[f32]) -> f32 {
        let mut acc = _mm256_setzero_ps();
        let full = m.len() / 8 * 8;
        for j in (0..full).step_by(8) {
            acc = _mm256_fmadd_ps(_mm256_loadu_ps(m.as_ptr().add(j)), _mm256_loadu_ps(s.as_ptr().add(j)), acc);
        }
        let tail = m[full..].iter().zip(&s[full..]).fold(0.0f32, |t, (a, b)| a.mul_add(*b, t));
        hsum(acc) + tail
    }

    /// Lanes summed as `((a0+a4) + (a2+a6)) + ((a1+a5) + (a3+a7))`, the order `hsum8` follows.
    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn hsum(v: __m256) -> f32 {
        let s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps::<1>(v));
        let s = _mm_add_ps(s, _mm_movehl_ps(s, s));
        let s = _mm_add_ss(s, _mm_movehdup_ps(s));
        _mm_cvtss_f32(s)
    }
}
