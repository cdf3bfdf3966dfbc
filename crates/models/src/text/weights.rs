//! Reading a Hugging Face checkpoint's tensors by name, whatever the file layout.
//!
//! Handles one `model.safetensors` or a sharded set listed by `model.safetensors.index.json`,
//! F32/F16/BF16 storage (widened to f32), and a family prefix on every name (`bert.` when the
//! checkpoint was saved from a task model rather than the bare encoder).

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use aiserve_core::LoadError;
use candle_core::{DType, Device, Tensor};

pub struct Weights {
    tensors: HashMap<String, Tensor>,
    prefix: String,
}

impl Weights {
    /// Reads every safetensors file of the checkpoint in `dir`.
    pub fn open(dir: &Path) -> Result<Self, LoadError> {
        let mut tensors = HashMap::new();
        for file in weight_files(dir)? {
            let part = candle_core::safetensors::load(&file, &Device::Cpu)
                .map_err(|e| LoadError::Weights(format!("{}: {e}", file_name(&file))))?;
            tensors.extend(part);
        }
        Ok(Self { tensors, prefix: String::new() })
    }

    /// Uses `prefix` on every name if the checkpoint has `probe` only under it.
    pub fn detect_prefix(&mut self, prefix: &str, probe: &str) {
        if !self.tensors.contains_key(probe) && self.tensors.contains_key(&format!("{prefix}{probe}")) {
            self.prefix = prefix.to_owned();
        }
    }

    pub fn has(&self, name: &str) -> bool {
        self.tensors.contains_key(&format!("{}{name}", self.prefix))
    }

    /// Every tensor by name, as stored.
    pub fn into_tensors(self) -> HashMap<String, Tensor> {
        self.tensors
    }

    /// The named tensor as row-major f32, checked against `shape`.
    pub fn get(&self, name: &str, shape: &[usize]) -> Result<Vec<f32>, LoadError> {
        let full = format!("{}{name}", self.prefix);
        let t = self.tensors.get(&full).ok_or_else(|| LoadError::Weights(format!("tensor `{full}` is missing")))?;
        if t.dims() != shape {
            return Err(LoadError::Weights(format!("tensor `{full}` has shape {:?}, expected {shape:?}", t.dims())));
        }
        t.to_dtype(DType::F32)
            .and_then(|t| t.flatten_all())
            .and_then(|t| t.to_vec1::<f32>())
            .map_err(|e| LoadError::Weights(format!("tensor `{full}`: {e}")))
    }
}

fn file_name(p: &Path) -> String {
    p.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default()
}

/// The safetensors files holding the checkpoint, or a clear error naming what was found instead.
fn weight_files(dir: &Path) -> Result<Vec<PathBuf>, LoadError> {
    let single = dir.join("model.safetensors");
    if single.is_file() {
        return Ok(vec![single]);
    }
    let index = dir.join("model.safetensors.index.json");
    if index.is_file() {
        let text = std::fs::read_to_string(&index)?;
        let v: serde_json::Value =
            serde_json::from_str(&text).map_err(|e| LoadError::Config(format!("model.safetensors.index.json: {e}")))?;
        let map = v
            .get("weight_map")
            .and_then(|m| m.as_object())
            .ok_or_else(|| LoadError::Config("model.safetensors.index.json has no `weight_map` object".into()))?;
        let mut files: Vec<String> = map.values().filter_map(|f| f.as_str().map(str::to_owned)).collect();
        files.sort();
        files.dedup();
        return files
            .into_iter()
            .map(|f| {
                if f.contains('/') || f.contains('\\') || f.starts_with('.') {
                    Err(LoadError::Config(format!("weight shard {f:?} is not a file name in the version directory")))
                } else {
                    Ok(dir.join(f))
                }
            })
            .collect();
    }
    if dir.join("pytorch_model.bin").is_file() {
        return Err(LoadError::Unsupported(
            "only safetensors weights are read; this directory has pytorch_model.bin (convert it, or download the \
             model's model.safetensors)"
                .into(),
        ));
    }
    Err(LoadError::Weights("no model.safetensors (or model.safetensors.index.json) in the version directory".into()))
}
