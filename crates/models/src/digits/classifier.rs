//! The digits CNN as a served [`ImageClassifier`]: batch in, softmax probabilities out.

use aiserve_core::{BackendError, ImageBatch, ImageClassifier};
use candle_core::{Device, Tensor};

use super::{DigitsCnn, CLASSES, HEIGHT, WIDTH};

pub struct DigitsClassifier {
    model: DigitsCnn,
    device: Device,
}

impl DigitsClassifier {
    pub fn new(model: DigitsCnn, device: Device) -> Self {
        Self { model: model.detached(), device }
    }

    /// Probabilities `[n][10]` for a validated batch.
    pub fn probabilities(&self, batch: &ImageBatch) -> candle_core::Result<Vec<Vec<f32>>> {
        if (batch.height, batch.width, batch.channels) != (HEIGHT, WIDTH, 1) {
            candle_core::bail!(
                "digits_cnn takes 28x28x1 images, got {}x{}x{}",
                batch.height,
                batch.width,
                batch.channels
            );
        }
        let x = Tensor::from_slice(&batch.data, (batch.n, HEIGHT, WIDTH, 1), &self.device)?;
        let probs = candle_nn::ops::softmax_last_dim(&self.model.logits(&x)?)?;
        let rows = probs.to_vec2::<f32>()?;
        debug_assert!(rows.iter().all(|r| r.len() == CLASSES));
        Ok(rows)
    }
}

impl ImageClassifier for DigitsClassifier {
    fn predict(&mut self, batch: &ImageBatch) -> Result<Vec<Vec<f32>>, BackendError> {
        self.probabilities(batch).map_err(|e| BackendError(format!("digits_cnn forward failed: {e}")))
    }
}
