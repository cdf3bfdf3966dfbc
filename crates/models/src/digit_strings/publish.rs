//! Publishing a trained digit-string reader as a new repository version (staged and renamed into
//! place by `aiserve_core::publish`): its weights, an `image_to_text` config, the per-epoch
//! metrics and, when given, the curves and digit confusion pictures.

use std::path::{Path, PathBuf};

use aiserve_core::config::{InputConfig, ModelKind, OutputConfig, TrainingProvenance, VersionConfig};
use aiserve_core::publish::publish_version;
use aiserve_core::{ModelName, Version};

use super::train::StringEpoch;
use super::{DigitStrings, ARCHITECTURE, HEIGHT, MAX_DIGITS, WIDTH};
use crate::digits::publish::{write_files, WEIGHTS_FILE};
use crate::digits::report::Report;

/// The version config of a digit-string reader.
pub fn version_config(training: Option<TrainingProvenance>) -> VersionConfig {
    VersionConfig {
        kind: ModelKind::ImageToText,
        architecture: ARCHITECTURE.into(),
        weights: WEIGHTS_FILE.into(),
        input: InputConfig {
            name: "image".into(),
            datatype: "FP32".into(),
            shape: [HEIGHT, WIDTH, 1],
            range: [0.0, 1.0],
            background: 0.0,
        },
        output: OutputConfig { name: "text".into(), datatype: "BYTES".into(), shape: [MAX_DIGITS] },
        labels: (0..10).map(|d| d.to_string()).collect(),
        training,
    }
}

/// Writes the model as version N+1 of `<repo>/<model>` and returns the version and its path.
pub fn publish(
    repo: &Path,
    model_name: &ModelName,
    model: &DigitStrings,
    config: &VersionConfig,
    epochs: &[StringEpoch],
    report: Option<&Report>,
) -> std::io::Result<(Version, PathBuf)> {
    publish_version(repo, model_name, |dir| {
        write_files(dir, |w| model.save(w).map_err(std::io::Error::other), config, epochs, report)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    #[test]
    fn publishes_a_version_that_loads() {
        let tmp = tempfile::tempdir().unwrap();
        let (m, _) = DigitStrings::init(1, 16, &Device::Cpu).unwrap();
        let name: ModelName = "digit-strings".parse().unwrap();
        let (v, path) = publish(tmp.path(), &name, &m, &version_config(None), &[], None).unwrap();
        assert_eq!(v, Version(1));
        let cfg = aiserve_core::backend::read_version_config(&path).unwrap();
        assert_eq!(cfg, version_config(None));
        assert_eq!(DigitStrings::load(&path.join(WEIGHTS_FILE), &Device::Cpu).unwrap().latent(), 16);
    }
}
