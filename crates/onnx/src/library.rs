//! Finding and opening ONNX Runtime (`libonnxruntime.so`) once per process.
//!
//! The library is opened when the first ONNX version loads, not at start-up: a server without
//! it serves every other kind and marks ONNX versions failed with a message saying how to get
//! it. Where it is looked for, first match wins: the path given to [`Runtime::new`]
//! (`aiserve serve --onnxruntime`, `AISERVE_ONNXRUNTIME`), then `ORT_DYLIB_PATH` (ort's own
//! variable), then `libonnxruntime.so` on the dynamic loader's search path. A failed attempt is
//! retried at the next load, so installing the library needs no restart.

use std::path::PathBuf;
use std::sync::{Mutex, OnceLock};

/// The one ONNX Runtime environment of the process, once opened.
static ENVIRONMENT: OnceLock<ort::environment::Environment> = OnceLock::new();

/// What a user runs to get a library (the PyPI wheel ships one).
pub const HOW_TO_GET: &str = "install ONNX Runtime (e.g. `pip install onnxruntime==1.32.0`, whose wheel holds \
     onnxruntime/capi/libonnxruntime.so.1.32.0) and pass its path with `aiserve serve --onnxruntime PATH` \
     (or AISERVE_ONNXRUNTIME / ORT_DYLIB_PATH)";

/// The oldest ONNX Runtime this build runs on (ort's `api-22` feature).
pub const MIN_VERSION: &str = "1.22";

/// Where to look for the library; opened lazily, once.
pub struct Runtime {
    path: Option<PathBuf>,
    /// Set once the library is open (its path); `None` while it has not been.
    opened: Mutex<Option<String>>,
}

impl Runtime {
    pub fn new(path: Option<PathBuf>) -> Self {
        Self { path, opened: Mutex::new(None) }
    }

    /// The path this runtime tries (for messages and logs).
    pub fn candidate(&self) -> PathBuf {
        self.path
            .clone()
            .or_else(|| std::env::var_os("ORT_DYLIB_PATH").filter(|p| !p.is_empty()).map(PathBuf::from))
            .unwrap_or_else(|| PathBuf::from("libonnxruntime.so"))
    }

    /// Opens the library if it is not open yet; the process's ONNX Runtime environment, or why
    /// it cannot be used. No other `ort` call may happen before this has succeeded (ort panics
    /// then).
    pub fn open(&self) -> Result<&'static ort::environment::Environment, String> {
        let mut opened = self.opened.lock().unwrap_or_else(|p| p.into_inner());
        if let (Some(_), Some(env)) = (opened.as_ref(), ENVIRONMENT.get()) {
            return Ok(env);
        }
        let path = self.candidate();
        let builder =
            ort::init_from(&path).map_err(|e| format!("ONNX Runtime could not be opened ({e}); {HOW_TO_GET}"))?;
        let env = builder.with_name("aiserve").build().map_err(|e| format!("ONNX Runtime environment: {e}"))?;
        // ort keeps only a weak reference; the environment lives as long as the process.
        let _ = ENVIRONMENT.set(env);
        tracing::info!(path = %path.display(), "ONNX Runtime opened");
        *opened = Some(path.display().to_string());
        ENVIRONMENT.get().ok_or_else(|| "ONNX Runtime environment was not kept".into())
    }

    /// The library opened, once it is.
    pub fn opened(&self) -> Option<String> {
        self.opened.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }
}
