//! The traits model code implements, so that the server never depends on candle.
//!
//! A loader first [describes](ModelLoader::describe) a version directory (what kind of model it
//! is, its tensors or its tokenizer), then [loads](ModelLoader::load) one copy per model
//! instance; each copy is owned by one model thread. The version manager calls both on a
//! blocking thread.

use std::path::Path;
use std::sync::Arc;

use crate::config::{ModelConfig, VersionConfig};
use crate::error::{BackendError, LoadError};
use crate::generate::{GeneratorSpec, TextGenerator};
use crate::graph::{GraphInfo, GraphModel};
use crate::tensor::ImageBatch;
use crate::text::{EmbedderInfo, PairTokenizer, PairTokens, ScorerInfo, TextTokenizer};

/// A loaded image classification model. Called from a single dedicated thread.
pub trait ImageClassifier: Send {
    /// Class probabilities, one row of `classes` values per image, in batch order.
    fn predict(&mut self, batch: &ImageBatch) -> Result<Vec<Vec<f32>>, BackendError>;
}

/// A loaded text embedding model. Called from a single dedicated thread.
pub trait TextEmbedder: Send {
    /// One pooled (and, if the model says so, normalised) vector per token sequence, in order.
    /// Each sequence is non-empty and at most the model's `max_tokens` long.
    fn embed(&mut self, sequences: &[&[u32]]) -> Result<Vec<Vec<f32>>, BackendError>;
}

/// A loaded cross-encoder (reranker). Called from a single dedicated thread.
pub trait TextScorer: Send {
    /// One row of label scores (after the model's activation) per pair, in order. Each pair is
    /// non-empty and at most the model's `max_tokens` long.
    fn score(&mut self, pairs: &[&PairTokens]) -> Result<Vec<Vec<f32>>, BackendError>;
}

/// What a version directory holds, read before any weights are loaded.
#[derive(Clone)]
// One value per model version, made once per load: the size difference does not matter.
#[allow(clippy::large_enum_variant)]
pub enum Description {
    /// An aiserve-native version (`config.toml`), e.g. a trained digits CNN.
    Image(VersionConfig),
    /// A text embedding model (a Hugging Face / sentence-transformers directory) and the
    /// tokenizer requests are encoded with.
    Embedder { info: EmbedderInfo, tokenizer: Arc<dyn TextTokenizer> },
    /// A cross-encoder that scores pairs of texts (a `*ForSequenceClassification` directory),
    /// and the tokenizer that joins them.
    Scorer { info: ScorerInfo, tokenizer: Arc<dyn PairTokenizer> },
    /// A text generation model (a GGUF file, a Hugging Face decoder or seq2seq directory).
    Generator(GeneratorSpec),
    /// A generic graph (an ONNX file): tensors in and out as the graph declares them.
    Graph(GraphInfo),
}

/// One loaded copy of a model, matching its [`Description`].
pub enum Loaded {
    Image(Box<dyn ImageClassifier>),
    Embedder(Box<dyn TextEmbedder>),
    Scorer(Box<dyn TextScorer>),
    Generator(Box<dyn TextGenerator>),
    Graph(Box<dyn GraphModel>),
}

/// Turns a version directory into a loaded model. Must be callable from any thread.
pub trait ModelLoader: Send + Sync + 'static {
    /// Recognises the directory's format and reads its configs and tokenizer (no weights);
    /// `model` is the model's `model.toml` (what a graph cannot say about itself).
    fn describe(&self, dir: &Path, model: &ModelConfig) -> Result<Description, LoadError>;
    /// Loads one copy of the weights described by `description` from `dir`.
    fn load(&self, dir: &Path, description: &Description) -> Result<Loaded, LoadError>;
}

/// Reads a version config file with the size cap and strict parsing. Shared by loaders.
pub fn read_version_config(dir: &Path) -> Result<VersionConfig, LoadError> {
    use crate::config::{MAX_CONFIG_BYTES, VERSION_CONFIG_FILE};
    let path = dir.join(VERSION_CONFIG_FILE);
    let meta = std::fs::metadata(&path).map_err(|e| LoadError::Config(format!("{VERSION_CONFIG_FILE}: {e}")))?;
    if meta.len() > MAX_CONFIG_BYTES {
        return Err(LoadError::Config(format!(
            "{VERSION_CONFIG_FILE} must be at most {MAX_CONFIG_BYTES} bytes, got {}",
            meta.len()
        )));
    }
    let text = std::fs::read_to_string(&path).map_err(|e| LoadError::Config(format!("{VERSION_CONFIG_FILE}: {e}")))?;
    VersionConfig::parse(&text).map_err(|e| LoadError::Config(format!("{VERSION_CONFIG_FILE}: {e}")))
}
