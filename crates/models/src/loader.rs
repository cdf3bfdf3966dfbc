//! The candle-backed [`ModelLoader`]: turns a version directory into a served model.

use std::path::Path;

use aiserve_core::backend::read_version_config;
use aiserve_core::config::{ModelKind, VersionConfig};
use aiserve_core::{ImageClassifier, LoadError, ModelLoader};
use candle_core::Device;

use crate::digits::{self, classifier::DigitsClassifier, DigitsCnn};

/// Loads every architecture this build knows, on one device.
pub struct CandleLoader {
    device: Device,
}

impl CandleLoader {
    pub fn cpu() -> Self {
        Self { device: Device::Cpu }
    }
}

impl ModelLoader for CandleLoader {
    fn read_config(&self, dir: &Path) -> Result<VersionConfig, LoadError> {
        read_version_config(dir)
    }

    fn load(&self, dir: &Path, config: &VersionConfig) -> Result<Box<dyn ImageClassifier>, LoadError> {
        match (config.kind, config.architecture.as_str()) {
            (ModelKind::ImageClassifier, digits::ARCHITECTURE) => {
                let expected = digits::publish::version_config(None);
                if config.input.shape != expected.input.shape || config.output.shape != expected.output.shape {
                    return Err(LoadError::Config(format!(
                        "digits_cnn takes input {:?} and gives output {:?}; config declares {:?} and {:?}",
                        expected.input.shape, expected.output.shape, config.input.shape, config.output.shape
                    )));
                }
                let model = DigitsCnn::load(&dir.join(&config.weights), &self.device).map_err(LoadError::Weights)?;
                Ok(Box::new(DigitsClassifier::new(model, self.device.clone())))
            }
            (_, other) => Err(LoadError::Unsupported(format!("architecture `{other}` is not known to this build"))),
        }
    }
}
