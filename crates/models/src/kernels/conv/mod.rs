//! 2-D convolution (NHWC input, HWIO weights, stride 1, no padding) with fused bias and ReLU.
//!
//! Forward (training and inference alike): the kernel packed as a product's weight
//! ([`pack_kernel`]) and each picture's convolution an implicit GEMM read straight from the
//! picture ([`forward_direct`]), with bias, ReLU and optionally the 2x2 pool in one pass.
//! Backward (from the ReLU output and its gradient): im2col turns the input into an `M x K`
//! matrix (`M = N*OH*OW` output pixels, `K = KH*KW*C` taps); `g = dy ⊙ [y > 0]`, `db = Σ g`,
//! `dW = colsᵀ · g`, `dx = col2im(g · Wᵀ)` (skipped when the input needs no gradient).
//! Training's pooled layers run conv + pool as one op ([`pooled`]).

use candle_core::{bail, CpuStorage, CustomOp3, Layout, Result, Shape, Tensor};

mod pooled;

pub use pooled::conv2d_bias_relu_pool_train;

use super::gemm::{matmul, MatRef};
use super::packed::{Epilogue, PackedLinear};
use super::{f32_slice, for_each_chunk_mut, with_cpu_f32};

/// Dimensions of one convolution call.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ConvGeom {
    pub n: usize,
    pub h: usize,
    pub w: usize,
    pub c: usize,
    pub kh: usize,
    pub kw: usize,
    pub oc: usize,
}

impl ConvGeom {
    pub fn oh(&self) -> usize {
        self.h + 1 - self.kh
    }
    pub fn ow(&self) -> usize {
        self.w + 1 - self.kw
    }
    /// Output pixels in the batch (GEMM rows).
    pub fn m(&self) -> usize {
        self.n * self.oh() * self.ow()
    }
    /// Taps per output pixel (GEMM depth).
    pub fn k(&self) -> usize {
        self.kh * self.kw * self.c
    }

    fn from_shapes(x: &Shape, w: &Shape, b: &Shape) -> Result<Self> {
        let (n, h, wd, c) = x.dims4()?;
        let (kh, kw, wc, oc) = w.dims4()?;
        if wc != c {
            bail!("conv2d: input has {c} channels but the kernel expects {wc}");
        }
        if b.dims() != [oc] {
            bail!("conv2d: bias shape {:?} does not match {oc} output channels", b.dims());
        }
        if kh == 0 || kw == 0 || kh > h || kw > wd {
            bail!("conv2d: kernel {kh}x{kw} does not fit input {h}x{wd}");
        }
        Ok(Self { n, h, w: wd, c, kh, kw, oc })
    }
}

/// Writes the `M x K` patch matrix of `x` into `cols`.
pub fn im2col(g: &ConvGeom, x: &[f32], cols: &mut [f32]) {
    let (oh, ow, k, c) = (g.oh(), g.ow(), g.k(), g.c);
    let image_len = g.h * g.w * c;
    for_each_chunk_mut(cols, oh * ow * k, |i, dst| {
        let img = &x[i * image_len..][..image_len];
        for y in 0..oh {
            for xo in 0..ow {
                let row = &mut dst[(y * ow + xo) * k..][..k];
                for ky in 0..g.kh {
                    let src = &img[((y + ky) * g.w + xo) * c..][..g.kw * c];
                    let dst = &mut row[ky * g.kw * c..][..g.kw * c];
                    if src.len() <= 8 {
                        // Tiny runs (first layer: 3 floats): a loop beats a memcpy call.
                        dst.iter_mut().zip(src).for_each(|(d, s)| *d = *s);
                    } else {
                        dst.copy_from_slice(src);
                    }
                }
            }
        }
    });
}

/// Adds the `M x K` patch gradients back onto the input gradient `dx` (which must start zeroed).
pub fn col2im_add(g: &ConvGeom, cols: &[f32], dx: &mut [f32]) {
    let (oh, ow, k, c) = (g.oh(), g.ow(), g.k(), g.c);
    let image_len = g.h * g.w * c;
    for_each_chunk_mut(dx, image_len, |i, img| {
        let src = &cols[i * oh * ow * k..][..oh * ow * k];
        for y in 0..oh {
            for xo in 0..ow {
                let row = &src[(y * ow + xo) * k..][..k];
                for ky in 0..g.kh {
                    let dst = &mut img[((y + ky) * g.w + xo) * c..][..g.kw * c];
                    for (d, s) in dst.iter_mut().zip(&row[ky * g.kw * c..][..g.kw * c]) {
                        *d += s;
                    }
                }
            }
        }
    });
}

thread_local! {
    /// Reused scratch buffers (patch matrices and per-picture convolutions; masked output
    /// gradients): their users overwrite every element, so reusing them saves a large zeroed
    /// allocation (and its page faults) per call. One set per thread; ops never nest.
    static COLS: std::cell::RefCell<Vec<f32>> = const { std::cell::RefCell::new(Vec::new()) };
    static MASKED: std::cell::RefCell<Vec<f32>> = const { std::cell::RefCell::new(Vec::new()) };
}

type Scratch = std::thread::LocalKey<std::cell::RefCell<Vec<f32>>>;

/// Runs `f` with this thread's buffer `key` resized to `len` (contents unspecified).
fn with_buffer<R>(key: &'static Scratch, len: usize, f: impl FnOnce(&mut [f32]) -> R) -> R {
    key.with(|cell| match cell.try_borrow_mut() {
        Ok(mut buf) => {
            if buf.len() < len {
                buf.resize(len, 0.0);
            }
            f(&mut buf[..len])
        }
        // Re-entered on this thread (e.g. a rayon worker that stole another op): use a fresh one.
        Err(_) => f(&mut vec![0.0; len]),
    })
}

/// [`with_buffer`] on the patch-matrix buffer.
fn with_scratch<R>(len: usize, f: impl FnOnce(&mut [f32]) -> R) -> R {
    with_buffer(&COLS, len, f)
}

/// Patch-matrix floats per cache block: a block's im2col output (plus its GEMM panel) stays in
/// the per-core L2 (1 MiB of floats = 4 MiB would not; 192 Ki floats = 768 KiB does).
const BLOCK_FLOATS: usize = 192 * 1024;

/// A convolution kernel (`KH x KW x C x OC`, HWIO) packed for [`forward_direct`]: the product's
/// weight side is the kernel transposed, `OC x K` (output channels by taps).
pub fn pack_kernel(w: &[f32], k: usize, oc: usize) -> PackedLinear {
    let mut t = vec![0.0f32; w.len()];
    for (p, row) in w.chunks_exact(oc).enumerate() {
        for (o, &v) in row.iter().enumerate() {
            t[o * k + p] = v;
        }
    }
    PackedLinear::new(&t, oc, k)
}

/// Inference through a kernel packed once ([`pack_kernel`]): each picture's convolution is an
/// implicit GEMM over the picture read in place ([`PackedLinear::conv_image`]), so neither a patch
/// matrix nor a per-call packing is written; then `relu(· + b)`, and with `pool` the 2x2 max
/// pool, in one pass per picture. Pictures are shared out over the cores.
///
/// With `pool`, only the output pixels a window reads are computed (an odd last row and
/// column are dropped by the pool: 21 of the 121 pixels of the digits CNN's second
/// convolution), and a large output is convolved and pooled a few rows at a time so that the
/// pool reads the convolution from L1, not L2.
pub fn forward_direct(g: &ConvGeom, x: &[f32], packed: &PackedLinear, b: &[f32], pool: bool) -> Vec<f32> {
    let (oh, ow, oc) = (g.oh(), g.ow(), g.oc);
    let (ph, pw) = (oh / 2, ow / 2);
    let per_image = if pool { ph * pw * oc } else { oh * ow * oc };
    let image_len = g.h * g.w * g.c;
    // Pooled rows per chunk: the chunk's convolution (`2 * rows` rows of `2 * pw` pixels)
    // within 32 KiB, one row at least.
    let chunk = (POOL_CHUNK_FLOATS / (4 * pw * oc).max(1)).clamp(1, ph.max(1));
    let mut out = vec![0.0f32; g.n * per_image];
    for_each_chunk_mut(&mut out, per_image, |i, dst| {
        let img = &x[i * image_len..][..image_len];
        if pool {
            with_scratch(4 * chunk * pw * oc, |conv| {
                for y0 in (0..ph).step_by(chunk) {
                    let rows = chunk.min(ph - y0);
                    let conv = &mut conv[..4 * rows * pw * oc];
                    let src = &img[2 * y0 * g.w * g.c..];
                    packed.conv_image(src, g.w, g.c, g.kh, g.kw, 2 * pw, conv, Epilogue::Store);
                    pool_bias_relu(conv, 2 * pw, oc, b, &mut dst[y0 * pw * oc..][..rows * pw * oc]);
                }
            });
        } else {
            // The tiles add the bias and apply the ReLU as they write.
            packed.conv_image(img, g.w, g.c, g.kh, g.kw, ow, dst, Epilogue::BiasRelu(b));
        }
    });
    out
}

/// Floats of convolution output [`forward_direct`] pools at a time (32 KiB: in L1 with room).
const POOL_CHUNK_FLOATS: usize = 8 * 1024;

/// One image's `relu(max of each 2x2 window + b)` (the same as pooling after the bias and ReLU:
/// both are monotonic and the bias is per channel) from its `oh x ow x oc` convolution output.
#[multiversion::multiversion(targets("x86_64+avx512f+avx512bw+avx512vl", "x86_64+avx2+fma"))]
fn pool_bias_relu(img: &[f32], ow: usize, oc: usize, b: &[f32], dst: &mut [f32]) {
    let (ph, pw) = (img.len() / (ow * oc) / 2, ow / 2);
    for y in 0..ph {
        for xo in 0..pw {
            let at = |yy: usize, xx: usize| &img[(yy * ow + xx) * oc..][..oc];
            let (r0, r1, r2, r3) =
                (at(2 * y, 2 * xo), at(2 * y, 2 * xo + 1), at(2 * y + 1, 2 * xo), at(2 * y + 1, 2 * xo + 1));
            let o = &mut dst[(y * pw + xo) * oc..][..oc];
            // Zipped lanes: no index checks, so the channels vectorise.
            for (o, (((a, b0), (c, d)), bias)) in o.iter_mut().zip(r0.iter().zip(r1).zip(r2.iter().zip(r3)).zip(b)) {
                *o = (a.max(*b0).max(*c).max(*d) + bias).max(0.0);
            }
        }
    }
}

/// Gradients of a convolution with bias and ReLU.
pub struct ConvGrads {
    pub dx: Option<Vec<f32>>,
    pub dw: Vec<f32>,
    pub db: Vec<f32>,
}

/// Gradients of [`forward_direct`] (without the pool) given its output `y` and the output gradient `dy`.
pub fn backward(g: &ConvGeom, x: &[f32], w: &[f32], y: &[f32], dy: &[f32], need_dx: bool) -> ConvGrads {
    with_buffer(&MASKED, dy.len(), |gm| {
        for ((m, d), y) in gm.iter_mut().zip(dy).zip(y) {
            *m = if *y > 0.0 { *d } else { 0.0 };
        }
        backward_masked(g, x, w, gm, need_dx)
    })
}

/// Gradients from `gm`, the gradient at the convolution's output already masked by its ReLU.
pub fn backward_masked(g: &ConvGeom, x: &[f32], w: &[f32], gm: &[f32], need_dx: bool) -> ConvGrads {
    let (rows_per_image, k, oc) = (g.oh() * g.ow(), g.k(), g.oc);
    let mut db = vec![0.0; oc];
    for row in gm.chunks_exact(oc) {
        db.iter_mut().zip(row).for_each(|(a, v)| *a += v);
    }
    // L2-sized blocks of images, one after the other: dW accumulates
    // over the blocks, dX is written block by block.
    let images_per_block = (BLOCK_FLOATS / (rows_per_image * k)).clamp(1, g.n.max(1));
    let image_len = g.h * g.w * g.c;
    let mut dw = vec![0.0; k * oc];
    let mut dx = need_dx.then(|| vec![0.0; g.n * image_len]);
    for start in (0..g.n).step_by(images_per_block) {
        let n = images_per_block.min(g.n - start);
        let sub = ConvGeom { n, ..*g };
        let m = sub.m();
        let gmat = MatRef::row_major(&gm[start * rows_per_image * oc..][..m * oc], m, oc);
        with_scratch(m * k, |cols| {
            im2col(&sub, &x[start * image_len..][..n * image_len], cols);
            matmul(MatRef::row_major(cols, m, k).t(), gmat, &mut dw, start > 0);
            if let Some(dx) = dx.as_mut() {
                // Reuse the patch buffer for the patch gradients.
                matmul(gmat, MatRef::row_major(w, k, oc).t(), cols, false);
                col2im_add(&sub, cols, &mut dx[start * image_len..][..n * image_len]);
            }
        });
    }
    ConvGrads { dx, dw, db }
}

impl ConvGrads {
    /// The gradients as candle's backward pass wants them: tensors shaped like `x`, `w`, `b`.
    fn into_tensors(
        self,
        x: &Tensor,
        w: &Tensor,
        b: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let dev = x.device();
        let dx = self.dx.map(|dx| Tensor::from_vec(dx, x.shape(), dev)).transpose()?;
        Ok((dx, Some(Tensor::from_vec(self.dw, w.shape(), dev)?), Some(Tensor::from_vec(self.db, b.shape(), dev)?)))
    }
}

/// A convolution op's geometry and its input, kernel and bias values.
type ForwardInputs<'a> = (ConvGeom, &'a [f32], &'a [f32], &'a [f32]);

fn forward_inputs<'a>(
    (s1, l1): (&'a CpuStorage, &Layout),
    (s2, l2): (&'a CpuStorage, &Layout),
    (s3, l3): (&'a CpuStorage, &Layout),
) -> Result<ForwardInputs<'a>> {
    let g = ConvGeom::from_shapes(l1.shape(), l2.shape(), l3.shape())?;
    Ok((g, f32_slice(s1, l1, "conv2d input")?, f32_slice(s2, l2, "conv2d kernel")?, f32_slice(s3, l3, "conv2d bias")?))
}

/// Runs `f` on the values of a convolution op's input, kernel, output and output gradient.
fn with_backward_inputs<R>(t: [&Tensor; 4], f: impl FnOnce([&[f32]; 4]) -> Result<R>) -> Result<R> {
    with_cpu_f32(t[0], "conv2d input", |xs| {
        with_cpu_f32(t[1], "conv2d kernel", |ws| {
            with_cpu_f32(t[2], "conv2d output", |ys| {
                with_cpu_f32(t[3], "conv2d output grad", |dys| f([xs, ws, ys, dys]))
            })
        })
    })
}

/// The candle op: `(x [N,H,W,C], w [KH,KW,C,OC], b [OC]) -> [N,OH,OW,OC]`.
pub struct Conv2dBiasRelu;

impl CustomOp3 for Conv2dBiasRelu {
    fn name(&self) -> &'static str {
        "conv2d-nhwc-bias-relu"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let (g, x, w, b) = forward_inputs((s1, l1), (s2, l2), (s3, l3))?;
        // The kernel packed for this step (a few thousand values) and each picture's
        // convolution read in place: no patch matrix in the forward pass.
        let out = forward_direct(&g, x, &pack_kernel(w, g.k(), g.oc), b, false);
        Ok((CpuStorage::F32(out), Shape::from((g.n, g.oh(), g.ow(), g.oc))))
    }

    fn bwd(
        &self,
        x: &Tensor,
        w: &Tensor,
        b: &Tensor,
        y: &Tensor,
        dy: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let g = ConvGeom::from_shapes(x.shape(), w.shape(), b.shape())?;
        let grads =
            with_backward_inputs([x, w, y, dy], |[xs, ws, ys, dys]| Ok(backward(&g, xs, ws, ys, dys, x.track_op())))?;
        grads.into_tensors(x, w, b)
    }
}

/// The inference-only candle op: `(x, w, b) -> relu(conv(x, w) + b)`, with `pool` followed by a
/// 2x2 max pool, through `packed` (`w` packed by [`pack_kernel`]). No backward.
struct Conv2dInference<'a> {
    packed: &'a PackedLinear,
    pool: bool,
}

impl CustomOp3 for Conv2dInference<'_> {
    fn name(&self) -> &'static str {
        "conv2d-nhwc-bias-relu-inference"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        // The kernel's values come packed; only its shape is read here.
        _s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let g = ConvGeom::from_shapes(l1.shape(), l2.shape(), l3.shape())?;
        if self.pool && (g.oh() < 2 || g.ow() < 2) {
            bail!("conv2d + maxpool: a {}x{} output is smaller than the pooling window", g.oh(), g.ow());
        }
        let p = self.packed;
        if p.n() != g.oc || p.k() != g.k() {
            bail!("conv2d: a kernel packed as {}x{} for a {}x{} product", p.n(), p.k(), g.oc, g.k());
        }
        let x = f32_slice(s1, l1, "conv2d input")?;
        let b = f32_slice(s3, l3, "conv2d bias")?;
        let out = forward_direct(&g, x, p, b, self.pool);
        let dims = if self.pool { (g.n, g.oh() / 2, g.ow() / 2, g.oc) } else { (g.n, g.oh(), g.ow(), g.oc) };
        Ok((CpuStorage::F32(out), Shape::from(dims)))
    }
}

/// `maxpool2x2(relu(conv2d(x, w) + b))` on NHWC tensors in one pass, for inference (tensors that
/// track no gradient; training takes [`conv2d_bias_relu_pool_train`]); `packed` is `w`
/// packed by [`pack_kernel`].
pub fn conv2d_bias_relu_pool(x: &Tensor, w: &Tensor, b: &Tensor, packed: &PackedLinear) -> Result<Tensor> {
    x.apply_op3_no_bwd(w, b, &Conv2dInference { packed, pool: true })
}

/// `relu(conv2d(x, w) + b)` for inference through `w` packed by [`pack_kernel`].
pub fn conv2d_bias_relu_packed(x: &Tensor, w: &Tensor, b: &Tensor, packed: &PackedLinear) -> Result<Tensor> {
    x.apply_op3_no_bwd(w, b, &Conv2dInference { packed, pool: false })
}

/// `relu(conv2d(x, w) + b)` on NHWC tensors through the fast kernel.
pub fn conv2d_bias_relu(x: &Tensor, w: &Tensor, b: &Tensor) -> Result<Tensor> {
    x.apply_op3(w, b, Conv2dBiasRelu)
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{Device, Var};

    pub(super) fn seq(n: usize, scale: f32) -> Vec<f32> {
        (0..n).map(|i| (i as f32 * 0.7311).sin() * scale).collect()
    }

    /// The same computation through candle's own NCHW conv2d, for both values and gradients.
    fn reference(x: &Tensor, w: &Tensor, b: &Tensor) -> Result<Tensor> {
        let xn = x.permute((0, 3, 1, 2))?;
        let wn = w.permute((3, 2, 0, 1))?.contiguous()?;
        let y = xn.conv2d(&wn, 0, 1, 1, 1)?.broadcast_add(&b.reshape((1, (), 1, 1))?)?.relu()?;
        y.permute((0, 2, 3, 1))
    }

    #[test]
    fn forward_and_gradients_match_candle_conv2d() -> Result<()> {
        let dev = Device::Cpu;
        let g = ConvGeom { n: 3, h: 7, w: 6, c: 2, kh: 3, kw: 2, oc: 4 };
        let x = Var::from_vec(seq(g.n * g.h * g.w * g.c, 1.0), (g.n, g.h, g.w, g.c), &dev)?;
        let w = Var::from_vec(seq(g.k() * g.oc, 0.5), (g.kh, g.kw, g.c, g.oc), &dev)?;
        let b = Var::from_vec(vec![0.1f32, -0.2, 0.05, 0.0], g.oc, &dev)?;
        let fast = conv2d_bias_relu(&x, &w, &b)?;
        let slow = reference(&x, &w, &b)?;
        let diff = (&fast - &slow)?.abs()?.max_all()?.to_scalar::<f32>()?;
        assert!(diff < 1e-5, "forward differs by {diff}");

        // A loss that weights every output differently, so every gradient path is exercised.
        let weights = Tensor::from_vec(seq(fast.elem_count(), 1.0), fast.shape(), &dev)?;
        let gf = (&fast * &weights)?.sum_all()?.backward()?;
        let gs = (&slow * &weights)?.sum_all()?.backward()?;
        for (name, v) in [("x", &x), ("w", &w), ("b", &b)] {
            let a = gf.get(v).unwrap();
            let r = gs.get(v).unwrap();
            let d = (a - r)?.abs()?.max_all()?.to_scalar::<f32>()?;
            assert!(d < 1e-4, "d{name} differs by {d}");
        }
        Ok(())
    }

    #[test]
    fn the_fused_pooled_forward_equals_conv_then_pool() -> Result<()> {
        let dev = Device::Cpu;
        // Odd output sizes (the last row and column are dropped by the pool), several blocks.
        for g in [
            ConvGeom { n: 3, h: 9, w: 8, c: 3, kh: 3, kw: 3, oc: 5 },
            ConvGeom { n: 70, h: 28, w: 28, c: 1, kh: 3, kw: 3, oc: 32 },
            ConvGeom { n: 2, h: 13, w: 13, c: 32, kh: 3, kw: 3, oc: 64 },
        ] {
            let x = Tensor::from_vec(seq(g.n * g.h * g.w * g.c, 1.0), (g.n, g.h, g.w, g.c), &dev)?;
            let w = Tensor::from_vec(seq(g.k() * g.oc, 0.5), (g.kh, g.kw, g.c, g.oc), &dev)?;
            let b = Tensor::from_vec(seq(g.oc, 0.3), g.oc, &dev)?;
            let conv = conv2d_bias_relu(&x, &w, &b)?;
            let apart = crate::kernels::pool::max_pool2x2(&conv)?;
            let packed = pack_kernel(&w.flatten_all()?.to_vec1::<f32>()?, g.k(), g.oc);
            let outputs = [
                (conv2d_bias_relu_pool(&x, &w, &b, &packed)?, &apart),
                (conv2d_bias_relu_packed(&x, &w, &b, &packed)?, &conv),
            ];
            for (fused, want) in &outputs {
                assert_eq!(fused.dims(), want.dims());
                let diff = (fused - *want)?.abs()?.max_all()?.to_scalar::<f32>()?;
                assert!(diff < 1e-5, "{g:?}: differs by {diff}");
            }
        }
        Ok(())
    }

    #[test]
    fn input_gradient_is_skipped_for_constants() -> Result<()> {
        let dev = Device::Cpu;
        let x = Tensor::from_vec(seq(2 * 5 * 5, 1.0), (2, 5, 5, 1), &dev)?;
        let w = Var::from_vec(seq(9 * 3, 0.3), (3, 3, 1, 3), &dev)?;
        let b = Var::from_vec(vec![0.0f32; 3], 3, &dev)?;
        let grads = conv2d_bias_relu(&x, &w, &b)?.sum_all()?.backward()?;
        assert!(grads.get(&x).is_none());
        assert!(grads.get(&w).is_some());
        Ok(())
    }

    #[test]
    fn shape_errors_are_reported() {
        let dev = Device::Cpu;
        let x = Tensor::zeros((1, 5, 5, 2), candle_core::DType::F32, &dev).unwrap();
        let w = Tensor::zeros((3, 3, 1, 4), candle_core::DType::F32, &dev).unwrap();
        let b = Tensor::zeros(4, candle_core::DType::F32, &dev).unwrap();
        let err = conv2d_bias_relu(&x, &w, &b).unwrap_err().to_string();
        assert!(err.contains("2 channels"), "{err}");
    }
}
