//! RMSprop as Keras 3 computes it (`rho` 0.9, `epsilon` 1e-7, no momentum, not centred): each
//! weight's squared gradients averaged with decay `rho`, and the step divided by their root.
//! The seed trains its sequence model with it.

use candle_core::backprop::GradStore;
use candle_core::{Result, Tensor, Var};

const RHO: f64 = 0.9;
const EPS: f64 = 1e-7;

pub struct RmsProp {
    vars: Vec<Var>,
    /// The running mean of each variable's squared gradients.
    velocity: Vec<Var>,
    pub lr: f64,
    pub steps: usize,
}

impl RmsProp {
    pub fn new(vars: Vec<Var>, lr: f64) -> Result<Self> {
        let velocity = vars.iter().map(|v| Var::zeros(v.shape(), v.dtype(), v.device())).collect::<Result<_>>()?;
        Ok(Self { vars, velocity, lr, steps: 0 })
    }

    pub fn step(&mut self, grads: &GradStore) -> Result<()> {
        self.steps += 1;
        for (theta, vel) in self.vars.iter().zip(&self.velocity) {
            if let Some(g) = grads.get(theta) {
                let next = ((vel.as_tensor() * RHO)? + (g.sqr()? * (1.0 - RHO))?)?;
                let update = (g / (next.sqrt()? + EPS)?)?;
                theta.set(&(theta.as_tensor() - (update * self.lr)?)?)?;
                vel.set(&next)?;
            }
        }
        Ok(())
    }

    /// Tensors of state per variable in [`RmsProp::state`].
    pub const SLOTS: usize = 1;

    /// The mean squares, in the variables' order (a checkpoint's optimiser state).
    pub fn state(&self) -> Vec<Vec<Tensor>> {
        self.velocity.iter().map(|v| vec![v.as_tensor().clone()]).collect()
    }

    /// Puts back a state taken by [`RmsProp::state`] after `steps` steps.
    pub fn restore(&mut self, state: &[Vec<Tensor>], steps: usize) -> Result<()> {
        if state.len() != self.vars.len() || state.iter().any(|s| s.len() != Self::SLOTS) {
            candle_core::bail!("the checkpoint's optimiser state does not fit {} variables", self.vars.len());
        }
        for (v, s) in self.velocity.iter().zip(state) {
            v.set(&s[0])?;
        }
        self.steps = steps;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{Device, Tensor};

    /// Two steps on `w * x` by hand: v = 0.1 g², w -= lr g / (sqrt(v) + eps), and again.
    #[test]
    fn steps_as_keras_does() {
        let w = Var::from_vec(vec![1.0f32, -2.0], 2, &Device::Cpu).unwrap();
        let x = Tensor::new(&[3.0f32, 0.5], &Device::Cpu).unwrap();
        let mut opt = RmsProp::new(vec![w.clone()], 0.01).unwrap();
        let (mut v, mut want) = ([0f64; 2], [1.0f64, -2.0]);
        for _ in 0..2 {
            let loss = (w.as_tensor() * &x).unwrap().sum_all().unwrap();
            opt.step(&loss.backward().unwrap()).unwrap();
            for (k, g) in [3.0f64, 0.5].into_iter().enumerate() {
                v[k] = 0.9 * v[k] + 0.1 * g * g;
                want[k] -= 0.01 * g / (v[k].sqrt() + 1e-7);
            }
        }
        let got = w.as_tensor().to_vec1::<f32>().unwrap();
        for (g, w) in got.iter().zip(want) {
            assert!((*g as f64 - w).abs() < 1e-6, "{got:?} vs {want:?}");
        }
    }
}
