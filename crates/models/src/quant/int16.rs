//! Products of quantized weights with activations rounded to 16 bits per block of 32 (scale
//! `d = max|x| / 32767`, so each value is within 1/65534 of its block's largest): integer
//! multiply-adds (`pmaddwd`, 16 per instruction) instead of float FMAs (8), with a precision
//! 256× finer than llama.cpp's 8-bit activations. The integer part is exact, so every
//! instruction set, tile size and batch gives the same bits for a row.
//!
//! `w · x` over a block is `dw·dx·Σ q_w q_x + m·Σx`, where the weight is `dw·q_w + m` (Q4_1:
//! its minimum; Q4_0: `m = −8·dw`; Q8_0: `m = 0`) and `Σx` is the block's exact float sum.
//! Weights and activations are in [`layout`]'s group order, where one vector instruction per
//! group does the float work that would otherwise be done per block.

use super::layout;
use super::{Format, BLOCK};

/// 16-bit values in 64-byte blocks, so that vector loads never straddle two cache lines (a
/// straddling load costs two).
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

/// Activation rows as 16-bit blocks: per block a scale `d` and the exact sum `s` of its values;
/// the integers of each row in [`layout`]'s stream order.
#[derive(Default)]
pub struct Acts {
    pub n: usize,
    pub nb: usize,
    q: Aligned,
    d: Vec<f32>,
    s: Vec<f32>,
}

impl Acts {
    /// The rounded values of row `i`, in natural order.
    #[cfg(test)]
    pub fn values(&self, i: usize) -> Vec<i16> {
        let row = &self.q[i * self.nb * BLOCK..(i + 1) * self.nb * BLOCK];
        let mut out = vec![0; row.len()];
        for (b0, g) in layout::groups(self.nb) {
            for b in 0..g {
                for p in 0..BLOCK {
                    out[(b0 + b) * BLOCK + p] = row[b0 * BLOCK + layout::stream_index(g, b, p)];
                }
            }
        }
        out
    }

    /// Quantizes `x` (`n × cols`, `cols` a multiple of 32).
    pub fn quantize(x: &[f32], n: usize, cols: usize) -> Self {
        let nb = cols / BLOCK;
        let mut a =
            Acts { n, nb, q: Aligned(vec![Block([0; BLOCK]); n * nb]), d: vec![0.0; n * nb], s: vec![0.0; n * nb] };
        let mut natural = vec![0i16; cols];
        for (i, xr) in x.chunks_exact(cols).enumerate() {
            for (j, (xb, qb)) in xr.chunks_exact(BLOCK).zip(natural.chunks_exact_mut(BLOCK)).enumerate() {
                let amax = xb.iter().fold(0.0f32, |m, v| m.max(v.abs()));
                let d = amax / 32767.0;
                let id = if d > 0.0 { 1.0 / d } else { 0.0 };
                round_block(xb, id, qb);
                a.d[i * nb + j] = d;
                a.s[i * nb + j] = xb.iter().sum();
            }
            layout::pack_acts(&natural, &mut a.q[i * cols..(i + 1) * cols]);
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

/// `out_t[(r - rows.start) * n + i]` = weight row `r` (packed by [`layout::pack_row`]) ·
/// activation row `i`.
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
    let (nb, n) = (cols / BLOCK, acts.n);
    let row_bytes = nb * format.block_bytes();
    for (k, r) in rows.enumerate() {
        let groups: Vec<_> = layout::read_row(format, &bytes[r * row_bytes..(r + 1) * row_bytes]).collect();
        let ms: Vec<f32> = groups.iter().flat_map(|g| g.m[..g.g].to_vec()).collect();
        for i in 0..n {
            // Eight lanes as the SIMD path keeps them; lane l sums block l mod g of each group.
            let mut acc = [0.0f32; 8];
            let mut b0 = 0;
            for grp in &groups {
                let x = &acts.q[(i * nb + b0) * BLOCK..(i * nb + b0 + grp.g) * BLOCK];
                for (l, a) in acc.iter_mut().enumerate() {
                    let b = l % grp.g;
                    let sum: i32 = (0..2 * grp.g)
                        .flat_map(|v| [v * 16 + 2 * l, v * 16 + 2 * l + 1])
                        .map(|t| grp.q[t] * x[t] as i32)
                        .sum();
                    *a = (sum as f32).mul_add(grp.d[b] * acts.d[i * nb + b0 + b], *a);
                }
                b0 += grp.g;
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

#[cfg(target_arch = "x86_64")]
mod simd {
    use std::arch::x86_64::*;

    use super::{Acts, Format, BLOCK};
    use crate::quant::layout::{self, GROUP};

    const Q4_0: u8 = 0;
    const Q4_1: u8 = 1;
    const Q8_0: u8 = 2;
    /// Most activation rows multiplied per unpacked weight group.
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

    /// Whether the CPU fuses a multiply-add and the sum it goes into (`vpdpwssd`, AVX-512 VNNI
    /// on 256-bit vectors). The integer results are the same either way, so the choice is only
    /// about speed: on Zen 4, fewer instructions per group for one or two rows, the same speed
    /// as `pmaddwd` for eight (measured with `--bench quant_matmul`). `AISERVE_NO_VNNI=1` turns
    /// it off.
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
        if vnni() {
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

    /// The format a kernel's constant stands for.
    const fn format(f: u8) -> Format {
        match f {
            Q4_0 => Format::Q4_0,
            Q4_1 => Format::Q4_1,
            _ => Format::Q8_0,
        }
    }

    const fn block_bytes(f: u8) -> usize {
        format(f).block_bytes()
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
        for (k, r) in rows.enumerate() {
            let row = bytes.as_ptr().add(r * row_bytes);
            let out = &mut out_t[k * n..(k + 1) * n];
            let mut i = 0;
            while i < n {
                let take = (n - i).min(TILE);
                let o = &mut out[i..i + take];
                match take {
                    1 => o.copy_from_slice(&tile::<F, VNNI, 1>(row, nb, acts, i, &mut ms)),
                    2 => o.copy_from_slice(&tile::<F, VNNI, 2>(row, nb, acts, i, &mut ms)),
                    3 => o.copy_from_slice(&tile::<F, VNNI, 3>(row, nb, acts, i, &mut ms)),
                    4 => o.copy_from_slice(&tile::<F, VNNI, 4>(row, nb, acts, i, &mut ms)),
                    5 => o.copy_from_slice(&tile::<F, VNNI, 5>(row, nb, acts, i, &mut ms)),
                    6 => o.copy_from_slice(&tile::<F, VNNI, 6>(row, nb, acts, i, &mut ms)),
                    7 => o.copy_from_slice(&tile::<F, VNNI, 7>(row, nb, acts, i, &mut ms)),
                    _ => o.copy_from_slice(&tile::<F, VNNI, TILE>(row, nb, acts, i, &mut ms)),
                }
                i += take;
            }
        }
    }

    #[inline(always)]
    unsafe fn tile<const F: u8, const VNNI: bool, const R: usize>(
        row: *const u8,
        nb: usize,
        acts: &Acts,
        i0: usize,
        ms: &mut [f32],
    ) -> [f32; R] {
        let mut acc = [_mm256_setzero_ps(); R];
        let mut at = row;
        let full = nb / GROUP;
        for g in 0..full {
            group::<F, VNNI, R, GROUP>(at, g * GROUP, nb, acts, i0, &mut acc, ms);
            at = at.add(GROUP * block_bytes(F));
        }
        let mut b0 = full * GROUP;
        if nb - b0 >= 2 {
            group::<F, VNNI, R, 2>(at, b0, nb, acts, i0, &mut acc, ms);
            at = at.add(2 * block_bytes(F));
            b0 += 2;
        }
        if b0 < nb {
            group::<F, VNNI, R, 1>(at, b0, nb, acts, i0, &mut acc, ms);
        }
        let mut out = [0.0f32; R];
        for (k, (o, a)) in out.iter_mut().zip(&acc).enumerate() {
            let x = (i0 + k) * nb;
            *o = hsum(*a) + if F == Q8_0 { 0.0 } else { min_terms(&ms[..nb], &acts.s[x..x + nb]) };
        }
        out
    }

    /// One group of `G` blocks at `p` (first block `b0`) times `R` activation rows from `i0`:
    /// the weights are unpacked once, then each row takes `2G` multiply-adds, one conversion
    /// and one FMA. Writes the blocks' `m` terms (Q4_1: minimums; Q4_0: `−8·d`) to `ms`.
    #[inline(always)]
    unsafe fn group<const F: u8, const VNNI: bool, const R: usize, const G: usize>(
        p: *const u8,
        b0: usize,
        nb: usize,
        acts: &Acts,
        i0: usize,
        acc: &mut [__m256; R],
        ms: &mut [f32],
    ) {
        // G f16 values at h as floats in the low lanes.
        let halfs = |h: *const u8| match G {
            4 => _mm_cvtph_ps(_mm_loadl_epi64(h as *const __m128i)),
            2 => _mm_cvtph_ps(_mm_cvtsi32_si128((h as *const i32).read_unaligned())),
            _ => _mm_cvtph_ps(_mm_cvtsi32_si128((h as *const u16).read_unaligned() as i32)),
        };
        let dw = halfs(p);
        if F != Q8_0 {
            let m = if F == Q4_1 { halfs(p.add(2 * G)) } else { _mm_mul_ps(dw, _mm_set1_ps(-8.0)) };
            let mut lanes = [0.0f32; 4];
            _mm_storeu_ps(lanes.as_mut_ptr(), m);
            ms[b0..b0 + G].copy_from_slice(&lanes[..G]);
        }
        let payload = p.add(layout::header(format(F), G));
        let mut w = [[_mm256_setzero_si256(); 2]; G];
        for (c, w) in w.iter_mut().enumerate() {
            // Vectors c and c + G (numbered as in the layout), kept as w[c][0] and w[c][1].
            *w = if F == Q8_0 {
                let at = |v: usize| _mm256_cvtepi8_epi16(_mm_loadu_si128(payload.add(16 * v) as *const __m128i));
                [at(c), at(c + G)]
            } else {
                let q = _mm_loadu_si128(payload.add(16 * c) as *const __m128i);
                let mask = _mm_set1_epi8(0x0F);
                [
                    _mm256_cvtepu8_epi16(_mm_and_si128(q, mask)),
                    _mm256_cvtepu8_epi16(_mm_and_si128(_mm_srli_epi16::<4>(q), mask)),
                ]
            };
        }
        for (k, a) in acc.iter_mut().enumerate() {
            let row = i0 + k;
            let x = acts.q.as_ptr().add((row * nb + b0) * BLOCK);
            let ld = |v: usize| _mm256_loadu_si256(x.add(16 * v) as *const __m256i);
            // G short chains of integer sums, added as a tree (exact, so the order changes no
            // bit): long chains would keep the multipliers waiting on each other.
            let mut t = [_mm256_setzero_si256(); G];
            for (c, t) in t.iter_mut().enumerate() {
                let lo = _mm256_madd_epi16(w[c][0], ld(c));
                *t = if VNNI {
                    _mm256_dpwssd_epi32(lo, w[c][1], ld(c + G))
                } else {
                    _mm256_add_epi32(lo, _mm256_madd_epi16(w[c][1], ld(c + G)))
                };
            }
            let s = match G {
                4 => _mm256_add_epi32(_mm256_add_epi32(t[0], t[1]), _mm256_add_epi32(t[2], t[3])),
                2 => _mm256_add_epi32(t[0], t[1]),
                _ => t[0],
            };
            let dx = acts.d.as_ptr().add(row * nb + b0);
            // Lane l's scale: block l mod G's weight scale times its activation scale.
            let sc = match G {
                4 => {
                    let t = _mm_mul_ps(dw, _mm_loadu_ps(dx));
                    _mm256_set_m128(t, t)
                }
                2 => {
                    let t = _mm_mul_ps(dw, _mm_castpd_ps(_mm_load_sd(dx as *const f64)));
                    let t = _mm_movelh_ps(t, t);
                    _mm256_set_m128(t, t)
                }
                _ => _mm256_set1_ps(_mm_cvtss_f32(dw) * *dx),
            };
            *a = _mm256_fmadd_ps(_mm256_cvtepi32_ps(s), sc, *a);
        }
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
