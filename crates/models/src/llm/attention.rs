//! Causal attention of packed token rows against per-sequence KV caches (grouped-query: several
//! query heads share one key/value head).

use super::act::softmax;
use super::kv::Elem;
use super::llama::LlamaConfig;
use crate::quant::team::Team;

/// A token row of the batch: the piece (sequence) it belongs to and its position in it.
#[derive(Clone, Copy, Debug)]
pub struct Row {
    pub piece: usize,
    pub pos: usize,
}

/// Which positions a layer's queries see and how their scores are scaled.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Scope {
    /// Only positions less than this far back (sliding-window layers).
    pub window: Option<usize>,
    /// What query·key products are multiplied by.
    pub scale: f32,
    /// Scores become `cap · tanh(score / cap)` before the softmax.
    pub softcap: Option<f32>,
}

impl Scope {
    /// Layer `l`'s scope in model `cfg`.
    pub fn of(cfg: &LlamaConfig, l: usize) -> Self {
        let v = &cfg.variant;
        Self {
            window: v.sliding.as_ref().filter(|_| cfg.slides(l)).map(|s| s.window),
            scale: v.attn_scale.unwrap_or(1.0 / (cfg.head_dim as f32).sqrt()),
            softcap: v.attn_softcap,
        }
    }

    /// The first position a query at `pos` sees.
    fn first(&self, pos: usize) -> usize {
        self.window.map_or(0, |w| (pos + 1).saturating_sub(w))
    }

    /// Soft-caps scores in place, where the model does.
    fn cap(&self, scores: &mut [f32]) {
        if let Some(cap) = self.softcap {
            scores.iter_mut().for_each(|s| *s = cap * (*s / cap).tanh());
        }
    }
}

/// Attention below this many multiply-adds runs on the calling thread.
const PARALLEL_MACS: usize = 1 << 15;

/// `out` (`rows × q_dim`): each row's query heads attend to its sequence's keys and values at
/// positions `0..=pos` (the last `window` of them in sliding layers). `qkv` rows hold `[q | k | v]`; `caches[piece]` are `(keys, values)`,
/// `len × kv_dim` each, already holding this step's tokens.
///
/// Work is split by (row, KV head): the query heads sharing a KV head are one task, so each
/// key and value is read once for the whole group, and even a single decoding sequence spreads
/// over the cores.
pub fn causal<T: Elem>(
    team: &mut Team,
    cfg: &LlamaConfig,
    scope: Scope,
    rows: &[Row],
    qkv: &[f32],
    caches: &[(&[T], &[T])],
    out: &mut [f32],
) {
    let job = Job { cfg, scope, rows, qkv, caches };
    let macs: usize = rows.iter().map(|r| (r.pos + 1 - scope.first(r.pos)) * cfg.q_dim() * 2).sum();
    let chunk = cfg.heads / cfg.kv_heads * cfg.head_dim;
    let task = |t: usize, o: &mut [f32]| {
        #[cfg(target_arch = "x86_64")]
        if cfg.head_dim.is_multiple_of(8) && simd::available() {
            // SAFETY: the CPU has AVX2, FMA and F16C, and heads are whole vectors (checked above).
            return unsafe { simd::attend(&job, t, o) };
        }
        attend(&job, t, o)
    };
    if macs < PARALLEL_MACS {
        out.chunks_exact_mut(chunk).enumerate().for_each(|(t, o)| task(t, o));
    } else {
        team.chunks_mut(out, chunk, task);
    }
}

/// What every attention task reads.
struct Job<'a, T> {
    cfg: &'a LlamaConfig,
    scope: Scope,
    rows: &'a [Row],
    qkv: &'a [f32],
    caches: &'a [(&'a [T], &'a [T])],
}

/// Task `task` = (row, KV head): the group's query heads against the row's keys and values,
/// written to `o` (`group × head_dim`). The portable version ([`simd::attend`] is the fast one).
fn attend<T: Elem>(job: &Job<T>, task: usize, o: &mut [f32]) {
    let cfg = job.cfg;
    let (qd, kvd, hd) = (cfg.q_dim(), cfg.kv_dim(), cfg.head_dim);
    let stride = qd + 2 * kvd;
    let group = cfg.heads / cfg.kv_heads;
    let scale = job.scope.scale;
    let (i, kvh) = (task / cfg.kv_heads, task % cfg.kv_heads);
    let row = job.rows[i];
    let (keys, values) = job.caches[row.piece];
    // Positions `first..=pos`, counted from `first`.
    let first = job.scope.first(row.pos);
    let (keys, values) = (&keys[first * kvd..], &values[first * kvd..]);
    let ctx = row.pos + 1 - first;
    let mut scores = vec![0.0f32; ctx * group];
    let key = |t: usize| &keys[t * kvd + kvh * hd..t * kvd + (kvh + 1) * hd];
    for g in 0..group {
        let h = kvh * group + g;
        let qh = &job.qkv[i * stride + h * hd..i * stride + (h + 1) * hd];
        let s = &mut scores[g * ctx..(g + 1) * ctx];
        // Four keys at a time: four independent sums (each in the order `dot` uses) keep the
        // adders busy where one key's sum would wait on itself.
        let mut quads = s.chunks_exact_mut(4);
        for (n, out) in (&mut quads).enumerate() {
            let d = dot4(qh, [key(4 * n), key(4 * n + 1), key(4 * n + 2), key(4 * n + 3)]);
            out.iter_mut().zip(d).for_each(|(o, d)| *o = d * scale);
        }
        let done = ctx - quads.into_remainder().len();
        for (t, v) in s.iter_mut().enumerate().skip(done) {
            *v = dot(qh, key(t)) * scale;
        }
        job.scope.cap(s);
        softmax(s);
    }
    // Each output value sums p·v over positions in order, in registers 32 values at a time
    // (accumulating in `o` itself would store and reload it for every position).
    let value = |t: usize| &values[t * kvd + kvh * hd..t * kvd + (kvh + 1) * hd];
    for (g, oh) in o.chunks_exact_mut(hd).enumerate() {
        let p = &scores[g * ctx..(g + 1) * ctx];
        let mut c0 = 0;
        while c0 + 32 <= hd {
            let mut acc = [0.0f32; 32];
            for (t, p) in p.iter().enumerate() {
                let v = &value(t)[c0..c0 + 32];
                for j in 0..32 {
                    acc[j] += p * v[j].to_f32();
                }
            }
            oh[c0..c0 + 32].copy_from_slice(&acc);
            c0 += 32;
        }
        for (c, o) in oh.iter_mut().enumerate().skip(c0) {
            *o = p.iter().enumerate().fold(0.0, |a, (t, p)| a + p * value(t)[c].to_f32());
        }
    }
}

/// [`dot`] of `a` with four vectors at once (the same operations per vector).
#[inline(always)]
fn dot4<T: Elem>(a: &[f32], b: [&[T]; 4]) -> [f32; 4] {
    let mut acc = [[0.0f32; 8]; 4];
    let n = a.len() / 8 * 8;
    for c in (0..n).step_by(8) {
        let x = &a[c..c + 8];
        for (acc, b) in acc.iter_mut().zip(&b) {
            let y = &b[c..c + 8];
            for j in 0..8 {
                acc[j] += x[j] * y[j].to_f32();
            }
        }
    }
    std::array::from_fn(|k| {
        let tail: f32 = a[n..].iter().zip(&b[k][n..]).map(|(x, y)| x * y.to_f32()).sum();
        acc[k].iter().sum::<f32>() + tail
    })
}

/// Dot product in eight independent lanes (vectorised by the compiler; inlined into `attend`'s
/// versions).
#[inline(always)]
fn dot<T: Elem>(a: &[f32], b: &[T]) -> f32 {
    let mut acc = [0.0f32; 8];
    let (ca, cb) = (a.chunks_exact(8), b.chunks_exact(8));
    let tail: f32 = ca.remainder().iter().zip(cb.remainder()).map(|(x, y)| x * y.to_f32()).sum();
    for (x, y) in ca.zip(cb) {
        for j in 0..8 {
            acc[j] += x[j] * y[j].to_f32();
        }
    }
    acc.iter().sum::<f32>() + tail
}

/// Attention with AVX2, FMA and F16C (f16 caches): scores of eight keys at a time (eight
/// independent sums, reduced together), and each output vector accumulated in registers over
/// spans of positions, the next keys and values prefetched.
#[cfg(target_arch = "x86_64")]
mod simd {
    use std::arch::x86_64::*;

    use super::{softmax, Elem, Job};

    pub fn available() -> bool {
        static YES: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
        *YES.get_or_init(|| {
            is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma") && is_x86_feature_detected!("f16c")
        })
    }

    /// [`super::attend`] for heads of a multiple of 8 values.
    #[target_feature(enable = "avx2,fma,f16c")]
    pub unsafe fn attend<T: Elem>(job: &Job<T>, task: usize, o: &mut [f32]) {
        let cfg = job.cfg;
        let (qd, kvd, hd) = (cfg.q_dim(), cfg.kv_dim(), cfg.head_dim);
        let (stride, group, vecs) = (qd + 2 * kvd, cfg.heads / cfg.kv_heads, hd / 8);
        let scale = _mm256_set1_ps(job.scope.scale);
        let (i, kvh) = (task / cfg.kv_heads, task % cfg.kv_heads);
        let row = job.rows[i];
        let (keys, values) = job.caches[row.piece];
        // Positions `first..=pos`, counted from `first`.
        let first = job.scope.first(row.pos);
        let (keys, values) = (&keys[first * kvd..], &values[first * kvd..]);
        let ctx = row.pos + 1 - first;
        assert!(hd % 8 == 0 && keys.len() >= ctx * kvd && values.len() >= ctx * kvd && o.len() == group * hd);
        assert!(job.qkv.len() >= (i + 1) * stride);
        let key = |t: usize| keys.as_ptr().wrapping_add(t * kvd + kvh * hd);
        let value = |t: usize| values.as_ptr().wrapping_add(t * kvd + kvh * hd);
        let mut scores = vec![0.0f32; ctx * group];
        // SAFETY: every call passes a head `g < group`, so query head `kvh·group + g < heads`
        // of row `i` starts inside `job.qkv` (asserted above) with its `hd` values after it.
        let q = |g: usize| unsafe { job.qkv.as_ptr().add(i * stride + (kvh * group + g) * hd) };
        // Eight keys at a time (2 KiB at 64 values a head), which stay in L1 while every query
        // head of the group meets them: a long context's keys are read from memory once.
        let mut t = 0;
        while t + 8 <= ctx {
            // The next eight keys, asked for while these are used (8 KiB ahead of their rows
            // for SmolLM2's heads: the prefetchers alone fall behind these strided rows).
            for k in 8..16 {
                for line in (0..hd).step_by(64 / std::mem::size_of::<T>()) {
                    _mm_prefetch::<_MM_HINT_T0>(key(t + k).wrapping_add(line) as *const i8);
                }
            }
            for g in 0..group {
                let mut acc = [_mm256_setzero_ps(); 8];
                for c in 0..vecs {
                    // SAFETY: vector `c < hd / 8` of query head `g` and of the head's keys at
                    // positions `t + k < ctx`, inside `keys` (`ctx·kvd` values, asserted above).
                    unsafe {
                        let qv = _mm256_loadu_ps(q(g).add(8 * c));
                        for (k, a) in acc.iter_mut().enumerate() {
                            *a = _mm256_fmadd_ps(qv, load8(key(t + k).add(8 * c)), *a);
                        }
                    }
                }
                // SAFETY: scores `g·ctx + t..g·ctx + t + 8` of `ctx·group`, as `t + 8 <= ctx`.
                unsafe { _mm256_storeu_ps(scores.as_mut_ptr().add(g * ctx + t), _mm256_mul_ps(sum8(acc), scale)) };
            }
            t += 8;
        }
        for t in t..ctx {
            for g in 0..group {
                let mut acc = _mm256_setzero_ps();
                for c in 0..vecs {
                    // SAFETY: vector `c < hd / 8` of query head `g` and of the head's key at
                    // position `t < ctx`, inside `keys` (asserted above).
                    acc = unsafe { _mm256_fmadd_ps(_mm256_loadu_ps(q(g).add(8 * c)), load8(key(t).add(8 * c)), acc) };
                }
                let all = sum8([acc, acc, acc, acc, acc, acc, acc, acc]);
                scores[g * ctx + t] = _mm_cvtss_f32(_mm256_castps256_ps128(_mm256_mul_ps(all, scale)));
            }
        }
        job.scope.cap(&mut scores);
        scores.chunks_exact_mut(ctx).for_each(softmax);
        // Values in spans of positions that stay in L1 while every head of the group adds them
        // up; each output vector sums its positions in order, in a register within a span and
        // in `o` between spans (the same operations as one register over all positions).
        o.fill(0.0);
        for t0 in (0..ctx).step_by(SPAN) {
            let span = t0..(t0 + SPAN).min(ctx);
            for t in t0 + SPAN..(t0 + 2 * SPAN).min(ctx) {
                for line in (0..hd).step_by(64 / std::mem::size_of::<T>()) {
                    _mm_prefetch::<_MM_HINT_T0>(value(t).wrapping_add(line) as *const i8);
                }
            }
            for (g, oh) in o.chunks_exact_mut(hd).enumerate() {
                let p = &scores[g * ctx..(g + 1) * ctx];
                let out = oh.as_mut_ptr();
                let mut c0 = 0;
                while c0 + 4 <= vecs {
                    // SAFETY: vectors `c0 + k < hd / 8` of `oh` (`hd` values) and of the head's
                    // values at positions `t < ctx`, inside `values` (`ctx·kvd`, asserted above).
                    unsafe {
                        let mut acc: [__m256; 4] = std::array::from_fn(|k| _mm256_loadu_ps(out.add(8 * (c0 + k))));
                        for t in span.clone() {
                            let (pv, v) = (_mm256_set1_ps(p[t]), value(t).add(8 * c0));
                            for (k, a) in acc.iter_mut().enumerate() {
                                *a = _mm256_fmadd_ps(pv, load8(v.add(8 * k)), *a);
                            }
                        }
                        for (k, a) in acc.iter().enumerate() {
                            _mm256_storeu_ps(out.add(8 * (c0 + k)), *a);
                        }
                    }
                    c0 += 4;
                }
                for c in c0..vecs {
                    // SAFETY: vector `c < hd / 8` of `oh` and of the head's values at positions
                    // `t < ctx`, as above.
                    unsafe {
                        let mut acc = _mm256_loadu_ps(out.add(8 * c));
                        for t in span.clone() {
                            acc = _mm256_fmadd_ps(_mm256_set1_ps(p[t]), load8(value(t).add(8 * c)), acc);
                        }
                        _mm256_storeu_ps(out.add(8 * c), acc);
                    }
                }
            }
        }
    }

    /// Positions whose values are summed per pass over the group's heads (8 KiB at 64 values).
    const SPAN: usize = 32;

    /// Eight cached values from `p` as floats (the same target features as [`attend`], so it
    /// is inlined there).
    ///
    /// # Safety
    /// `p` must be valid for reads of 8 values, and the CPU must have AVX2, FMA and F16C. (`T`
    /// is f16 when `T::HALF`, else f32: `Elem` is sealed.)
    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn load8<T: Elem>(p: *const T) -> __m256 {
        // SAFETY: the loads read the 8 values (16 or 32 bytes) at `p` (this function's contract).
        unsafe {
            if T::HALF {
                _mm256_cvtph_ps(_mm_loadu_si128(p as *const __m128i))
            } else {
                _mm256_loadu_ps(p as *const f32)
            }
        }
    }

    /// The lane sums of eight vectors, as one vector (lane `k` = sum of `v[k]`).
    #[inline]
    #[target_feature(enable = "avx2,fma")]
    fn sum8(v: [__m256; 8]) -> __m256 {
        let (a, b) = (_mm256_hadd_ps(v[0], v[1]), _mm256_hadd_ps(v[2], v[3]));
        let (c, d) = (_mm256_hadd_ps(v[4], v[5]), _mm256_hadd_ps(v[6], v[7]));
        let (lo, hi) = (_mm256_hadd_ps(a, b), _mm256_hadd_ps(c, d));
        _mm256_add_ps(_mm256_permute2f128_ps::<0x20>(lo, hi), _mm256_permute2f128_ps::<0x31>(lo, hi))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(head_dim: usize) -> LlamaConfig {
        LlamaConfig {
            hidden: 64,
            intermediate: 64,
            layers: 1,
            heads: 6,
            kv_heads: 2,
            head_dim,
            vocab: 10,
            rms_eps: 1e-5,
            rope_theta: 10000.0,
            max_context: 64,
            rope_pairs: crate::llm::rope::RopePairs::Adjacent,
            rope_divisors: None,
            kv: Default::default(),
            variant: Default::default(),
        }
    }

    /// Softmax-weighted sums written out plainly, for one row (at `pos`) and query head.
    fn reference(
        cfg: &LlamaConfig,
        scope: Scope,
        q: &[f32],
        keys: &[f32],
        values: &[f32],
        kvh: usize,
        pos: usize,
    ) -> Vec<f32> {
        let (hd, kvd) = (cfg.head_dim, cfg.kv_dim());
        let seen: Vec<usize> = (0..=pos).filter(|t| scope.window.is_none_or(|w| pos - t < w)).collect();
        let s: Vec<f64> = seen
            .iter()
            .map(|t| {
                let s = (0..hd).map(|d| q[d] as f64 * keys[t * kvd + kvh * hd + d] as f64).sum::<f64>()
                    * scope.scale as f64;
                scope.softcap.map_or(s, |c| c as f64 * (s / c as f64).tanh())
            })
            .collect();
        let max = s.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
        let e: Vec<f64> = s.iter().map(|v| (v - max).exp()).collect();
        let z: f64 = e.iter().sum();
        (0..hd)
            .map(|d| {
                seen.iter().zip(&e).map(|(t, e)| e / z * values[t * kvd + kvh * hd + d] as f64).sum::<f64>() as f32
            })
            .collect()
    }

    #[test]
    fn every_path_matches_plain_softmax_attention() {
        // Head sizes with and without a tail after whole vectors; contexts around 8 keys.
        // Every position with the usual scale; Gemma's sliding window (5 positions) with another
        // scale and soft-capped scores.
        let scopes = |hd: usize| [Scope::of(&config(hd), 0), Scope { window: Some(5), scale: 0.3, softcap: Some(2.0) }];
        for (hd, scope) in [8, 24, 64, 36].into_iter().flat_map(|hd| scopes(hd).map(|s| (hd, s))) {
            let cfg = config(hd);
            let (qd, kvd) = (cfg.q_dim(), cfg.kv_dim());
            let stride = qd + 2 * kvd;
            let ctx = 19;
            let val = |i: usize, k: usize| (((i * 7919 + k * 104729) % 1000) as f32 / 500.0 - 1.0) * 0.8;
            // f16 caches hold these values exactly (multiples of 1/500 rounded to 11 bits first).
            let f16_exact = |v: f32| half::f16::from_f32(v).to_f32();
            let keys: Vec<f32> = (0..ctx * kvd).map(|i| f16_exact(val(i, 1))).collect();
            let values: Vec<f32> = (0..ctx * kvd).map(|i| f16_exact(val(i, 2))).collect();
            let keys16: Vec<half::f16> = keys.iter().map(|v| half::f16::from_f32(*v)).collect();
            let values16: Vec<half::f16> = values.iter().map(|v| half::f16::from_f32(*v)).collect();
            // Three rows of one sequence at positions 0, 7 and 18.
            let rows: Vec<Row> = [0, 7, 18].iter().map(|&pos| Row { piece: 0, pos }).collect();
            let qkv: Vec<f32> = (0..rows.len() * stride).map(|i| val(i, 3)).collect();
            let caches = [(&keys[..], &values[..])];
            let mut out = vec![0.0; rows.len() * qd];
            causal(&mut Team::new(2), &cfg, scope, &rows, &qkv, &caches, &mut out);
            let mut half_cache = vec![0.0; rows.len() * qd];
            causal(&mut Team::new(2), &cfg, scope, &rows, &qkv, &[(&keys16[..], &values16[..])], &mut half_cache);
            let mut plain = vec![0.0; rows.len() * qd];
            let job = Job { cfg: &cfg, scope, rows: &rows, qkv: &qkv, caches: &caches };
            let chunk = cfg.heads / cfg.kv_heads * hd;
            plain.chunks_exact_mut(chunk).enumerate().for_each(|(t, o)| attend(&job, t, o));
            let mut plain16 = vec![0.0; rows.len() * qd];
            let job16 = Job { cfg: &cfg, scope, rows: &rows, qkv: &qkv, caches: &[(&keys16[..], &values16[..])] };
            plain16.chunks_exact_mut(chunk).enumerate().for_each(|(t, o)| attend(&job16, t, o));
            for (i, row) in rows.iter().enumerate() {
                for h in 0..cfg.heads {
                    let q = &qkv[i * stride + h * hd..i * stride + (h + 1) * hd];
                    let want = reference(&cfg, scope, q, &keys, &values, h / (cfg.heads / cfg.kv_heads), row.pos);
                    for (name, got) in
                        [("dispatched", &out), ("portable", &plain), ("f16", &half_cache), ("portable f16", &plain16)]
                    {
                        for (d, w) in want.iter().enumerate() {
                            let g = got[i * qd + h * hd + d];
                            assert!((g - w).abs() < 1e-5, "{name} hd={hd} {scope:?} row {i} head {h}[{d}]: {g} vs {w}");
                        }
                    }
                }
            }
        }
    }
}
