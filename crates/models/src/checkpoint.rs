//! Training checkpoints, shared by every trainer: where a run stands (epoch, batches done in it,
//! the epoch's running sums, the metrics so far, early stopping's best), the weights, the
//! optimiser's state and the best epoch's weights, so that a resumed run goes on exactly as the
//! interrupted one would have.
//!
//! A checkpoint is a directory of two files (`state.json`, `tensors.safetensors`), written into
//! a sibling staging directory and renamed into place, so an interrupt while saving leaves the
//! previous checkpoint whole. `fingerprint` names the run's settings: a checkpoint is only
//! resumed by the same run.

use std::collections::HashMap;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};

use candle_core::{Device, Result, Tensor, Var};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

const STATE: &str = "state.json";
const TENSORS: &str = "tensors.safetensors";

/// Checkpoints and interrupts for a trainer.
#[derive(Default)]
pub struct Control<'a> {
    /// The checkpoint directory, written after every epoch and on a stop (`None`: none).
    pub checkpoint: Option<&'a Path>,
    /// Continue from the checkpoint instead of starting afresh.
    pub resume: bool,
    /// Set (by a Ctrl-C handler) to stop at the next batch, after saving the checkpoint.
    pub stop: Option<&'a AtomicBool>,
}

impl Control<'_> {
    /// True once a stop was asked for.
    pub fn stopping(&self) -> bool {
        self.stop.is_some_and(|s| s.load(Ordering::Relaxed))
    }
}

/// How a controlled run ended.
pub enum Outcome<T> {
    Done(T),
    /// Stopped by [`Control::stop`] with `batch` batches of `epoch` done; the checkpoint holds it.
    Interrupted {
        epoch: usize,
        batch: usize,
    },
}

/// Where a run stands: `S` is the epoch's running sums (loss, hits, items seen), `M` an epoch's
/// metrics, both the trainer's own.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct Position<S, M> {
    /// The run's settings, as the trainer writes them.
    pub fingerprint: String,
    /// The epoch in progress (1-based) and the batches of it already done.
    pub epoch: usize,
    pub batch: usize,
    /// That epoch's running sums and seconds so far.
    pub sums: S,
    pub epoch_seconds: f64,
    /// Optimizer steps taken, and the whole run's seconds so far.
    pub steps: usize,
    pub seconds: f64,
    pub epochs: Vec<M>,
    /// Early stopping's best evaluation loss and its epoch.
    pub best: Option<(f64, usize)>,
}

impl<S: Default, M> Position<S, M> {
    /// The start of a run.
    pub fn start(fingerprint: String, epochs: usize) -> Self {
        Self {
            fingerprint,
            epoch: 1,
            batch: 0,
            sums: S::default(),
            epoch_seconds: 0.0,
            steps: 0,
            seconds: 0.0,
            epochs: Vec::with_capacity(epochs),
            best: None,
        }
    }

    /// Moves on to the epoch after `epoch`, with `steps` optimiser steps taken.
    pub fn next_epoch(&mut self, epoch: usize, steps: usize) {
        (self.epoch, self.batch, self.sums, self.epoch_seconds, self.steps) = (epoch + 1, 0, S::default(), 0.0, steps);
    }
}

pub struct Checkpoint<S, M> {
    pub position: Position<S, M>,
    pub weights: Vec<Tensor>,
    /// The optimiser's state: for each variable, its tensors (Adam: both moments; RMSprop: the
    /// mean square).
    pub optimizer: Vec<Vec<Tensor>>,
    /// The best epoch's weights (early stopping).
    pub best_weights: Option<Vec<Tensor>>,
}

pub fn save<S: Serialize, M: Serialize>(dir: &Path, ck: &Checkpoint<S, M>) -> std::io::Result<()> {
    let name = dir.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let stage = dir.with_file_name(format!("{name}.saving"));
    let _ = std::fs::remove_dir_all(&stage);
    std::fs::create_dir_all(&stage)?;
    let mut map: HashMap<String, Tensor> = HashMap::new();
    for (i, w) in ck.weights.iter().enumerate() {
        map.insert(format!("w.{i}"), w.clone());
    }
    for (i, state) in ck.optimizer.iter().enumerate() {
        for (j, t) in state.iter().enumerate() {
            map.insert(format!("opt.{i}.{j}"), t.clone());
        }
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

/// Reads a checkpoint of `params` variables with `slots` optimiser tensors each.
pub fn load<S: DeserializeOwned, M: DeserializeOwned>(
    dir: &Path,
    params: usize,
    slots: usize,
) -> std::result::Result<Checkpoint<S, M>, String> {
    let text = std::fs::read_to_string(dir.join(STATE)).map_err(|e| format!("{}: {e}", dir.join(STATE).display()))?;
    let position: Position<S, M> =
        serde_json::from_str(&text).map_err(|e| format!("{}: {e}", dir.join(STATE).display()))?;
    let path = dir.join(TENSORS);
    let mut map =
        candle_core::safetensors::load(&path, &Device::Cpu).map_err(|e| format!("{}: {e}", path.display()))?;
    let mut take =
        |name: String| map.remove(&name).ok_or_else(|| format!("{}: tensor `{name}` is missing", path.display()));
    let weights = (0..params).map(|i| take(format!("w.{i}"))).collect::<std::result::Result<Vec<_>, _>>()?;
    let optimizer = (0..params)
        .map(|i| (0..slots).map(|j| take(format!("opt.{i}.{j}"))).collect::<std::result::Result<Vec<_>, _>>())
        .collect::<std::result::Result<Vec<_>, _>>()?;
    let best_weights = match position.best {
        Some(_) => Some((0..params).map(|i| take(format!("best.{i}"))).collect::<std::result::Result<Vec<_>, _>>()?),
        None => None,
    };
    Ok(Checkpoint { position, weights, optimizer, best_weights })
}

/// With [`Control::resume`]: the checkpoint of the run whose settings are `fingerprint`, its
/// weights already put into `vars` (the optimiser's state and the position are the caller's to
/// restore); a checkpoint of another run is refused. Without it: `None`.
pub fn resume<S: DeserializeOwned, M: DeserializeOwned>(
    control: &Control,
    vars: &[Var],
    slots: usize,
    fingerprint: &str,
) -> Result<Option<Checkpoint<S, M>>> {
    if !control.resume {
        return Ok(None);
    }
    let dir = control.checkpoint.ok_or_else(|| candle_core::Error::msg("resuming needs a checkpoint directory"))?;
    let ck: Checkpoint<S, M> = load(dir, vars.len(), slots).map_err(candle_core::Error::msg)?;
    if ck.position.fingerprint != fingerprint {
        candle_core::bail!(
            "the checkpoint at {} is of another run ({}); this one is {fingerprint}: run the same command, or delete it",
            dir.display(),
            ck.position.fingerprint
        );
    }
    for (var, w) in vars.iter().zip(&ck.weights) {
        var.set(w)?;
    }
    Ok(Some(ck))
}

/// Writes the checkpoint of a run at `position` (its `seconds` already current) into
/// [`Control::checkpoint`], if there is one.
pub fn save_into<S: Serialize + Clone, M: Serialize + Clone>(
    control: &Control,
    position: &Position<S, M>,
    vars: &[Var],
    optimizer: Vec<Vec<Tensor>>,
    best_weights: &Option<Vec<Tensor>>,
) -> Result<()> {
    let Some(dir) = control.checkpoint else { return Ok(()) };
    let ck = Checkpoint {
        position: position.clone(),
        weights: vars.iter().map(|v| v.as_tensor().clone()).collect(),
        optimizer,
        best_weights: best_weights.clone(),
    };
    save(dir, &ck).map_err(|e| candle_core::Error::msg(format!("saving the checkpoint: {e}")))
}

/// Early stopping after an epoch of evaluation loss `loss`: a new best keeps a copy of the
/// weights (and its loss and epoch in `best`); true once `patience` epochs have passed without
/// one. Without a patience, nothing is kept and training goes on.
pub fn early_stop(
    best: &mut Option<(f64, usize)>,
    best_weights: &mut Option<Vec<Tensor>>,
    patience: Option<usize>,
    loss: f64,
    epoch: usize,
    vars: &[Var],
) -> Result<bool> {
    let Some(patience) = patience else { return Ok(false) };
    if best.is_none_or(|(l, _)| loss < l) {
        *best_weights = Some(vars.iter().map(|v| v.as_tensor().copy()).collect::<Result<Vec<_>>>()?);
        *best = Some((loss, epoch));
        return Ok(false);
    }
    Ok(best.is_some_and(|(_, e)| epoch - e >= patience))
}

/// At the end of a run with early stopping: puts the best epoch's weights back into `vars` and
/// names that epoch.
pub fn keep_best(best: Option<(f64, usize)>, best_weights: Option<Vec<Tensor>>, vars: &[Var]) -> Result<Option<usize>> {
    match (best, best_weights) {
        (Some((_, e)), Some(weights)) => {
            for (var, w) in vars.iter().zip(&weights) {
                var.set(w)?;
            }
            Ok(Some(e))
        }
        _ => Ok(None),
    }
}

#[cfg(test)]
pub(crate) mod testing {
    use std::sync::atomic::{AtomicBool, Ordering};

    use crate::digits::train::Progress;

    /// Asks to stop once batch `batch` of epoch `epoch` is done: a Ctrl-C at a known point.
    pub struct StopAt<'a> {
        pub flag: &'a AtomicBool,
        pub epoch: usize,
        pub batch: usize,
        current: usize,
    }

    impl<'a> StopAt<'a> {
        pub fn new(flag: &'a AtomicBool, epoch: usize, batch: usize) -> Self {
            Self { flag, epoch, batch, current: 0 }
        }
    }

    impl<M> Progress<M> for StopAt<'_> {
        fn epoch_start(&mut self, epoch: usize, _: usize) {
            self.current = epoch;
        }
        fn batch_end(&mut self, batch: usize, _: f64, _: f64, _: f64) {
            if (self.current, batch) == (self.epoch, self.batch) {
                self.flag.store(true, Ordering::Relaxed);
            }
        }
    }
}
