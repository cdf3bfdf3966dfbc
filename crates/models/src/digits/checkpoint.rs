//! Training checkpoints: where a run stands (epoch, batches done in it, the epoch's running
//! sums, the metrics so far, early stopping's best), the weights, Adam's moments and the best
//! epoch's weights, so that a resumed run goes on exactly as the interrupted one would have.
//!
//! A checkpoint is a directory of two files (`state.json`, `tensors.safetensors`), written into
//! a sibling staging directory and renamed into place, so an interrupt while saving leaves the
//! previous checkpoint whole. `fingerprint` names the run's settings: a checkpoint is only
//! resumed by the same run.

use std::collections::HashMap;
use std::path::Path;

use candle_core::{Device, Tensor};
use serde::{Deserialize, Serialize};

use super::train::EpochMetrics;

const STATE: &str = "state.json";
const TENSORS: &str = "tensors.safetensors";

/// Where a run stands.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct Position {
    /// The run's settings, as [`super::train`] writes them.
    pub fingerprint: String,
    /// The epoch in progress (1-based) and the batches of it already done.
    pub epoch: usize,
    pub batch: usize,
    /// That epoch's running loss sum, hits, images seen and seconds so far.
    pub loss_sum: f64,
    pub correct: usize,
    pub seen: usize,
    pub epoch_seconds: f64,
    /// Optimizer steps taken, and the whole run's seconds so far.
    pub steps: usize,
    pub seconds: f64,
    pub epochs: Vec<EpochMetrics>,
    /// Early stopping's best evaluation loss and its epoch.
    pub best: Option<(f64, usize)>,
}

pub struct Checkpoint {
    pub position: Position,
    pub weights: Vec<Tensor>,
    pub moments: Vec<(Tensor, Tensor)>,
    /// The best epoch's weights (early stopping).
    pub best_weights: Option<Vec<Tensor>>,
}

pub fn save(dir: &Path, ck: &Checkpoint) -> std::io::Result<()> {
    let name = dir.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let stage = dir.with_file_name(format!("{name}.saving"));
    let _ = std::fs::remove_dir_all(&stage);
    std::fs::create_dir_all(&stage)?;
    let mut map: HashMap<String, Tensor> = HashMap::new();
    for (i, w) in ck.weights.iter().enumerate() {
        map.insert(format!("w.{i}"), w.clone());
    }
    for (i, (m, v)) in ck.moments.iter().enumerate() {
        map.insert(format!("m.{i}"), m.clone());
        map.insert(format!("v.{i}"), v.clone());
    }
    for (i, b) in ck.best_weights.iter().flatten().enumerate() {
        map.insert(format!("best.{i}"), b.clone());
    }
    candle_core::safetensors::save(&map, stage.join(TENSORS)).map_err(std::io::Error::other)?;
    let state = serde_json::to_string_pretty(&ck.position).map_err(std::io::Error::other)?;
    std::fs::write(stage.join(STATE), state)?;
    for f in [STATE, TENSORS] {
        std::fs::File::open(stage.join(f))?.sync_all()?;
    }
    let _ = std::fs::remove_dir_all(dir);
    std::fs::rename(&stage, dir)
}

/// Reads a checkpoint of `params` variables.
pub fn load(dir: &Path, params: usize) -> Result<Checkpoint, String> {
    let text = std::fs::read_to_string(dir.join(STATE)).map_err(|e| format!("{}: {e}", dir.join(STATE).display()))?;
    let position: Position = serde_json::from_str(&text).map_err(|e| format!("{}: {e}", dir.join(STATE).display()))?;
    let path = dir.join(TENSORS);
    let mut map =
        candle_core::safetensors::load(&path, &Device::Cpu).map_err(|e| format!("{}: {e}", path.display()))?;
    let mut take =
        |name: String| map.remove(&name).ok_or_else(|| format!("{}: tensor `{name}` is missing", path.display()));
    let weights = (0..params).map(|i| take(format!("w.{i}"))).collect::<Result<Vec<_>, _>>()?;
    let moments =
        (0..params).map(|i| Ok((take(format!("m.{i}"))?, take(format!("v.{i}"))?))).collect::<Result<_, String>>()?;
    let best_weights = match position.best {
        Some(_) => Some((0..params).map(|i| take(format!("best.{i}"))).collect::<Result<Vec<_>, _>>()?),
        None => None,
    };
    Ok(Checkpoint { position, weights, moments, best_weights })
}
