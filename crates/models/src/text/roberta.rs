//! The RoBERTa encoder family (RoBERTa, XLM-RoBERTa, CamemBERT: `multilingual-e5`, the dense
//! part of `bge-m3`, `paraphrase-multilingual-*`, the `bge-reranker` cross-encoders).
//!
//! The network is BERT's, layer for layer and tensor for tensor; what differs is where the
//! tensors live (`roberta.` in task checkpoints) and how positions are numbered: Fairseq counts
//! them from `padding_idx + 1`, so a text's first token reads row `pad_token_id + 1` of the
//! position table, and the table's first rows are never used. The usable length is therefore
//! `max_position_embeddings - pad_token_id - 1` (512 for the usual 514-row tables).

use aiserve_core::LoadError;
use serde_json::Value;

use super::bert::{Bert, BertConfig, Layout};
use super::weights::Weights;

/// Hugging Face's default `pad_token_id` for the family.
const DEFAULT_PAD: usize = 1;

/// Row of the position table for a text's first token: `pad_token_id + 1`.
pub fn position_offset(config: &Value) -> Result<usize, LoadError> {
    match config.get("pad_token_id") {
        None | Some(Value::Null) => Ok(DEFAULT_PAD + 1),
        Some(v) => {
            v.as_u64().filter(|&p| p < 1 << 20).map(|p| p as usize + 1).ok_or_else(|| {
                LoadError::Config(format!("config.json: `pad_token_id` must be a small integer, got {v}"))
            })
        }
    }
}

pub fn load(config: &Value, w: &mut Weights) -> Result<Bert, LoadError> {
    let cfg = BertConfig::parse(config)?;
    Bert::load(&cfg, w, Layout { prefix: "roberta.", position_offset: position_offset(config)? })
}
