//! The classic digits CNN: Conv32-Pool-Conv64-Pool-Conv64-Dense64-Dense10 on 28x28x1 images,
//! and the same stack for other pictures ([`CnnShape`]: any size from 10x10, grey or RGB, any
//! number of classes), which `aiserve train image-classifier` trains on a user's folders.
//!
//! Tensors are NHWC and kernels HWIO, as in Keras, so the flatten order (and a Keras weight
//! export) lines up. On the CPU the convolutions and pooling run through our fused kernels
//! (`crate::kernels`); elsewhere, and in [`DigitsCnn::logits_reference`], through candle's own ops.
//! Weights live in `model.safetensors` under the names of [`PARAM_NAMES`].

pub mod adam;
pub mod classifier;
pub mod publish;
pub mod report;
pub mod train;

use std::collections::HashMap;
use std::path::Path;

use candle_core::{DType, Device, Result, Tensor, Var};
use rand::{Rng, SeedableRng};

use crate::kernels::conv::{
    conv2d_bias_relu, conv2d_bias_relu_packed, conv2d_bias_relu_pool, conv2d_bias_relu_pool_train, pack_kernel,
};
use crate::kernels::packed::{Act, PackedLinear};
use crate::kernels::with_cpu_f32;

/// `architecture` value in the version config.
pub const ARCHITECTURE: &str = "digits_cnn";
pub const HEIGHT: usize = 28;
pub const WIDTH: usize = 28;
pub const CLASSES: usize = 10;

/// The parameter names, in the order of [`CnnShape::params`].
pub const PARAM_NAMES: [&str; 10] = [
    "conv1.weight",
    "conv1.bias",
    "conv2.weight",
    "conv2.bias",
    "conv3.weight",
    "conv3.bias",
    "dense1.weight",
    "dense1.bias",
    "dense2.weight",
    "dense2.bias",
];

/// What the network takes and gives: `height x width x channels` pictures, `classes` scores.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CnnShape {
    pub height: usize,
    pub width: usize,
    pub channels: usize,
    pub classes: usize,
}

impl CnnShape {
    /// MNIST's: 28x28 grey, ten digits.
    pub const DIGITS: CnnShape = CnnShape { height: HEIGHT, width: WIDTH, channels: 1, classes: CLASSES };
    /// The smallest side three valid 3x3 convolutions and two 2x2 poolings leave a pixel of.
    pub const MIN_SIDE: usize = 10;
    /// The largest side trained or loaded (the dense layer grows with the picture's area).
    pub const MAX_SIDE: usize = 512;
    /// The most classes (labels are stored as bytes).
    pub const MAX_CLASSES: usize = 256;

    /// Checks the shape is one this network can be built for.
    pub fn check(&self) -> std::result::Result<(), String> {
        let side = Self::MIN_SIDE..=Self::MAX_SIDE;
        if !side.contains(&self.height) || !side.contains(&self.width) {
            return Err(format!(
                "pictures must be {}..={} pixels a side for this CNN, got {}x{}",
                Self::MIN_SIDE,
                Self::MAX_SIDE,
                self.height,
                self.width
            ));
        }
        if self.channels != 1 && self.channels != 3 {
            return Err(format!("pictures must be grey (1 channel) or RGB (3), got {} channels", self.channels));
        }
        if !(2..=Self::MAX_CLASSES).contains(&self.classes) {
            return Err(format!("the CNN needs 2..={} classes, got {}", Self::MAX_CLASSES, self.classes));
        }
        Ok(())
    }

    /// Side left after conv (valid 3x3), pool, conv, pool, conv.
    fn features(side: usize) -> usize {
        ((side - 2) / 2 - 2) / 2 - 2
    }

    /// The shapes of [`PARAM_NAMES`] (kernels HWIO, dense weights `in x out`).
    pub fn params(&self) -> [Vec<usize>; 10] {
        let flat = Self::features(self.height) * Self::features(self.width) * 64;
        [
            vec![3, 3, self.channels, 32],
            vec![32],
            vec![3, 3, 32, 64],
            vec![64],
            vec![3, 3, 64, 64],
            vec![64],
            vec![flat, 64],
            vec![64],
            vec![64, self.classes],
            vec![self.classes],
        ]
    }
}

/// The network's weights, in [`PARAM_NAMES`] order.
#[derive(Clone, Debug)]
pub struct DigitsCnn {
    shape: CnnShape,
    params: Vec<Tensor>,
    /// The convolution kernels packed for inference, on first use (only weights that track no
    /// gradient take that path: they never change).
    packed: std::sync::OnceLock<[PackedLinear; 3]>,
    /// The dense layers' weights packed for inference, likewise.
    dense: std::sync::OnceLock<[PackedLinear; 2]>,
}

impl DigitsCnn {
    /// Fresh MNIST-shaped weights; see [`DigitsCnn::init_shaped`].
    pub fn init(seed: u64, device: &Device) -> Result<(Self, Vec<Var>)> {
        Self::init_shaped(seed, CnnShape::DIGITS, device)
    }

    /// Fresh weights as trainable variables: Glorot-uniform kernels and zero biases (Keras'
    /// defaults), drawn from a ChaCha stream seeded with `seed`.
    pub fn init_shaped(seed: u64, cnn: CnnShape, device: &Device) -> Result<(Self, Vec<Var>)> {
        cnn.check().map_err(candle_core::Error::msg)?;
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
        let mut vars = Vec::with_capacity(PARAM_NAMES.len());
        for (name, shape) in PARAM_NAMES.iter().zip(cnn.params()) {
            let shape = shape.as_slice();
            let n: usize = shape.iter().product();
            let data: Vec<f32> = if name.ends_with(".bias") {
                vec![0.0; n]
            } else {
                let (fan_in, fan_out) = match shape {
                    [kh, kw, c, oc] => (kh * kw * c, kh * kw * oc),
                    [i, o] => (*i, *o),
                    _ => unreachable!("CnnShape::params lists only rank-2 and rank-4 weights"),
                };
                let limit = (6.0 / (fan_in + fan_out) as f32).sqrt();
                (0..n).map(|_| rng.random_range(-limit..limit)).collect()
            };
            vars.push(Var::from_vec(data, shape, device)?);
        }
        let params = vars.iter().map(|v| v.as_tensor().clone()).collect();
        Ok((Self { shape: cnn, params, packed: Default::default(), dense: Default::default() }, vars))
    }

    /// What this network takes and gives.
    pub fn shape(&self) -> CnnShape {
        self.shape
    }

    /// Loads and checks weights for a network of shape `cnn`: every name present with its exact
    /// shape, finite F32 values.
    pub fn load(path: &Path, cnn: CnnShape, device: &Device) -> std::result::Result<Self, String> {
        cnn.check()?;
        let map = candle_core::safetensors::load(path, device).map_err(|e| format!("{}: {e}", path.display()))?;
        let params = take_checked(map, &PARAM_NAMES, &cnn.params())?;
        Ok(Self { shape: cnn, params, packed: Default::default(), dense: Default::default() })
    }

    pub fn save(&self, path: &Path) -> Result<()> {
        let map: HashMap<String, Tensor> =
            PARAM_NAMES.iter().zip(&self.params).map(|(n, t)| (n.to_string(), t.detach())).collect();
        candle_core::safetensors::save(&map, path)
    }

    pub fn param_count(&self) -> usize {
        self.params.iter().map(|t| t.elem_count()).sum()
    }

    /// A copy that shares no autograd history (for serving).
    pub fn detached(&self) -> Self {
        Self {
            shape: self.shape,
            params: self.params.iter().map(|t| t.detach()).collect(),
            packed: Default::default(),
            dense: Default::default(),
        }
    }

    /// Class logits `[N, classes]` for images `[N, height, width, channels]` in [0, 1].
    pub fn logits(&self, x: &Tensor) -> Result<Tensor> {
        if !x.device().is_cpu() {
            return self.logits_reference(x);
        }
        let x = conv_stack(x, &self.params[..6], &self.packed)?;
        if x.track_op() || self.params[6..].iter().any(|t| t.track_op()) {
            return self.dense_head(&x);
        }
        self.dense_head_packed(&x)
    }

    /// Inference's dense layers through weights packed once (the encoders' product, spread over
    /// the kernels' team) instead of six candle ops on one thread: the helpers waited for them
    /// at the end of every batch.
    fn dense_head_packed(&self, x: &Tensor) -> Result<Tensor> {
        let p = &self.params;
        let [d1, d2] = match self.dense.get() {
            Some(d) => d,
            None => {
                // Dense weights are `in x out`; the packed product takes `out x in`.
                let pack = |w: &Tensor| -> Result<PackedLinear> {
                    let (k, n) = w.dims2()?;
                    Ok(PackedLinear::new(&w.t()?.contiguous()?.flatten_all()?.to_vec1::<f32>()?, n, k))
                };
                let d = [pack(&p[6])?, pack(&p[8])?];
                self.dense.get_or_init(|| d)
            }
        };
        let x = x.flatten_from(1)?;
        let rows = x.dims()[0];
        let mut hidden = vec![0.0; rows * d1.n()];
        let b1 = p[7].to_vec1::<f32>()?;
        with_cpu_f32(&x, "dense head", |x| {
            d1.matmul_bias(x, &b1, Act::Relu, &mut hidden);
            Ok(())
        })?;
        let mut logits = vec![0.0; rows * d2.n()];
        d2.matmul_bias(&hidden, &p[9].to_vec1::<f32>()?, Act::Identity, &mut logits);
        Tensor::from_vec(logits, (rows, d2.n()), x.device())
    }

    /// The same network through candle's stock NCHW ops: the correctness reference for the
    /// fast path, and the path on non-CPU devices.
    pub fn logits_reference(&self, x: &Tensor) -> Result<Tensor> {
        let p = &self.params;
        let conv = |x: &Tensor, w: &Tensor, b: &Tensor| -> Result<Tensor> {
            let w = w.permute((3, 2, 0, 1))?.contiguous()?;
            x.conv2d(&w, 0, 1, 1, 1)?.broadcast_add(&b.reshape((1, (), 1, 1))?)?.relu()
        };
        let x = x.permute((0, 3, 1, 2))?.contiguous()?;
        let x = conv(&x, &p[0], &p[1])?.max_pool2d(2)?;
        let x = conv(&x, &p[2], &p[3])?.max_pool2d(2)?;
        let x = conv(&x, &p[4], &p[5])?.permute((0, 2, 3, 1))?;
        self.dense_head(&x)
    }

    fn dense_head(&self, x: &Tensor) -> Result<Tensor> {
        let p = &self.params;
        let x = x.flatten_from(1)?;
        let x = x.matmul(&p[6])?.broadcast_add(&p[7])?.relu()?;
        x.matmul(&p[8])?.broadcast_add(&p[9])
    }
}

/// The seed's convolution stack (conv 32, pool, conv 64, pool, conv 64, ReLU after each) on NHWC
/// pictures in [0, 1], `p` its six weights and biases: through the training kernels when anything
/// tracks a gradient; otherwise (inference) through kernels packed once into `packed`, each
/// convolution and its pool in one pass. The digits CNN and the digit-strings reader share it.
pub(crate) fn conv_stack(x: &Tensor, p: &[Tensor], packed: &std::sync::OnceLock<[PackedLinear; 3]>) -> Result<Tensor> {
    if x.track_op() || p.iter().any(|t| t.track_op()) {
        let x = conv2d_bias_relu_pool_train(x, &p[0], &p[1])?;
        let x = conv2d_bias_relu_pool_train(&x, &p[2], &p[3])?;
        return conv2d_bias_relu(&x, &p[4], &p[5]);
    }
    let [k1, k2, k3] = match packed.get() {
        Some(k) => k,
        None => {
            let pack = |w: &Tensor| -> Result<PackedLinear> {
                let (kh, kw, c, oc) = w.dims4()?;
                Ok(pack_kernel(&w.flatten_all()?.to_vec1::<f32>()?, kh * kw * c, oc))
            };
            let kernels = [pack(&p[0])?, pack(&p[2])?, pack(&p[4])?];
            packed.get_or_init(|| kernels)
        }
    };
    let x = conv2d_bias_relu_pool(x, &p[0], &p[1], k1)?;
    let x = conv2d_bias_relu_pool(&x, &p[2], &p[3], k2)?;
    conv2d_bias_relu_packed(&x, &p[4], &p[5], k3)
}

/// The tensors `names` of a weights file, in order, each checked: present, of its shape in
/// `shapes`, finite once F32; a tensor not named is refused too.
pub(crate) fn take_checked(
    mut map: HashMap<String, Tensor>,
    names: &[&str],
    shapes: &[Vec<usize>],
) -> std::result::Result<Vec<Tensor>, String> {
    let mut params = Vec::with_capacity(names.len());
    for (name, shape) in names.iter().zip(shapes) {
        let t = map.remove(*name).ok_or_else(|| format!("tensor `{name}` is missing"))?;
        if t.dims() != shape.as_slice() {
            return Err(format!("tensor `{name}` must have shape {shape:?}, got {:?}", t.dims()));
        }
        let t = t.to_dtype(DType::F32).map_err(|e| e.to_string())?;
        let values = t.flatten_all().and_then(|f| f.to_vec1::<f32>()).map_err(|e| e.to_string())?;
        if !values.iter().all(|v| v.is_finite()) {
            return Err(format!("tensor `{name}` holds NaN or infinite values"));
        }
        params.push(t);
    }
    if let Some(extra) = map.keys().next() {
        return Err(format!("unexpected tensor `{extra}`"));
    }
    Ok(params)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn images(n: usize, seed: u64) -> Tensor {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
        let data: Vec<f32> = (0..n * 784).map(|_| rng.random_range(0.0..1.0)).collect();
        Tensor::from_vec(data, (n, 28, 28, 1), &Device::Cpu).unwrap()
    }

    #[test]
    fn has_the_keras_parameter_count() {
        let (m, _) = DigitsCnn::init(0, &Device::Cpu).unwrap();
        assert_eq!(m.param_count(), 93_322);
    }

    /// Other pictures: RGB 32x40 with three classes, the fast path against candle's ops, and
    /// the weights saved and loaded under that shape only.
    #[test]
    fn other_shapes_run_save_and_load() {
        let cnn = CnnShape { height: 32, width: 40, channels: 3, classes: 3 };
        let (m, _) = DigitsCnn::init_shaped(5, cnn, &Device::Cpu).unwrap();
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(4);
        let data: Vec<f32> = (0..2 * 32 * 40 * 3).map(|_| rng.random_range(0.0..1.0)).collect();
        let x = Tensor::from_vec(data, (2, 32, 40, 3), &Device::Cpu).unwrap();
        let reference = m.logits_reference(&x).unwrap();
        // The training path (weights that track gradients) and the served one (detached: each
        // convolution fused with its pool).
        for fast in [m.logits(&x).unwrap(), m.detached().logits(&x).unwrap()] {
            assert_eq!(fast.dims(), &[2, 3]);
            let d = (&fast - &reference).unwrap().abs().unwrap().max_all().unwrap();
            assert!(d.to_scalar::<f32>().unwrap() < 1e-5);
        }
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("w.safetensors");
        m.save(&path).unwrap();
        assert!(DigitsCnn::load(&path, cnn, &Device::Cpu).is_ok());
        let err = DigitsCnn::load(&path, CnnShape::DIGITS, &Device::Cpu).unwrap_err();
        assert!(err.contains("conv1.weight"), "{err}");
        let tiny = CnnShape { height: 9, ..cnn };
        assert!(tiny.check().unwrap_err().contains("10..=512"), "a 9-pixel side leaves no feature");
        assert!(CnnShape { classes: 1, ..cnn }.check().is_err());
        assert!(CnnShape { channels: 4, ..cnn }.check().is_err());
    }

    #[test]
    fn fast_path_equals_reference_path() {
        let (m, _) = DigitsCnn::init(7, &Device::Cpu).unwrap();
        let x = images(5, 1);
        let fast = m.logits(&x).unwrap();
        let slow = m.logits_reference(&x).unwrap();
        let d = (fast - slow).unwrap().abs().unwrap().max_all().unwrap().to_scalar::<f32>().unwrap();
        assert!(d < 1e-5, "max |fast - reference| = {d}");
    }

    #[test]
    fn batch_output_equals_single_outputs() {
        let (m, _) = DigitsCnn::init(3, &Device::Cpu).unwrap();
        let x = images(4, 2);
        let batch = m.logits(&x).unwrap().to_vec2::<f32>().unwrap();
        for (i, row) in batch.iter().enumerate() {
            let one = m.logits(&x.narrow(0, i, 1).unwrap()).unwrap().to_vec2::<f32>().unwrap();
            for (a, b) in row.iter().zip(&one[0]) {
                assert!((a - b).abs() < 1e-5);
            }
        }
    }

    #[test]
    fn init_is_deterministic_and_save_load_round_trips() {
        let (a, _) = DigitsCnn::init(42, &Device::Cpu).unwrap();
        let (b, _) = DigitsCnn::init(42, &Device::Cpu).unwrap();
        let x = images(2, 9);
        let la = a.logits(&x).unwrap().to_vec2::<f32>().unwrap();
        assert_eq!(la, b.logits(&x).unwrap().to_vec2::<f32>().unwrap());
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("w.safetensors");
        a.save(&path).unwrap();
        let c = DigitsCnn::load(&path, CnnShape::DIGITS, &Device::Cpu).unwrap();
        // Loaded weights take the inference path, as `a` detached does: bit for bit the same.
        let served = a.detached().logits(&x).unwrap().to_vec2::<f32>().unwrap();
        assert_eq!(served, c.logits(&x).unwrap().to_vec2::<f32>().unwrap());
    }

    #[test]
    fn load_rejects_wrong_weights() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("w.safetensors");
        std::fs::write(&path, b"not safetensors").unwrap();
        assert!(DigitsCnn::load(&path, CnnShape::DIGITS, &Device::Cpu).is_err());
        let mut map = HashMap::new();
        map.insert("conv1.weight".to_string(), Tensor::zeros((3, 3, 1, 31), DType::F32, &Device::Cpu).unwrap());
        candle_core::safetensors::save(&map, &path).unwrap();
        let err = DigitsCnn::load(&path, CnnShape::DIGITS, &Device::Cpu).unwrap_err();
        assert!(err.contains("`conv1.weight` must have shape [3, 3, 1, 32]"), "{err}");
        assert!(DigitsCnn::load(&tmp.path().join("absent"), CnnShape::DIGITS, &Device::Cpu).is_err());
    }
}
