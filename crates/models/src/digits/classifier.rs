//! The digits CNN as a served [`ImageClassifier`]: batch in, softmax probabilities out.

use aiserve_core::{BackendError, ImageBatch, ImageClassifier};
use candle_core::{Device, Tensor};

use super::DigitsCnn;

pub struct DigitsClassifier {
    model: DigitsCnn,
    device: Device,
}

impl DigitsClassifier {
    pub fn new(model: DigitsCnn, device: Device) -> Self {
        Self { model: model.detached(), device }
    }

    /// Probabilities `[n][classes]` for a validated batch.
    pub fn probabilities(&self, batch: &ImageBatch) -> candle_core::Result<Vec<Vec<f32>>> {
        let s = self.model.shape();
        if (batch.height, batch.width, batch.channels) != (s.height, s.width, s.channels) {
            candle_core::bail!(
                "this digits_cnn takes {}x{}x{} images, got {}x{}x{}",
                s.height,
                s.width,
                s.channels,
                batch.height,
                batch.width,
                batch.channels
            );
        }
        let x = Tensor::from_slice(&batch.data, (batch.n, s.height, s.width, s.channels), &self.device)?;
        let probs = candle_nn::ops::softmax_last_dim(&self.model.logits(&x)?)?;
        let rows = probs.to_vec2::<f32>()?;
        debug_assert!(rows.iter().all(|r| r.len() == s.classes));
        Ok(rows)
    }
}

impl ImageClassifier for DigitsClassifier {
    fn predict(&mut self, batch: &ImageBatch) -> Result<Vec<Vec<f32>>, BackendError> {
        self.probabilities(batch).map_err(|e| BackendError(format!("digits_cnn forward failed: {e}")))
    }
}
