//! `exp` as a short polynomial (Cephes' `expf`), for the places that take hundreds of
//! thousands of exponentials per decode step (softmax over attention scores, SwiGLU, sampling
//! over the vocabulary) where libm's `expf`, one value per call, showed in profiles.
//!
//! Within 2 float steps of the true value for inputs above −80; inputs are clamped to
//! `[LO, HI]` so that `2^n` stays a normal float (`e^-87.3` ≈ 1.2e-38 stands in for smaller
//! values, which vanish in any sum they join). The operations are plain float ones (fused
//! multiply-adds, a floor), so a vector version that does the same operations lane by lane
//! (`aiserve_models::llm::act`) gets the same bits.

pub const LOG2E: f32 = std::f32::consts::LOG2_E;
/// ln 2 split in a part exact in few bits and the rest (Cody–Waite).
pub const LN2_HI: f32 = 0.693_359_4;
pub const LN2_LO: f32 = -2.121_944_4e-4;
/// The polynomial's coefficients, highest power first.
pub const P: [f32; 6] = [1.987_569_1e-4, 1.398_199_9e-3, 8.333_452e-3, 4.166_579_6e-2, 0.166_666_65, 0.5];
pub const LO: f32 = -87.3;
pub const HI: f32 = 88.37;

/// `e^x`.
#[inline(always)]
pub fn exp(x: f32) -> f32 {
    let x = x.clamp(LO, HI);
    let n = x.mul_add(LOG2E, 0.5).floor();
    let r = n.mul_add(-LN2_LO, n.mul_add(-LN2_HI, x));
    let mut p = P[0];
    for c in &P[1..] {
        p = p.mul_add(r, *c);
    }
    let y = p.mul_add(r * r, r) + 1.0;
    // `2^n` from the biased exponent `n + 127` (1 to 255 after the clamp), read from the low
    // bits of `n + 127 + 2^23`: the same value as `(n as i32 + 127) << 23`, but where `as i32`
    // (saturating, NaN-checked) kept a loop of these on scalar conversions, bit operations
    // vectorise.
    let biased = (n + (127.0 + 8_388_608.0)).to_bits();
    y * f32::from_bits(biased << 23)
}

/// The error function as a clamped odd rational polynomial (the single-precision approximation
/// Eigen and XLA use): branch-free, so the GELU loop vectorises; error below 1e-6.
#[inline(always)]
pub fn erf(x: f32) -> f32 {
    let x = x.clamp(-4.0, 4.0);
    let x2 = x * x;
    let mut p = ERF_P[0];
    for c in &ERF_P[1..] {
        p = p.mul_add(x2, *c);
    }
    let mut q = ERF_Q[0];
    for c in &ERF_Q[1..] {
        q = q.mul_add(x2, *c);
    }
    x * p / q
}

/// [`erf`]'s numerator and denominator polynomials in `x²`, highest power first, evaluated with
/// fused multiply-adds (a vector version doing the same gets the same bits; with separate
/// multiplies and adds BERT's GELU, written by the encoder's product tiles, cost twice as much:
/// ~2% of a MiniLM encode, against ~1% now, the rest being the one division).
pub const ERF_P: [f32; 7] =
    [-2.726_142e-10, 2.770_681_4e-8, -2.101_024e-6, -5.692_506_4e-5, -7.349_906e-4, -2.954_6e-3, -1.609_603_3e-2];
pub const ERF_Q: [f32; 5] = [-1.456_607_2e-5, -2.133_740_6e-4, -1.682_827e-3, -7.373_329e-3, -1.426_474e-2];

/// BERT's `gelu`: `x·Φ(x)` through [`erf`].
#[inline(always)]
pub fn gelu_erf(x: f32) -> f32 {
    0.5 * x * (1.0 + erf(x * std::f32::consts::FRAC_1_SQRT_2))
}

/// `out[i] = exp((x[i] - max) · scale)`; returns their sum. Compiled for AVX2 too (chosen at
/// run time, the same bits either way): the sampler's weights for a vocabulary.
pub fn exp_scaled(x: &[f32], max: f32, scale: f32, out: &mut [f32]) -> f32 {
    exp_each(x, max, scale, out);
    sum(out)
}

#[multiversion::multiversion(targets("x86_64+avx2+fma"))]
fn exp_each(x: &[f32], max: f32, scale: f32, out: &mut [f32]) {
    for (o, v) in out.iter_mut().zip(x) {
        *o = exp((v - max) * scale);
    }
}

/// The largest value (−∞ for none), in eight lanes.
#[multiversion::multiversion(targets("x86_64+avx2+fma"))]
pub fn max(x: &[f32]) -> f32 {
    let mut lanes = [f32::NEG_INFINITY; 8];
    let c = x.chunks_exact(8);
    let tail = c.remainder().iter().fold(f32::NEG_INFINITY, |m, v| m.max(*v));
    for c in c {
        for k in 0..8 {
            lanes[k] = lanes[k].max(c[k]);
        }
    }
    lanes.iter().fold(tail, |m, v| m.max(*v))
}

/// The first index where the running sum of `w` (non-negative) exceeds `r`, or `None` past the
/// end. Whole chunks of 64 are skipped by their sum, so most of the vector is read once with
/// vector adds rather than walked value by value.
pub fn cumulative_find(w: &[f32], mut r: f32) -> Option<usize> {
    for (c, chunk) in w.chunks(64).enumerate() {
        let s = sum(chunk);
        if r < s {
            for (i, v) in chunk.iter().enumerate() {
                if r < *v {
                    return Some(c * 64 + i);
                }
                r -= v;
            }
            // Rounding left `r` at the chunk's end: its last positive weight.
            return chunk.iter().rposition(|v| *v > 0.0).map(|i| c * 64 + i);
        }
        r -= s;
    }
    None
}

/// The sum, in eight lanes.
#[multiversion::multiversion(targets("x86_64+avx2+fma"))]
pub fn sum(x: &[f32]) -> f32 {
    let mut lanes = [0.0f32; 8];
    let c = x.chunks_exact(8);
    let tail: f32 = c.remainder().iter().sum();
    for c in c {
        for k in 0..8 {
            lanes[k] += c[k];
        }
    }
    lanes.iter().sum::<f32>() + tail
}

/// Probabilities from logits (libm's `exp`, after subtracting the largest, so nothing
/// overflows): what a classifier's top labels are answered with.
pub fn softmax(x: &[f32]) -> Vec<f32> {
    let m = x.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let e: Vec<f32> = x.iter().map(|v| (v - m).exp()).collect();
    let s: f32 = e.iter().sum();
    e.into_iter().map(|v| v / s).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exp_is_accurate() {
        for i in 0..20_000 {
            let x = -90.0 + i as f32 * 0.009_03;
            let (got, want) = (exp(x) as f64, (x.clamp(LO, HI) as f64).exp());
            // Two float steps (2.4e-7) where it matters; below e^-80 the last steps are
            // coarser, and such terms vanish in any sum.
            let tol = if x > -80.0 { 2.4e-7 } else { 1e-5 };
            assert!((got - want).abs() <= tol * want, "exp({x}) = {got}, want {want}");
        }
        // The power of two read from the bits equals the integer conversion's, over the whole
        // clamped range and past it.
        for i in 0..=4_000 {
            let n = (i as f32 * 0.05 - 100.0).clamp(LO, HI).mul_add(LOG2E, 0.5).floor();
            let by_bits = f32::from_bits((n + (127.0 + 8_388_608.0)).to_bits() << 23);
            assert_eq!(by_bits.to_bits(), ((n as i32 + 127) as u32) << 23, "n = {n}");
        }
        let xs: Vec<f32> = (0..1000).map(|i| i as f32 * 0.37 - 200.0).collect();
        let mut out = vec![0.0; xs.len()];
        let total = exp_scaled(&xs, 170.0, 0.7, &mut out);
        for (o, x) in out.iter().zip(&xs) {
            assert_eq!(o.to_bits(), exp((x - 170.0) * 0.7).to_bits());
        }
        let plain: f64 = out.iter().map(|v| *v as f64).sum();
        assert!((total as f64 - plain).abs() < 1e-5 * plain);
        assert_eq!(max(&xs), 169.63);
        assert_eq!(max(&[]), f32::NEG_INFINITY);
    }

    #[test]
    fn erf_is_accurate() {
        let worst = (-600..=600)
            .map(|i| i as f64 / 100.0)
            .map(|x| (erf(x as f32) as f64 - libm::erf(x)).abs())
            .fold(0.0, f64::max);
        assert!(worst < 2e-6, "max |erf error| {worst}");
    }

    #[test]
    fn cumulative_find_walks_the_running_sum() {
        let w: Vec<f32> = (0..300).map(|i| if i % 3 == 0 { 0.0 } else { 1.0 }).collect();
        // Running sums: index 1 ends at 1, index 2 at 2, index 4 at 3, ...
        assert_eq!(cumulative_find(&w, 0.0), Some(1));
        assert_eq!(cumulative_find(&w, 1.5), Some(2));
        assert_eq!(cumulative_find(&w, 2.0), Some(4));
        assert_eq!(cumulative_find(&w, 150.5), Some(226));
        assert_eq!(cumulative_find(&w, 199.5), Some(299));
        assert_eq!(cumulative_find(&w, 200.0), None);
    }
}
