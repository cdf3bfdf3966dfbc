//! Text generation models: llama-family decoders (from GGUF files or Hugging Face directories)
//! behind [`aiserve_core::generate::TextGenerator`].

pub mod attention;
pub mod gguf;
pub mod llama;
pub mod tokenizer;
