//! Text embedding models from Hugging Face / sentence-transformers directories.
//!
//! [`hf_dir`] recognises such a directory and reads its configs (pooling, normalisation,
//! length limit) and its `tokenizer.json`; each encoder family is one file implementing
//! [`Encoder`] ([`bert`], [`roberta`], [`nomic_bert`]), picked by `model_type` in [`load_encoder`];
//! [`cross_encoder`] puts a classifier head on one to score pairs of texts; [`embedder`] turns
//! an encoder's token vectors into pooled sentence vectors. The forward passes run on packed
//! sequences with the row-wise [`ops`]; their linear layers are packed once at load for
//! [`crate::kernels::packed`].

pub mod attention;
pub mod bert;
pub mod cross_encoder;
pub mod embedder;
pub mod gguf_tokenizer;
pub mod hf_dir;
pub mod nomic_bert;
pub mod ops;
pub mod roberta;
pub mod spm;
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
    /// `seconds`, for pairs of texts, gives where each sequence's second segment starts
    /// (token type 1 from there, in families that have token types); `None`: one segment each.
    fn forward(&self, ids: &[u32], lens: &[usize], seconds: Option<&[usize]>) -> Vec<f32>;
}

/// The `model_type` values this build can run.
pub const FAMILIES: &[&str] = &["bert", "roberta", "xlm-roberta", "camembert", "nomic_bert"];

/// Builds the encoder named by `config.json`'s `model_type` from the checkpoint `w`.
pub fn load_encoder(w: &mut weights::Weights, config: &serde_json::Value) -> Result<Box<dyn Encoder>, LoadError> {
    let model_type = hf_dir::model_type(config)?;
    match model_type {
        "bert" => {
            let cfg = bert::BertConfig::parse(config)?;
            Ok(Box::new(bert::Bert::load(&cfg, w, bert::Layout::BERT)?))
        }
        "roberta" | "xlm-roberta" | "camembert" => Ok(Box::new(roberta::load(config, w)?)),
        "nomic_bert" => {
            let cfg = nomic_bert::NomicConfig::parse(config)?;
            Ok(Box::new(nomic_bert::NomicBert::load(&cfg, w)?))
        }
        other => Err(unsupported_family(other)),
    }
}

/// The encoder of the checkpoint in `dir` (see [`load_encoder`]).
pub fn open_encoder(dir: &Path, config: &serde_json::Value) -> Result<Box<dyn Encoder>, LoadError> {
    load_encoder(&mut weights::Weights::open(dir)?, config)
}

/// The config fields that size an encoder, by the family's own names: (hidden size, positions
/// table rows or the rotary limit, vocabulary size).
pub fn dims(model_type: &str) -> [&'static str; 3] {
    match model_type {
        "nomic_bert" => ["n_embd", "n_positions", "vocab_size"],
        _ => ["hidden_size", "max_position_embeddings", "vocab_size"],
    }
}

/// Rows of the position table before a text's first position (RoBERTa's padding offset).
pub fn position_offset(model_type: &str, config: &serde_json::Value) -> Result<usize, LoadError> {
    match model_type {
        "roberta" | "xlm-roberta" | "camembert" => roberta::position_offset(config),
        _ => Ok(0),
    }
}

pub(crate) fn unsupported_family(model_type: &str) -> LoadError {
    LoadError::Unsupported(format!(
        "encoder `model_type` {model_type:?} is not known to this build (known: {})",
        FAMILIES.join(", ")
    ))
}
