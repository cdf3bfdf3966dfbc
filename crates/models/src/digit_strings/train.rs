//! Training the digit-string reader as the seed trains its sequence model: teacher forcing,
//! RMSprop, sparse categorical cross-entropy (over each string's digits and its end token),
//! a validation split of 0.2, deterministic for a given seed.
//!
//! Data: strings of 1 to [`MAX_DIGITS`] real MNIST digits ([`compose`]); training strings are
//! made of the first 80% of the training pictures, validation strings of the rest (the split is
//! of pictures, so no digit picture is in both), test strings of the test set's pictures only.
//! After every epoch the validation strings are also read greedily, as served, and the share
//! read exactly is recorded.

use std::ops::RangeInclusive;
use std::time::Instant;

use candle_core::backprop::GradStore;
use candle_core::{Device, Result, Tensor, Var};
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use super::compose::{compose, Strings};
use super::rmsprop::RmsProp;
use super::{masked_hits, masked_loss, DigitStrings, END, HEIGHT, MAX_DIGITS, START, WIDTH};
use crate::checkpoint::{shuffle_for_epoch, Control, Outcome, Run};
use crate::digits::train::{add_grads, Progress, TrainConfig};
use crate::mnist::{Dataset, Split};

/// What a run trains and validates on: the pictures training strings are composed of (a new
/// set of strings every epoch, from the seed and the epoch, unless `fresh` is off: more strings
/// than any fixed set, so the network learns digits instead of remembering strings), and the
/// fixed validation strings.
#[derive(Debug)]
pub struct StringsData {
    pub pictures: Split,
    pub per_epoch: usize,
    /// How many digits a training string has (1 to [`MAX_DIGITS`] in a real run).
    pub lengths: RangeInclusive<usize>,
    pub seed: u64,
    pub fresh: bool,
    pub validation: Strings,
}

impl StringsData {
    /// The training strings of `epoch` (1-based).
    pub fn train_strings(&self, epoch: usize) -> Result<Strings> {
        let round = if self.fresh { epoch as u64 - 1 } else { 0 };
        let seed = self.seed.wrapping_add(round.wrapping_mul(1_000_003));
        compose(&self.pictures, 0..self.pictures.len(), self.per_epoch, self.lengths.clone(), seed)
            .map_err(candle_core::Error::msg)
    }
}

/// `count` strings of 1 to [`MAX_DIGITS`] digits from `mnist.train` per epoch, `validation_split`
/// of them for validation, composed of the pictures the same share from the end (Keras'
/// `validation_split` holds out the last samples too).
pub fn strings_data(
    mnist: &Dataset,
    count: usize,
    validation_split: f64,
    seed: u64,
    fresh: bool,
) -> std::result::Result<StringsData, String> {
    if !(0.0..1.0).contains(&validation_split) || validation_split == 0.0 {
        return Err(format!("the validation split must be in (0, 1), got {validation_split}"));
    }
    let pictures = mnist.train.len();
    let cut = ((pictures as f64) * (1.0 - validation_split)).round() as usize;
    let val_count = ((count as f64) * validation_split).round() as usize;
    if cut == 0 || cut == pictures || val_count == 0 || val_count == count {
        return Err(format!(
            "{count} strings of {pictures} pictures leave nothing to train or validate on with a split of {validation_split}"
        ));
    }
    Ok(StringsData {
        pictures: mnist.train.take(cut),
        per_epoch: count - val_count,
        lengths: 1..=MAX_DIGITS,
        seed,
        fresh,
        validation: compose(&mnist.train, cut..pictures, val_count, 1..=MAX_DIGITS, seed.wrapping_add(1))?,
    })
}

/// `count` test strings of 1 to [`MAX_DIGITS`] digits made of `mnist.test`'s pictures only.
pub fn test_strings(mnist: &Dataset, count: usize, seed: u64) -> std::result::Result<Strings, String> {
    compose(&mnist.test, 0..mnist.test.len(), count, 1..=MAX_DIGITS, seed.wrapping_add(2))
}

/// What one epoch measured (the version's `metrics.json`).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct StringEpoch {
    pub epoch: usize,
    /// Mean cross-entropy per token and the share of tokens predicted (teacher-forced).
    pub loss: f64,
    pub accuracy: f64,
    pub val_loss: f64,
    pub val_accuracy: f64,
    /// The share of validation strings read exactly by greedy decoding.
    pub val_string_accuracy: f64,
    pub seconds: f64,
    pub strings_per_second: f64,
    pub learning_rate: f64,
}

pub struct TrainedStrings {
    pub model: DigitStrings,
    pub epochs: Vec<StringEpoch>,
    pub seconds: f64,
    /// With early stopping: the epoch whose weights `model` holds.
    pub best_epoch: Option<usize>,
}

/// Trains a reader with LSTMs of `latent` units from scratch on strings composed from
/// `data.pictures`, validating after every epoch; `cfg`'s rate is RMSprop's (Keras' default is
/// `TrainConfig`'s 1e-3). The batch progress reports tokens: loss and accuracy per token,
/// strings per second.
pub fn train(
    data: &StringsData,
    cfg: &TrainConfig,
    latent: usize,
    progress: &mut dyn Progress<StringEpoch>,
) -> Result<TrainedStrings> {
    match train_controlled(data, cfg, latent, &Control::default(), progress)? {
        Outcome::Done(t) => Ok(t),
        Outcome::Interrupted { .. } => candle_core::bail!("interrupted without a stop flag"),
    }
}

/// An epoch's running sums, kept in a checkpoint.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct Sums {
    pub loss_sum: f64,
    pub hits: usize,
    pub tokens: f64,
    pub seen: usize,
}

/// The settings a checkpoint must have been made with to be resumed.
fn fingerprint(data: &StringsData, cfg: &TrainConfig, latent: usize) -> String {
    format!(
        "digit_strings latent={latent} pictures={} strings={} lengths={:?} data_seed={} fresh={} validation={} epochs={} batch={} lr={} seed={} schedule={} patience={:?}",
        data.pictures.len(),
        data.per_epoch,
        data.lengths,
        data.seed,
        data.fresh,
        data.validation.len(),
        cfg.epochs,
        cfg.batch_size,
        cfg.learning_rate,
        cfg.seed,
        cfg.schedule.name(),
        cfg.patience
    )
}

/// [`train`] with checkpoints, resuming and interrupts: a run interrupted and resumed gives the
/// same model, bit for bit, as one that ran through (the epoch's strings are composed again from
/// the seed, its shuffles replayed, the batches already done skipped, RMSprop's state restored).
pub fn train_controlled(
    data: &StringsData,
    cfg: &TrainConfig,
    latent: usize,
    control: &Control,
    progress: &mut dyn Progress<StringEpoch>,
) -> Result<Outcome<TrainedStrings>> {
    if cfg.batch_size == 0 || cfg.epochs == 0 {
        candle_core::bail!("epochs and batch size must be at least 1");
    }
    if data.per_epoch == 0 || data.pictures.is_empty() || data.validation.is_empty() {
        candle_core::bail!("training needs at least one training and one validation string");
    }
    let device = Device::Cpu;
    let (model, vars) = DigitStrings::init(cfg.seed, latent, &device)?;
    let _flush = crate::kernels::denormals::FlushDenormals::new();
    let mut opt = RmsProp::new(vars.clone(), cfg.learning_rate)?;
    let (mut run, optimizer) =
        Run::<Sums, StringEpoch>::begin(control, &vars, RmsProp::SLOTS, fingerprint(data, cfg, latent), cfg.epochs)?;
    if let Some((state, steps)) = optimizer {
        opt.restore(&state, steps)?;
    }
    let mut order = run.replayed_order(data.per_epoch, cfg.seed);
    let per_epoch = order.len().div_ceil(cfg.batch_size);
    let total_steps = per_epoch * cfg.epochs;
    let mut rate = cfg.learning_rate;
    // Composed for each epoch, or once for a fixed set.
    let mut strings: Option<Strings> = None;
    for epoch in run.at.epoch..=cfg.epochs {
        if data.fresh || strings.is_none() {
            strings = Some(data.train_strings(epoch)?);
        }
        let strings = strings.as_ref().expect("composed above");
        shuffle_for_epoch(&mut order, cfg.seed, epoch);
        progress.epoch_start(epoch, per_epoch);
        let t0 = Instant::now();
        for (b, idx) in order.chunks(cfg.batch_size).enumerate().skip(run.at.batch) {
            let step = sharded_grads(&model, &vars, strings, idx, &device)?;
            rate = cfg.schedule.rate(cfg.learning_rate, (epoch - 1) * per_epoch + b, total_steps);
            opt.lr = rate;
            opt.step(&step.grads)?;
            let sums = &mut run.at.sums;
            sums.loss_sum += step.loss_sum;
            sums.hits += step.hits;
            sums.tokens += step.tokens;
            sums.seen += idx.len();
            let sps = sums.seen as f64 / (run.at.epoch_seconds + t0.elapsed().as_secs_f64());
            progress.batch_end(b + 1, sums.loss_sum / sums.tokens, sums.hits as f64 / sums.tokens, sps);
            if run.stop_here(b + 1, opt.steps, t0.elapsed().as_secs_f64(), || opt.state())? {
                return Ok(Outcome::Interrupted { epoch, batch: b + 1 });
            }
        }
        let seconds = run.at.epoch_seconds + t0.elapsed().as_secs_f64();
        let served = model.detached();
        let (val_loss, val_accuracy) = evaluate(&served, &data.validation)?;
        let val_string_accuracy = string_accuracy(&served, &data.validation)?;
        let sums = &run.at.sums;
        let m = StringEpoch {
            epoch,
            loss: sums.loss_sum / sums.tokens,
            accuracy: sums.hits as f64 / sums.tokens,
            val_loss,
            val_accuracy,
            val_string_accuracy,
            seconds,
            strings_per_second: sums.seen as f64 / seconds,
            learning_rate: rate,
        };
        progress.epoch_end(&m);
        if run.end_epoch(m, val_loss, epoch, cfg.epochs, cfg.patience, opt.steps, || opt.state())? {
            break;
        }
    }
    let (epochs, seconds, best_epoch) = run.finish()?;
    Ok(Outcome::Done(TrainedStrings { model: model.detached(), epochs, seconds, best_epoch }))
}

struct Step {
    grads: GradStore,
    loss_sum: f64,
    hits: usize,
    tokens: f64,
}

/// Gradients of the batch's mean loss per token: one shard per compute thread, each forward and
/// backward on its own rayon worker, weighted by its share of the batch's tokens and added in a
/// fixed order (deterministic for a given thread count).
fn sharded_grads(model: &DigitStrings, vars: &[Var], data: &Strings, idx: &[usize], device: &Device) -> Result<Step> {
    let shards = crate::compute_threads().clamp(1, idx.len());
    let shard_len = idx.len().div_ceil(shards);
    let total: usize = idx.iter().map(|&i| data.digits[i].len() + 1).sum();
    let parts: Vec<Result<Step>> = idx
        .par_chunks(shard_len)
        .map(|part| {
            let b = batch(data, part, device)?;
            let logits = model.logits(&b.x, &b.inputs)?;
            let (loss, tokens) = masked_loss(&logits, &b.targets, &b.mask)?;
            let weighted = (&loss * (tokens / total as f64))?;
            Ok(Step {
                grads: weighted.backward()?,
                loss_sum: loss.to_scalar::<f32>()? as f64 * tokens,
                hits: masked_hits(&logits, &b.targets, &b.mask)?,
                tokens,
            })
        })
        .collect();
    let mut parts = parts.into_iter();
    let mut acc = parts.next().expect("at least one shard")?;
    for part in parts {
        let part = part?;
        add_grads(&mut acc.grads, &part.grads, vars)?;
        acc.loss_sum += part.loss_sum;
        acc.hits += part.hits;
        acc.tokens += part.tokens;
    }
    Ok(acc)
}

/// One batch: pictures `[n, HEIGHT, WIDTH, 1]` in [0, 1]; decoder inputs ([`START`], digits),
/// targets (digits, [`END`]) and the mask of real positions, `[n, L]` for the longest string + 1.
pub struct Batch {
    pub x: Tensor,
    pub inputs: Tensor,
    pub targets: Tensor,
    pub mask: Tensor,
}

pub fn batch(data: &Strings, idx: &[usize], device: &Device) -> Result<Batch> {
    let l = idx.iter().map(|&i| data.digits[i].len()).max().unwrap_or(0) + 1;
    let n = idx.len();
    let mut pixels = Vec::with_capacity(n * Strings::IMAGE_LEN);
    let (mut inputs, mut targets, mut mask) = (vec![END; n * l], vec![END; n * l], vec![0f32; n * l]);
    for (row, &i) in idx.iter().enumerate() {
        pixels.extend(data.image(i).iter().map(|&p| p as f32 / 255.0));
        let digits = &data.digits[i];
        inputs[row * l] = START;
        for (k, &d) in digits.iter().enumerate() {
            inputs[row * l + k + 1] = d as u32;
            targets[row * l + k] = d as u32;
        }
        mask[row * l..row * l + digits.len() + 1].fill(1.0);
    }
    Ok(Batch {
        x: Tensor::from_vec(pixels, (n, HEIGHT, WIDTH, 1), device)?,
        inputs: Tensor::from_vec(inputs, (n, l), device)?,
        targets: Tensor::from_vec(targets, (n, l), device)?,
        mask: Tensor::from_vec(mask, (n, l), device)?,
    })
}

/// Teacher-forced mean loss per token and token accuracy over `data`.
pub fn evaluate(model: &DigitStrings, data: &Strings) -> Result<(f64, f64)> {
    let all: Vec<usize> = (0..data.len()).collect();
    let (mut loss_sum, mut hits, mut tokens) = (0.0f64, 0usize, 0.0f64);
    for idx in all.chunks(256) {
        let b = batch(data, idx, &Device::Cpu)?;
        let logits = model.logits(&b.x, &b.inputs)?;
        let (loss, n) = masked_loss(&logits, &b.targets, &b.mask)?;
        loss_sum += loss.to_scalar::<f32>()? as f64 * n;
        hits += masked_hits(&logits, &b.targets, &b.mask)?;
        tokens += n;
    }
    Ok((loss_sum / tokens.max(1.0), hits as f64 / tokens.max(1.0)))
}

/// The share of `data`'s strings greedy decoding reads exactly.
pub fn string_accuracy(model: &DigitStrings, data: &Strings) -> Result<f64> {
    let all: Vec<usize> = (0..data.len()).collect();
    let mut exact = 0usize;
    for idx in all.chunks(256) {
        let b = batch(data, idx, &Device::Cpu)?;
        for (r, &i) in model.read(&b.x)?.iter().zip(idx) {
            exact += usize::from(r.digits == data.digits[i]);
        }
    }
    Ok(exact as f64 / data.len().max(1) as f64)
}

/// `matrix[true][read]` over the digits of the strings greedy decoding reads at their true length.
pub fn digit_confusion(model: &DigitStrings, data: &Strings) -> Result<Vec<Vec<u32>>> {
    let mut matrix = vec![vec![0u32; 10]; 10];
    let all: Vec<usize> = (0..data.len()).collect();
    for idx in all.chunks(256) {
        let b = batch(data, idx, &Device::Cpu)?;
        for (r, &i) in model.read(&b.x)?.iter().zip(idx) {
            if r.digits.len() == data.digits[i].len() {
                for (&t, &p) in data.digits[i].iter().zip(&r.digits) {
                    matrix[t as usize][p as usize] += 1;
                }
            }
        }
    }
    Ok(matrix)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::digits::train::Quiet;
    use crate::mnist::Split;

    /// Ten made-up "digits": digit d lights a bar at row 2 + 2d of its box, beside a stroke as
    /// tall as every digit (so the layout scales them all alike).
    fn bars() -> Split {
        let mut images = vec![0u8; 10 * 784];
        for d in 0..10 {
            for r in 2..24 {
                for c in 6..8 {
                    images[d * 784 + r * 28 + c] = 255;
                }
            }
            for r in 2 + 2 * d..4 + 2 * d {
                for c in 8..22 {
                    images[d * 784 + r * 28 + c] = 255;
                }
            }
        }
        Split { images, labels: (0..10).collect(), rows: 28, cols: 28, channels: 1 }
    }

    #[test]
    fn batches_hold_teacher_forcing_inputs_targets_and_mask() {
        let strings = Strings { images: vec![0; 2 * Strings::IMAGE_LEN], digits: vec![vec![3, 1], vec![7]] };
        let b = batch(&strings, &[0, 1], &Device::Cpu).unwrap();
        assert_eq!(b.inputs.to_vec2::<u32>().unwrap(), [[START, 3, 1], [START, 7, END]]);
        assert_eq!(b.targets.to_vec2::<u32>().unwrap(), [[3, 1, END], [7, END, END]]);
        assert_eq!(b.mask.to_vec2::<f32>().unwrap(), [[1.0, 1.0, 1.0], [1.0, 1.0, 0.0]]);
        assert_eq!(b.x.dims(), &[2, HEIGHT, WIDTH, 1]);
    }

    /// Short strings of bar "digits" are being learned, and the same seed trains the same model.
    #[test]
    fn learns_toy_strings_deterministically() {
        let split = bars();
        let data = StringsData {
            pictures: split.clone(),
            per_epoch: 768,
            lengths: 1..=2,
            seed: 1,
            fresh: true,
            validation: compose(&split, 0..10, 64, 1..=2, 2).unwrap(),
        };
        let cfg = TrainConfig { epochs: 3, learning_rate: 3e-3, seed: 3, ..Default::default() };
        let a = train(&data, &cfg, 32, &mut Quiet).unwrap();
        let (first, last) = (&a.epochs[0], a.epochs.last().unwrap());
        // Chance is one token in eleven; 72 steps take the loss down and the validation tokens
        // past half (the real data's bar is checked on the committed model).
        assert!(last.loss < first.loss * 0.9, "{:?}", a.epochs);
        assert!(last.val_accuracy > 0.5, "{:?}", a.epochs);
        let b = train(&data, &TrainConfig { epochs: 1, ..cfg }, 32, &mut Quiet).unwrap();
        assert_eq!((b.epochs[0].loss, b.epochs[0].val_loss), (first.loss, first.val_loss));
    }

    /// Every validation string is labelled "999999" (its pictures hold one or two digits), so
    /// the better the training task is learned the worse the validation loss: with patience 1
    /// training stops after epoch 2 and keeps epoch 1's weights.
    #[test]
    fn early_stopping_keeps_the_best_epoch() {
        let split = bars();
        let mut validation = compose(&split, 0..10, 64, 1..=2, 2).unwrap();
        validation.digits.iter_mut().for_each(|d| *d = vec![9; MAX_DIGITS]);
        let data = StringsData { pictures: split, per_epoch: 768, lengths: 1..=2, seed: 1, fresh: true, validation };
        let cfg = TrainConfig { epochs: 6, learning_rate: 3e-3, seed: 3, patience: Some(1), ..Default::default() };
        let t = train(&data, &cfg, 32, &mut Quiet).unwrap();
        let losses: Vec<f64> = t.epochs.iter().map(|e| e.val_loss).collect();
        assert_eq!((t.epochs.len(), t.best_epoch), (2, Some(1)), "{losses:?}");
        let (loss, _) = evaluate(&t.model, &data.validation).unwrap();
        assert!((loss - losses[0]).abs() < 1e-6, "the kept weights are epoch 1's: {loss} vs {losses:?}");
    }

    /// Stops after batch 4 of epoch 2 (a Ctrl-C), resumes from the checkpoint, and ends with the
    /// weights and metrics of a run that went straight through (new strings every epoch, early
    /// stopping's best kept across the interrupt); a checkpoint of other settings is refused.
    #[test]
    fn an_interrupted_run_resumes_exactly() {
        use crate::checkpoint::testing::StopAt;
        use std::sync::atomic::AtomicBool;
        let split = bars();
        let data = StringsData {
            pictures: split.clone(),
            per_epoch: 320,
            lengths: 1..=2,
            seed: 1,
            fresh: true,
            validation: compose(&split, 0..10, 32, 1..=2, 2).unwrap(),
        };
        let cfg = TrainConfig { epochs: 3, learning_rate: 3e-3, seed: 4, patience: Some(5), ..Default::default() };
        let straight = train(&data, &cfg, 16, &mut Quiet).unwrap();
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join(".checkpoint");
        let stop = AtomicBool::new(false);
        let control = Control { checkpoint: Some(&dir), resume: false, stop: Some(&stop) };
        let out = train_controlled(&data, &cfg, 16, &control, &mut StopAt::new(&stop, 2, 4)).unwrap();
        assert!(matches!(out, Outcome::Interrupted { epoch: 2, batch: 4 }));
        let control = Control { checkpoint: Some(&dir), resume: true, stop: None };
        let Outcome::Done(resumed) = train_controlled(&data, &cfg, 16, &control, &mut Quiet).unwrap() else {
            panic!("not interrupted this time")
        };
        let metrics = |t: &TrainedStrings| {
            t.epochs.iter().map(|e| (e.loss, e.accuracy, e.val_loss, e.val_string_accuracy)).collect::<Vec<_>>()
        };
        assert_eq!(metrics(&resumed), metrics(&straight));
        assert_eq!(resumed.best_epoch, straight.best_epoch);
        let b = batch(&data.validation, &[0, 1, 2], &Device::Cpu).unwrap();
        let logits = |t: &TrainedStrings| t.model.logits(&b.x, &b.inputs).unwrap().flatten_all().unwrap();
        let (x, y) = (logits(&resumed).to_vec1::<f32>().unwrap(), logits(&straight).to_vec1::<f32>().unwrap());
        assert_eq!(x, y, "bit for bit the same model");
        let err = train_controlled(&data, &cfg, 8, &control, &mut Quiet).err().unwrap().to_string();
        assert!(err.contains("is of another run"), "{err}");
    }

    #[test]
    fn validation_strings_use_their_own_pictures() {
        let mut train = bars();
        // 20 pictures: the first 16 train, the last 4 (all nines) validate.
        train.images = [train.images.clone(), train.images[9 * 784..].repeat(10)].concat();
        train.labels.extend([9; 10]);
        let mnist = Dataset { train: train.clone(), test: train };
        let d = strings_data(&mnist, 100, 0.2, 0, true).unwrap();
        assert_eq!((d.per_epoch, d.pictures.len(), d.validation.len()), (80, 16, 20));
        assert!(d.validation.digits.iter().flatten().all(|&x| x == 9));
        // Each epoch its own strings, the same for the same epoch; or always the first's.
        let (one, two) = (d.train_strings(1).unwrap(), d.train_strings(2).unwrap());
        assert_ne!(one, two);
        assert_eq!(two, d.train_strings(2).unwrap());
        let fixed = StringsData { fresh: false, ..d };
        assert_eq!(fixed.train_strings(2).unwrap(), one);
        assert!(strings_data(&mnist, 100, 0.0, 0, true).is_err());
        assert!(strings_data(&mnist, 1, 0.2, 0, true).unwrap_err().contains("nothing to train"));
    }
}
