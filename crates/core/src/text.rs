//! Text models' shared vocabulary: what an embedding model version is, how its token vectors are
//! pooled into one vector per text, and the tokenizer the server calls before batching.
//!
//! Tokenisation happens in the request path (the token count decides batching, usage and the
//! length limit), so the server holds the tokenizer; the model thread only sees token ids.

use std::fmt;

/// How token vectors become one sentence vector (sentence-transformers' pooling modes).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Pooling {
    /// Average over the real tokens (padding never counts).
    Mean,
    /// The first token's vector (`[CLS]`).
    Cls,
    /// Element-wise maximum over the real tokens.
    Max,
    /// Sum over the real tokens divided by the square root of their count.
    MeanSqrtLen,
}

impl fmt::Display for Pooling {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Mean => "mean",
            Self::Cls => "cls",
            Self::Max => "max",
            Self::MeanSqrtLen => "mean_sqrt_len",
        })
    }
}

/// What a loaded text embedding version is, for metadata, validation and limits.
#[derive(Clone, Debug, PartialEq)]
pub struct EmbedderInfo {
    /// The encoder family, e.g. `bert`.
    pub architecture: String,
    /// Length of each embedding vector.
    pub dim: usize,
    /// Most tokens one text may have (special tokens included).
    pub max_tokens: usize,
    /// Token ids must be below this.
    pub vocab_size: usize,
    pub pooling: Pooling,
    /// Whether vectors are scaled to unit length (a sentence-transformers `Normalize` module).
    pub normalize: bool,
}

/// How a cross-encoder's logits become its scores: sentence-transformers' `CrossEncoder`
/// activation (sigmoid for one label, the logits as they are for several, unless the model's
/// config names another).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ScoreActivation {
    Sigmoid,
    Softmax,
    Identity,
}

impl ScoreActivation {
    /// Applies the activation to one pair's logits in place.
    pub fn apply(self, logits: &mut [f32]) {
        match self {
            Self::Identity => {}
            Self::Sigmoid => logits.iter_mut().for_each(|x| *x = 1.0 / (1.0 + (-*x).exp())),
            Self::Softmax => {
                let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
                let mut sum = 0.0;
                logits.iter_mut().for_each(|x| {
                    *x = (*x - max).exp();
                    sum += *x;
                });
                logits.iter_mut().for_each(|x| *x /= sum);
            }
        }
    }
}

impl fmt::Display for ScoreActivation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Sigmoid => "sigmoid",
            Self::Softmax => "softmax",
            Self::Identity => "identity",
        })
    }
}

/// What a loaded cross-encoder (a reranker) is: it reads a pair of texts together and answers
/// one score per label.
#[derive(Clone, Debug, PartialEq)]
pub struct ScorerInfo {
    /// The encoder family, e.g. `bert` or `xlm-roberta`.
    pub architecture: String,
    /// Most tokens one pair may have (special tokens included).
    pub max_tokens: usize,
    /// Token ids must be below this.
    pub vocab_size: usize,
    /// The classifier head's labels, in output order (`id2label`).
    pub labels: Vec<String>,
    pub activation: ScoreActivation,
}

/// A pair of texts encoded as the model's tokenizer joins them: the ids (special tokens
/// included) and where the second text's segment starts.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PairTokens {
    pub ids: Vec<u32>,
    /// Index of the first token of the second segment (`token_type_id` 1 from here on).
    pub second: usize,
}

/// Joins two texts the way a cross-encoder was trained on them.
pub trait PairTokenizer: Send + Sync {
    /// Both texts with the model's special tokens, however long; with `truncate`, cut to the
    /// model's `max_tokens` longest-first (the longer text loses tokens first), as
    /// sentence-transformers' `CrossEncoder` does.
    fn encode_pair(&self, first: &str, second: &str, truncate: bool) -> Result<PairTokens, String>;
}

/// Turns text into the token ids the model takes, special tokens included.
pub trait TextTokenizer: Send + Sync {
    /// All tokens of `text`, however many.
    fn encode(&self, text: &str) -> Result<Vec<u32>, String>;
    /// At most the model's `max_tokens`, cut the way the model's tokenizer cuts (special
    /// tokens kept).
    fn encode_truncated(&self, text: &str) -> Result<Vec<u32>, String>;
}

/// Pools one sequence's token vectors (`tokens x dim`, row-major) into `out` (`dim`).
pub fn pool(pooling: Pooling, hidden: &[f32], dim: usize, out: &mut [f32]) {
    let tokens = hidden.len() / dim;
    debug_assert_eq!(out.len(), dim);
    if tokens == 0 {
        out.fill(0.0);
        return;
    }
    match pooling {
        Pooling::Cls => out.copy_from_slice(&hidden[..dim]),
        Pooling::Max => {
            out.copy_from_slice(&hidden[..dim]);
            for row in hidden.chunks_exact(dim).skip(1) {
                out.iter_mut().zip(row).for_each(|(o, &v)| *o = o.max(v));
            }
        }
        Pooling::Mean | Pooling::MeanSqrtLen => {
            out.fill(0.0);
            for row in hidden.chunks_exact(dim) {
                out.iter_mut().zip(row).for_each(|(o, &v)| *o += v);
            }
            let div = if pooling == Pooling::Mean { tokens as f32 } else { (tokens as f32).sqrt() };
            out.iter_mut().for_each(|o| *o /= div);
        }
    }
}

/// Scales `v` to unit L2 length (sentence-transformers' `Normalize`: eps 1e-12 guards zero).
pub fn normalize(v: &mut [f32]) {
    let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt().max(1e-12);
    v.iter_mut().for_each(|x| *x /= norm);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pooling_modes() {
        let hidden = [1.0, -2.0, 3.0, 4.0]; // two tokens of dim 2
        let mut out = [0.0; 2];
        pool(Pooling::Mean, &hidden, 2, &mut out);
        assert_eq!(out, [2.0, 1.0]);
        pool(Pooling::Cls, &hidden, 2, &mut out);
        assert_eq!(out, [1.0, -2.0]);
        pool(Pooling::Max, &hidden, 2, &mut out);
        assert_eq!(out, [3.0, 4.0]);
        pool(Pooling::MeanSqrtLen, &hidden, 2, &mut out);
        assert!((out[0] - 4.0 / 2f32.sqrt()).abs() < 1e-6);
    }

    #[test]
    fn score_activations() {
        let mut one = [0.0f32];
        ScoreActivation::Sigmoid.apply(&mut one);
        assert_eq!(one, [0.5]);
        let mut two = [1.0f32, 1.0 + 2f32.ln()];
        ScoreActivation::Softmax.apply(&mut two);
        assert!((two[0] - 1.0 / 3.0).abs() < 1e-6 && (two[1] - 2.0 / 3.0).abs() < 1e-6);
        let mut raw = [-3.5f32, 7.0];
        ScoreActivation::Identity.apply(&mut raw);
        assert_eq!(raw, [-3.5, 7.0]);
    }

    #[test]
    fn normalise_is_unit_length_and_zero_safe() {
        let mut v = [3.0, 4.0];
        normalize(&mut v);
        assert_eq!(v, [0.6, 0.8]);
        let mut z = [0.0, 0.0];
        normalize(&mut z);
        assert_eq!(z, [0.0, 0.0]);
    }
}
