//! Training checkpoints, shared by every trainer: where a run stands (epoch, batches done in it,
//! the epoch's running sums, the metrics so far, early stopping's best), the weights, the
//! optimiser's state and the best epoch's weights, so that a resumed run goes on exactly as the
//! interrupted one would have; and [`Run`], the bookkeeping of a run between its batches and
//! epochs that writes them.
//!
//! A checkpoint is a directory of two files (`state.json`, `tensors.safetensors`), written into
//! a sibling staging directory and renamed into place, so an interrupt while saving leaves the
//! previous checkpoint whole. `fingerprint` names the run's settings: a checkpoint is only
//! resumed by the same run.

use std::collections::HashMap;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use candle_core::{Device, Result, Tensor, Var};
use rand::seq::SliceRandom;
use rand::SeedableRng;
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
    fn next_epoch(&mut self, epoch: usize, steps: usize) {
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
fn resume<S: DeserializeOwned, M: DeserializeOwned>(
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
fn save_into<S: Serialize + Clone, M: Serialize + Clone>(
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
fn early_stop(
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
fn keep_best(best: Option<(f64, usize)>, best_weights: Option<Vec<Tensor>>, vars: &[Var]) -> Result<Option<usize>> {
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

/// Shuffles `order` for epoch `epoch` (1-based): each epoch shuffles the last one's order with a
/// stream of its own, so a resumed run replays the shuffles of the epochs already done.
pub fn shuffle_for_epoch(order: &mut [usize], seed: u64, epoch: usize) {
    order.shuffle(&mut rand_chacha::ChaCha8Rng::seed_from_u64(seed.wrapping_add(epoch as u64)));
}

/// A resumed run's optimiser state (`slots` tensors a variable) and steps taken.
pub type Resumed = (Vec<Vec<Tensor>>, usize);

/// One controlled run's bookkeeping, shared by the trainers: where it stands, early stopping's
/// best weights, the clock across interrupts, and the checkpoints written from them.
pub struct Run<'a, S, M> {
    pub at: Position<S, M>,
    /// Early stopping: a copy of the best epoch's weights (its loss and epoch are in `at.best`).
    best_weights: Option<Vec<Tensor>>,
    control: &'a Control<'a>,
    vars: &'a [Var],
    started: Instant,
    /// Seconds trained before this process took the run over.
    before: f64,
}

impl<'a, S, M> Run<'a, S, M>
where
    S: Default + Clone + Serialize + DeserializeOwned,
    M: Clone + Serialize + DeserializeOwned,
{
    /// A run from its start, or with [`Control::resume`] from the checkpoint of the same run
    /// (`fingerprint`): its weights go back into `vars`, and the optimiser's state (`slots`
    /// tensors a variable) and steps are returned for the optimiser to take back.
    pub fn begin(
        control: &'a Control<'a>,
        vars: &'a [Var],
        slots: usize,
        fingerprint: String,
        epochs: usize,
    ) -> Result<(Self, Option<Resumed>)> {
        let mut run = Self {
            at: Position::start(fingerprint, epochs),
            best_weights: None,
            control,
            vars,
            started: Instant::now(),
            before: 0.0,
        };
        let mut optimizer = None;
        if let Some(ck) = resume::<S, M>(control, vars, slots, &run.at.fingerprint)? {
            optimizer = Some((ck.optimizer, ck.position.steps));
            run.best_weights = ck.best_weights;
            run.before = ck.position.seconds;
            run.at = ck.position;
        }
        Ok((run, optimizer))
    }

    /// `0..len` in the order of the epoch before the one the run starts at (see
    /// [`shuffle_for_epoch`]).
    pub fn replayed_order(&self, len: usize, seed: u64) -> Vec<usize> {
        let mut order: Vec<usize> = (0..len).collect();
        for epoch in 1..self.at.epoch {
            shuffle_for_epoch(&mut order, seed, epoch);
        }
        order
    }

    /// The seconds the run has trained, across interrupts.
    pub fn seconds(&self) -> f64 {
        self.before + self.started.elapsed().as_secs_f64()
    }

    fn save(&self, optimizer: Vec<Vec<Tensor>>) -> Result<()> {
        let at = Position { seconds: self.seconds(), ..self.at.clone() };
        save_into(self.control, &at, self.vars, optimizer, &self.best_weights)
    }

    /// After each batch: when a stop was asked for, saves the run as it stands (`batch` batches
    /// of the epoch done, `steps` optimiser steps, `seconds` more of the epoch) and says so.
    pub fn stop_here(
        &mut self,
        batch: usize,
        steps: usize,
        seconds: f64,
        optimizer: impl FnOnce() -> Vec<Vec<Tensor>>,
    ) -> Result<bool> {
        if !self.control.stopping() {
            return Ok(false);
        }
        (self.at.batch, self.at.steps) = (batch, steps);
        self.at.epoch_seconds += seconds;
        self.save(optimizer())?;
        Ok(true)
    }

    /// After each epoch of `epochs`: records its metrics, keeps early stopping's best by the
    /// evaluation `loss` (with a `patience`), moves on and checkpoints the run unless it ends;
    /// true when early stopping ends it.
    #[allow(clippy::too_many_arguments)]
    pub fn end_epoch(
        &mut self,
        metrics: M,
        loss: f64,
        epoch: usize,
        epochs: usize,
        patience: Option<usize>,
        steps: usize,
        optimizer: impl FnOnce() -> Vec<Vec<Tensor>>,
    ) -> Result<bool> {
        self.at.epochs.push(metrics);
        let stop = early_stop(&mut self.at.best, &mut self.best_weights, patience, loss, epoch, self.vars)?;
        self.at.next_epoch(epoch, steps);
        if !stop && epoch < epochs {
            self.save(optimizer())?;
        }
        Ok(stop)
    }

    /// The end of the run: early stopping's best weights back into the variables; the epochs'
    /// metrics, the seconds trained and the epoch kept (with early stopping).
    pub fn finish(self) -> Result<(Vec<M>, f64, Option<usize>)> {
        let seconds = self.seconds();
        let kept = keep_best(self.at.best, self.best_weights, self.vars)?;
        Ok((self.at.epochs, seconds, kept))
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
