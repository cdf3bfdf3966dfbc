//! What `aiserve train` shows while it trains: a progress bar per epoch ending in the epoch's
//! summary, or with `--quiet` one summary line per epoch.

use aiserve_models::digits::train::Progress;
use indicatif::{ProgressBar, ProgressStyle};

/// Progress of a run whose epochs report metrics `M`.
pub struct Shown<M> {
    bar: Option<ProgressBar>,
    quiet: bool,
    epochs: usize,
    /// The running message's names: what the accuracy counts (`acc`, `token acc`) and the
    /// throughput's unit (`img/s`, `strings/s`).
    accuracy: &'static str,
    unit: &'static str,
    /// An epoch's number and summary line.
    summary: fn(&M, &'static str) -> (usize, String),
    /// What the evaluation runs on (`test`, `validation`), handed to `summary`.
    eval: &'static str,
}

impl<M> Shown<M> {
    pub fn new(
        quiet: bool,
        epochs: usize,
        (accuracy, unit): (&'static str, &'static str),
        eval: &'static str,
        summary: fn(&M, &'static str) -> (usize, String),
    ) -> Self {
        Self { bar: None, quiet, epochs, accuracy, unit, summary, eval }
    }
}

impl<M> Progress<M> for Shown<M> {
    fn epoch_start(&mut self, epoch: usize, batches: usize) {
        if self.quiet {
            return;
        }
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

    fn batch_end(&mut self, batch: usize, loss: f64, accuracy: f64, per_second: f64) {
        if let Some(bar) = &self.bar {
            bar.set_position(batch as u64);
            if batch.is_multiple_of(20) {
                let (name, unit) = (self.accuracy, self.unit);
                bar.set_message(format!("loss {loss:.4} {name} {:.2}% {per_second:.0} {unit}", accuracy * 100.0));
            }
        }
    }

    fn epoch_end(&mut self, m: &M) {
        let (epoch, line) = (self.summary)(m, self.eval);
        match self.bar.take() {
            Some(bar) => bar.finish_with_message(line),
            None => println!("epoch {epoch}: {line}"),
        }
    }
}
