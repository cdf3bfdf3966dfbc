//! Text embedding models from Hugging Face / sentence-transformers directories.
//!
//! [`hf_dir`] recognises such a directory and reads its configs (pooling, normalisation,
//! length limit) and its `tokenizer.json`; each encoder family is one file implementing
//! [`Encoder`] (today [`bert`]), picked by `model_type` in [`load_encoder`]; [`embedder`] turns
//! an encoder's token vectors into pooled sentence vectors. The forward passes run on packed
//! sequences with the row-wise [`ops`] and the shared GEMM kernel.

pub mod bert;
pub mod embedder;
pub mod gguf_tokenizer;
pub mod hf_dir;
pub mod ops;
pub mod tokenizer;
pub mod weights;

use std::path::Path;

use aiserve_core::LoadError;

/// A transformer encoder that runs on sequences packed back to back.
pub trait Encoder: Send + Sync {
    fn hidden_size(&self) -> usize;
    fn max_positions(&self) -> usize;
    fn vocab_size(&self) -> usize;
    /// Token vectors (`ids.len() x hidden`, row-major) for the sequences of lengths `lens` laid
    /// back to back in `ids`. Ids are below `vocab_size`; each length is 1..=`max_positions`.
    fn forward(&self, ids: &[u32], lens: &[usize]) -> Vec<f32>;
}

/// The `model_type` values this build can run.
pub const FAMILIES: &[&str] = &["bert"];

/// Builds the encoder named by `config.json`'s `model_type` from the checkpoint in `dir`.
pub fn load_encoder(dir: &Path, config: &serde_json::Value) -> Result<Box<dyn Encoder>, LoadError> {
    let model_type = hf_dir::model_type(config)?;
    match model_type {
        "bert" => {
            let cfg = bert::BertConfig::parse(config)?;
            Ok(Box::new(bert::Bert::load(&cfg, weights::Weights::open(dir)?)?))
        }
        other => Err(unsupported_family(other)),
    }
}

pub(crate) fn unsupported_family(model_type: &str) -> LoadError {
    LoadError::Unsupported(format!(
        "encoder `model_type` {model_type:?} is not known to this build (known: {})",
        FAMILIES.join(", ")
    ))
}
