//! Text generation models: llama-family decoders (from GGUF files or Hugging Face directories)
//! and T5 encoder-decoders, behind [`aiserve_core::generate::TextGenerator`].

pub mod act;
pub mod attention;
pub mod gguf;
pub mod hf;
pub mod llama;
pub mod t5;
pub mod tokenizer;
