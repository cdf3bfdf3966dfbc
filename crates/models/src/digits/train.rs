//! Training the digits CNN: Adam on sparse categorical cross-entropy, Keras' default recipe.
//!
//! Deterministic for a given seed (weight init and per-epoch shuffles come from ChaCha streams;
//! the kernels reduce in a fixed order). Progress is reported through [`Progress`] so the binary
//! can draw a bar and tests can stay quiet. Runs on the calling thread; the kernels use rayon.

use std::time::Instant;

use candle_core::backprop::GradStore;
use candle_core::{DType, Device, Result, Tensor, Var, D};
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use super::adam::Adam;
use super::{CnnShape, DigitsCnn};
use crate::checkpoint::{shuffle_for_epoch, Control, Outcome, Run};
use crate::mnist::{Dataset, Split};

/// Hyper-parameters; the defaults are Keras' (`epochs=10`, `batch_size=32`, Adam lr 1e-3,
/// constant rate, no early stopping).
#[derive(Clone, Debug)]
pub struct TrainConfig {
    pub epochs: usize,
    pub batch_size: usize,
    pub learning_rate: f64,
    pub seed: u64,
    pub schedule: Schedule,
    /// Early stopping: end training once the evaluation loss has not improved for this many
    /// epochs, keeping the weights of the best epoch (Keras' `restore_best_weights=True`).
    pub patience: Option<usize>,
}

impl Default for TrainConfig {
    fn default() -> Self {
        Self { epochs: 10, batch_size: 32, learning_rate: 1e-3, seed: 42, schedule: Schedule::Constant, patience: None }
    }
}

/// How the learning rate moves over the run (`constant`, `cosine`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Schedule {
    /// The same rate throughout.
    #[default]
    Constant,
    /// Half a cosine from the rate down to zero over all steps of all epochs (SGDR without
    /// restarts): large steps early, fine ones at the end.
    Cosine,
}

impl std::str::FromStr for Schedule {
    type Err = String;

    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s {
            "constant" => Ok(Schedule::Constant),
            "cosine" => Ok(Schedule::Cosine),
            other => Err(format!("unknown schedule `{other}`; expected constant or cosine")),
        }
    }
}

impl Schedule {
    pub fn name(self) -> &'static str {
        match self {
            Schedule::Constant => "constant",
            Schedule::Cosine => "cosine",
        }
    }

    /// The rate for step `done` (0-based) of `total`.
    pub fn rate(self, base: f64, done: usize, total: usize) -> f64 {
        match self {
            Schedule::Constant => base,
            Schedule::Cosine => base * 0.5 * (1.0 + (std::f64::consts::PI * done as f64 / total.max(1) as f64).cos()),
        }
    }
}

/// What one epoch measured (written to the version's `metrics.json`).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct EpochMetrics {
    pub epoch: usize,
    pub loss: f64,
    pub accuracy: f64,
    pub test_loss: f64,
    pub test_accuracy: f64,
    pub seconds: f64,
    pub images_per_second: f64,
    /// The rate of the epoch's last step.
    #[serde(default)]
    pub learning_rate: f64,
}

/// Receives progress, with an epoch's metrics of type `M` (the digit-strings trainer's are its
/// own); all methods default to doing nothing.
pub trait Progress<M = EpochMetrics> {
    fn epoch_start(&mut self, _epoch: usize, _batches: usize) {}
    fn batch_end(&mut self, _batch: usize, _mean_loss: f64, _accuracy: f64, _items_per_second: f64) {}
    fn epoch_end(&mut self, _metrics: &M) {}
}

/// A [`Progress`] that reports nothing.
pub struct Quiet;
impl<M> Progress<M> for Quiet {}

pub struct Trained {
    pub model: DigitsCnn,
    pub epochs: Vec<EpochMetrics>,
    pub seconds: f64,
    /// With early stopping: the epoch whose weights `model` holds.
    pub best_epoch: Option<usize>,
}

impl Trained {
    /// The metrics of the epoch whose weights `model` holds (the last, or the best one kept by
    /// early stopping).
    pub fn kept(&self) -> &EpochMetrics {
        let i = self.best_epoch.map_or(self.epochs.len(), |e| e) - 1;
        &self.epochs[i]
    }
}

/// Trains an MNIST-shaped CNN from scratch on `data.train`, evaluating on `data.test` after
/// every epoch.
pub fn train(data: &Dataset, cfg: &TrainConfig, progress: &mut dyn Progress) -> Result<Trained> {
    train_shaped(data, CnnShape::DIGITS, cfg, progress)
}

/// Trains a CNN of shape `cnn` (the pictures' size and channels, the number of classes) from
/// scratch on `data.train`, evaluating on `data.test` (a validation split) after every epoch.
pub fn train_shaped(data: &Dataset, cnn: CnnShape, cfg: &TrainConfig, progress: &mut dyn Progress) -> Result<Trained> {
    match train_controlled(data, cnn, cfg, &Control::default(), progress)? {
        Outcome::Done(t) => Ok(t),
        Outcome::Interrupted { .. } => candle_core::bail!("interrupted without a stop flag"),
    }
}

/// An epoch's running sums, kept in a checkpoint.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct Sums {
    pub loss_sum: f64,
    pub correct: usize,
    pub seen: usize,
}

/// The settings a checkpoint must have been made with to be resumed.
fn fingerprint(data: &Dataset, cnn: CnnShape, cfg: &TrainConfig) -> String {
    format!(
        "{cnn:?} train={} eval={} epochs={} batch={} lr={} seed={} schedule={} patience={:?}",
        data.train.len(),
        data.test.len(),
        cfg.epochs,
        cfg.batch_size,
        cfg.learning_rate,
        cfg.seed,
        cfg.schedule.name(),
        cfg.patience
    )
}

/// [`train_shaped`] with checkpoints, resuming and interrupts: a run interrupted and resumed
/// gives the same model, bit for bit, as one that ran through (per-epoch shuffles are replayed
/// from the seed, the epoch's batches already done are skipped, Adam's moments come back).
pub fn train_controlled(
    data: &Dataset,
    cnn: CnnShape,
    cfg: &TrainConfig,
    control: &Control,
    progress: &mut dyn Progress,
) -> Result<Outcome<Trained>> {
    if cfg.batch_size == 0 || cfg.epochs == 0 {
        candle_core::bail!("epochs and batch size must be at least 1");
    }
    if data.train.is_empty() || data.test.is_empty() {
        candle_core::bail!("training needs at least one training and one test example");
    }
    let device = Device::Cpu;
    for (name, s) in [("training", &data.train), ("test", &data.test)] {
        if (s.rows, s.cols, s.channels) != (cnn.height, cnn.width, cnn.channels) {
            candle_core::bail!(
                "the {name} pictures are {}x{}x{}, the CNN takes {}x{}x{}",
                s.rows,
                s.cols,
                s.channels,
                cnn.height,
                cnn.width,
                cnn.channels
            );
        }
        if let Some(&bad) = s.labels.iter().find(|&&l| l as usize >= cnn.classes) {
            candle_core::bail!("a {name} label is {bad}, the CNN has {} classes", cnn.classes);
        }
    }
    let (model, vars) = DigitsCnn::init_shaped(cfg.seed, cnn, &device)?;
    let _flush = crate::kernels::denormals::FlushDenormals::new();
    let mut opt = Adam::new(vars.clone(), cfg.learning_rate)?;
    let (mut run, optimizer) =
        Run::<Sums, EpochMetrics>::begin(control, &vars, Adam::SLOTS, fingerprint(data, cnn, cfg), cfg.epochs)?;
    if let Some((state, steps)) = optimizer {
        opt.restore(&state, steps)?;
    }
    let mut order = run.replayed_order(data.train.len(), cfg.seed);
    let per_epoch = order.len().div_ceil(cfg.batch_size);
    let total_steps = per_epoch * cfg.epochs;
    let mut rate = cfg.learning_rate;
    for epoch in run.at.epoch..=cfg.epochs {
        shuffle_for_epoch(&mut order, cfg.seed, epoch);
        progress.epoch_start(epoch, per_epoch);
        let t0 = Instant::now();
        for (b, idx) in order.chunks(cfg.batch_size).enumerate().skip(run.at.batch) {
            let step = sharded_grads(&model, &vars, &data.train, idx, &device)?;
            rate = cfg.schedule.rate(cfg.learning_rate, (epoch - 1) * per_epoch + b, total_steps);
            opt.lr = rate;
            opt.step(&step.grads)?;
            let sums = &mut run.at.sums;
            sums.loss_sum += step.loss_sum;
            sums.correct += step.correct;
            sums.seen += idx.len();
            let ips = sums.seen as f64 / (run.at.epoch_seconds + t0.elapsed().as_secs_f64());
            progress.batch_end(b + 1, sums.loss_sum / sums.seen as f64, sums.correct as f64 / sums.seen as f64, ips);
            if run.stop_here(b + 1, opt.steps, t0.elapsed().as_secs_f64(), || opt.state())? {
                return Ok(Outcome::Interrupted { epoch, batch: b + 1 });
            }
        }
        let seconds = run.at.epoch_seconds + t0.elapsed().as_secs_f64();
        let (test_loss, test_accuracy) = evaluate(&model, &data.test, 256)?;
        let sums = &run.at.sums;
        let m = EpochMetrics {
            epoch,
            loss: sums.loss_sum / sums.seen as f64,
            accuracy: sums.correct as f64 / sums.seen as f64,
            test_loss,
            test_accuracy,
            seconds,
            images_per_second: sums.seen as f64 / seconds,
            learning_rate: rate,
        };
        progress.epoch_end(&m);
        if run.end_epoch(m, test_loss, epoch, cfg.epochs, cfg.patience, opt.steps, || opt.state())? {
            break;
        }
    }
    let (epochs, seconds, best_epoch) = run.finish()?;
    Ok(Outcome::Done(Trained { model: model.detached(), epochs, seconds, best_epoch }))
}

/// The summed gradients of one batch, and its loss and hit counts.
struct Step {
    grads: GradStore,
    loss_sum: f64,
    correct: usize,
}

/// Gradients of the batch's mean loss. The batch is split into one shard per compute thread;
/// each shard runs forward and backward on its own rayon worker with sequential kernels (less
/// synchronisation than splitting every GEMM), weighted by its share of the batch; the shard
/// gradients are then added in a fixed order, so a run is deterministic for a given thread count.
fn sharded_grads(model: &DigitsCnn, vars: &[Var], split: &Split, idx: &[usize], device: &Device) -> Result<Step> {
    let shards = crate::compute_threads().clamp(1, idx.len());
    let shard_len = idx.len().div_ceil(shards);
    let total = idx.len() as f64;
    let parts: Vec<Result<Step>> = idx
        .par_chunks(shard_len)
        .map(|part| {
            let (x, y) = gather(split, part, device)?;
            let logits = model.logits(&x)?;
            let loss = candle_nn::loss::cross_entropy(&logits, &y)?;
            let weighted = (&loss * (part.len() as f64 / total))?;
            Ok(Step {
                grads: weighted.backward()?,
                loss_sum: loss.to_scalar::<f32>()? as f64 * part.len() as f64,
                correct: count_correct(&logits, &y)?,
            })
        })
        .collect();
    let mut parts = parts.into_iter();
    let mut acc = parts.next().expect("at least one shard")?;
    for part in parts {
        let part = part?;
        add_grads(&mut acc.grads, &part.grads, vars)?;
        acc.loss_sum += part.loss_sum;
        acc.correct += part.correct;
    }
    Ok(acc)
}

/// Adds a shard's gradients of `vars` into `acc` (shards are added in a fixed order, so a run is
/// deterministic for a given thread count).
pub(crate) fn add_grads(acc: &mut GradStore, part: &GradStore, vars: &[Var]) -> Result<()> {
    for var in vars {
        if let (Some(a), Some(b)) = (acc.get(var), part.get(var)) {
            let sum = (a + b)?;
            acc.insert(var, sum);
        }
    }
    Ok(())
}

/// Mean cross-entropy and accuracy over a split.
pub fn evaluate(model: &DigitsCnn, split: &Split, batch_size: usize) -> Result<(f64, f64)> {
    let device = Device::Cpu;
    let all: Vec<usize> = (0..split.len()).collect();
    let (mut loss_sum, mut correct) = (0.0f64, 0usize);
    for idx in all.chunks(batch_size.max(1)) {
        let (x, y) = gather(split, idx, &device)?;
        let logits = model.logits(&x)?;
        loss_sum += candle_nn::loss::cross_entropy(&logits, &y)?.to_scalar::<f32>()? as f64 * idx.len() as f64;
        correct += count_correct(&logits, &y)?;
    }
    Ok((loss_sum / split.len() as f64, correct as f64 / split.len() as f64))
}

/// `matrix[true][predicted]`: how the model classifies each class of `split`.
pub fn confusion(model: &DigitsCnn, split: &Split, classes: usize) -> Result<Vec<Vec<u32>>> {
    let mut matrix = vec![vec![0u32; classes]; classes];
    let all: Vec<usize> = (0..split.len()).collect();
    for idx in all.chunks(256) {
        let (x, y) = gather(split, idx, &Device::Cpu)?;
        let predicted = model.logits(&x)?.argmax(D::Minus1)?.to_vec1::<u32>()?;
        for (t, p) in y.to_vec1::<u32>()?.into_iter().zip(predicted) {
            matrix[t as usize][p as usize] += 1;
        }
    }
    Ok(matrix)
}

/// Images `[n, rows, cols, channels]` scaled to [0, 1] and labels `[n]` (u32) for the given indices.
pub fn gather(split: &Split, idx: &[usize], device: &Device) -> Result<(Tensor, Tensor)> {
    let len = split.image_len();
    let mut pixels = Vec::with_capacity(idx.len() * len);
    let mut labels = Vec::with_capacity(idx.len());
    for &i in idx {
        pixels.extend(split.images[i * len..(i + 1) * len].iter().map(|&p| p as f32 / 255.0));
        labels.push(split.labels[i] as u32);
    }
    let x = Tensor::from_vec(pixels, (idx.len(), split.rows, split.cols, split.channels), device)?;
    let y = Tensor::from_vec(labels, idx.len(), device)?;
    Ok((x, y))
}

fn count_correct(logits: &Tensor, labels: &Tensor) -> Result<usize> {
    let hits = logits.argmax(D::Minus1)?.eq(labels)?.to_dtype(DType::U32)?.sum_all()?;
    Ok(hits.to_scalar::<u32>()? as usize)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A learnable toy task: class = which of ten horizontal bands is lit.
    pub(crate) fn bands(n: usize) -> Split {
        let mut images = vec![0u8; n * 784];
        let labels: Vec<u8> = (0..n).map(|i| (i * 7 % 10) as u8).collect();
        for (i, &l) in labels.iter().enumerate() {
            let row0 = 2 + l as usize * 2;
            for r in row0..row0 + 2 {
                for c in 4..24 {
                    images[i * 784 + r * 28 + c] = 200 + (i % 50) as u8;
                }
            }
        }
        Split { images, labels, rows: 28, cols: 28, channels: 1 }
    }

    #[test]
    fn learns_a_toy_task_deterministically() {
        let data = Dataset { train: bands(320), test: bands(60) };
        let cfg = TrainConfig { epochs: 3, batch_size: 32, learning_rate: 3e-3, seed: 1, ..TrainConfig::default() };
        let a = train(&data, &cfg, &mut Quiet).unwrap();
        let last = a.epochs.last().unwrap();
        assert!(last.test_accuracy > 0.9, "toy task accuracy {}", last.test_accuracy);
        assert!(a.epochs[0].loss > last.loss);
        let b = train(&data, &cfg, &mut Quiet).unwrap();
        assert_eq!(
            a.epochs.iter().map(|e| e.loss).collect::<Vec<_>>(),
            b.epochs.iter().map(|e| e.loss).collect::<Vec<_>>()
        );
    }

    /// The evaluation set's labels are shifted by one, so the better the model learns the
    /// training task the worse its evaluation loss gets: with patience 1 training stops at
    /// epoch 2 and keeps epoch 1's weights.
    #[test]
    fn early_stopping_keeps_the_best_epoch() {
        let mut test = bands(60);
        test.labels.iter_mut().for_each(|l| *l = (*l + 1) % 10);
        let data = Dataset { train: bands(320), test };
        let cfg = TrainConfig { epochs: 6, learning_rate: 3e-3, seed: 1, patience: Some(1), ..TrainConfig::default() };
        let t = train(&data, &cfg, &mut Quiet).unwrap();
        assert_eq!(t.epochs.len(), 2, "{:?}", t.epochs.iter().map(|e| e.test_loss).collect::<Vec<_>>());
        assert_eq!(t.best_epoch, Some(1));
        let (loss, _) = evaluate(&t.model, &data.test, 64).unwrap();
        assert!((loss - t.epochs[0].test_loss).abs() < 1e-9, "the kept weights are epoch 1's: {loss}");
    }

    /// Stops after batch 5 of epoch 2 (a Ctrl-C), resumes from the checkpoint, and ends with the
    /// weights and metrics of a run that went straight through; a checkpoint of other settings
    /// is refused.
    #[test]
    fn an_interrupted_run_resumes_exactly() {
        use crate::checkpoint::testing::StopAt;
        use std::sync::atomic::AtomicBool;
        let data = Dataset { train: bands(320), test: bands(60) };
        let cfg = TrainConfig { epochs: 3, learning_rate: 3e-3, seed: 4, patience: Some(5), ..TrainConfig::default() };
        let straight = train(&data, &cfg, &mut Quiet).unwrap();
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join(".checkpoint");
        let stop = AtomicBool::new(false);
        let control = Control { checkpoint: Some(&dir), resume: false, stop: Some(&stop) };
        let out = train_controlled(&data, CnnShape::DIGITS, &cfg, &control, &mut StopAt::new(&stop, 2, 5)).unwrap();
        assert!(matches!(out, Outcome::Interrupted { epoch: 2, batch: 5 }));
        let control = Control { checkpoint: Some(&dir), resume: true, stop: None };
        let Outcome::Done(resumed) = train_controlled(&data, CnnShape::DIGITS, &cfg, &control, &mut Quiet).unwrap()
        else {
            panic!("not interrupted this time")
        };
        let loss = |t: &Trained| t.epochs.iter().map(|e| (e.loss, e.test_loss, e.accuracy)).collect::<Vec<_>>();
        assert_eq!(loss(&resumed), loss(&straight));
        let x = Tensor::from_vec(
            data.test.images[..784].iter().map(|&p| p as f32 / 255.0).collect(),
            (1, 28, 28, 1),
            &Device::Cpu,
        )
        .unwrap();
        let logits = |t: &Trained| t.model.logits(&x).unwrap().to_vec2::<f32>().unwrap();
        assert_eq!(logits(&resumed), logits(&straight), "bit for bit the same model");
        let other = TrainConfig { seed: 5, ..cfg };
        let err = train_controlled(&data, CnnShape::DIGITS, &other, &control, &mut Quiet).err().unwrap().to_string();
        assert!(err.contains("is of another run"), "{err}");
    }

    #[test]
    fn cosine_schedule_decays_to_zero() {
        let s = Schedule::Cosine;
        assert_eq!(s.rate(1e-3, 0, 100), 1e-3);
        assert!((s.rate(1e-3, 50, 100) - 5e-4).abs() < 1e-12);
        assert!(s.rate(1e-3, 99, 100) < 1e-6);
        assert_eq!(Schedule::Constant.rate(1e-3, 99, 100), 1e-3);
        assert_eq!("cosine".parse::<Schedule>(), Ok(Schedule::Cosine));
        assert!("linear".parse::<Schedule>().unwrap_err().contains("constant or cosine"));
        let data = Dataset { train: bands(64), test: bands(20) };
        let cfg = TrainConfig { epochs: 2, schedule: Schedule::Cosine, ..TrainConfig::default() };
        let t = train(&data, &cfg, &mut Quiet).unwrap();
        // 2 steps an epoch, 4 in all: each epoch records its last step's rate.
        assert_eq!(t.epochs[0].learning_rate, s.rate(1e-3, 1, 4));
        assert_eq!(t.epochs[1].learning_rate, s.rate(1e-3, 3, 4));
        assert!(t.epochs[1].learning_rate < 0.2e-3);
    }
}
