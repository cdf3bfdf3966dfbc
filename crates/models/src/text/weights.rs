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
    /// Reads every safetensors file of the checkpoint in `dir`, first checking that the files
    /// and their values widened to f32 fit in the memory available.
    pub fn open(dir: &Path) -> Result<Self, LoadError> {
        let files = weight_files(dir)?;
        let mut need = 0u64;
        for file in &files {
            need += std::fs::metadata(file)?.len() + 4 * values_in(file).unwrap_or(0);
        }
        crate::memory::check(need, crate::memory::available(), " (the files, and their values as f32)")?;
        let mut tensors = HashMap::new();
        for file in files {
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
        self.get_full(&format!("{}{name}", self.prefix), shape)
    }

    /// Whether the checkpoint has `name` exactly, outside the family prefix (a task head's
    /// tensors, such as `classifier.weight`).
    pub fn has_outside(&self, name: &str) -> bool {
        self.tensors.contains_key(name)
    }

    /// Like [`Self::get`] for a tensor outside the family prefix.
    pub fn get_outside(&self, name: &str, shape: &[usize]) -> Result<Vec<f32>, LoadError> {
        self.get_full(name, shape)
    }

    fn get_full(&self, full: &str, shape: &[usize]) -> Result<Vec<f32>, LoadError> {
        let t = self.tensors.get(full).ok_or_else(|| LoadError::Weights(format!("tensor `{full}` is missing")))?;
        if t.dims() != shape {
            return Err(LoadError::Weights(format!("tensor `{full}` has shape {:?}, expected {shape:?}", t.dims())));
        }
        t.to_dtype(DType::F32)
            .and_then(|t| t.flatten_all())
            .and_then(|t| t.to_vec1::<f32>())
            .map_err(|e| LoadError::Weights(format!("tensor `{full}`: {e}")))
    }
}

/// Values in a safetensors file, from its header alone; `None` if the header does not read (the
/// load reports it).
fn values_in(file: &Path) -> Option<u64> {
    use std::io::Read;
    let mut f = std::fs::File::open(file).ok()?;
    let mut len = [0u8; 8];
    f.read_exact(&mut len).ok()?;
    let len = u64::from_le_bytes(len);
    if len > 100 << 20 {
        return None;
    }
    let mut header = vec![0u8; len as usize];
    f.read_exact(&mut header).ok()?;
    let header: serde_json::Map<String, serde_json::Value> = serde_json::from_slice(&header).ok()?;
    let count = |t: &serde_json::Value| -> Option<u64> {
        t.get("shape")?.as_array()?.iter().map(|d| d.as_u64()).product::<Option<u64>>()
    };
    header.iter().filter(|(k, _)| *k != "__metadata__").map(|(_, t)| count(t)).sum()
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_are_counted_from_the_header() {
        let dir = tempfile::tempdir().unwrap();
        let bytes = [0u8; 2 * 3 * 2 + 5 * 4];
        let views = [
            ("a", safetensors::tensor::TensorView::new(safetensors::Dtype::BF16, vec![2, 3], &bytes[..12]).unwrap()),
            ("b", safetensors::tensor::TensorView::new(safetensors::Dtype::F32, vec![5], &bytes[12..]).unwrap()),
        ];
        let path = dir.path().join("model.safetensors");
        safetensors::serialize_to_file(views, None, &path).unwrap();
        assert_eq!(values_in(&path), Some(11));
        std::fs::write(&path, b"not a safetensors file").unwrap();
        assert_eq!(values_in(&path), None);
    }
}
