//! The loader `aiserve serve` hands the runtime: ONNX graphs go to ONNX Runtime, everything
//! else (aiserve's own versions, the graphs among them too, Hugging Face directories, GGUF
//! files) to candle.

use std::path::Path;

use aiserve_core::config::ModelConfig;
use aiserve_core::{Description, LoadError, Loaded, ModelLoader};
use aiserve_models::CandleLoader;
use aiserve_onnx::OnnxLoader;

pub struct RepoLoader {
    pub candle: CandleLoader,
    pub onnx: OnnxLoader,
}

impl ModelLoader for RepoLoader {
    fn describe(&self, dir: &Path, model: &ModelConfig) -> Result<Description, LoadError> {
        if aiserve_onnx::find(dir)?.is_some() {
            return self.onnx.describe(dir, model);
        }
        self.candle.describe(dir, model)
    }

    fn load(&self, dir: &Path, description: &Description) -> Result<Loaded, LoadError> {
        match description {
            Description::Graph(info) if info.platform == aiserve_onnx::describe::PLATFORM => {
                self.onnx.load(dir, description)
            }
            _ => self.candle.load(dir, description),
        }
    }
}
