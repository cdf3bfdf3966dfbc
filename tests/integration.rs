//! End-to-end tests of the real binary and the real digits model (one test binary, linked once).
//!
//! They need the MNIST files from `../shared/data/mnist` (or `$AISERVE_MNIST`), which every
//! checkout of this project has beside it; no network.

mod cli;
mod digits_model;
mod swap;

use std::path::PathBuf;

/// The MNIST directory used by the tests.
pub fn mnist_dir() -> PathBuf {
    let dir = std::env::var_os("AISERVE_MNIST")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../shared/data/mnist"));
    assert!(dir.join("t10k-images-idx3-ubyte.gz").exists(), "MNIST not found at {} (set AISERVE_MNIST)", dir.display());
    dir
}

/// Runs `aiserve train digits --quiet` on MNIST into `repo` with extra flags.
pub fn train_digits(repo: &std::path::Path, extra: &[&str]) -> std::process::Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_aiserve"))
        .args(["train", "digits", "--quiet"])
        .args(extra)
        .arg("--data")
        .arg(mnist_dir())
        .arg("--repo")
        .arg(repo)
        .output()
        .unwrap()
}

/// The bundled model repository.
pub fn bundled_repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("models")
}
