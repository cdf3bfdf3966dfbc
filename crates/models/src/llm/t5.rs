//! T5 encoder-decoders (t5, flan-t5) behind the generation engine, on candle-transformers' T5.
//!
//! The engine hands a sequence its whole prompt in one call (`chunked_prefill` is off): the
//! encoder runs once and the decoder starts from `decoder_start_token_id`; later calls feed one
//! generated token each. candle's T5 keeps its KV cache inside the model value, so every
//! sequence holds its own `T5ForConditionalGeneration` built over the same weight tensors
//! (shared, not copied), and sequences of one step run one after another.

use std::collections::HashMap;

use aiserve_core::generate::{GenItem, SeqState, TextGenerator};
use aiserve_core::{BackendError, LoadError};
use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;
use candle_transformers::models::t5::{Config, T5ForConditionalGeneration};
use serde_json::Value;

pub fn config(config: &Value) -> Result<Config, LoadError> {
    let mut v = config.clone();
    // Fields candle requires that some checkpoints leave to transformers' defaults.
    if let Some(o) = v.as_object_mut() {
        o.entry("initializer_factor").or_insert(1.0.into());
        o.entry("is_encoder_decoder").or_insert(true.into());
        o.entry("dropout_rate").or_insert(0.1.into());
        o.entry("layer_norm_epsilon").or_insert(1e-6.into());
        o.entry("pad_token_id").or_insert(0.into());
        o.entry("eos_token_id").or_insert(1.into());
    }
    serde_json::from_value(v).map_err(|e| LoadError::Config(format!("config.json (t5): {e}")))
}

/// Decoder self-attention plus this sequence's share of encoder states, per token.
pub fn kv_bytes_per_token(cfg: &Config) -> usize {
    let inner = cfg.num_heads * cfg.d_kv;
    let decoder_layers = cfg.num_decoder_layers.unwrap_or(cfg.num_layers);
    (2 * decoder_layers * inner + cfg.d_model) * 4
}

pub struct T5 {
    cfg: Config,
    tensors: HashMap<String, Tensor>,
    decoder_start: u32,
}

struct Seq {
    model: T5ForConditionalGeneration,
    encoded: Option<Tensor>,
}

impl T5 {
    pub fn load(dir: &std::path::Path, config_json: &Value) -> Result<Self, LoadError> {
        let cfg = config(config_json)?;
        let tensors = crate::text::weights::Weights::open(dir)?.into_tensors();
        let tensors = tensors
            .into_iter()
            .map(|(k, t)| t.to_dtype(DType::F32).map(|t| (k, t)))
            .collect::<Result<HashMap<_, _>, _>>()
            .map_err(|e| LoadError::Weights(e.to_string()))?;
        let decoder_start = cfg.decoder_start_token_id.unwrap_or(cfg.pad_token_id) as u32;
        let t5 = Self { cfg, tensors, decoder_start };
        // Build one model now so missing or misshapen tensors fail the load, not a request.
        t5.model().map_err(|e| LoadError::Weights(e.to_string()))?;
        Ok(t5)
    }

    fn model(&self) -> candle_core::Result<T5ForConditionalGeneration> {
        let vb = VarBuilder::from_tensors(self.tensors.clone(), DType::F32, &Device::Cpu);
        T5ForConditionalGeneration::load(vb, &self.cfg)
    }

    fn step(&self, seq: &mut Seq, tokens: &[u32], prompt_len: usize) -> candle_core::Result<Vec<f32>> {
        let ids = |t: &[u32]| Tensor::new(t, &Device::Cpu)?.unsqueeze(0);
        let decoder_in: Vec<u32> = match &seq.encoded {
            None => {
                let (prompt, generated) = tokens.split_at(prompt_len.min(tokens.len()));
                seq.encoded = Some(seq.model.encode(&ids(prompt)?)?);
                std::iter::once(self.decoder_start).chain(generated.iter().copied()).collect()
            }
            Some(_) => tokens.to_vec(),
        };
        let encoded = seq.encoded.as_ref().expect("encoded above");
        let mut logits = seq.model.decode(&ids(&decoder_in)?, encoded)?.squeeze(0)?.to_vec1::<f32>()?;
        if self.cfg.tie_word_embeddings {
            // candle 0.11 scales tied outputs by sqrt(d_model) where transformers (and the
            // original T5) scale by 1/sqrt(d_model): undo the difference, so temperatures mean
            // what they mean elsewhere.
            let fix = 1.0 / self.cfg.d_model as f32;
            logits.iter_mut().for_each(|l| *l *= fix);
        }
        Ok(logits)
    }
}

impl TextGenerator for T5 {
    fn new_sequence(&self) -> SeqState {
        // Building over already-loaded tensors only clones handles; it cannot fail after `load`.
        let model = self.model().expect("tensors were checked at load");
        Box::new(Seq { model, encoded: None })
    }

    fn forward(&mut self, items: &mut [GenItem<'_>]) -> Result<Vec<Vec<f32>>, BackendError> {
        let mut out = Vec::new();
        for item in items.iter_mut() {
            let logits = {
                let seq = item
                    .state
                    .downcast_mut::<Seq>()
                    .ok_or_else(|| BackendError("sequence state of another model".into()))?;
                if let Some(t) = item.tokens.iter().find(|t| **t as usize >= self.cfg.vocab_size) {
                    return Err(BackendError(format!(
                        "token id {t} is outside the vocabulary of {}",
                        self.cfg.vocab_size
                    )));
                }
                self.step(seq, item.tokens, item.prompt_len).map_err(|e| BackendError(e.to_string()))?
            };
            if item.logits {
                out.push(logits);
            }
        }
        Ok(out)
    }
}
