//! The seed's sequence model (its section 4.3) reading a string of handwritten digits: the
//! digits CNN's convolution stack over a 28x128 picture, an LSTM encoder over the 28 feature
//! columns it leaves (`LSTM(latent_dim, return_state=True)`), and an LSTM decoder started from
//! the encoder's states that emits the digits one at a time and then an end token through a
//! softmax `Dense` layer, trained with teacher forcing.
//!
//! Layouts are Keras' (pictures NHWC, kernels HWIO, an LSTM's `kernel` `[in, 4H]`,
//! `recurrent_kernel` `[H, 4H]` and `bias` `[4H]` with the gates in the order i, f, c, o), so the
//! weights line up with a Keras model of the same architecture. The decoder's one-hot inputs are
//! rows of its kernel (the same product, without the zeros).

pub mod compose;
pub mod lstm;
pub mod publish;
pub mod reader;
pub mod rmsprop;
pub mod train;

use std::collections::HashMap;
use std::path::Path;

use candle_core::{DType, Device, Result, Tensor, Var, D};
use rand::{Rng, SeedableRng};

use crate::digits::{conv_stack, take_checked};
use crate::kernels::packed::PackedLinear;
use lstm::Lstm;

/// `architecture` value in the version config.
pub const ARCHITECTURE: &str = "digit_strings";
/// The picture: one row of up to [`MAX_DIGITS`] MNIST-sized digits.
pub const HEIGHT: usize = 28;
pub const WIDTH: usize = 128;
/// The longest string read (the decoder runs one step more, for the end token).
pub const MAX_DIGITS: usize = 6;
/// Output tokens are the ten digits and [`END`]; decoder inputs the ten digits and [`START`].
pub const END: u32 = 10;
pub const START: u32 = 10;
pub const TOKENS: usize = 11;
/// Feature columns the convolution stack leaves of a [`WIDTH`]-wide picture, and the features
/// of each (3 rows of 64 channels).
pub const COLUMNS: usize = 28;
pub const FEATURES: usize = 3 * 64;
/// Pictures are laid out with their writing this many pixels from the top, the bottom and the
/// left (`aiserve_vision::ink::fit_writing`), in training and when served.
pub const MARGIN: usize = 2;
/// The default `latent_dim`.
pub const LATENT: usize = 128;
/// The largest `latent_dim` loaded.
pub const MAX_LATENT: usize = 1024;

/// The parameter names, in the order of [`DigitStrings::shapes`].
pub const PARAM_NAMES: [&str; 14] = [
    "conv1.weight",
    "conv1.bias",
    "conv2.weight",
    "conv2.bias",
    "conv3.weight",
    "conv3.bias",
    "encoder.kernel",
    "encoder.recurrent_kernel",
    "encoder.bias",
    "decoder.kernel",
    "decoder.recurrent_kernel",
    "decoder.bias",
    "dense.weight",
    "dense.bias",
];

/// What the network read from one picture.
#[derive(Clone, Debug, PartialEq)]
pub struct Reading {
    /// The digits, `0..=9` each, at most [`MAX_DIGITS`].
    pub digits: Vec<u8>,
    /// The softmax probability of each digit chosen, then of the end token (absent when the
    /// decoder ran out of steps before choosing it).
    pub probabilities: Vec<f32>,
}

impl Reading {
    pub fn text(&self) -> String {
        self.digits.iter().map(|&d| char::from(b'0' + d)).collect()
    }
}

/// The network's weights, in [`PARAM_NAMES`] order.
#[derive(Clone, Debug)]
pub struct DigitStrings {
    latent: usize,
    params: Vec<Tensor>,
    /// The convolution kernels packed for inference, on first use (weights that track no
    /// gradient only).
    packed: std::sync::OnceLock<[PackedLinear; 3]>,
}

impl DigitStrings {
    /// The shapes of [`PARAM_NAMES`] for a latent size `h`.
    pub fn shapes(h: usize) -> [Vec<usize>; 14] {
        [
            vec![3, 3, 1, 32],
            vec![32],
            vec![3, 3, 32, 64],
            vec![64],
            vec![3, 3, 64, 64],
            vec![64],
            vec![FEATURES, 4 * h],
            vec![h, 4 * h],
            vec![4 * h],
            vec![TOKENS, 4 * h],
            vec![h, 4 * h],
            vec![4 * h],
            vec![h, TOKENS],
            vec![TOKENS],
        ]
    }

    /// Fresh weights as trainable variables, Keras' initialisers: Glorot-uniform kernels,
    /// orthogonal recurrent kernels, zero biases but the LSTM forget gates' (1,
    /// `unit_forget_bias`), drawn from a ChaCha stream seeded with `seed`.
    pub fn init(seed: u64, latent: usize, device: &Device) -> Result<(Self, Vec<Var>)> {
        if !(1..=MAX_LATENT).contains(&latent) {
            candle_core::bail!("latent_dim must be 1..={MAX_LATENT}, got {latent}");
        }
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
        let mut vars = Vec::with_capacity(PARAM_NAMES.len());
        for (name, shape) in PARAM_NAMES.iter().zip(Self::shapes(latent)) {
            let n: usize = shape.iter().product();
            let data: Vec<f32> = if name.ends_with("recurrent_kernel") {
                orthogonal(shape[0], shape[1], &mut rng)
            } else if name.starts_with("encoder.bias") || name.starts_with("decoder.bias") {
                (0..n).map(|i| if (latent..2 * latent).contains(&i) { 1.0 } else { 0.0 }).collect()
            } else if name.ends_with(".bias") {
                vec![0.0; n]
            } else {
                let (fan_in, fan_out) = match shape.as_slice() {
                    [kh, kw, c, oc] => (kh * kw * c, kh * kw * oc),
                    [i, o] => (*i, *o),
                    _ => unreachable!("the shapes list only rank-2 and rank-4 weights"),
                };
                let limit = (6.0 / (fan_in + fan_out) as f32).sqrt();
                (0..n).map(|_| rng.random_range(-limit..limit)).collect()
            };
            vars.push(Var::from_vec(data, shape, device)?);
        }
        let params = vars.iter().map(|v| v.as_tensor().clone()).collect();
        Ok((Self { latent, params, packed: Default::default() }, vars))
    }

    pub fn latent(&self) -> usize {
        self.latent
    }

    pub fn param_count(&self) -> usize {
        self.params.iter().map(|t| t.elem_count()).sum()
    }

    /// Loads and checks weights: every name present with its shape for the latent size the
    /// encoder's recurrent kernel gives, finite F32 values, nothing else.
    pub fn load(path: &Path, device: &Device) -> std::result::Result<Self, String> {
        let map = candle_core::safetensors::load(path, device).map_err(|e| format!("{}: {e}", path.display()))?;
        let latent = match map.get("encoder.recurrent_kernel").map(|t| t.dims().to_vec()) {
            Some(d) if d.len() == 2 && (1..=MAX_LATENT).contains(&d[0]) => d[0],
            Some(d) => {
                return Err(format!(
                    "tensor `encoder.recurrent_kernel` must be [H, 4H] with H 1..={MAX_LATENT}, got {d:?}"
                ))
            }
            None => return Err("tensor `encoder.recurrent_kernel` is missing".into()),
        };
        let params = take_checked(map, &PARAM_NAMES, &Self::shapes(latent))?;
        Ok(Self { latent, params, packed: Default::default() })
    }

    pub fn save(&self, path: &Path) -> Result<()> {
        let map: HashMap<String, Tensor> =
            PARAM_NAMES.iter().zip(&self.params).map(|(n, t)| (n.to_string(), t.detach())).collect();
        candle_core::safetensors::save(&map, path)
    }

    /// A copy that shares no autograd history (for serving).
    pub fn detached(&self) -> Self {
        Self {
            latent: self.latent,
            params: self.params.iter().map(|t| t.detach()).collect(),
            packed: Default::default(),
        }
    }

    fn encoder(&self) -> Lstm<'_> {
        Lstm { kernel: &self.params[6], recurrent: &self.params[7], bias: &self.params[8], units: self.latent }
    }

    fn decoder(&self) -> Lstm<'_> {
        Lstm { kernel: &self.params[9], recurrent: &self.params[10], bias: &self.params[11], units: self.latent }
    }

    /// The feature columns `[N, COLUMNS, FEATURES]` of pictures `[N, HEIGHT, WIDTH, 1]` in [0, 1]:
    /// the digits CNN's convolution stack, each column its 3 rows of 64 channels.
    pub fn columns(&self, x: &Tensor) -> Result<Tensor> {
        let y = conv_stack(x, &self.params[..6], &self.packed)?;
        // [N, 3, COLUMNS, 64] → [N, COLUMNS, 3 * 64].
        y.permute((0, 2, 1, 3))?.contiguous()?.reshape((x.dim(0)?, COLUMNS, FEATURES))
    }

    /// Teacher forcing: the logits `[N, L, TOKENS]` the decoder gives at each step when fed
    /// `inputs` `[N, L]` (u32: [`START`], then the true digits), after encoding pictures `x`.
    pub fn logits(&self, x: &Tensor, inputs: &Tensor) -> Result<Tensor> {
        let (n, l) = inputs.dims2()?;
        let state = self.encoder().run(&self.encoder().project(&self.columns(x)?)?)?;
        let dec = self.decoder();
        let projected = dec.embed(&inputs.flatten_all()?)?.reshape((n, l, 4 * self.latent))?;
        let hs = Tensor::stack(&dec.hiddens(&projected, state)?, 1)?.reshape((n * l, self.latent))?;
        hs.matmul(&self.params[12])?.broadcast_add(&self.params[13])?.reshape((n, l, TOKENS))
    }

    /// Greedy decoding: each picture's digits, the decoder fed its own choices until it chooses
    /// the end token or has read [`MAX_DIGITS`].
    pub fn read(&self, x: &Tensor) -> Result<Vec<Reading>> {
        let n = x.dim(0)?;
        let device = x.device();
        let mut state = self.encoder().run(&self.encoder().project(&self.columns(x)?)?)?;
        let dec = self.decoder();
        let mut readings = vec![Reading { digits: Vec::new(), probabilities: Vec::new() }; n];
        let mut done = vec![false; n];
        let mut prev = vec![START; n];
        for _ in 0..=MAX_DIGITS {
            let projected = dec.embed(&Tensor::from_vec(prev.clone(), n, device)?)?;
            state = dec.step(&projected, &state)?;
            let logits = dec.hidden(&state)?.matmul(&self.params[12])?.broadcast_add(&self.params[13])?;
            let probs = candle_nn::ops::softmax_last_dim(&logits)?;
            let best = probs.argmax(D::Minus1)?.to_vec1::<u32>()?;
            let probs = probs.to_vec2::<f32>()?;
            for i in 0..n {
                if done[i] {
                    continue;
                }
                let r = &mut readings[i];
                r.probabilities.push(probs[i][best[i] as usize]);
                if best[i] == END || r.digits.len() == MAX_DIGITS {
                    // Out of steps with a digit chosen: that probability stands for no end.
                    if best[i] != END {
                        r.probabilities.pop();
                    }
                    done[i] = true;
                } else {
                    r.digits.push(best[i] as u8);
                }
            }
            if done.iter().all(|&d| d) {
                break;
            }
            prev = best;
        }
        Ok(readings)
    }
}

/// A `rows x cols` matrix with orthonormal rows (or columns, whichever are fewer), as Keras'
/// `Orthogonal` initialiser makes: Gram–Schmidt on normal draws.
fn orthogonal(rows: usize, cols: usize, rng: &mut impl Rng) -> Vec<f32> {
    let (k, len) = (rows.min(cols), rows.max(cols));
    let mut vs: Vec<Vec<f64>> = Vec::with_capacity(k);
    while vs.len() < k {
        // Box–Muller normals.
        let mut v: Vec<f64> = (0..len)
            .map(|_| {
                let (u1, u2): (f64, f64) = (rng.random_range(f64::EPSILON..1.0), rng.random_range(0.0..1.0));
                (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
            })
            .collect();
        for u in &vs {
            let dot: f64 = v.iter().zip(u).map(|(a, b)| a * b).sum();
            v.iter_mut().zip(u).for_each(|(a, b)| *a -= dot * b);
        }
        let norm = v.iter().map(|a| a * a).sum::<f64>().sqrt();
        if norm > 1e-6 {
            vs.push(v.into_iter().map(|a| a / norm).collect());
        }
    }
    let mut out = vec![0f32; rows * cols];
    for (i, v) in vs.iter().enumerate() {
        for (j, &a) in v.iter().enumerate() {
            // Fewer rows: the vectors are the rows; fewer columns: they are the columns.
            let at = if rows <= cols { i * cols + j } else { j * cols + i };
            out[at] = a as f32;
        }
    }
    out
}

/// The mean cross-entropy of `logits` `[N, L, TOKENS]` against `targets` `[N, L]` (u32) over the
/// positions where `mask` `[N, L]` (f32) is 1, and that mask's sum.
pub fn masked_loss(logits: &Tensor, targets: &Tensor, mask: &Tensor) -> Result<(Tensor, f64)> {
    let log_p = candle_nn::ops::log_softmax(logits, D::Minus1)?;
    let picked = log_p.gather(&targets.unsqueeze(D::Minus1)?, D::Minus1)?.squeeze(D::Minus1)?;
    let count = mask.sum_all()?.to_scalar::<f32>()? as f64;
    let loss = ((picked * mask)?.sum_all()?.neg()? / count.max(1.0))?;
    Ok((loss, count))
}

/// How many masked positions `logits` choose the target at.
pub fn masked_hits(logits: &Tensor, targets: &Tensor, mask: &Tensor) -> Result<usize> {
    let hits = logits.argmax(D::Minus1)?.eq(targets)?.to_dtype(DType::F32)?;
    Ok((hits * mask)?.sum_all()?.to_scalar::<f32>()? as usize)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pictures(n: usize, seed: u64) -> Tensor {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
        let data: Vec<f32> = (0..n * HEIGHT * WIDTH).map(|_| rng.random_range(0.0..1.0)).collect();
        Tensor::from_vec(data, (n, HEIGHT, WIDTH, 1), &Device::Cpu).unwrap()
    }

    #[test]
    fn has_the_keras_parameter_count() {
        // Keras: the three convolutions 55,744; LSTM(128) on 192 features 164,352; LSTM(128)
        // on 11 one-hot tokens 71,680; Dense(11) 1,419.
        let (m, _) = DigitStrings::init(0, 128, &Device::Cpu).unwrap();
        assert_eq!(m.param_count(), 55_744 + 164_352 + 71_680 + 1_419);
    }

    #[test]
    fn orthogonal_rows_are_orthonormal() {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(3);
        let (r, c) = (8, 32);
        let m = orthogonal(r, c, &mut rng);
        for i in 0..r {
            for j in 0..r {
                let dot: f32 = (0..c).map(|k| m[i * c + k] * m[j * c + k]).sum();
                assert!((dot - if i == j { 1.0 } else { 0.0 }).abs() < 1e-5, "{i},{j}: {dot}");
            }
        }
    }

    /// The packed inference convolutions and the training ones give the same columns; teacher
    /// forcing on the tokens greedy decoding chose gives the logits decoding saw.
    #[test]
    fn inference_and_training_paths_agree() {
        let (m, _) = DigitStrings::init(7, 16, &Device::Cpu).unwrap();
        let x = pictures(3, 1);
        let served = m.detached();
        let d = (m.columns(&x).unwrap() - served.columns(&x).unwrap()).unwrap().abs().unwrap();
        assert!(d.max_all().unwrap().to_scalar::<f32>().unwrap() < 1e-5);
        let readings = served.read(&x).unwrap();
        for (i, r) in readings.iter().enumerate() {
            assert!(r.digits.len() <= MAX_DIGITS);
            let mut inputs = vec![START];
            inputs.extend(r.digits.iter().map(|&d| d as u32));
            let l = inputs.len();
            let ids = Tensor::from_vec(inputs, (1, l), &Device::Cpu).unwrap();
            let logits = served.logits(&x.narrow(0, i, 1).unwrap(), &ids).unwrap();
            let probs = candle_nn::ops::softmax_last_dim(&logits).unwrap().to_vec3::<f32>().unwrap();
            for (step, p) in r.probabilities.iter().enumerate() {
                let chosen = r.digits.get(step).map_or(END as usize, |&d| d as usize);
                assert!((probs[0][step][chosen] - p).abs() < 1e-5);
            }
        }
    }

    #[test]
    fn save_load_round_trips_and_rejects_wrong_weights() {
        let (m, _) = DigitStrings::init(1, 24, &Device::Cpu).unwrap();
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("w.safetensors");
        m.save(&path).unwrap();
        let back = DigitStrings::load(&path, &Device::Cpu).unwrap();
        assert_eq!(back.latent(), 24);
        let x = pictures(2, 5);
        assert_eq!(m.detached().read(&x).unwrap(), back.read(&x).unwrap());
        let mut map: HashMap<String, Tensor> =
            PARAM_NAMES.iter().zip(&m.params).map(|(n, t)| (n.to_string(), t.clone())).collect();
        map.insert("dense.bias".into(), Tensor::zeros(12, DType::F32, &Device::Cpu).unwrap());
        candle_core::safetensors::save(&map, &path).unwrap();
        let err = DigitStrings::load(&path, &Device::Cpu).unwrap_err();
        assert!(err.contains("`dense.bias` must have shape [11]"), "{err}");
        map.remove("encoder.recurrent_kernel");
        candle_core::safetensors::save(&map, &path).unwrap();
        assert!(DigitStrings::load(&path, &Device::Cpu).unwrap_err().contains("missing"));
    }
}
