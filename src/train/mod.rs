//! `aiserve train digits`: train the CNN on an MNIST-format directory and publish a new version;
//! `aiserve train image-classifier --data DIR`: the same CNN on a user's picture folders (one
//! sub-folder per class), with a validation split, published with the folders' names as labels;
//! `aiserve train digit-strings`: the seed's CNN + LSTM sequence model ([`strings`]).

mod shown;
mod strings;

use shown::Shown;

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};

use aiserve_core::config::TrainingProvenance;
use aiserve_core::ModelName;
use aiserve_models::checkpoint::{Control, Outcome};
use aiserve_models::digits::publish::{classifier_config, publish, version_config};
use aiserve_models::digits::report::Report;
use aiserve_models::digits::train::{
    confusion, evaluate, train_controlled, EpochMetrics, Schedule, TrainConfig, Trained,
};
use aiserve_models::digits::CnnShape;
use aiserve_models::image_folder;
use aiserve_models::mnist::{self, Dataset};
use anyhow::Context;

#[derive(clap::Args, Debug)]
pub struct TrainArgs {
    /// What to train: `digits` (the MNIST CNN), `image-classifier` (the same CNN on your own
    /// picture folders) or `digit-strings` (a CNN + LSTM encoder-decoder reading strings of 1 to
    /// 6 MNIST digits).
    #[arg(value_enum)]
    pub task: Task,
    /// digits: the directory with the four MNIST IDX files (gzipped or not; default
    /// ../shared/data/mnist). image-classifier: a folder with one sub-folder of PNG/JPEG pictures
    /// per class, named for its label (torchvision's ImageFolder layout).
    #[arg(long, env = "AISERVE_DATA")]
    pub data: Option<PathBuf>,
    /// image-classifier: a second folder of the same classes to report test accuracy on.
    #[arg(long, env = "AISERVE_TEST_DATA")]
    pub test_data: Option<PathBuf>,
    /// image-classifier: the size pictures are resized to, `HxW` or `N` (default: their own
    /// size when they all share one, else 64x64). Larger keeps detail but trains slower.
    #[arg(long, env = "AISERVE_TRAIN_SIZE", value_parser = parse_size)]
    pub size: Option<(usize, usize)>,
    /// image-classifier: 1 (grey) or 3 (RGB) channels, converting pictures as needed (default:
    /// what the pictures are; a mix is refused).
    #[arg(long, env = "AISERVE_TRAIN_CHANNELS", value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..=3))]
    pub channels: Option<usize>,
    /// image-classifier: the share of each class held out to validate on after every epoch.
    #[arg(long, env = "AISERVE_TRAIN_VALIDATION_SPLIT", default_value_t = 0.2)]
    pub validation_split: f64,
    /// Model repository to publish into (`<repo>/<model>/<N+1>/`).
    #[arg(long, env = "AISERVE_REPO", default_value = "models")]
    pub repo: PathBuf,
    /// Model name in the repository (digits: `digits` by default; image-classifier: required).
    #[arg(long, env = "AISERVE_TRAIN_MODEL")]
    pub model: Option<String>,
    /// Passes over the training set; more epochs trade time for accuracy (10 reaches ~99%).
    #[arg(long, env = "AISERVE_TRAIN_EPOCHS", default_value_t = 10, value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..=10_000))]
    pub epochs: usize,
    /// Images per Adam step; larger batches are faster per image but generalise a little worse.
    #[arg(long, env = "AISERVE_TRAIN_BATCH_SIZE", default_value_t = 32, value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..=65_536))]
    pub batch_size: usize,
    /// Adam learning rate.
    #[arg(long, env = "AISERVE_TRAIN_LEARNING_RATE", default_value_t = 1e-3)]
    pub learning_rate: f64,
    /// How the rate moves: `constant`, or `cosine` (half a cosine down to zero over the run:
    /// usually a little more accuracy for the same epochs).
    #[arg(long, env = "AISERVE_TRAIN_LR_SCHEDULE", default_value = "constant")]
    pub lr_schedule: Schedule,
    /// Stop once the evaluation (validation, or test for digits) loss has not improved for this
    /// many epochs, and keep the best epoch's weights. Off by default.
    #[arg(long, env = "AISERVE_TRAIN_EARLY_STOPPING", value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..))]
    pub early_stopping: Option<usize>,
    /// Seed for weight initialisation and shuffling; the same seed gives the same model.
    #[arg(long, env = "AISERVE_TRAIN_SEED", default_value_t = 42)]
    pub seed: u64,
    /// Train on only the first N training images (quick runs and tests).
    #[arg(long, env = "AISERVE_TRAIN_LIMIT_TRAIN")]
    pub limit_train: Option<usize>,
    /// Evaluate on only the first N test images.
    #[arg(long, env = "AISERVE_TRAIN_LIMIT_TEST")]
    pub limit_test: Option<usize>,
    /// Continue the run that was interrupted (Ctrl-C or SIGTERM save a checkpoint at the end of
    /// the current batch; one is also kept after every epoch) from `<repo>/<model>/.checkpoint`,
    /// with the same flags: the result is the model the run would have made uninterrupted.
    #[arg(long, env = "AISERVE_TRAIN_RESUME")]
    pub resume: bool,
    /// digit-strings: how many strings to compose from MNIST's training pictures for each epoch
    /// (the validation split of them, once, from pictures held out of training); each is 3.5 KB
    /// in memory.
    #[arg(long, env = "AISERVE_TRAIN_STRINGS", default_value_t = 30_000, value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(10..=1_000_000))]
    pub strings: usize,
    /// digit-strings: train on the same strings every epoch (Keras-style, a fixed set) instead
    /// of composing new ones each epoch.
    #[arg(long, env = "AISERVE_TRAIN_FIXED_STRINGS")]
    pub fixed_strings: bool,
    /// digit-strings: the LSTMs' latent_dim.
    #[arg(long, env = "AISERVE_TRAIN_LATENT_DIM", default_value_t = aiserve_models::digit_strings::LATENT, value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..=aiserve_models::digit_strings::MAX_LATENT as u64))]
    pub latent_dim: usize,
    /// Print one line per epoch instead of drawing a progress bar.
    #[arg(long, env = "AISERVE_TRAIN_QUIET")]
    pub quiet: bool,
}

#[derive(clap::ValueEnum, Clone, Copy, Debug)]
pub enum Task {
    Digits,
    ImageClassifier,
    DigitStrings,
}

fn parse_size(s: &str) -> Result<(usize, usize), String> {
    let (h, w) = s.split_once(['x', 'X']).unwrap_or((s, s));
    let side = |v: &str| v.trim().parse::<usize>().map_err(|_| format!("`{s}` is not HxW or N (e.g. 28x28, 64)"));
    Ok((side(h)?, side(w)?))
}

fn epoch_line(m: &EpochMetrics, eval: &'static str) -> (usize, String) {
    let line = format!(
        "loss {:.4} acc {:.2}% | {eval} loss {:.4} acc {:.2}% | {:.1} s, {:.0} img/s",
        m.loss,
        m.accuracy * 100.0,
        m.test_loss,
        m.test_accuracy * 100.0,
        m.seconds,
        m.images_per_second
    );
    (m.epoch, line)
}

pub fn run(args: TrainArgs) -> anyhow::Result<()> {
    if !(args.learning_rate.is_finite() && args.learning_rate > 0.0) {
        anyhow::bail!("--learning-rate must be a positive number, got {}", args.learning_rate);
    }
    let cfg = TrainConfig {
        epochs: args.epochs,
        batch_size: args.batch_size,
        learning_rate: args.learning_rate,
        seed: args.seed,
        schedule: args.lr_schedule,
        patience: args.early_stopping,
    };
    match args.task {
        Task::Digits => digits(&args, &cfg),
        Task::ImageClassifier => image_classifier(&args, &cfg),
        Task::DigitStrings => strings::run(&args, &cfg),
    }
}

pub(crate) fn model_name(args: &TrainArgs, default: Option<&str>) -> anyhow::Result<ModelName> {
    let name =
        args.model.as_deref().or(default).context("--model NAME is required: the repository name to publish under")?;
    name.parse().map_err(|e| anyhow::anyhow!("--model: {e}"))
}

/// Set by the first Ctrl-C or SIGTERM: training saves a checkpoint at the end of the batch and stops.
static STOP: AtomicBool = AtomicBool::new(false);

/// A run's checkpoint directory: hidden in the model's directory, so the server never takes it
/// for a version.
fn checkpoint_dir(args: &TrainArgs, name: &ModelName) -> PathBuf {
    args.repo.join(name.as_str()).join(".checkpoint")
}

/// Where this run keeps its checkpoint, checked against `--resume`, with the Ctrl-C / SIGTERM
/// handler installed that asks training to save one and stop.
fn checkpointing(args: &TrainArgs, name: &ModelName) -> anyhow::Result<PathBuf> {
    let dir = checkpoint_dir(args, name);
    if args.resume && !dir.join("state.json").exists() {
        anyhow::bail!("--resume: no checkpoint at {} (nothing to continue)", dir.display());
    }
    if !args.resume && dir.exists() {
        println!(
            "starting afresh: the checkpoint of an earlier run at {} will be replaced (--resume continues it)",
            dir.display()
        );
    }
    ctrlc::set_handler(|| {
        if STOP.swap(true, Ordering::SeqCst) {
            std::process::exit(130);
        }
        eprintln!("\nstopping: saving a checkpoint after this batch (interrupt again to quit without one)");
    })
    .context("installing the Ctrl-C handler")?;
    Ok(dir)
}

/// The trained result, or the error that says how to resume an interrupted run.
fn finish<T>(outcome: Outcome<T>, dir: &std::path::Path) -> anyhow::Result<T> {
    match outcome {
        Outcome::Done(t) => Ok(t),
        Outcome::Interrupted { epoch, batch } => anyhow::bail!(
            "interrupted in epoch {epoch} after {batch} batches; checkpoint saved at {}: run the same command with --resume to continue",
            dir.display()
        ),
    }
}

/// Trains with a checkpoint after every epoch and on an interrupt; `--resume` continues one.
fn fit(
    args: &TrainArgs,
    name: &ModelName,
    data: &Dataset,
    cnn: CnnShape,
    cfg: &TrainConfig,
    eval: &'static str,
) -> anyhow::Result<Trained> {
    let dir = checkpointing(args, name)?;
    println!(
        "training digits_cnn ({}x{}x{} pictures, {} classes) on {} images ({} {eval}), {} epochs, batch {}, seed {}, {} threads{}",
        cnn.height,
        cnn.width,
        cnn.channels,
        cnn.classes,
        data.train.len(),
        data.test.len(),
        cfg.epochs,
        cfg.batch_size,
        cfg.seed,
        aiserve_models::compute_threads(),
        if args.resume { ", resuming" } else { "" }
    );
    let control = Control { checkpoint: Some(&dir), resume: args.resume, stop: Some(&STOP) };
    let mut shown = Shown::new(args.quiet, cfg.epochs, ("acc", "img/s"), eval, epoch_line);
    let trained = finish(train_controlled(data, cnn, cfg, &control, &mut shown)?, &dir)?;
    if let Some(best) = trained.best_epoch {
        println!("early stopping after epoch {}: kept epoch {best}, the lowest {eval} loss", trained.epochs.len());
    }
    Ok(trained)
}

/// Removes the checkpoint once its run is published.
fn finished(args: &TrainArgs, name: &ModelName) {
    let _ = std::fs::remove_dir_all(checkpoint_dir(args, name));
}

fn provenance(
    data: &std::path::Path,
    train_examples: usize,
    cfg: &TrainConfig,
    trained: &Trained,
    test: (f64, f64),
) -> TrainingProvenance {
    TrainingProvenance {
        data: data.display().to_string(),
        train_examples,
        epochs: cfg.epochs,
        batch_size: cfg.batch_size,
        learning_rate: cfg.learning_rate,
        seed: cfg.seed,
        test_accuracy: test.1,
        test_loss: test.0,
        train_seconds: (trained.seconds * 10.0).round() / 10.0,
        aiserve_version: env!("CARGO_PKG_VERSION").into(),
        lr_schedule: (cfg.schedule != Schedule::Constant).then(|| cfg.schedule.name().into()),
        early_stopping: cfg.patience,
        best_epoch: trained.best_epoch,
    }
}

fn digits(args: &TrainArgs, cfg: &TrainConfig) -> anyhow::Result<()> {
    let name = model_name(args, Some("digits"))?;
    let dir = args.data.clone().unwrap_or_else(|| PathBuf::from("../shared/data/mnist"));
    let mut data = mnist::load_dir(&dir).with_context(|| format!("reading MNIST from {}", dir.display()))?;
    if let Some(n) = args.limit_train {
        data.train = data.train.take(n);
    }
    if let Some(n) = args.limit_test {
        data.test = data.test.take(n);
    }
    let trained = fit(args, &name, &data, CnnShape::DIGITS, cfg, "test")?;
    let last = trained.kept();
    println!(
        "test accuracy {:.2}% (loss {:.4}) after {:.1} s",
        last.test_accuracy * 100.0,
        last.test_loss,
        trained.seconds
    );
    let prov = provenance(&dir, data.train.len(), cfg, &trained, (last.test_loss, last.test_accuracy));
    let config = version_config(Some(prov));
    let report = Report {
        epochs: &trained.epochs,
        eval: "test",
        confusion: confusion(&trained.model, &data.test, config.labels.len())?,
        labels: &config.labels,
        counted: "pictures",
    };
    let (version, path) = publish(&args.repo, &name, &trained.model, &config, &trained.epochs, Some(&report))
        .with_context(|| format!("publishing into {}", args.repo.display()))?;
    finished(args, &name);
    println!("published {name} version {version} at {}", path.display());
    Ok(())
}

fn image_classifier(args: &TrainArgs, cfg: &TrainConfig) -> anyhow::Result<()> {
    let name = model_name(args, None)?;
    let dir =
        args.data.clone().context("--data DIR is required: a folder with one sub-folder of pictures per class")?;
    if !(0.0..1.0).contains(&args.validation_split) {
        anyhow::bail!("--validation-split must be in [0, 1), got {}", args.validation_split);
    }
    let opts = image_folder::Options { size: args.size, channels: args.channels, ..Default::default() };
    let folder = image_folder::read(&dir, &opts).with_context(|| format!("reading pictures from {}", dir.display()))?;
    let all = &folder.split;
    println!(
        "read {} pictures of {} classes from {} as {}x{}x{}{}",
        all.len(),
        folder.classes.len(),
        dir.display(),
        all.rows,
        all.cols,
        all.channels,
        if folder.skipped > 0 { format!(" ({} other files left out)", folder.skipped) } else { String::new() }
    );
    let (mut train, val) = image_folder::validation_split(all, args.validation_split, args.seed);
    if val.is_empty() {
        anyhow::bail!("--validation-split {} holds out no picture; give it more (e.g. 0.2)", args.validation_split);
    }
    if let Some(n) = args.limit_train {
        train = train.take(n);
    }
    let test = match &args.test_data {
        None => None,
        Some(t) => {
            let opts = image_folder::Options { size: Some((all.rows, all.cols)), channels: Some(all.channels), ..opts };
            let f =
                image_folder::read(t, &opts).with_context(|| format!("reading test pictures from {}", t.display()))?;
            if f.classes != folder.classes {
                anyhow::bail!(
                    "{} has the classes {:?}, {} has {:?}: the test folder must have the same ones",
                    t.display(),
                    f.classes,
                    dir.display(),
                    folder.classes
                );
            }
            Some(match args.limit_test {
                Some(n) => f.split.take(n),
                None => f.split,
            })
        }
    };
    let cnn = CnnShape { height: all.rows, width: all.cols, channels: all.channels, classes: folder.classes.len() };
    let data = Dataset { train, test: val };
    let trained = fit(args, &name, &data, cnn, cfg, "validation")?;
    let last = trained.kept();
    let mut result = (last.test_loss, last.test_accuracy);
    if let Some(test) = &test {
        result = evaluate(&trained.model, test, 256)?;
        println!("test accuracy {:.2}% (loss {:.4}) on {} pictures", result.1 * 100.0, result.0, test.len());
    } else {
        println!("validation accuracy {:.2}% (loss {:.4})", result.1 * 100.0, result.0);
    }
    // Light shapes on black (MNIST-like data): uploads of dark ink on paper get inverted to match.
    let border = image_folder::border_mean(&data.train);
    let background = if border < 0.1 { 0.0 } else { border };
    let prov = provenance(&dir, data.train.len(), cfg, &trained, result);
    let config = classifier_config(cnn, folder.classes.clone(), background, Some(prov));
    // The curves follow the validation split; the confusion matrix is of the pictures the
    // accuracy above is reported on (the test folder when there is one).
    let report = Report {
        epochs: &trained.epochs,
        eval: "validation",
        confusion: confusion(&trained.model, test.as_ref().unwrap_or(&data.test), folder.classes.len())?,
        labels: &folder.classes,
        counted: "pictures",
    };
    let (version, path) = publish(&args.repo, &name, &trained.model, &config, &trained.epochs, Some(&report))
        .with_context(|| format!("publishing into {}", args.repo.display()))?;
    finished(args, &name);
    println!("published {name} version {version} at {} (labels: {})", path.display(), folder.classes.join(", "));
    Ok(())
}
