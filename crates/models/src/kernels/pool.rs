//! 2x2 max pooling with stride 2 on NHWC tensors (odd edges are dropped, as in Keras "valid"),
//! as an op of its own: the reference that the fused convolution + pool ops are tested against
//! (training and serving both pool inside the convolution's op).
//!
//! The backward pass recomputes each window's arg-max from the input and routes the gradient to
//! the first maximal element, as TensorFlow and PyTorch do.

use candle_core::{CpuStorage, CustomOp1, Layout, Result, Shape, Tensor};

use super::{f32_slice, for_each_chunk_mut, with_cpu_f32};

#[derive(Clone, Copy, Debug)]
struct PoolGeom {
    n: usize,
    h: usize,
    w: usize,
    c: usize,
}

impl PoolGeom {
    fn from_shape(s: &Shape) -> Result<Self> {
        let (n, h, w, c) = s.dims4()?;
        if h < 2 || w < 2 {
            candle_core::bail!("max_pool2x2: input {h}x{w} is smaller than the window");
        }
        Ok(Self { n, h, w, c })
    }
    fn oh(&self) -> usize {
        self.h / 2
    }
    fn ow(&self) -> usize {
        self.w / 2
    }
    /// Input offsets (within one image) of the four window positions of output (y, x); each
    /// starts a run of `c` channels.
    fn window(&self, y: usize, x: usize) -> [usize; 4] {
        let at = |yy: usize, xx: usize| (yy * self.w + xx) * self.c;
        [at(2 * y, 2 * x), at(2 * y, 2 * x + 1), at(2 * y + 1, 2 * x), at(2 * y + 1, 2 * x + 1)]
    }
}

fn forward(g: &PoolGeom, x: &[f32]) -> Vec<f32> {
    let (oh, ow, c) = (g.oh(), g.ow(), g.c);
    let mut out = vec![0.0; g.n * oh * ow * c];
    let image_len = g.h * g.w * c;
    for_each_chunk_mut(&mut out, oh * ow * c, |i, dst| {
        let img = &x[i * image_len..][..image_len];
        for y in 0..oh {
            for xo in 0..ow {
                // The four window positions, each a contiguous run of `c` channels.
                let [a, b, cc, d] = g.window(y, xo).map(|at| &img[at..at + c]);
                let o = &mut dst[(y * ow + xo) * c..][..c];
                for i in 0..c {
                    o[i] = a[i].max(b[i]).max(cc[i]).max(d[i]);
                }
            }
        }
    });
    out
}

/// Routes each output gradient to the first input of its window that equals the pooled
/// maximum `y`. Windows do not overlap, so every input gets written at most once; the loop over
/// channels is branch-free (and vectorises).
fn backward(g: &PoolGeom, x: &[f32], y: &[f32], dy: &[f32]) -> Vec<f32> {
    let (oh, ow, c, w) = (g.oh(), g.ow(), g.c, g.w);
    let image_len = g.h * w * c;
    let out_len = oh * ow * c;
    let mut dx = vec![0.0; x.len()];
    for_each_chunk_mut(&mut dx, image_len, |i, dimg| {
        let img = &x[i * image_len..][..image_len];
        let (ys, gs) = (&y[i * out_len..][..out_len], &dy[i * out_len..][..out_len]);
        for yy in 0..oh {
            let (row0, row1) = (2 * yy * w * c, (2 * yy + 1) * w * c);
            let (top, bottom) = dimg.split_at_mut(row1);
            for xo in 0..ow {
                let (o, p) = ((yy * ow + xo) * c, 2 * xo * c);
                let (m, gr) = (&ys[o..o + c], &gs[o..o + c]);
                let (x0, x1) = img[row0 + p..row0 + p + 2 * c].split_at(c);
                let (x2, x3) = img[row1 + p..row1 + p + 2 * c].split_at(c);
                let (d0, d1) = top[row0 + p..row0 + p + 2 * c].split_at_mut(c);
                let (d2, d3) = bottom[p..p + 2 * c].split_at_mut(c);
                // Zipped lanes (no index checks) and selects instead of branches: vectorises.
                let outs = d0.iter_mut().zip(d1.iter_mut()).zip(d2.iter_mut().zip(d3.iter_mut()));
                let ins = x0.iter().zip(x1).zip(x2.iter().zip(x3)).zip(m.iter().zip(gr));
                for (((d0, d1), (d2, d3)), (((&a, &b), (&cc, &d)), (&mx, &gv))) in outs.zip(ins) {
                    let (e0, e1, e2, e3) = (a == mx, b == mx, cc == mx, d == mx);
                    *d0 = if e0 { gv } else { 0.0 };
                    *d1 = if e1 & !e0 { gv } else { 0.0 };
                    *d2 = if e2 & !(e0 | e1) { gv } else { 0.0 };
                    *d3 = if e3 & !(e0 | e1 | e2) { gv } else { 0.0 };
                }
            }
        }
    });
    dx
}

/// The candle op: `[N,H,W,C] -> [N,H/2,W/2,C]`.
pub struct MaxPool2x2;

impl CustomOp1 for MaxPool2x2 {
    fn name(&self) -> &'static str {
        "max-pool-2x2-nhwc"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        let g = PoolGeom::from_shape(l.shape())?;
        let out = forward(&g, f32_slice(s, l, "max_pool2x2 input")?);
        Ok((CpuStorage::F32(out), Shape::from((g.n, g.oh(), g.ow(), g.c))))
    }

    fn bwd(&self, x: &Tensor, y: &Tensor, dy: &Tensor) -> Result<Option<Tensor>> {
        let g = PoolGeom::from_shape(x.shape())?;
        let dx = with_cpu_f32(x, "max_pool2x2 input", |xs| {
            with_cpu_f32(y, "max_pool2x2 output", |ys| {
                with_cpu_f32(dy, "max_pool2x2 output grad", |dys| Ok(backward(&g, xs, ys, dys)))
            })
        })?;
        Ok(Some(Tensor::from_vec(dx, x.shape(), x.device())?))
    }
}

/// 2x2/2 max pooling of an NHWC tensor through the fast kernel.
pub fn max_pool2x2(x: &Tensor) -> Result<Tensor> {
    x.apply_op1(MaxPool2x2)
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{Device, Var};

    #[test]
    fn matches_candle_max_pool_values_and_gradients() -> Result<()> {
        let dev = Device::Cpu;
        let (n, h, w, c) = (2, 6, 6, 3);
        // A permutation of 0..216: no ties, so the arg-max is unambiguous.
        let len = n * h * w * c;
        let data: Vec<f32> = (0..len).map(|i| ((i * 7919) % len) as f32).collect();
        let x = Var::from_vec(data, (n, h, w, c), &dev)?;
        let fast = max_pool2x2(&x)?;
        let slow = x.permute((0, 3, 1, 2))?.max_pool2d(2)?.permute((0, 2, 3, 1))?;
        assert_eq!(fast.dims(), [2, 3, 3, 3]);
        let d = (&fast - &slow)?.abs()?.max_all()?.to_scalar::<f32>()?;
        assert!(d == 0.0, "forward differs by {d}");
        // Gradient: each window's maximum receives that output's weight. (candle's own
        // max_pool2d backward multiplies by the tie fraction instead of dividing, so it is a
        // quarter of the true gradient for unique maxima; we check against first principles.)
        let weights: Vec<f32> = (0..fast.elem_count()).map(|i| i as f32 + 1.0).collect();
        let wt = Tensor::from_vec(weights.clone(), fast.shape(), &dev)?;
        let grad = (&fast * &wt)?.sum_all()?.backward()?;
        let got = grad.get(&x).unwrap().flatten_all()?.to_vec1::<f32>()?;
        let xs = x.flatten_all()?.to_vec1::<f32>()?;
        let mut want = vec![0f32; xs.len()];
        let at = |b: usize, y: usize, xx: usize, ch: usize| ((b * h + y) * w + xx) * c + ch;
        for b in 0..n {
            for y in 0..h / 2 {
                for xx in 0..w / 2 {
                    for ch in 0..c {
                        let win = [
                            at(b, 2 * y, 2 * xx, ch),
                            at(b, 2 * y, 2 * xx + 1, ch),
                            at(b, 2 * y + 1, 2 * xx, ch),
                            at(b, 2 * y + 1, 2 * xx + 1, ch),
                        ];
                        let best = *win.iter().max_by(|i, j| xs[**i].total_cmp(&xs[**j])).unwrap();
                        want[best] += weights[((b * (h / 2) + y) * (w / 2) + xx) * c + ch];
                    }
                }
            }
        }
        assert_eq!(got, want);
        Ok(())
    }
}
