//! The candle-backed [`ModelLoader`]: recognises a version directory's format and loads it.
//!
//! - `config.toml` (written by `aiserve train`): an aiserve-native model such as the digits CNN,
//!   or the digit-strings reader (served as a graph: tensors in, text out).
//! - `config.json` (a Hugging Face / sentence-transformers directory): a text embedding model,
//!   or a cross-encoder (reranker) when its `architectures` name `…ForSequenceClassification`.
//! - one `.gguf` file: a llama-family text generation model with its own tokenizer and template.
//! - `config.json` of a llama/mistral/qwen2 decoder or a T5: a text generation model.

use std::path::Path;

use aiserve_core::backend::read_version_config;
use aiserve_core::config::{ModelConfig, ModelKind, VERSION_CONFIG_FILE};
use aiserve_core::{Description, LoadError, Loaded, ModelLoader};
use candle_core::Device;

use crate::digit_strings::{self, reader::StringReader, DigitStrings};
use crate::digits::{self, classifier::DigitsClassifier, DigitsCnn};
use crate::llm;
use crate::llm::kv::KvDtype;
use crate::quant::Bits;
use crate::text::{self, cross_encoder::CrossEncoder, embedder::Embedder, hf_dir};

/// Loads every architecture this build knows, on one device.
pub struct CandleLoader {
    device: Device,
    gen: llm::Options,
}

impl CandleLoader {
    pub fn cpu() -> Self {
        Self { device: Device::Cpu, gen: llm::Options::default() }
    }

    /// Rounds activations to `bits` in products with GGUF's 4-bit weights (see [`Bits`]).
    pub fn with_activation_bits(self, bits: Bits) -> Self {
        Self { gen: llm::Options { bits, ..self.gen }, ..self }
    }

    /// Keeps generation models' keys and values as `kv` (see [`KvDtype`]).
    pub fn with_kv_dtype(self, kv: KvDtype) -> Self {
        Self { gen: llm::Options { kv, ..self.gen }, ..self }
    }
}

impl ModelLoader for CandleLoader {
    fn describe(&self, dir: &Path, _model: &ModelConfig) -> Result<Description, LoadError> {
        if let Some(path) = llm::gguf::find(dir)? {
            return Ok(Description::Generator(llm::gguf::describe(&path, self.gen.kv)?));
        }
        if dir.join(VERSION_CONFIG_FILE).is_file() || !hf_dir::is_hf_dir(dir) {
            let config = read_version_config(dir)?;
            return match config.kind {
                ModelKind::ImageClassifier => Ok(Description::Image(config)),
                // A string reader is a graph of our own: tensors in, text and probabilities out.
                ModelKind::ImageToText => Ok(Description::Graph(digit_strings::reader::describe(&config)?)),
            };
        }
        let config =
            hf_dir::read_json(dir, "config.json")?.ok_or_else(|| LoadError::Config("config.json is missing".into()))?;
        if llm::hf::is_generator(&config) {
            return Ok(Description::Generator(llm::hf::describe(dir, self.gen.kv)?));
        }
        if text::cross_encoder::is_cross_encoder(&config) {
            let (info, tokenizer) = text::cross_encoder::describe(dir)?;
            return Ok(Description::Scorer { info, tokenizer });
        }
        let d = hf_dir::describe(dir)?;
        Ok(Description::Embedder { info: d.info, tokenizer: d.tokenizer })
    }

    fn load(&self, dir: &Path, description: &Description) -> Result<Loaded, LoadError> {
        match description {
            Description::Image(config) => match (config.kind, config.architecture.as_str()) {
                (ModelKind::ImageClassifier, digits::ARCHITECTURE) => {
                    let [height, width, channels] = config.input.shape;
                    let cnn = digits::CnnShape { height, width, channels, classes: config.output.shape[0] };
                    cnn.check().map_err(|e| LoadError::Config(format!("digits_cnn: {e}")))?;
                    let model =
                        DigitsCnn::load(&dir.join(&config.weights), cnn, &self.device).map_err(LoadError::Weights)?;
                    Ok(Loaded::Image(Box::new(DigitsClassifier::new(model, self.device.clone()))))
                }
                (_, other) => Err(LoadError::Unsupported(format!("architecture `{other}` is not known to this build"))),
            },
            Description::Embedder { info, .. } => {
                let config = hf_dir::read_json(dir, "config.json")?
                    .ok_or_else(|| LoadError::Config("config.json is missing".into()))?;
                let encoder = text::open_encoder(dir, &config)?;
                Ok(Loaded::Embedder(Box::new(Embedder::new(encoder, info.clone()))))
            }
            Description::Scorer { info, .. } => Ok(Loaded::Scorer(Box::new(CrossEncoder::load(dir, info)?))),
            Description::Graph(info) if info.reader.is_some() && info.platform == digit_strings::reader::PLATFORM => {
                let config = read_version_config(dir)?;
                let model = DigitStrings::load(&dir.join(&config.weights), &self.device).map_err(LoadError::Weights)?;
                Ok(Loaded::Graph(Box::new(StringReader::new(model, self.device.clone()))))
            }
            Description::Graph(_) => {
                Err(LoadError::Unsupported("ONNX graphs are run by ONNX Runtime (aiserve-onnx), not candle".into()))
            }
            Description::Generator(_) => {
                if let Some(path) = llm::gguf::find(dir)? {
                    return Ok(Loaded::Generator(Box::new(llm::gguf::load(&path, self.gen)?)));
                }
                let config = hf_dir::read_json(dir, "config.json")?
                    .ok_or_else(|| LoadError::Config("config.json is missing".into()))?;
                if llm::hf::SEQ2SEQ.contains(&hf_dir::model_type(&config)?) {
                    Ok(Loaded::Generator(Box::new(llm::t5::T5::load(dir, &config)?)))
                } else {
                    Ok(Loaded::Generator(Box::new(llm::hf::load_llama(dir, &config, self.gen.kv)?)))
                }
            }
        }
    }
}
