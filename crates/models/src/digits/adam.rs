//! Adam, step for step the arithmetic of candle-nn's `AdamW` (without weight decay, which the
//! digits recipe does not use), but with its moments in reach: a training checkpoint must hold
//! them for a resumed run to continue exactly where the interrupted one stopped, and candle's
//! optimizer keeps them private.

use candle_core::backprop::GradStore;
use candle_core::{Result, Tensor, Var};

/// Keras' Adam constants.
const BETA1: f64 = 0.9;
const BETA2: f64 = 0.999;
const EPS: f64 = 1e-7;

pub struct Adam {
    vars: Vec<Var>,
    /// First and second moments, one per variable.
    m: Vec<Var>,
    v: Vec<Var>,
    /// Steps taken (the bias corrections' exponent).
    pub steps: usize,
    pub lr: f64,
}

impl Adam {
    pub fn new(vars: Vec<Var>, lr: f64) -> Result<Self> {
        let zeros = |v: &Var| Var::zeros(v.shape(), v.dtype(), v.device());
        let m = vars.iter().map(zeros).collect::<Result<_>>()?;
        let v = vars.iter().map(zeros).collect::<Result<_>>()?;
        Ok(Self { vars, m, v, steps: 0, lr })
    }

    pub fn step(&mut self, grads: &GradStore) -> Result<()> {
        self.steps += 1;
        let scale_m = 1f64 / (1f64 - BETA1.powi(self.steps as i32));
        let scale_v = 1f64 / (1f64 - BETA2.powi(self.steps as i32));
        for ((theta, m), v) in self.vars.iter().zip(&self.m).zip(&self.v) {
            if let Some(g) = grads.get(theta) {
                let next_m = ((m.as_tensor() * BETA1)? + (g * (1.0 - BETA1))?)?;
                let next_v = ((v.as_tensor() * BETA2)? + (g.sqr()? * (1.0 - BETA2))?)?;
                let m_hat = (&next_m * scale_m)?;
                let v_hat = (&next_v * scale_v)?;
                let adjusted = (m_hat / (v_hat.sqrt()? + EPS)?)?;
                let next_theta = (theta.as_tensor() - (adjusted * self.lr)?)?;
                m.set(&next_m)?;
                v.set(&next_v)?;
                theta.set(&next_theta)?;
            }
        }
        Ok(())
    }

    /// Tensors of state per variable in [`Adam::state`].
    pub const SLOTS: usize = 2;

    /// The moments, in the variables' order: `[first, second]` for each.
    pub fn state(&self) -> Vec<Vec<Tensor>> {
        self.m.iter().zip(&self.v).map(|(m, v)| vec![m.as_tensor().clone(), v.as_tensor().clone()]).collect()
    }

    /// Puts back moments taken by [`Adam::state`] after `steps` steps.
    pub fn restore(&mut self, state: &[Vec<Tensor>], steps: usize) -> Result<()> {
        if state.len() != self.vars.len() || state.iter().any(|s| s.len() != Self::SLOTS) {
            candle_core::bail!("the checkpoint's optimiser state does not fit {} variables", self.vars.len());
        }
        for ((m, v), s) in self.m.iter().zip(&self.v).zip(state) {
            m.set(&s[0])?;
            v.set(&s[1])?;
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
