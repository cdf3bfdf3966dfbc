//! Text generation models: llama-family decoders (from GGUF files or Hugging Face directories)
//! and T5 encoder-decoders, behind [`aiserve_core::generate::TextGenerator`].

pub mod act;
pub mod attention;
pub mod gguf;
pub mod hf;
pub mod kv;
pub mod llama;
pub mod rope;
pub mod t5;
pub mod tokenizer;

use crate::quant::Bits;

/// How a generation model is loaded: the numerics its products and KV caches use.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Options {
    /// Activation width of the products with GGUF's 4-bit weights.
    pub bits: Bits,
    /// What the KV caches store.
    pub kv: kv::KvDtype,
}
