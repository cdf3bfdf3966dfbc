//! `aiserve train digit-strings`: the seed's CNN + LSTM encoder-decoder on strings of 1 to 6
//! MNIST digits, published as an `image_to_text` version that `/classify` and KServe v2 read
//! strings with.

use std::path::PathBuf;

use aiserve_core::config::TrainingProvenance;
use aiserve_models::digit_strings::publish::{publish, version_config};
use aiserve_models::digit_strings::train::{
    digit_confusion, evaluate, string_accuracy, strings_data, test_strings, train_controlled, StringEpoch,
};
use aiserve_models::digit_strings::MAX_DIGITS;
use aiserve_models::digits::report::Report;
use aiserve_models::digits::train::{EpochMetrics, Schedule, TrainConfig};
use aiserve_models::mnist;
use anyhow::Context;

use super::{checkpointing, finish, finished, model_name, Shown, TrainArgs, STOP};
use aiserve_models::checkpoint::Control;

/// Test strings read after training when `--limit-test` does not say.
const TEST_STRINGS: usize = 5_000;

fn summary(m: &StringEpoch, eval: &'static str) -> (usize, String) {
    let line = format!(
        "loss {:.4} token acc {:.2}% | {eval} loss {:.4} token acc {:.2}% strings read {:.2}% | {:.1} s, {:.0} strings/s",
        m.loss,
        m.accuracy * 100.0,
        m.val_loss,
        m.val_accuracy * 100.0,
        m.val_string_accuracy * 100.0,
        m.seconds,
        m.strings_per_second
    );
    (m.epoch, line)
}

pub fn run(args: &TrainArgs, cfg: &TrainConfig) -> anyhow::Result<()> {
    // Flags of the CNN tasks that this one does not take: refused by name, never ignored.
    let other = [
        ("--limit-train (give --strings)", args.limit_train.is_some()),
        ("--test-data", args.test_data.is_some()),
        ("--size", args.size.is_some()),
        ("--channels", args.channels.is_some()),
    ];
    if let Some((flag, _)) = other.iter().find(|(_, given)| *given) {
        anyhow::bail!("digit-strings does not take {flag}; see `aiserve train --help`");
    }
    let name = model_name(args, Some("digit-strings"))?;
    let dir = args.data.clone().unwrap_or_else(|| PathBuf::from("../shared/data/mnist"));
    let mnist = mnist::load_dir(&dir).with_context(|| format!("reading MNIST from {}", dir.display()))?;
    let data = strings_data(&mnist, args.strings, args.validation_split, args.seed, !args.fixed_strings)
        .map_err(anyhow::Error::msg)?;
    let test = test_strings(&mnist, args.limit_test.unwrap_or(TEST_STRINGS), args.seed).map_err(anyhow::Error::msg)?;
    let latent = args.latent_dim;
    let checkpoint = checkpointing(args, &name)?;
    println!(
        "training digit_strings (latent_dim {}) on {} {}strings of 1-{MAX_DIGITS} MNIST digits an epoch ({} validation), {} epochs, batch {}, RMSprop lr {}, seed {}, {} threads{}",
        latent,
        data.per_epoch,
        if data.fresh { "new " } else { "" },
        data.validation.len(),
        cfg.epochs,
        cfg.batch_size,
        cfg.learning_rate,
        cfg.seed,
        aiserve_models::compute_threads(),
        if args.resume { ", resuming" } else { "" }
    );
    let mut shown = Shown::new(args.quiet, cfg.epochs, ("token acc", "strings/s"), "validation", summary);
    let control = Control { checkpoint: Some(&checkpoint), resume: args.resume, stop: Some(&STOP) };
    let trained = finish(train_controlled(&data, cfg, latent, &control, &mut shown)?, &checkpoint)?;
    if let Some(best) = trained.best_epoch {
        println!("early stopping after epoch {}: kept epoch {best}, the lowest validation loss", trained.epochs.len());
    }
    let up_to_5 = test.with_lengths(1..=5);
    let accuracy = string_accuracy(&trained.model, &up_to_5)?;
    let (test_loss, _) = evaluate(&trained.model, &up_to_5)?;
    let six = string_accuracy(&trained.model, &test.with_lengths(6..=6))?;
    println!(
        "test strings read exactly: {:.2}% of {} with 1-5 digits, {:.2}% with 6 (after {:.1} s)",
        accuracy * 100.0,
        up_to_5.len(),
        six * 100.0,
        trained.seconds
    );
    let prov = TrainingProvenance {
        data: dir.display().to_string(),
        train_examples: data.per_epoch,
        epochs: cfg.epochs,
        batch_size: cfg.batch_size,
        learning_rate: cfg.learning_rate,
        seed: cfg.seed,
        test_accuracy: accuracy,
        test_loss,
        train_seconds: (trained.seconds * 10.0).round() / 10.0,
        aiserve_version: env!("CARGO_PKG_VERSION").into(),
        lr_schedule: (cfg.schedule != Schedule::Constant).then(|| cfg.schedule.name().into()),
        early_stopping: cfg.patience,
        best_epoch: trained.best_epoch,
    };
    let config = version_config(Some(prov));
    // The curves: per-token loss and accuracy, training against validation.
    let curves: Vec<EpochMetrics> = trained
        .epochs
        .iter()
        .map(|e| EpochMetrics {
            epoch: e.epoch,
            loss: e.loss,
            accuracy: e.accuracy,
            test_loss: e.val_loss,
            test_accuracy: e.val_accuracy,
            seconds: e.seconds,
            images_per_second: e.strings_per_second,
            learning_rate: e.learning_rate,
        })
        .collect();
    let report = Report {
        epochs: &curves,
        eval: "validation",
        confusion: digit_confusion(&trained.model, &up_to_5)?,
        labels: &config.labels,
        counted: "digits",
    };
    let (version, path) = publish(&args.repo, &name, &trained.model, &config, &trained.epochs, Some(&report))
        .with_context(|| format!("publishing into {}", args.repo.display()))?;
    finished(args, &name);
    println!("published {name} version {version} at {}", path.display());
    Ok(())
}
