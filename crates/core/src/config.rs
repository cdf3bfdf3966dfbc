//! The two configuration files of a model repository, parsed strictly (unknown keys are errors).
//!
//! - `<repo>/<model>/model.toml` (optional, Triton's `config.pbtxt` in spirit): version policy and
//!   serving options for every version of the model.
//! - `<repo>/<model>/<version>/config.toml` (written by `aiserve train`): what the version is —
//!   architecture, input and output tensors, class labels and training provenance.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::policy::VersionPolicy;

/// File name of the optional model-level config.
pub const MODEL_CONFIG_FILE: &str = "model.toml";
/// File name of the per-version config.
pub const VERSION_CONFIG_FILE: &str = "config.toml";

/// Largest config file we read; anything bigger is refused before parsing.
pub const MAX_CONFIG_BYTES: u64 = 1 << 20;

/// `<repo>/<model>/model.toml`.
#[derive(Clone, Debug, Default, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ModelConfig {
    /// Which versions to serve; latest 1 when absent.
    #[serde(default)]
    pub version_policy: VersionPolicy,
    /// Largest number of images one forward pass may take (requests are merged up to this).
    #[serde(default = "default_max_batch_size")]
    pub max_batch_size: usize,
    /// Text models: most tokens one forward pass may take (TEI's `max-batch-tokens`). Texts
    /// from many requests are packed up to this; a bigger request is split across passes.
    #[serde(default = "default_max_batch_tokens")]
    pub max_batch_tokens: usize,
    /// Batch sizes that run at once without waiting for `max_queue_delay_us` (Triton's
    /// `preferred_batch_size`); each at most `max_batch_size`.
    #[serde(default)]
    pub preferred_batch_sizes: Vec<usize>,
    /// Microseconds the oldest queued request may wait for others to join its batch: more
    /// throughput under load, that much more latency when idle. 0 runs whatever is queued.
    #[serde(default)]
    pub max_queue_delay_us: u64,
    /// Requests waiting for the model beyond this answer 503 at once.
    #[serde(default = "default_max_queue_size")]
    pub max_queue_size: usize,
    /// Model instances: threads that each own a copy of the model and take batches from the
    /// shared queue (Triton's instance group count).
    #[serde(default = "default_instances")]
    pub instances: usize,
    /// TF Serving version labels, e.g. `stable = 1`, `canary = 2` (`/v1/models/m/labels/stable`).
    #[serde(default)]
    pub version_labels: BTreeMap<String, u64>,
    /// ONNX versions: what the graph cannot say about itself.
    #[serde(default)]
    pub onnx: OnnxConfig,
    /// A pipeline (Triton's ensemble): steps over other models and built-in processing; its
    /// version directories may hold files its steps name (a character list, labels).
    pub pipeline: Option<crate::pipeline::PipelineConfig>,
}

/// `[onnx]` in `model.toml`: what an ONNX graph cannot say about itself; its inputs, outputs,
/// datatypes and shapes come from the graph (Triton's config auto-complete).
#[derive(Clone, Debug, Default, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct OnnxConfig {
    /// Whether dimension 0 of every input and output is the batch, so concurrent requests are
    /// joined along it. Absent: yes when the graph leaves dimension 0 open on all of them.
    pub batching: Option<bool>,
    /// Threads ONNX Runtime uses inside one operator. Absent: the compute threads shared among
    /// the model's instances (at least one each).
    pub threads: Option<usize>,
    /// Whether ONNX Runtime's operator threads spin while waiting for work. Absent: no. Spinning
    /// answers a lone request of a small model about 10% sooner, but burns the cores other
    /// models (a pipeline's other steps) need: PP-OCR's pipeline read 20% more pictures per
    /// second without it (BENCHMARKS.md).
    pub spinning: Option<bool>,
    /// Whether aiserve rewrites the graph before ONNX Runtime optimises it: constant scales and
    /// shifts folded into the convolutions beside them, hard-swish written so ONNX Runtime fuses
    /// it into the convolution. Absent: yes. Outputs change by float rounding only; PP-OCR's
    /// networks run 1.6-2.2x faster (BENCHMARKS.md). `false` runs the graph as written.
    pub fuse: Option<bool>,
    /// An image classifier: how `/classify` turns a picture into the graph's input and its
    /// output into a label.
    pub image: Option<ImageClassifierConfig>,
}

/// `[onnx.image]`: picture preprocessing and labels for `/classify` (what Triton users write in
/// Python around the model).
#[derive(Clone, Debug, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ImageClassifierConfig {
    /// The picture input (absent: the graph's only input).
    pub input: Option<String>,
    /// The scores output, `[N, classes]` (absent: the graph's only output).
    pub output: Option<String>,
    /// `NCHW` (PyTorch, Paddle) or `NHWC` (Keras, TensorFlow).
    #[serde(default = "default_layout")]
    pub layout: String,
    /// `RGB`, `BGR` or `GRAY`.
    #[serde(default = "default_channels")]
    pub channels: String,
    /// `[height, width]` pictures are resized to (absent: the graph's fixed sizes).
    pub size: Option<[usize; 2]>,
    /// Each 0..=255 value is multiplied by this first (default 1/255).
    #[serde(default = "default_scale")]
    pub scale: f32,
    /// Then per channel: `(value - mean) / std` (defaults 0 and 1).
    #[serde(default)]
    pub mean: Vec<f32>,
    #[serde(default)]
    pub std: Vec<f32>,
    /// A file in the version directory with one class label per line.
    pub labels: String,
    /// The output holds logits: apply a softmax for the probabilities answered.
    #[serde(default)]
    pub softmax: bool,
}

fn default_layout() -> String {
    "NCHW".into()
}

fn default_channels() -> String {
    "RGB".into()
}

fn default_scale() -> f32 {
    1.0 / 255.0
}

fn default_max_batch_size() -> usize {
    64
}

fn default_max_batch_tokens() -> usize {
    4096
}

fn default_max_queue_size() -> usize {
    1024
}

fn default_instances() -> usize {
    1
}

impl ModelConfig {
    pub fn parse(text: &str) -> Result<Self, String> {
        let cfg: Self = toml::from_str(text).map_err(|e| e.to_string())?;
        cfg.version_policy.validate()?;
        if cfg.max_batch_size == 0 || cfg.max_batch_size > 4096 {
            return Err(format!("`max_batch_size` must be in 1..=4096, got {}", cfg.max_batch_size));
        }
        if cfg.max_batch_tokens < 512 || cfg.max_batch_tokens > 1 << 20 {
            return Err(format!(
                "`max_batch_tokens` must be in 512..=1048576 (one text of up to 512 tokens must fit), got {}",
                cfg.max_batch_tokens
            ));
        }
        if let Some(p) = cfg.preferred_batch_sizes.iter().find(|&&p| p == 0 || p > cfg.max_batch_size) {
            return Err(format!(
                "`preferred_batch_sizes` entries must be in 1..=max_batch_size ({}), got {p}",
                cfg.max_batch_size
            ));
        }
        if cfg.max_queue_delay_us > 10_000_000 {
            return Err(format!(
                "`max_queue_delay_us` must be at most 10000000 (10 s), got {}",
                cfg.max_queue_delay_us
            ));
        }
        if cfg.instances == 0 || cfg.instances > 64 {
            return Err(format!("`instances` must be in 1..=64, got {}", cfg.instances));
        }
        if cfg.max_queue_size == 0 {
            return Err("`max_queue_size` must be at least 1, got 0".into());
        }
        if let Some(t) = cfg.onnx.threads.filter(|&t| t == 0 || t > 256) {
            return Err(format!("`onnx.threads` must be in 1..=256, got {t}"));
        }
        if let Some(img) = &cfg.onnx.image {
            img.validate()?;
        }
        if let Some(p) = &cfg.pipeline {
            p.validate()?;
        }
        if let Some((label, _)) = cfg.version_labels.iter().find(|(_, v)| **v == 0) {
            return Err(format!("`version_labels.{label}` must be a positive version, got 0"));
        }
        Ok(cfg)
    }

    /// The dynamic batcher's knobs for image models (batch size counted in images).
    pub fn batch_policy(&self) -> crate::batching::BatchPolicy {
        crate::batching::BatchPolicy {
            max_batch_size: self.max_batch_size,
            preferred_batch_sizes: self.preferred_batch_sizes.clone(),
            max_queue_delay: std::time::Duration::from_micros(self.max_queue_delay_us),
            max_queue_size: self.max_queue_size,
        }
    }

    /// The batcher's knobs for text models: batch size counted in tokens, no preferred sizes.
    pub fn token_batch_policy(&self) -> crate::batching::BatchPolicy {
        crate::batching::BatchPolicy {
            max_batch_size: self.max_batch_tokens,
            preferred_batch_sizes: Vec::new(),
            max_queue_delay: std::time::Duration::from_micros(self.max_queue_delay_us),
            max_queue_size: self.max_queue_size,
        }
    }

    pub fn new_default() -> Self {
        Self {
            version_policy: VersionPolicy::default(),
            max_batch_size: default_max_batch_size(),
            max_batch_tokens: default_max_batch_tokens(),
            preferred_batch_sizes: Vec::new(),
            max_queue_delay_us: 0,
            max_queue_size: default_max_queue_size(),
            instances: default_instances(),
            version_labels: BTreeMap::new(),
            onnx: OnnxConfig::default(),
            pipeline: None,
        }
    }
}

impl ImageClassifierConfig {
    /// Channels of the picture the graph takes (3, or 1 for `GRAY`).
    pub fn channel_count(&self) -> usize {
        if self.channels == "GRAY" {
            1
        } else {
            3
        }
    }

    fn validate(&self) -> Result<(), String> {
        if !matches!(self.layout.as_str(), "NCHW" | "NHWC") {
            return Err(format!("`onnx.image.layout` must be NCHW or NHWC, got {:?}", self.layout));
        }
        if !matches!(self.channels.as_str(), "RGB" | "BGR" | "GRAY") {
            return Err(format!("`onnx.image.channels` must be RGB, BGR or GRAY, got {:?}", self.channels));
        }
        if let Some(size) = self.size.filter(|s| s.iter().any(|&d| d == 0 || d > 4096)) {
            return Err(format!("`onnx.image.size` dims must be in 1..=4096, got {size:?}"));
        }
        let c = self.channel_count();
        for (name, v) in [("mean", &self.mean), ("std", &self.std)] {
            if !v.is_empty() && v.len() != c {
                return Err(format!("`onnx.image.{name}` must have {c} values (one per channel), got {}", v.len()));
            }
        }
        if self.std.iter().any(|s| !(s.is_finite() && *s != 0.0)) || !self.scale.is_finite() {
            return Err("`onnx.image.std` values must be finite and non-zero, `scale` finite".into());
        }
        if self.labels.contains('/') || self.labels.contains('\\') || self.labels.starts_with('.') {
            return Err(format!(
                "`onnx.image.labels` must be a file name in the version directory, got {:?}",
                self.labels
            ));
        }
        Ok(())
    }

    /// A decoded picture (`height x width x channels` bytes, row-major, in this config's channel
    /// order) as the graph's input values: scaled, normalised, in its layout.
    pub fn tensor(&self, pixels: &[u8], height: usize, width: usize) -> Vec<f32> {
        let c = self.channel_count();
        let norm = |i: usize, p: u8| {
            let v = p as f32 * self.scale;
            (v - self.mean.get(i).copied().unwrap_or(0.0)) / self.std.get(i).copied().unwrap_or(1.0)
        };
        let mut out = vec![0.0; height * width * c];
        for (j, &p) in pixels.iter().enumerate().take(out.len()) {
            let ch = j % c;
            let idx = if self.layout == "NCHW" { ch * height * width + j / c } else { j };
            out[idx] = norm(ch, p);
        }
        out
    }
}

/// `<repo>/<model>/<version>/config.toml`.
#[derive(Clone, Debug, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct VersionConfig {
    /// The model kind: `image_classifier` (class probabilities) or `image_to_text` (a string
    /// read from the picture, e.g. the digit-strings model).
    pub kind: ModelKind,
    /// The architecture within the kind, e.g. `digits_cnn`.
    pub architecture: String,
    /// Weights file inside the version directory.
    pub weights: String,
    pub input: InputConfig,
    pub output: OutputConfig,
    /// Human-readable class names, one per output class.
    pub labels: Vec<String>,
    /// Where the weights came from; absent for hand-made versions.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub training: Option<TrainingProvenance>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ModelKind {
    ImageClassifier,
    /// Reads a string: `output` is `BYTES` with `shape = [longest string]`, `labels` are the
    /// characters it writes.
    ImageToText,
}

impl ModelKind {
    pub fn name(self) -> &'static str {
        match self {
            ModelKind::ImageClassifier => "image_classifier",
            ModelKind::ImageToText => "image_to_text",
        }
    }
}

/// The input tensor of an image classifier: one image per batch row.
#[derive(Clone, Debug, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct InputConfig {
    pub name: String,
    /// Only `FP32` today.
    pub datatype: String,
    /// `[height, width, channels]`; a batch adds a leading dimension.
    pub shape: [usize; 3],
    /// Pixel range after normalisation (`[0, 1]`: MNIST bytes divided by 255).
    pub range: [f32; 2],
    /// Value of an empty pixel; uploaded pictures are inverted when their border is the other way.
    pub background: f32,
}

#[derive(Clone, Debug, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct OutputConfig {
    pub name: String,
    pub datatype: String,
    /// `[classes]` (an `image_to_text` model: `[longest string]`).
    pub shape: [usize; 1],
}

/// How a version was trained; enough to reproduce it.
#[derive(Clone, Debug, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct TrainingProvenance {
    pub data: String,
    pub train_examples: usize,
    pub epochs: usize,
    pub batch_size: usize,
    pub learning_rate: f64,
    pub seed: u64,
    pub test_accuracy: f64,
    pub test_loss: f64,
    pub train_seconds: f64,
    pub aiserve_version: String,
    /// The learning-rate schedule (`cosine`); absent: constant.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lr_schedule: Option<String>,
    /// Early stopping's patience in epochs, and the epoch whose weights were kept.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub early_stopping: Option<usize>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub best_epoch: Option<usize>,
}

impl VersionConfig {
    pub fn parse(text: &str) -> Result<Self, String> {
        let cfg: Self = toml::from_str(text).map_err(|e| e.to_string())?;
        cfg.validate()?;
        Ok(cfg)
    }

    pub fn to_toml(&self) -> String {
        toml::to_string_pretty(self).expect("version config is always serialisable")
    }

    fn validate(&self) -> Result<(), String> {
        let output = match self.kind {
            ModelKind::ImageClassifier => "FP32",
            ModelKind::ImageToText => "BYTES",
        };
        if self.input.datatype != "FP32" || self.output.datatype != output {
            return Err(format!(
                "an {} takes FP32 and gives {output}, got input {} and output {}",
                self.kind.name(),
                self.input.datatype,
                self.output.datatype
            ));
        }
        if self.input.shape.iter().any(|&d| d == 0 || d > 4096) {
            return Err(format!("`input.shape` dims must be in 1..=4096, got {:?}", self.input.shape));
        }
        let [lo, hi] = self.input.range;
        if !(lo.is_finite() && hi.is_finite() && lo < hi) {
            return Err(format!("`input.range` must be [low, high] with low < high, got {:?}", self.input.range));
        }
        if self.kind == ModelKind::ImageToText {
            if self.labels.is_empty() || self.output.shape[0] == 0 {
                return Err("an image_to_text model needs `labels` (its characters) and a string length".into());
            }
        } else if self.labels.len() != self.output.shape[0] {
            return Err(format!(
                "`labels` has {} entries but `output.shape` declares {} classes",
                self.labels.len(),
                self.output.shape[0]
            ));
        }
        if self.weights.contains('/') || self.weights.contains('\\') || self.weights.starts_with('.') {
            return Err(format!("`weights` must be a file name inside the version directory, got {:?}", self.weights));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(crate) const DIGITS: &str = r#"
kind = "image_classifier"
architecture = "digits_cnn"
weights = "model.safetensors"
labels = ["0","1","2","3","4","5","6","7","8","9"]
[input]
name = "image"
datatype = "FP32"
shape = [28, 28, 1]
range = [0.0, 1.0]
background = 0.0
[output]
name = "probabilities"
datatype = "FP32"
shape = [10]
"#;

    #[test]
    fn version_config_round_trips() {
        let cfg = VersionConfig::parse(DIGITS).unwrap();
        assert_eq!(cfg.input.shape, [28, 28, 1]);
        assert_eq!(VersionConfig::parse(&cfg.to_toml()).unwrap(), cfg);
    }

    #[test]
    fn version_config_errors_name_the_problem() {
        let err = VersionConfig::parse(&DIGITS.replace("shape = [10]", "shape = [9]")).unwrap_err();
        assert!(err.contains("`labels` has 10 entries"), "{err}");
        let err = VersionConfig::parse(&format!("{DIGITS}\nsurprise = 1")).unwrap_err();
        assert!(err.contains("surprise"), "{err}");
        let err = VersionConfig::parse(&DIGITS.replace("model.safetensors", "../../etc/passwd")).unwrap_err();
        assert!(err.contains("`weights`"), "{err}");
    }

    /// A reader writes BYTES of up to `output.shape` characters from `labels`; a classifier's
    /// FP32 output is refused for it, and a BYTES output for a classifier.
    #[test]
    fn image_to_text_configs_are_checked_by_kind() {
        let reader = DIGITS.replace("image_classifier", "image_to_text").replace(
            "\"probabilities\"\ndatatype = \"FP32\"\nshape = [10]",
            "\"text\"\ndatatype = \"BYTES\"\nshape = [6]",
        );
        let cfg = VersionConfig::parse(&reader).unwrap();
        assert_eq!((cfg.kind, cfg.output.shape), (ModelKind::ImageToText, [6]));
        let err = VersionConfig::parse(&reader.replace("\"BYTES\"", "\"FP32\"")).unwrap_err();
        assert!(err.contains("an image_to_text takes FP32 and gives BYTES"), "{err}");
        let err = VersionConfig::parse(
            &DIGITS.replace("datatype = \"FP32\"\nshape = [10]", "datatype = \"BYTES\"\nshape = [10]"),
        )
        .unwrap_err();
        assert!(err.contains("an image_classifier takes FP32 and gives FP32"), "{err}");
        assert!(VersionConfig::parse(&reader.replace("shape = [6]", "shape = [0]")).is_err());
    }

    #[test]
    fn model_config_defaults_and_strictness() {
        let cfg = ModelConfig::parse("").unwrap();
        assert_eq!(cfg, ModelConfig::new_default());
        let cfg = ModelConfig::parse("max_batch_size = 8\n[version_policy]\nlatest = 2\n[version_labels]\nstable = 1")
            .unwrap();
        assert_eq!(cfg.version_labels["stable"], 1);
        assert_eq!(cfg.version_policy, VersionPolicy::Latest(2));
        assert_eq!(cfg.max_batch_size, 8);
        assert!(ModelConfig::parse("max_batch_size = 0").unwrap_err().contains("max_batch_size"));
        assert!(ModelConfig::parse("batch = 3").is_err());
        let err = ModelConfig::parse("max_batch_size = 8\npreferred_batch_sizes = [4, 16]").unwrap_err();
        assert!(err.contains("`preferred_batch_sizes`") && err.contains("got 16"), "{err}");
        assert!(ModelConfig::parse("instances = 0").unwrap_err().contains("`instances`"));
        let cfg = ModelConfig::parse("[onnx]\nbatching = false\nthreads = 1").unwrap();
        assert_eq!(
            cfg.onnx,
            OnnxConfig { batching: Some(false), threads: Some(1), spinning: None, fuse: None, image: None }
        );
        let cfg = ModelConfig::parse(
            "[onnx.image]\nsize = [2, 1]\nmean = [0.5, 0.5, 0.5]\nstd = [0.5, 0.5, 0.5]\nlabels = \"l.txt\"",
        )
        .unwrap();
        let img = cfg.onnx.image.unwrap();
        // Two RGB pixels, [0,0,0] and [255,255,255]: NCHW puts each channel's two values together.
        assert_eq!(img.tensor(&[0, 0, 0, 255, 255, 255], 2, 1), [-1.0, 1.0, -1.0, 1.0, -1.0, 1.0]);
        let e = ModelConfig::parse("[onnx.image]\nmean = [0.5]\nlabels = \"l.txt\"").unwrap_err();
        assert!(e.contains("`onnx.image.mean` must have 3 values"), "{e}");
        assert!(ModelConfig::parse("[onnx.image]\nlabels = \"../x\"").unwrap_err().contains("labels"));
        assert!(ModelConfig::parse("[onnx.image]\nlayout = \"CHW\"\nlabels = \"l\"").unwrap_err().contains("layout"));
        assert!(ModelConfig::parse("[onnx]\nthreads = 0").unwrap_err().contains("`onnx.threads`"));
        assert!(ModelConfig::parse("[onnx]\nbatch = 1").is_err());
        let cfg = ModelConfig::parse("max_queue_delay_us = 500\ninstances = 2").unwrap();
        assert_eq!(cfg.batch_policy().max_queue_delay, std::time::Duration::from_micros(500));
    }
}
