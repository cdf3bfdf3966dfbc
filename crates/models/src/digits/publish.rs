//! Publishing a trained digits model as a new repository version, atomically (staged and
//! renamed into place by `aiserve_core::publish`).

use std::path::{Path, PathBuf};

use aiserve_core::config::{
    InputConfig, ModelKind, OutputConfig, TrainingProvenance, VersionConfig, VERSION_CONFIG_FILE,
};
use aiserve_core::publish::publish_version;
use aiserve_core::{ModelName, Version};

use super::train::EpochMetrics;
use super::{DigitsCnn, ARCHITECTURE, CLASSES, HEIGHT, WIDTH};

pub const WEIGHTS_FILE: &str = "model.safetensors";
pub const METRICS_FILE: &str = "metrics.json";

/// The version config describing a digits CNN.
pub fn version_config(training: Option<TrainingProvenance>) -> VersionConfig {
    VersionConfig {
        kind: ModelKind::ImageClassifier,
        architecture: ARCHITECTURE.into(),
        weights: WEIGHTS_FILE.into(),
        input: InputConfig {
            name: "image".into(),
            datatype: "FP32".into(),
            shape: [HEIGHT, WIDTH, 1],
            range: [0.0, 1.0],
            background: 0.0,
        },
        output: OutputConfig { name: "probabilities".into(), datatype: "FP32".into(), shape: [CLASSES] },
        labels: (0..CLASSES).map(|d| d.to_string()).collect(),
        training,
    }
}

/// Writes the model as version N+1 of `<repo>/<model>` and returns the version and its path.
pub fn publish(
    repo: &Path,
    model_name: &ModelName,
    model: &DigitsCnn,
    training: Option<TrainingProvenance>,
    epochs: &[EpochMetrics],
) -> std::io::Result<(Version, PathBuf)> {
    publish_version(repo, model_name, |stage| write_version(stage, model, training, epochs))
}

fn write_version(
    dir: &Path,
    model: &DigitsCnn,
    training: Option<TrainingProvenance>,
    epochs: &[EpochMetrics],
) -> std::io::Result<()> {
    model.save(&dir.join(WEIGHTS_FILE)).map_err(std::io::Error::other)?;
    std::fs::write(dir.join(VERSION_CONFIG_FILE), version_config(training).to_toml())?;
    let metrics = serde_json::to_string_pretty(epochs).map_err(std::io::Error::other)?;
    std::fs::write(dir.join(METRICS_FILE), metrics + "\n")?;
    for f in [WEIGHTS_FILE, VERSION_CONFIG_FILE, METRICS_FILE] {
        std::fs::File::open(dir.join(f))?.sync_all()?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    #[test]
    fn publishes_consecutive_versions_that_load() {
        let tmp = tempfile::tempdir().unwrap();
        let (m, _) = DigitsCnn::init(1, &Device::Cpu).unwrap();
        let name: ModelName = "digits".parse().unwrap();
        let (v1, p1) = publish(tmp.path(), &name, &m, None, &[]).unwrap();
        let (v2, _) = publish(tmp.path(), &name, &m, None, &[]).unwrap();
        assert_eq!((v1, v2), (Version(1), Version(2)));
        let cfg = aiserve_core::backend::read_version_config(&p1).unwrap();
        assert_eq!(cfg, version_config(None));
        assert!(DigitsCnn::load(&p1.join(WEIGHTS_FILE), &Device::Cpu).is_ok());
        let leftovers: Vec<_> = std::fs::read_dir(tmp.path().join("digits"))
            .unwrap()
            .filter_map(|e| e.ok())
            .filter(|e| e.file_name().to_string_lossy().starts_with('.'))
            .collect();
        assert!(leftovers.is_empty());
    }
}
