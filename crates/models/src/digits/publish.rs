//! Publishing a trained CNN (the digits model, or one trained on a user's picture folders) as
//! a new repository version, atomically (staged and renamed into place by
//! `aiserve_core::publish`).

use std::path::{Path, PathBuf};

use aiserve_core::config::{
    InputConfig, ModelKind, OutputConfig, TrainingProvenance, VersionConfig, VERSION_CONFIG_FILE,
};
use aiserve_core::publish::publish_version;
use aiserve_core::{ModelName, Version};

use super::report::{self, Report};
use super::train::EpochMetrics;
use super::{CnnShape, DigitsCnn, ARCHITECTURE, CLASSES};

pub const WEIGHTS_FILE: &str = "model.safetensors";
pub const METRICS_FILE: &str = "metrics.json";

/// The version config describing a digits CNN.
pub fn version_config(training: Option<TrainingProvenance>) -> VersionConfig {
    let labels = (0..CLASSES).map(|d| d.to_string()).collect();
    classifier_config(CnnShape::DIGITS, labels, 0.0, training)
}

/// The version config of a CNN of shape `cnn` whose classes are `labels`; `background` is the
/// value of the pictures' empty pixels (0 for light shapes on black, which uploads with a
/// brighter border are inverted to match).
pub fn classifier_config(
    cnn: CnnShape,
    labels: Vec<String>,
    background: f32,
    training: Option<TrainingProvenance>,
) -> VersionConfig {
    VersionConfig {
        kind: ModelKind::ImageClassifier,
        architecture: ARCHITECTURE.into(),
        weights: WEIGHTS_FILE.into(),
        input: InputConfig {
            name: "image".into(),
            datatype: "FP32".into(),
            shape: [cnn.height, cnn.width, cnn.channels],
            range: [0.0, 1.0],
            background,
        },
        output: OutputConfig { name: "probabilities".into(), datatype: "FP32".into(), shape: [cnn.classes] },
        labels,
        training,
    }
}

/// Writes the model as version N+1 of `<repo>/<model>` and returns the version and its path.
pub fn publish(
    repo: &Path,
    model_name: &ModelName,
    model: &DigitsCnn,
    config: &VersionConfig,
    epochs: &[EpochMetrics],
    report: Option<&Report>,
) -> std::io::Result<(Version, PathBuf)> {
    publish_version(repo, model_name, |stage| write_version(stage, model, config, epochs, report))
}

fn write_version(
    dir: &Path,
    model: &DigitsCnn,
    config: &VersionConfig,
    epochs: &[EpochMetrics],
    report: Option<&Report>,
) -> std::io::Result<()> {
    write_files(dir, |w| model.save(w).map_err(std::io::Error::other), config, epochs, report)
}

/// Writes a trained version's files into `dir` and syncs them: the weights (by `save`, given
/// their path), `config.toml`, the epochs as `metrics.json` and, when given, the report's pictures.
pub fn write_files<E: serde::Serialize>(
    dir: &Path,
    save: impl FnOnce(&Path) -> std::io::Result<()>,
    config: &VersionConfig,
    epochs: &[E],
    report: Option<&Report>,
) -> std::io::Result<()> {
    save(&dir.join(WEIGHTS_FILE))?;
    std::fs::write(dir.join(VERSION_CONFIG_FILE), config.to_toml())?;
    let metrics = serde_json::to_string_pretty(epochs).map_err(std::io::Error::other)?;
    std::fs::write(dir.join(METRICS_FILE), metrics + "\n")?;
    let mut files = vec![WEIGHTS_FILE, VERSION_CONFIG_FILE, METRICS_FILE];
    if let Some(r) = report {
        report::write(dir, r)?;
        files.extend([report::CURVES_FILE, report::CONFUSION_FILE]);
    }
    for f in files {
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
        let (v1, p1) = publish(tmp.path(), &name, &m, &version_config(None), &[], None).unwrap();
        let (v2, _) = publish(tmp.path(), &name, &m, &version_config(None), &[], None).unwrap();
        assert_eq!((v1, v2), (Version(1), Version(2)));
        let cfg = aiserve_core::backend::read_version_config(&p1).unwrap();
        assert_eq!(cfg, version_config(None));
        assert!(DigitsCnn::load(&p1.join(WEIGHTS_FILE), CnnShape::DIGITS, &Device::Cpu).is_ok());
        let leftovers: Vec<_> = std::fs::read_dir(tmp.path().join("digits"))
            .unwrap()
            .filter_map(|e| e.ok())
            .filter(|e| e.file_name().to_string_lossy().starts_with('.'))
            .collect();
        assert!(leftovers.is_empty());
    }
}
