//! An [`Encoder`] plus pooling and normalisation: core's [`TextEmbedder`].

use aiserve_core::text::{normalize, pool, EmbedderInfo};
use aiserve_core::{BackendError, TextEmbedder};

use super::Encoder;

pub struct Embedder {
    encoder: Box<dyn Encoder>,
    info: EmbedderInfo,
}

impl Embedder {
    pub fn new(encoder: Box<dyn Encoder>, info: EmbedderInfo) -> Self {
        Self { encoder, info }
    }
}

impl TextEmbedder for Embedder {
    fn embed(&mut self, sequences: &[&[u32]]) -> Result<Vec<Vec<f32>>, BackendError> {
        let (vocab, max) = (self.encoder.vocab_size(), self.info.max_tokens.min(self.encoder.max_positions()));
        for (i, s) in sequences.iter().enumerate() {
            if s.is_empty() || s.len() > max {
                return Err(BackendError(format!("sequence {i} has {} tokens; 1..={max} allowed", s.len())));
            }
            if let Some(bad) = s.iter().find(|&&id| id as usize >= vocab) {
                return Err(BackendError(format!("sequence {i} has token id {bad}; the vocabulary has {vocab}")));
            }
        }
        let lens: Vec<usize> = sequences.iter().map(|s| s.len()).collect();
        let ids: Vec<u32> = sequences.iter().flat_map(|s| s.iter().copied()).collect();
        let hidden = self.encoder.forward(&ids, &lens, None);
        let dim = self.encoder.hidden_size();
        let mut at = 0;
        Ok(lens
            .iter()
            .map(|&len| {
                let mut v = vec![0.0; dim];
                pool(self.info.pooling, &hidden[at * dim..(at + len) * dim], dim, &mut v);
                at += len;
                if self.info.normalize {
                    normalize(&mut v);
                }
                v
            })
            .collect())
    }
}
