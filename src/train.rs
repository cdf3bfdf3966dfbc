//! `aiserve train digits`: train the CNN on an MNIST-format directory and publish a new version.

use std::path::PathBuf;

use aiserve_core::config::TrainingProvenance;
use aiserve_core::ModelName;
use aiserve_models::digits::publish::publish;
use aiserve_models::digits::train::{train, EpochMetrics, Progress, TrainConfig};
use aiserve_models::mnist;
use anyhow::Context;
use indicatif::{ProgressBar, ProgressStyle};

#[derive(clap::Args, Debug)]
pub struct TrainArgs {
    /// What to train; `digits` is the MNIST CNN.
    #[arg(value_enum)]
    pub task: Task,
    /// Directory with the four MNIST IDX files (gzipped or not).
    #[arg(long, env = "AISERVE_DATA", default_value = "../shared/data/mnist")]
    pub data: PathBuf,
    /// Model repository to publish into (`<repo>/<model>/<N+1>/`).
    #[arg(long, env = "AISERVE_REPO", default_value = "models")]
    pub repo: PathBuf,
    /// Model name in the repository.
    #[arg(long, env = "AISERVE_TRAIN_MODEL", default_value = "digits")]
    pub model: String,
    /// Passes over the training set; more epochs trade time for accuracy (10 reaches ~99%).
    #[arg(long, env = "AISERVE_TRAIN_EPOCHS", default_value_t = 10, value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..=10_000))]
    pub epochs: usize,
    /// Images per Adam step; larger batches are faster per image but generalise a little worse.
    #[arg(long, env = "AISERVE_TRAIN_BATCH_SIZE", default_value_t = 32, value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..=65_536))]
    pub batch_size: usize,
    /// Adam learning rate.
    #[arg(long, env = "AISERVE_TRAIN_LEARNING_RATE", default_value_t = 1e-3)]
    pub learning_rate: f64,
    /// Seed for weight initialisation and shuffling; the same seed gives the same model.
    #[arg(long, env = "AISERVE_TRAIN_SEED", default_value_t = 42)]
    pub seed: u64,
    /// Train on only the first N training images (quick runs and tests).
    #[arg(long, env = "AISERVE_TRAIN_LIMIT_TRAIN")]
    pub limit_train: Option<usize>,
    /// Evaluate on only the first N test images.
    #[arg(long, env = "AISERVE_TRAIN_LIMIT_TEST")]
    pub limit_test: Option<usize>,
    /// Print one line per epoch instead of drawing a progress bar.
    #[arg(long, env = "AISERVE_TRAIN_QUIET")]
    pub quiet: bool,
}

#[derive(clap::ValueEnum, Clone, Copy, Debug)]
pub enum Task {
    Digits,
}

struct Bar {
    bar: Option<ProgressBar>,
    epochs: usize,
}

impl Progress for Bar {
    fn epoch_start(&mut self, epoch: usize, batches: usize) {
        if let Some(old) = self.bar.take() {
            old.finish();
        }
        let bar = ProgressBar::new(batches as u64);
        bar.set_style(
            ProgressStyle::with_template("epoch {prefix} [{bar:30}] {pos}/{len} {msg}")
                .expect("static template")
                .progress_chars("=> "),
        );
        bar.set_prefix(format!("{epoch}/{}", self.epochs));
        self.bar = Some(bar);
    }

    fn batch_end(&mut self, batch: usize, loss: f64, accuracy: f64, ips: f64) {
        if let Some(bar) = &self.bar {
            bar.set_position(batch as u64);
            if batch.is_multiple_of(20) {
                bar.set_message(format!("loss {loss:.4} acc {:.2}% {ips:.0} img/s", accuracy * 100.0));
            }
        }
    }

    fn epoch_end(&mut self, m: &EpochMetrics) {
        let line = epoch_line(m);
        match self.bar.take() {
            Some(bar) => bar.finish_with_message(line),
            None => println!("{line}"),
        }
    }
}

struct Lines;

impl Progress for Lines {
    fn epoch_end(&mut self, m: &EpochMetrics) {
        println!("epoch {}: {}", m.epoch, epoch_line(m));
    }
}

fn epoch_line(m: &EpochMetrics) -> String {
    format!(
        "loss {:.4} acc {:.2}% | test loss {:.4} acc {:.2}% | {:.1} s, {:.0} img/s",
        m.loss,
        m.accuracy * 100.0,
        m.test_loss,
        m.test_accuracy * 100.0,
        m.seconds,
        m.images_per_second
    )
}

pub fn run(args: TrainArgs) -> anyhow::Result<()> {
    let Task::Digits = args.task;
    let name: ModelName = args.model.parse().map_err(|e| anyhow::anyhow!("--model: {e}"))?;
    if !(args.learning_rate.is_finite() && args.learning_rate > 0.0) {
        anyhow::bail!("--learning-rate must be a positive number, got {}", args.learning_rate);
    }
    let mut data =
        mnist::load_dir(&args.data).with_context(|| format!("reading MNIST from {}", args.data.display()))?;
    if let Some(n) = args.limit_train {
        data.train = data.train.take(n);
    }
    if let Some(n) = args.limit_test {
        data.test = data.test.take(n);
    }
    let cfg = TrainConfig {
        epochs: args.epochs,
        batch_size: args.batch_size,
        learning_rate: args.learning_rate,
        seed: args.seed,
    };
    println!(
        "training digits_cnn on {} images ({} test), {} epochs, batch {}, seed {}, {} threads",
        data.train.len(),
        data.test.len(),
        cfg.epochs,
        cfg.batch_size,
        cfg.seed,
        aiserve_models::compute_threads()
    );
    let trained = if args.quiet {
        train(&data, &cfg, &mut Lines)?
    } else {
        train(&data, &cfg, &mut Bar { bar: None, epochs: cfg.epochs })?
    };
    let last = trained.epochs.last().expect("at least one epoch");
    println!(
        "test accuracy {:.2}% (loss {:.4}) after {:.1} s",
        last.test_accuracy * 100.0,
        last.test_loss,
        trained.seconds
    );
    let provenance = TrainingProvenance {
        data: args.data.display().to_string(),
        train_examples: data.train.len(),
        epochs: cfg.epochs,
        batch_size: cfg.batch_size,
        learning_rate: cfg.learning_rate,
        seed: cfg.seed,
        test_accuracy: last.test_accuracy,
        test_loss: last.test_loss,
        train_seconds: (trained.seconds * 10.0).round() / 10.0,
        aiserve_version: env!("CARGO_PKG_VERSION").into(),
    };
    let (version, path) = publish(&args.repo, &name, &trained.model, Some(provenance), &trained.epochs)
        .with_context(|| format!("publishing into {}", args.repo.display()))?;
    println!("published {name} version {version} at {}", path.display());
    Ok(())
}
