//! One LSTM layer in Keras' layout (`kernel` `[in, 4H]`, `recurrent_kernel` `[H, 4H]`, `bias`
//! `[4H]`, gates i, f, c, o; sigmoid gates, tanh cell), trained through candle's autograd.
//!
//! The input products of every step are taken at once before the loop ([`Lstm::project`],
//! [`Lstm::embed`]); each step then adds the recurrent product and runs the cell as one operation
//! ([`Cell`]: gates, new cell and hidden state, and its own backward pass) instead of a dozen
//! elementwise candle ops and their gradients. The state travels as one `[N, 2H]` tensor, `h`
//! then `c`.

use candle_core::{CpuStorage, CustomOp2, CustomOp3, IndexOp, Layout, Result, Shape, Tensor};

use crate::kernels::f32_slice;

pub struct Lstm<'a> {
    pub kernel: &'a Tensor,
    pub recurrent: &'a Tensor,
    pub bias: &'a Tensor,
    pub units: usize,
}

impl Lstm<'_> {
    /// `x @ kernel + bias` for inputs `[N, T, in]`: `[N, T, 4H]`.
    pub fn project(&self, x: &Tensor) -> Result<Tensor> {
        let (n, t, f) = x.dims3()?;
        x.reshape((n * t, f))?.matmul(self.kernel)?.broadcast_add(self.bias)?.reshape((n, t, 4 * self.units))
    }

    /// The same for one-hot inputs given as token ids `[M]` (u32): rows of the kernel, `[M, 4H]`.
    pub fn embed(&self, ids: &Tensor) -> Result<Tensor> {
        self.kernel.embedding(ids)?.broadcast_add(self.bias)
    }

    /// The zero state of `n` sequences.
    pub fn zeros(&self, n: usize, like: &Tensor) -> Result<Tensor> {
        Tensor::zeros((n, 2 * self.units), like.dtype(), like.device())
    }

    /// The hidden half `h` `[N, H]` of a state.
    pub fn hidden(&self, state: &Tensor) -> Result<Tensor> {
        state.narrow(1, 0, self.units)
    }

    /// One step from projected inputs `[N, 4H]` and a state `[N, 2H]`: the next state.
    pub fn step(&self, projected: &Tensor, state: &Tensor) -> Result<Tensor> {
        let z = (projected + self.hidden(state)?.contiguous()?.matmul(self.recurrent)?)?;
        z.contiguous()?.apply_op2(&state.contiguous()?, Cell { units: self.units })
    }

    /// Runs over projected inputs `[N, T, 4H]` from zero states: the last state
    /// (`return_state=True`).
    pub fn run(&self, projected: &Tensor) -> Result<Tensor> {
        let mut state = self.zeros(projected.dim(0)?, projected)?;
        for s in 0..projected.dim(1)? {
            state = self.step(&projected.i((.., s, ..))?, &state)?;
        }
        Ok(state)
    }

    /// Runs over projected inputs `[N, T, 4H]` from `state`: every step's `h`
    /// (`return_sequences=True`).
    pub fn hiddens(&self, projected: &Tensor, mut state: Tensor) -> Result<Vec<Tensor>> {
        let t = projected.dim(1)?;
        let mut out = Vec::with_capacity(t);
        for s in 0..t {
            state = self.step(&projected.i((.., s, ..))?, &state)?;
            out.push(self.hidden(&state)?);
        }
        Ok(out)
    }
}

fn sigmoid(x: f32) -> f32 {
    1.0 / (1.0 + (-x).exp())
}

/// `tanh` through one `exp` (as `2 sigmoid(2x) - 1`): within 1e-7 of libm's `tanhf`, which goes
/// through `expm1f` and took 15% of a training step in its place.
fn tanh(x: f32) -> f32 {
    2.0 * sigmoid(2.0 * x) - 1.0
}

/// The cell: pre-activations `z` `[N, 4H]` and the previous state `[N, 2H]` (only its `c` is
/// read) give the new state `[h, c]`.
struct Cell {
    units: usize,
}

/// The gates of one unit from its four pre-activations.
#[inline]
fn gates(z: &[f32], u: usize, k: usize) -> (f32, f32, f32, f32) {
    (sigmoid(z[k]), sigmoid(z[u + k]), tanh(z[2 * u + k]), sigmoid(z[3 * u + k]))
}

impl CustomOp2 for Cell {
    fn name(&self) -> &'static str {
        "lstm-cell"
    }

    fn cpu_fwd(&self, s1: &CpuStorage, l1: &Layout, s2: &CpuStorage, l2: &Layout) -> Result<(CpuStorage, Shape)> {
        let u = self.units;
        let z = f32_slice(s1, l1, "lstm pre-activations")?;
        let prev = f32_slice(s2, l2, "lstm state")?;
        let n = l1.dims()[0];
        if l1.dims() != [n, 4 * u] || l2.dims() != [n, 2 * u] {
            candle_core::bail!("lstm cell: pre-activations {:?} and state {:?} for {u} units", l1.dims(), l2.dims());
        }
        let mut out = vec![0f32; n * 2 * u];
        for ((o, z), prev) in out.chunks_exact_mut(2 * u).zip(z.chunks_exact(4 * u)).zip(prev.chunks_exact(2 * u)) {
            for k in 0..u {
                let (i, f, g, og) = gates(z, u, k);
                let c = f * prev[u + k] + i * g;
                o[k] = og * tanh(c);
                o[u + k] = c;
            }
        }
        Ok((CpuStorage::F32(out), Shape::from((n, 2 * u))))
    }

    fn bwd(&self, z: &Tensor, prev: &Tensor, _res: &Tensor, grad: &Tensor) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let u = self.units;
        let both = z.apply_op3_no_bwd(prev, &grad.contiguous()?, &CellGrad { units: u })?;
        Ok((Some(both.narrow(1, 0, 4 * u)?), Some(both.narrow(1, 4 * u, 2 * u)?)))
    }
}

/// The cell's gradients: from `z`, the previous state and the gradient of the new state
/// `[dh, dc]`, the gradients of `z` and of the previous state (`[0, dc_prev]`), side by side
/// `[N, 6H]`.
struct CellGrad {
    units: usize,
}

impl CustomOp3 for CellGrad {
    fn name(&self) -> &'static str {
        "lstm-cell-grad"
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
        let u = self.units;
        let z = f32_slice(s1, l1, "lstm pre-activations")?;
        let prev = f32_slice(s2, l2, "lstm state")?;
        let grad = f32_slice(s3, l3, "lstm state gradient")?;
        let n = l1.dims()[0];
        let mut out = vec![0f32; n * 6 * u];
        for (((o, z), prev), grad) in out
            .chunks_exact_mut(6 * u)
            .zip(z.chunks_exact(4 * u))
            .zip(prev.chunks_exact(2 * u))
            .zip(grad.chunks_exact(2 * u))
        {
            for k in 0..u {
                let (i, f, g, og) = gates(z, u, k);
                let c_prev = prev[u + k];
                let tc = tanh(f * c_prev + i * g);
                let (dh, dc_out) = (grad[k], grad[u + k]);
                let dc = dc_out + dh * og * (1.0 - tc * tc);
                o[k] = dc * g * i * (1.0 - i);
                o[u + k] = dc * c_prev * f * (1.0 - f);
                o[2 * u + k] = dc * i * (1.0 - g * g);
                o[3 * u + k] = dh * tc * og * (1.0 - og);
                o[5 * u + k] = dc * f;
            }
        }
        Ok((CpuStorage::F32(out), Shape::from((n, 6 * u))))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{Device, Var, D};

    /// The fused cell against the same step in candle's own ops: values and the gradients of
    /// everything it touches.
    #[test]
    fn tanh_through_exp_is_libms() {
        for i in -2000..=2000 {
            let x = i as f32 * 0.01;
            assert!((tanh(x) - x.tanh()).abs() < 2e-7, "{x}: {} vs {}", tanh(x), x.tanh());
        }
        assert_eq!((tanh(-100.0), tanh(100.0)), (-1.0, 1.0));
    }

    #[test]
    fn fused_cell_equals_candle_ops_with_gradients() {
        let dev = Device::Cpu;
        let (n, u, f) = (3, 5, 4);
        let v = |len: usize, s: f32| (0..len).map(|i| (i as f32 * 0.37 + s).sin()).collect::<Vec<f32>>();
        let kernel = Var::from_vec(v(f * 4 * u, 0.1), (f, 4 * u), &dev).unwrap();
        let recurrent = Var::from_vec(v(u * 4 * u, 0.2), (u, 4 * u), &dev).unwrap();
        let bias = Var::from_vec(v(4 * u, 0.3), 4 * u, &dev).unwrap();
        let x = Tensor::from_vec(v(n * 2 * f, 0.4), (n, 2, f), &dev).unwrap();
        let weights = Tensor::from_vec(v(n * u, 0.9), (n, u), &dev).unwrap();
        let lstm =
            Lstm { kernel: kernel.as_tensor(), recurrent: recurrent.as_tensor(), bias: bias.as_tensor(), units: u };
        let fused = {
            let p = lstm.project(&x).unwrap();
            let hs = lstm.hiddens(&p, lstm.zeros(n, &x).unwrap()).unwrap();
            hs.iter().map(|h| (h * &weights).unwrap().sum_all().unwrap()).reduce(|a, b| (a + b).unwrap()).unwrap()
        };
        let reference = {
            let p = lstm.project(&x).unwrap();
            let (mut h, mut c) = (
                Tensor::zeros((n, u), candle_core::DType::F32, &dev).unwrap(),
                Tensor::zeros((n, u), candle_core::DType::F32, &dev).unwrap(),
            );
            let mut total = Tensor::zeros((), candle_core::DType::F32, &dev).unwrap();
            for s in 0..2 {
                let z = (p.i((.., s, ..)).unwrap() + h.matmul(recurrent.as_tensor()).unwrap()).unwrap();
                let gate = |k: usize| z.narrow(D::Minus1, k * u, u).unwrap();
                let (i, fg, g, o) = (
                    candle_nn::ops::sigmoid(&gate(0)).unwrap(),
                    candle_nn::ops::sigmoid(&gate(1)).unwrap(),
                    gate(2).tanh().unwrap(),
                    candle_nn::ops::sigmoid(&gate(3)).unwrap(),
                );
                c = ((fg * &c).unwrap() + (i * g).unwrap()).unwrap();
                h = (o * c.tanh().unwrap()).unwrap();
                total = (total + (&h * &weights).unwrap().sum_all().unwrap()).unwrap();
            }
            total
        };
        let (a, b) = (fused.to_scalar::<f32>().unwrap(), reference.to_scalar::<f32>().unwrap());
        assert!((a - b).abs() < 1e-5, "{a} vs {b}");
        let (ga, gb) = (fused.backward().unwrap(), reference.backward().unwrap());
        for var in [&kernel, &recurrent, &bias] {
            let d = (ga.get(var).unwrap() - gb.get(var).unwrap()).unwrap().abs().unwrap().max_all().unwrap();
            assert!(d.to_scalar::<f32>().unwrap() < 1e-5);
        }
    }
}
