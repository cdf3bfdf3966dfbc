//! Adam, step for step the arithmetic of candle-nn's `AdamW` (without weight decay, which the
//! digits recipe does not use), but with its moments in reach: a training checkpoint must hold
//! them for a resumed run to continue exactly where the interrupted one stopped, and candle's
//! optimizer keeps them private.
//!
//! One fused pass per variable, spread over the cores, instead of candle's dozen element-wise
//! ops (each a fresh tensor) on the one thread between batches: that took 15% of an epoch. Each
//! element goes through the same f32 operations in the same order as candle's ops (its scalar
//! ops are `x * mul + add`), so the weights are the same bit for bit.

use candle_core::backprop::GradStore;
use candle_core::{Result, Tensor, Var};
use rayon::prelude::*;

use crate::kernels::with_cpu_f32;

/// Keras' Adam constants.
const BETA1: f64 = 0.9;
const BETA2: f64 = 0.999;
const EPS: f64 = 1e-7;

/// Elements per parallel task (large enough that a task outweighs its scheduling).
const CHUNK: usize = 8192;

pub struct Adam {
    vars: Vec<Var>,
    /// First and second moments, one per variable, in the variable's (contiguous) order.
    m: Vec<Vec<f32>>,
    v: Vec<Vec<f32>>,
    /// Steps taken (the bias corrections' exponent).
    pub steps: usize,
    pub lr: f64,
}

/// candle's `tensor * s` / `tensor + s`: `x * mul + add` with both scalars as f32.
#[inline(always)]
fn affine(x: f32, mul: f32, add: f32) -> f32 {
    x * mul + add
}

/// One step's constants, as f32 (candle converts its scalars so).
#[derive(Clone, Copy)]
struct Update {
    b1: f32,
    c1: f32,
    b2: f32,
    c2: f32,
    scale_m: f32,
    scale_v: f32,
    eps: f32,
    lr: f32,
}

impl Update {
    /// Updates weights `w` and moments `m`, `v` from gradient `g`, on the widest vectors the CPU
    /// has (no fused multiply-adds: each operation rounds as candle's does).
    fn update(self, w: &mut [f32], m: &mut [f32], v: &mut [f32], g: &[f32]) {
        #[cfg(target_arch = "x86_64")]
        {
            if crate::kernels::avx512() {
                // SAFETY: the CPU has AVX-512F (checked at run time).
                return unsafe { self.update_avx512(w, m, v, g) };
            }
            if std::arch::is_x86_feature_detected!("avx2") {
                // SAFETY: the CPU has AVX2 (checked at run time).
                return unsafe { self.update_avx2(w, m, v, g) };
            }
        }
        self.update_any(w, m, v, g)
    }

    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx512f")]
    unsafe fn update_avx512(self, w: &mut [f32], m: &mut [f32], v: &mut [f32], g: &[f32]) {
        self.update_any(w, m, v, g)
    }

    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2")]
    unsafe fn update_avx2(self, w: &mut [f32], m: &mut [f32], v: &mut [f32], g: &[f32]) {
        self.update_any(w, m, v, g)
    }

    #[inline(always)]
    fn update_any(self, w: &mut [f32], m: &mut [f32], v: &mut [f32], g: &[f32]) {
        for (((w, m), v), &g) in w.iter_mut().zip(m).zip(v).zip(g) {
            *m = affine(*m, self.b1, 0.0) + affine(g, self.c1, 0.0);
            *v = affine(*v, self.b2, 0.0) + affine(g * g, self.c2, 0.0);
            let m_hat = affine(*m, self.scale_m, 0.0);
            let v_hat = affine(*v, self.scale_v, 0.0);
            let adjusted = m_hat / affine(v_hat.sqrt(), 1.0, self.eps);
            *w -= affine(adjusted, self.lr, 0.0);
        }
    }
}

impl Adam {
    pub fn new(vars: Vec<Var>, lr: f64) -> Result<Self> {
        let m = vars.iter().map(|v| vec![0f32; v.elem_count()]).collect();
        let v = vars.iter().map(|v| vec![0f32; v.elem_count()]).collect();
        Ok(Self { vars, m, v, steps: 0, lr })
    }

    pub fn step(&mut self, grads: &GradStore) -> Result<()> {
        self.steps += 1;
        let scale_m = (1f64 / (1f64 - BETA1.powi(self.steps as i32))) as f32;
        let scale_v = (1f64 / (1f64 - BETA2.powi(self.steps as i32))) as f32;
        let k = Update {
            b1: BETA1 as f32,
            c1: (1.0 - BETA1) as f32,
            b2: BETA2 as f32,
            c2: (1.0 - BETA2) as f32,
            scale_m,
            scale_v,
            eps: EPS as f32,
            lr: self.lr as f32,
        };
        // Every variable's weights and gradient as plain vectors, then one parallel pass over
        // all of them (a pass per variable would wake the pool ten times a step).
        let mut work = Vec::with_capacity(self.vars.len());
        for (i, theta) in self.vars.iter().enumerate() {
            let Some(g) = grads.get(theta) else { continue };
            let w = with_cpu_f32(theta.as_tensor(), "adam weights", |w| Ok(w.to_vec()))?;
            let g = with_cpu_f32(g, "adam gradient", |g| Ok(g.to_vec()))?;
            if g.len() != w.len() || self.m[i].len() != w.len() {
                candle_core::bail!("adam: a gradient of {} values for {} weights", g.len(), w.len());
            }
            work.push((i, w, g));
        }
        let mut moments: Vec<_> = self.m.iter_mut().zip(&mut self.v).map(Some).collect();
        let mut chunks = Vec::new();
        for (i, w, g) in &mut work {
            let (m, v) = moments[*i].take().expect("each variable once");
            chunks.extend(w.chunks_mut(CHUNK).zip(m.chunks_mut(CHUNK)).zip(v.chunks_mut(CHUNK)).zip(g.chunks(CHUNK)));
        }
        chunks.into_par_iter().for_each(|(((w, m), v), g)| k.update(w, m, v, g));
        for (i, w, _) in work {
            let theta = &self.vars[i];
            theta.set(&Tensor::from_vec(w, theta.shape(), theta.device())?)?;
        }
        Ok(())
    }

    /// Tensors of state per variable in [`Adam::state`].
    pub const SLOTS: usize = 2;

    /// The moments, in the variables' order: `[first, second]` for each.
    pub fn state(&self) -> Vec<Vec<Tensor>> {
        let tensor = |data: &[f32], var: &Var| {
            Tensor::from_slice(data, var.shape(), var.device()).expect("moments have their variable's size")
        };
        self.vars.iter().zip(&self.m).zip(&self.v).map(|((var, m), v)| vec![tensor(m, var), tensor(v, var)]).collect()
    }

    /// Puts back moments taken by [`Adam::state`] after `steps` steps.
    pub fn restore(&mut self, state: &[Vec<Tensor>], steps: usize) -> Result<()> {
        if state.len() != self.vars.len() || state.iter().any(|s| s.len() != Self::SLOTS) {
            candle_core::bail!("the checkpoint's optimiser state does not fit {} variables", self.vars.len());
        }
        for (((var, m), v), s) in self.vars.iter().zip(&mut self.m).zip(&mut self.v).zip(state) {
            for (dst, t) in [(m, &s[0]), (v, &s[1])] {
                if t.dims() != var.dims() {
                    candle_core::bail!("a checkpoint moment is {:?}, its variable {:?}", t.dims(), var.dims());
                }
                *dst = with_cpu_f32(t, "checkpoint moment", |x| Ok(x.to_vec()))?;
            }
        }
        self.steps = steps;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;
    use candle_nn::Optimizer;

    /// The same weights as candle-nn's AdamW with Keras' constants, bit for bit, over steps of
    /// varying gradients and rates.
    #[test]
    fn matches_candle_adamw_exactly() {
        let dev = Device::Cpu;
        let init: Vec<f32> = (0..12).map(|i| (i as f32 * 0.37).sin()).collect();
        let (a, b) = (Var::from_slice(&init, (3, 4), &dev).unwrap(), Var::from_slice(&init, (3, 4), &dev).unwrap());
        let params = candle_nn::ParamsAdamW { lr: 1e-3, beta1: 0.9, beta2: 0.999, eps: 1e-7, weight_decay: 0.0 };
        let mut theirs = candle_nn::AdamW::new(vec![a.clone()], params).unwrap();
        let mut ours = Adam::new(vec![b.clone()], 1e-3).unwrap();
        for step in 0..5 {
            let lr = 1e-3 / (step + 1) as f64;
            theirs.set_learning_rate(lr);
            ours.lr = lr;
            let ga =
                (a.as_tensor().sqr().unwrap() * (step as f64 + 1.0)).unwrap().sum_all().unwrap().backward().unwrap();
            let gb =
                (b.as_tensor().sqr().unwrap() * (step as f64 + 1.0)).unwrap().sum_all().unwrap().backward().unwrap();
            theirs.step(&ga).unwrap();
            ours.step(&gb).unwrap();
        }
        let (x, y) = (a.as_tensor().to_vec2::<f32>().unwrap(), b.as_tensor().to_vec2::<f32>().unwrap());
        assert_eq!(x, y);
        assert_ne!(y[0], init[..4], "the weights moved");
    }
}
