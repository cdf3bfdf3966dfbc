//! Training's convolution + bias + ReLU + 2x2 max pool as one op
//! ([`conv2d_bias_relu_pool_train`]): the forward pass keeps, for every pooled value, which of
//! its window's positions gave the maximum, so the backward pass writes the ReLU-masked gradient
//! at the convolution's output straight into a reused buffer. Neither the unpooled activation nor
//! its gradient becomes a candle tensor; values and gradients are those of the convolution
//! followed by the pool.

use candle_core::{bail, CpuStorage, CustomOp3, Layout, Result, Shape, Tensor};

use super::{
    backward_masked, forward_inputs, pack_kernel, with_backward_inputs, with_buffer, with_scratch, ConvGeom, MASKED,
};
use crate::kernels::packed::{Epilogue, PackedLinear};
use crate::kernels::{for_each_chunk_mut, for_each_chunk_pair_mut};

/// Training's fused forward: [`super::forward_direct`] with the pool, also recording for every
/// pooled value which of its window's four positions (0..4, row-major) gave the maximum, for
/// [`pooled_output_grad`]. The window's values are `relu(conv + b)` each and the first maximal
/// one is taken, exactly as the ReLU output pooled on its own (the unfused ops) would be.
fn forward_pool_argmax(g: &ConvGeom, x: &[f32], packed: &PackedLinear, b: &[f32]) -> (Vec<f32>, Vec<u8>) {
    let (oh, ow, oc) = (g.oh(), g.ow(), g.oc);
    let per_image = (oh / 2) * (ow / 2) * oc;
    let image_len = g.h * g.w * g.c;
    let mut out = vec![0.0f32; g.n * per_image];
    let mut arg = vec![0u8; g.n * per_image];
    for_each_chunk_pair_mut((&mut out, per_image), (&mut arg, per_image), |i, dst, arg| {
        let img = &x[i * image_len..][..image_len];
        with_scratch(oh * ow * oc, |conv| {
            conv.fill(0.0);
            packed.conv_image(img, g.w, g.c, g.kh, g.kw, ow, conv, Epilogue::Add);
            pool_bias_relu_argmax(conv, ow, oc, b, dst, arg);
        });
    });
    (out, arg)
}

/// One image's pooled `relu(conv + b)` and the window position of each maximum.
#[multiversion::multiversion(targets("x86_64+avx512f+avx512bw+avx512vl", "x86_64+avx2+fma"))]
fn pool_bias_relu_argmax(img: &[f32], ow: usize, oc: usize, b: &[f32], dst: &mut [f32], arg: &mut [u8]) {
    let (ph, pw) = (img.len() / (ow * oc) / 2, ow / 2);
    for y in 0..ph {
        for xo in 0..pw {
            let at = |yy: usize, xx: usize| &img[(yy * ow + xx) * oc..][..oc];
            let (r0, r1, r2, r3) =
                (at(2 * y, 2 * xo), at(2 * y, 2 * xo + 1), at(2 * y + 1, 2 * xo), at(2 * y + 1, 2 * xo + 1));
            let o = (y * pw + xo) * oc;
            let (o, a) = (&mut dst[o..][..oc], &mut arg[o..][..oc]);
            // Zipped lanes and selects: no index checks, no branches.
            let ins = r0.iter().zip(r1).zip(r2.iter().zip(r3)).zip(b);
            for ((o, a), (((c0, c1), (c2, c3)), bias)) in o.iter_mut().zip(a.iter_mut()).zip(ins) {
                let (y0, y1, y2, y3) =
                    ((c0 + bias).max(0.0), (c1 + bias).max(0.0), (c2 + bias).max(0.0), (c3 + bias).max(0.0));
                let m = y0.max(y1).max(y2).max(y3);
                *o = m;
                *a = if y0 == m {
                    0
                } else if y1 == m {
                    1
                } else if y2 == m {
                    2
                } else {
                    3
                };
            }
        }
    }
}

/// The gradient at the (unpooled) convolution output, after the ReLU, of [`forward_pool_argmax`]:
/// each pooled gradient `dy` goes to its window's maximum where the pooled value `y` is positive
/// (the ReLU passed it), every other position gets zero. Written in full into `gm`
/// (`n x oh x ow x oc`), so it needs no clearing.
fn pooled_output_grad(g: &ConvGeom, y: &[f32], dy: &[f32], arg: &[u8], gm: &mut [f32]) {
    let (oh, ow, oc) = (g.oh(), g.ow(), g.oc);
    let (ph, pw) = (oh / 2, ow / 2);
    let per_image = ph * pw * oc;
    for_each_chunk_mut(gm, oh * ow * oc, |i, img| {
        let (ys, ds, args) =
            (&y[i * per_image..][..per_image], &dy[i * per_image..][..per_image], &arg[i * per_image..][..per_image]);
        if oh % 2 == 1 {
            img[(oh - 1) * ow * oc..].fill(0.0);
        }
        for yy in 0..ph {
            let (row0, row1) = (2 * yy * ow * oc, (2 * yy + 1) * ow * oc);
            let (top, bottom) = img.split_at_mut(row1);
            if ow % 2 == 1 {
                top[row0 + (ow - 1) * oc..row0 + ow * oc].fill(0.0);
                bottom[(ow - 1) * oc..ow * oc].fill(0.0);
            }
            for xo in 0..pw {
                let (o, p) = ((yy * pw + xo) * oc, 2 * xo * oc);
                let ins = ys[o..o + oc].iter().zip(&ds[o..o + oc]).zip(&args[o..o + oc]);
                let (d0, d1) = top[row0 + p..row0 + p + 2 * oc].split_at_mut(oc);
                let (d2, d3) = bottom[p..p + 2 * oc].split_at_mut(oc);
                let outs = d0.iter_mut().zip(d1.iter_mut()).zip(d2.iter_mut().zip(d3.iter_mut()));
                for (((d0, d1), (d2, d3)), ((&yv, &gv), &a)) in outs.zip(ins) {
                    let gv = if yv > 0.0 { gv } else { 0.0 };
                    *d0 = if a == 0 { gv } else { 0.0 };
                    *d1 = if a == 1 { gv } else { 0.0 };
                    *d2 = if a == 2 { gv } else { 0.0 };
                    *d3 = if a == 3 { gv } else { 0.0 };
                }
            }
        }
    });
}

/// The training op with the pool fused in: `(x, w, b) -> maxpool2x2(relu(conv(x, w) + b))`.
/// Neither the unpooled activation nor its gradient becomes a tensor: the forward pass keeps
/// each pooled value's window position for the backward one (one op per call, so per call).
pub struct Conv2dBiasReluPool {
    argmax: std::sync::Mutex<Vec<u8>>,
}

impl CustomOp3 for Conv2dBiasReluPool {
    fn name(&self) -> &'static str {
        "conv2d-nhwc-bias-relu-maxpool"
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
        if g.oh() < 2 || g.ow() < 2 {
            bail!("conv2d + maxpool: a {}x{} output is smaller than the pooling window", g.oh(), g.ow());
        }
        let (out, arg) = forward_pool_argmax(&g, x, &pack_kernel(w, g.k(), g.oc), b);
        *self.argmax.lock().unwrap_or_else(|e| e.into_inner()) = arg;
        Ok((CpuStorage::F32(out), Shape::from((g.n, g.oh() / 2, g.ow() / 2, g.oc))))
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
        let arg = self.argmax.lock().unwrap_or_else(|e| e.into_inner());
        if arg.len() != y.elem_count() {
            bail!("conv2d + maxpool: backward without its forward pass");
        }
        let grads = with_backward_inputs([x, w, y, dy], |[xs, ws, ys, dys]| {
            Ok(with_buffer(&MASKED, g.m() * g.oc, |gm| {
                pooled_output_grad(&g, ys, dys, &arg, gm);
                backward_masked(&g, xs, ws, gm, x.track_op())
            }))
        })?;
        grads.into_tensors(x, w, b)
    }
}

/// `maxpool2x2(relu(conv2d(x, w) + b))` on NHWC tensors for training, in one op.
pub fn conv2d_bias_relu_pool_train(x: &Tensor, w: &Tensor, b: &Tensor) -> Result<Tensor> {
    x.apply_op3(w, b, Conv2dBiasReluPool { argmax: Default::default() })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::conv::conv2d_bias_relu;
    use crate::kernels::conv::tests::seq;
    use candle_core::{Device, Var};

    /// Training's fused op gives the unfused ops' values and gradients bit for bit: odd outputs
    /// (a dropped last row and column), windows whose four values all fall below zero (ReLU ties)
    /// and several pictures.
    #[test]
    fn the_fused_training_pool_equals_conv_then_pool() -> Result<()> {
        let dev = Device::Cpu;
        for g in [
            ConvGeom { n: 3, h: 9, w: 8, c: 3, kh: 3, kw: 3, oc: 5 },
            ConvGeom { n: 4, h: 28, w: 28, c: 1, kh: 3, kw: 3, oc: 32 },
        ] {
            let x = Var::from_vec(seq(g.n * g.h * g.w * g.c, 1.0), (g.n, g.h, g.w, g.c), &dev)?;
            let w = Var::from_vec(seq(g.k() * g.oc, 0.5), (g.kh, g.kw, g.c, g.oc), &dev)?;
            let b = Var::from_vec(seq(g.oc, 0.3).iter().map(|v| v - 0.4).collect(), g.oc, &dev)?;
            let fused = conv2d_bias_relu_pool_train(&x, &w, &b)?;
            let apart = crate::kernels::pool::max_pool2x2(&conv2d_bias_relu(&x, &w, &b)?)?;
            assert_eq!(fused.flatten_all()?.to_vec1::<f32>()?, apart.flatten_all()?.to_vec1::<f32>()?);
            let zeros = fused.flatten_all()?.to_vec1::<f32>()?.iter().filter(|v| **v == 0.0).count();
            assert!(zeros > 0, "{g:?}: some windows are all below zero");
            let weights = Tensor::from_vec(seq(fused.elem_count(), 1.0), fused.shape(), &dev)?;
            let gf = (&fused * &weights)?.sum_all()?.backward()?;
            let ga = (&apart * &weights)?.sum_all()?.backward()?;
            for (name, v) in [("x", &x), ("w", &w), ("b", &b)] {
                let (f, a) = (gf.get(v).unwrap(), ga.get(v).unwrap());
                assert_eq!(f.flatten_all()?.to_vec1::<f32>()?, a.flatten_all()?.to_vec1::<f32>()?, "{g:?}: d{name}");
            }
        }
        Ok(())
    }
}
