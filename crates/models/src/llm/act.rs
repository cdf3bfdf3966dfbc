//! The decoder's elementwise functions built on `exp`: softmax over attention scores, SwiGLU and
//! GeGLU.
//!
//! A decode step at eight sequences takes ~400 000 exponentials (SwiGLU: 8 × 1536 × 30; softmax:
//! a score per head and position); libm's `expf`, one value per call, was 3–4% of the step.
//! Here they run on eight lanes: [`aiserve_core::math::exp`]'s operations in vector form, and
//! that scalar function for tails and for CPUs without AVX2, so a value gets the same bits
//! whichever path computes it.

use aiserve_core::math::exp;

/// Softmax of `s` in place.
pub fn softmax(s: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    if simd::available() {
        // SAFETY: the CPU has AVX2 and FMA (checked above).
        return unsafe { simd::softmax(s) };
    }
    let max = s.iter().fold(f32::NEG_INFINITY, |m, v| m.max(*v));
    let mut lanes = [0.0f32; 8];
    for (i, v) in s.iter_mut().enumerate() {
        *v = exp(*v - max);
        lanes[i % 8] += *v;
    }
    let inv = 1.0 / sum_lanes(lanes);
    s.iter_mut().for_each(|v| *v *= inv);
}

/// SwiGLU: `silu(gate) · up` from rows holding `[gate | up]`.
pub fn swiglu(gate_up: &[f32], width: usize, out: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    let vector: Vector = simd::swiglu;
    #[cfg(not(target_arch = "x86_64"))]
    let vector = ();
    glu(gate_up, width, out, |g| g / (1.0 + exp(-g)), vector);
}

/// A row's vector path: writes what it can of `act(gate) · up`, returns how many values.
#[cfg(target_arch = "x86_64")]
type Vector = unsafe fn(&[f32], &[f32], &mut [f32]) -> usize;
#[cfg(not(target_arch = "x86_64"))]
type Vector = ();

/// `act(gate) · up` for rows holding `[gate | up]`: the vector path where the CPU has AVX2 and
/// FMA, `act` for the tail (the same operations, so the same bits).
fn glu(gate_up: &[f32], width: usize, out: &mut [f32], act: fn(f32) -> f32, vector: Vector) {
    for (gu, o) in gate_up.chunks_exact(2 * width).zip(out.chunks_exact_mut(width)) {
        let (g, u) = gu.split_at(width);
        let mut done = 0;
        #[cfg(target_arch = "x86_64")]
        if simd::available() {
            // SAFETY: the CPU has AVX2 and FMA (checked above), which the vector paths need.
            done = unsafe { vector(g, u, o) };
        }
        #[cfg(not(target_arch = "x86_64"))]
        let () = vector;
        for ((o, g), u) in o.iter_mut().zip(g).zip(u).skip(done) {
            *o = act(*g) * u;
        }
    }
}

/// `sqrt(2/π)`, doubled: GELU's tanh approximation `0.5·x·(1 + tanh(u))` is `x · sigmoid(2u)`
/// with `u = sqrt(2/π)·(x + 0.044715·x³)`.
const GELU_2U: f32 = 2.0 * 0.797_884_6;
const GELU_CUBIC: f32 = 0.044_715;

/// GeGLU: `gelu(gate) · up` (GELU's tanh approximation, as Gemma and llama.cpp use) from rows
/// holding `[gate | up]`.
pub fn geglu(gate_up: &[f32], width: usize, out: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    let vector: Vector = simd::geglu;
    #[cfg(not(target_arch = "x86_64"))]
    let vector = ();
    glu(gate_up, width, out, |g| g / (1.0 + exp(-GELU_2U * (g + GELU_CUBIC * g * g * g))), vector);
}

/// Eight lane sums added as `((l0+l4)+(l2+l6)) + ((l1+l5)+(l3+l7))`, as the vector path does.
fn sum_lanes(l: [f32; 8]) -> f32 {
    ((l[0] + l[4]) + (l[2] + l[6])) + ((l[1] + l[5]) + (l[3] + l[7]))
}

#[cfg(target_arch = "x86_64")]
mod simd {
    use std::arch::x86_64::*;

    use aiserve_core::math::{exp, HI, LN2_HI, LN2_LO, LO, LOG2E, P};

    use super::{sum_lanes, GELU_2U, GELU_CUBIC};

    pub fn available() -> bool {
        static YES: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
        *YES.get_or_init(|| is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma"))
    }

    /// [`exp`] on eight lanes.
    #[inline]
    #[target_feature(enable = "avx2,fma")]
    fn exp8(x: __m256) -> __m256 {
        let x = _mm256_min_ps(_mm256_max_ps(x, _mm256_set1_ps(LO)), _mm256_set1_ps(HI));
        let n = _mm256_floor_ps(_mm256_fmadd_ps(x, _mm256_set1_ps(LOG2E), _mm256_set1_ps(0.5)));
        let r = _mm256_fmadd_ps(n, _mm256_set1_ps(-LN2_HI), x);
        let r = _mm256_fmadd_ps(n, _mm256_set1_ps(-LN2_LO), r);
        let mut p = _mm256_set1_ps(P[0]);
        for c in &P[1..] {
            p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(*c));
        }
        let y = _mm256_add_ps(_mm256_fmadd_ps(p, _mm256_mul_ps(r, r), r), _mm256_set1_ps(1.0));
        let pow2 = _mm256_slli_epi32::<23>(_mm256_add_epi32(_mm256_cvtps_epi32(n), _mm256_set1_epi32(127)));
        _mm256_mul_ps(y, _mm256_castsi256_ps(pow2))
    }

    /// [`super::softmax`]: the same values, lane sums and order.
    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn softmax(s: &mut [f32]) {
        let max = s.iter().fold(f32::NEG_INFINITY, |m, v| m.max(*v));
        let n8 = s.len() / 8 * 8;
        let mut acc = _mm256_setzero_ps();
        let p = s.as_mut_ptr();
        for i in (0..n8).step_by(8) {
            // SAFETY: `i + 8 <= n8 <= s.len()`: the load and the store are values `i..i + 8` of `s`.
            unsafe {
                let e = exp8(_mm256_sub_ps(_mm256_loadu_ps(p.add(i)), _mm256_set1_ps(max)));
                _mm256_storeu_ps(p.add(i), e);
                acc = _mm256_add_ps(acc, e);
            }
        }
        let mut lanes = [0.0f32; 8];
        // SAFETY: the store fills `lanes`, 8 values.
        unsafe { _mm256_storeu_ps(lanes.as_mut_ptr(), acc) };
        for (i, v) in s.iter_mut().enumerate().skip(n8) {
            *v = exp(*v - max);
            lanes[i % 8] += *v;
        }
        let inv = 1.0 / sum_lanes(lanes);
        s.iter_mut().for_each(|v| *v *= inv);
    }

    /// [`super::swiglu`] over whole vectors of one row; returns how many values it wrote.
    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn swiglu(g: &[f32], u: &[f32], o: &mut [f32]) -> usize {
        let n8 = o.len().min(g.len()).min(u.len()) / 8 * 8;
        for i in (0..n8).step_by(8) {
            // SAFETY: `i + 8 <= n8`, which is at most the length of `g`, `u` and `o`: the loads
            // and the store are values `i..i + 8` of each.
            unsafe {
                let gv = _mm256_loadu_ps(g.as_ptr().add(i));
                let e = exp8(_mm256_sub_ps(_mm256_setzero_ps(), gv));
                let silu = _mm256_div_ps(gv, _mm256_add_ps(_mm256_set1_ps(1.0), e));
                _mm256_storeu_ps(o.as_mut_ptr().add(i), _mm256_mul_ps(silu, _mm256_loadu_ps(u.as_ptr().add(i))));
            }
        }
        n8
    }

    /// [`super::geglu`] over whole vectors of one row (the scalar path's operations, so the
    /// same bits); returns how many values it wrote.
    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn geglu(g: &[f32], u: &[f32], o: &mut [f32]) -> usize {
        let n8 = o.len().min(g.len()).min(u.len()) / 8 * 8;
        for i in (0..n8).step_by(8) {
            // SAFETY: `i + 8 <= n8`, which is at most the length of `g`, `u` and `o`: the loads
            // and the store are values `i..i + 8` of each.
            unsafe {
                let x = _mm256_loadu_ps(g.as_ptr().add(i));
                let cube = _mm256_mul_ps(_mm256_mul_ps(_mm256_mul_ps(_mm256_set1_ps(GELU_CUBIC), x), x), x);
                let inner = _mm256_mul_ps(_mm256_set1_ps(-GELU_2U), _mm256_add_ps(x, cube));
                let gelu = _mm256_div_ps(x, _mm256_add_ps(_mm256_set1_ps(1.0), exp8(inner)));
                _mm256_storeu_ps(o.as_mut_ptr().add(i), _mm256_mul_ps(gelu, _mm256_loadu_ps(u.as_ptr().add(i))));
            }
        }
        n8
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vector_paths_give_the_scalar_bits() {
        let xs: Vec<f32> = (0..20_000).map(|i| -90.0 + i as f32 * 0.009_03).collect();
        // Softmax through the vector path (lengths with and without a tail) equals the scalar
        // formula's values to the last bit.
        for len in [1, 8, 13, 64] {
            let mut s: Vec<f32> = xs.iter().step_by(97).take(len).map(|x| x / 9.0).collect();
            let max = s.iter().fold(f32::NEG_INFINITY, |m, v| m.max(*v));
            let e: Vec<f32> = s.iter().map(|v| exp(v - max)).collect();
            let mut lanes = [0.0f32; 8];
            e.iter().enumerate().for_each(|(i, v)| lanes[i % 8] += v);
            let inv = 1.0 / sum_lanes(lanes);
            softmax(&mut s);
            assert_eq!(s, e.iter().map(|v| v * inv).collect::<Vec<_>>(), "len {len}");
        }
        let (g, u): (Vec<f32>, Vec<f32>) = (0..21).map(|i| (i as f32 * 0.7 - 7.0, 1.0 - i as f32 * 0.1)).unzip();
        let mut out = vec![0.0; 21];
        swiglu(&[g.clone(), u.clone()].concat(), 21, &mut out);
        for i in 0..21 {
            assert_eq!(out[i], g[i] / (1.0 + exp(-g[i])) * u[i]);
            let exact = g[i] as f64 / (1.0 + (-g[i] as f64).exp()) * u[i] as f64;
            assert!((out[i] as f64 - exact).abs() < 1e-5 * exact.abs().max(1.0), "{i}");
        }
        geglu(&[g.clone(), u.clone()].concat(), 21, &mut out);
        for i in 0..21 {
            let x = g[i];
            assert_eq!(out[i], x / (1.0 + exp(-GELU_2U * (x + GELU_CUBIC * x * x * x))) * u[i], "{i}");
            let x = x as f64;
            let exact = 0.5 * x * (1.0 + ((2.0 / std::f64::consts::PI).sqrt() * (x + 0.044715 * x.powi(3))).tanh());
            assert!((out[i] as f64 - exact * u[i] as f64).abs() < 1e-5 * exact.abs().max(1.0), "{i}");
        }
    }
}
