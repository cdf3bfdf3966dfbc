//! Rotary position embeddings: each pair of a head's elements turned by its position times a
//! frequency, with the frequency scalings checkpoints use to stretch their context.

/// Which elements of a head rotate together.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RopePairs {
    /// `(x[2i], x[2i+1])`: GGUF llama files (llama.cpp's converter permutes q/k to this order).
    Adjacent,
    /// `(x[i], x[i + d/2])`: Hugging Face checkpoints (`rotate_half`), and GGUF qwen2.
    Halves,
}

/// Llama 3.1's frequency scaling (`rope_type: "llama3"`): frequencies whose wavelength exceeds
/// the original context divided by `low_freq_factor` are divided by `factor`, those shorter
/// than it divided by `high_freq_factor` are kept, and those between are blended smoothly.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Llama3 {
    pub factor: f64,
    pub low_freq_factor: f64,
    pub high_freq_factor: f64,
    pub original_context: f64,
}

impl Llama3 {
    /// What each of the `head_dim / 2` base frequencies of `theta` is divided by (the values
    /// llama.cpp's converter writes to a GGUF's `rope_freqs.weight`, and transformers'
    /// `_compute_llama3_parameters` applies).
    pub fn divisors(&self, head_dim: usize, theta: f32) -> Vec<f64> {
        let low_wavelen = self.original_context / self.low_freq_factor;
        let high_wavelen = self.original_context / self.high_freq_factor;
        base_frequencies(head_dim, theta)
            .map(|f| {
                let wavelen = 2.0 * std::f64::consts::PI / f;
                if wavelen < high_wavelen {
                    1.0
                } else if wavelen > low_wavelen {
                    self.factor
                } else {
                    let smooth = (self.original_context / wavelen - self.low_freq_factor)
                        / (self.high_freq_factor - self.low_freq_factor);
                    1.0 / ((1.0 - smooth) / self.factor + smooth)
                }
            })
            .collect()
    }
}

/// `theta^(-2i / head_dim)` for each pair `i`.
fn base_frequencies(head_dim: usize, theta: f32) -> impl Iterator<Item = f64> {
    (0..head_dim / 2).map(move |i| (theta as f64).powf(-2.0 * i as f64 / head_dim as f64))
}

pub struct Rope {
    head_dim: usize,
    inv_freq: Vec<f64>,
    pairs: RopePairs,
}

impl Rope {
    /// Frequencies of base `theta`, each divided by its entry of `divisors` (`head_dim / 2`
    /// of them) when the checkpoint scales them.
    pub fn new(head_dim: usize, theta: f32, pairs: RopePairs, divisors: Option<&[f64]>) -> Self {
        let inv_freq =
            base_frequencies(head_dim, theta).enumerate().map(|(i, f)| divisors.map_or(f, |d| f / d[i])).collect();
        Self { head_dim, inv_freq, pairs }
    }

    pub fn half(&self) -> usize {
        self.head_dim / 2
    }

    /// Cosines and sines for each position, `half()` values per position.
    pub fn tables(&self, positions: impl Iterator<Item = usize>) -> (Vec<f32>, Vec<f32>) {
        let (mut cos, mut sin) = (Vec::new(), Vec::new());
        for p in positions {
            for f in &self.inv_freq {
                let (s, c) = (p as f64 * f).sin_cos();
                cos.push(c as f32);
                sin.push(s as f32);
            }
        }
        (cos, sin)
    }

    /// Rotates every head in `heads` (back to back, `head_dim` each) by one position's angles.
    pub fn apply(&self, heads: &mut [f32], cos: &[f32], sin: &[f32]) {
        let half = self.half();
        for head in heads.chunks_exact_mut(self.head_dim) {
            for i in 0..half {
                let (a, b) = match self.pairs {
                    RopePairs::Adjacent => (2 * i, 2 * i + 1),
                    RopePairs::Halves => (i, i + half),
                };
                let (x, y) = (head[a], head[b]);
                head[a] = x * cos[i] - y * sin[i];
                head[b] = x * sin[i] + y * cos[i];
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Llama 3.1 8B's: `head_dim` 128, `rope_theta` 500000, factor 8, low 1, high 4, 8192.
    const LLAMA_3_1: Llama3 =
        Llama3 { factor: 8.0, low_freq_factor: 1.0, high_freq_factor: 4.0, original_context: 8192.0 };

    #[test]
    fn llama3_divisors_keep_high_frequencies_and_stretch_low_ones() {
        let d = LLAMA_3_1.divisors(128, 500000.0);
        assert_eq!(d.len(), 64);
        // Wavelengths under 2048 positions kept, over 8192 divided by 8, a blend between
        // (values from the formula in transformers' `_compute_llama3_parameters`, in f64).
        assert_eq!(&d[..21], &[1.0; 21]);
        assert!((d[30] - 1.5534146285049255).abs() < 1e-12, "{}", d[30]);
        assert_eq!(&d[40..], &[8.0; 24]);
        assert!(d.windows(2).all(|w| w[0] <= w[1]), "divisors must not fall: {d:?}");
    }

    #[test]
    fn a_linear_divisor_is_position_interpolation() {
        // Every frequency halved: position 2p turns as far as position p did unscaled.
        let plain = Rope::new(64, 10000.0, RopePairs::Halves, None);
        let scaled = Rope::new(64, 10000.0, RopePairs::Halves, Some(&[2.0; 32]));
        let (c1, s1) = plain.tables([3usize, 20].into_iter());
        let (c2, s2) = scaled.tables([6usize, 40].into_iter());
        assert_eq!((c1, s1), (c2, s2));
    }
}
