//! Cross-encoders (rerankers): an encoder reads a query and a document together and a
//! classifier head over the first token scores the pair. These are Hugging Face
//! `*ForSequenceClassification` directories (`cross-encoder/ms-marco-MiniLM-L-6-v2`,
//! `BAAI/bge-reranker-base`, `-v2-m3`, `mixedbread-ai/mxbai-rerank-*-v1`), copied as they are
//! into `<repo>/<model>/<version>/`.
//!
//! - `config.json`: `architectures` names `…ForSequenceClassification`; `id2label` gives the
//!   labels (their count is the head's width); the activation is sentence-transformers'
//!   (`sentence_transformers.activation_fn`, or the older `sbert_ce_default_activation_function`),
//!   by default sigmoid for one label and the raw logits for several, as `CrossEncoder` does.
//! - The head is the same two products in both families, under different names: BERT's pooler
//!   (`bert.pooler.dense`, tanh) and `classifier`; RoBERTa's `classifier.dense` (tanh) and
//!   `classifier.out_proj`. Dropout is off at inference, so neither has more.

use std::path::Path;
use std::sync::Arc;

use aiserve_core::text::{PairTokens, ScoreActivation, ScorerInfo};
use aiserve_core::{BackendError, LoadError, TextScorer};
use serde_json::Value;

use super::hf_dir;
use super::ops;
use super::tokenizer::HfTokenizer;
use super::weights::Weights;
use super::Encoder;

/// True when `config.json` describes a sequence-classification model (a cross-encoder).
pub fn is_cross_encoder(config: &Value) -> bool {
    config
        .get("architectures")
        .and_then(Value::as_array)
        .is_some_and(|a| a.iter().filter_map(Value::as_str).any(|n| n.ends_with("ForSequenceClassification")))
}

/// What serving needs to know about the cross-encoder in `dir`, and its tokenizer.
pub fn describe(dir: &Path) -> Result<(ScorerInfo, Arc<HfTokenizer>), LoadError> {
    let enc = hf_dir::describe_encoder(dir)?;
    let labels = labels(&enc.config)?;
    let activation = activation(&enc.config, labels.len())?;
    let info = ScorerInfo {
        architecture: enc.architecture,
        max_tokens: enc.max_tokens,
        vocab_size: enc.vocab_size,
        labels,
        activation,
    };
    Ok((info, enc.tokenizer))
}

/// Most labels a head may have (a reranker has one; a natural-language-inference model three).
const MAX_LABELS: usize = 4096;

/// The labels in output order: `id2label` (keys `"0"`, `"1"`, … with none missing), else
/// `num_labels` names `LABEL_i`, else Hugging Face's default of two.
fn labels(config: &Value) -> Result<Vec<String>, LoadError> {
    if let Some(map) = config.get("id2label").and_then(Value::as_object) {
        if map.is_empty() || map.len() > MAX_LABELS {
            return Err(LoadError::Config(format!(
                "config.json: `id2label` has {} labels; 1..={MAX_LABELS} allowed",
                map.len()
            )));
        }
        let mut labels = vec![None; map.len()];
        for (k, v) in map {
            let i = k.parse::<usize>().ok().filter(|&i| i < map.len()).ok_or_else(|| {
                LoadError::Config(format!("config.json: `id2label` key {k:?} is not an index below {}", map.len()))
            })?;
            labels[i] = Some(v.as_str().map_or_else(|| v.to_string(), str::to_owned));
        }
        return labels
            .into_iter()
            .collect::<Option<Vec<_>>>()
            .ok_or_else(|| LoadError::Config("config.json: `id2label` repeats an index".into()));
    }
    let n = match config.get("num_labels") {
        None => 2,
        Some(v) => v.as_u64().filter(|&n| (1..=MAX_LABELS as u64).contains(&n)).ok_or_else(|| {
            LoadError::Config(format!("config.json: `num_labels` must be in 1..={MAX_LABELS}, got {v}"))
        })? as usize,
    };
    Ok((0..n).map(|i| format!("LABEL_{i}")).collect())
}

/// The activation sentence-transformers would apply to this model's logits.
fn activation(config: &Value, labels: usize) -> Result<ScoreActivation, LoadError> {
    let named = config
        .get("sentence_transformers")
        .and_then(|st| st.get("activation_fn"))
        .or_else(|| config.get("sbert_ce_default_activation_function"))
        .and_then(Value::as_str);
    let Some(path) = named else {
        return Ok(if labels == 1 { ScoreActivation::Sigmoid } else { ScoreActivation::Identity });
    };
    match path.rsplit('.').next().unwrap_or(path) {
        "Sigmoid" => Ok(ScoreActivation::Sigmoid),
        "Identity" => Ok(ScoreActivation::Identity),
        "Softmax" => Ok(ScoreActivation::Softmax),
        other => Err(LoadError::Unsupported(format!(
            "cross-encoder activation `{other}` ({path}); supported: Sigmoid, Identity, Softmax"
        ))),
    }
}

/// The classifier head: `labels x hidden` scores from the first token's vector through one
/// `hidden x hidden` product and tanh.
struct Head {
    dense_w: Vec<f32>,
    dense_b: Vec<f32>,
    out_w: Vec<f32>,
    out_b: Vec<f32>,
}

impl Head {
    fn load(w: &Weights, hidden: usize, labels: usize) -> Result<Self, LoadError> {
        let (dense_w, dense_b, out) = if w.has_outside("classifier.out_proj.weight") {
            // RoBERTa's head: both products outside the family prefix.
            let (dw, db) = (
                w.get_outside("classifier.dense.weight", &[hidden, hidden]),
                w.get_outside("classifier.dense.bias", &[hidden]),
            );
            (dw?, db?, "classifier.out_proj")
        } else {
            // BERT's pooler, under the family prefix, then its classifier outside it.
            (w.get("pooler.dense.weight", &[hidden, hidden])?, w.get("pooler.dense.bias", &[hidden])?, "classifier")
        };
        let width = |e: LoadError| match e {
            LoadError::Weights(m) => {
                LoadError::Weights(format!("{m} (config.json's `id2label` names {labels} labels)"))
            }
            e => e,
        };
        Ok(Self {
            dense_w,
            dense_b,
            out_w: w.get_outside(&format!("{out}.weight"), &[labels, hidden]).map_err(width)?,
            out_b: w.get_outside(&format!("{out}.bias"), &[labels]).map_err(width)?,
        })
    }
}

pub struct CrossEncoder {
    encoder: Box<dyn Encoder>,
    head: Head,
    info: ScorerInfo,
}

impl CrossEncoder {
    pub fn load(dir: &Path, info: &ScorerInfo) -> Result<Self, LoadError> {
        let config =
            hf_dir::read_json(dir, "config.json")?.ok_or_else(|| LoadError::Config("config.json is missing".into()))?;
        let mut w = Weights::open(dir)?;
        let encoder = super::load_encoder(&mut w, &config)?;
        let head = Head::load(&w, encoder.hidden_size(), info.labels.len())?;
        Ok(Self { encoder, head, info: info.clone() })
    }
}

impl TextScorer for CrossEncoder {
    fn score(&mut self, pairs: &[&PairTokens]) -> Result<Vec<Vec<f32>>, BackendError> {
        let (vocab, max) = (self.encoder.vocab_size(), self.info.max_tokens.min(self.encoder.max_positions()));
        for (i, p) in pairs.iter().enumerate() {
            if p.ids.is_empty() || p.ids.len() > max || p.second > p.ids.len() {
                return Err(BackendError(format!("pair {i} has {} tokens; 1..={max} allowed", p.ids.len())));
            }
            if let Some(bad) = p.ids.iter().find(|&&id| id as usize >= vocab) {
                return Err(BackendError(format!("pair {i} has token id {bad}; the vocabulary has {vocab}")));
            }
        }
        let lens: Vec<usize> = pairs.iter().map(|p| p.ids.len()).collect();
        let seconds: Vec<usize> = pairs.iter().map(|p| p.second).collect();
        let ids: Vec<u32> = pairs.iter().flat_map(|p| p.ids.iter().copied()).collect();
        let hidden = self.encoder.forward(&ids, &lens, Some(&seconds));
        let h = self.encoder.hidden_size();
        // The first token of every pair, `pairs x hidden`.
        let mut first = Vec::with_capacity(pairs.len() * h);
        let mut at = 0;
        for &len in &lens {
            first.extend_from_slice(&hidden[at * h..(at + 1) * h]);
            at += len;
        }
        let mut pooled = vec![0.0; pairs.len() * h];
        ops::fill_rows(&mut pooled, &self.head.dense_b);
        ops::linear_acc(&first, h, &self.head.dense_w, h, &mut pooled);
        pooled.iter_mut().for_each(|v| *v = v.tanh());
        let labels = self.info.labels.len();
        let mut logits = vec![0.0; pairs.len() * labels];
        ops::fill_rows(&mut logits, &self.head.out_b);
        ops::linear_acc(&pooled, h, &self.head.out_w, labels, &mut logits);
        Ok(logits
            .chunks_exact(labels)
            .map(|row| {
                let mut row = row.to_vec();
                self.info.activation.apply(&mut row);
                row
            })
            .collect())
    }
}
