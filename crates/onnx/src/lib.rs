//! aiserve-onnx: a user's own ONNX models, run by ONNX Runtime the way Triton's ONNX backend
//! runs them. A version directory holding `model.onnx` (or exactly one `.onnx` file) is all a
//! user provides: the inputs and outputs come from the graph ([`describe`]), `model.toml`'s
//! `[onnx]` section adds what the graph cannot say, and each model instance owns one session
//! ([`session`]). ONNX Runtime itself is opened at run time ([`library`]).

pub mod describe;
pub mod fuse;
pub mod library;
pub mod session;

use std::path::{Path, PathBuf};
use std::sync::Mutex;

use aiserve_core::config::ModelConfig;
use aiserve_core::graph::GraphClassifier;
use aiserve_core::{Description, LoadError, Loaded};

pub use library::Runtime;

/// The file name Triton's ONNX backend looks for.
pub const MODEL_FILE: &str = "model.onnx";

/// Largest graph file opened (ONNX's protobuf limit is 2 GiB; bigger models keep their weights
/// in external data files beside it).
const MAX_GRAPH_BYTES: u64 = 2 << 30;

/// The graph file of a version directory: `model.onnx`, else its one `.onnx` file; `None` when
/// the directory holds no ONNX graph.
pub fn find(dir: &Path) -> Result<Option<PathBuf>, LoadError> {
    let default = dir.join(MODEL_FILE);
    if default.is_file() {
        return Ok(Some(default));
    }
    let mut found = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        if path.extension().is_some_and(|e| e == "onnx") && path.is_file() {
            found.push(path);
        }
    }
    match found.len() {
        0 => Ok(None),
        1 => Ok(found.pop()),
        n => Err(LoadError::Config(format!(
            "the version holds {n} .onnx files; name the one to serve {MODEL_FILE} (or keep only one)"
        ))),
    }
}

/// Largest labels file read (ImageNet's 1,000 labels take about 30 KB).
const MAX_LABELS_BYTES: u64 = 4 << 20;

/// One label per non-empty line.
fn read_labels(path: &Path) -> Result<Vec<String>, LoadError> {
    let name = path.file_name().map_or_else(String::new, |n| n.to_string_lossy().into_owned());
    let meta =
        std::fs::metadata(path).map_err(|e| LoadError::Config(format!("[onnx.image] labels file {name}: {e}")))?;
    if meta.len() > MAX_LABELS_BYTES {
        return Err(LoadError::Config(format!(
            "labels file {name} is {} bytes; at most {MAX_LABELS_BYTES}",
            meta.len()
        )));
    }
    let text = std::fs::read_to_string(path).map_err(|e| LoadError::Config(format!("labels file {name}: {e}")))?;
    Ok(text.lines().map(str::trim_end).filter(|l| !l.is_empty()).map(str::to_owned).collect())
}

/// Sessions `describe` opened, kept for the first `load` of the same graph (the manager calls
/// the two back to back), so a version's graph is read and optimised once, not twice. Bounded:
/// a description never followed by a load (its model was removed in between) is dropped by
/// later ones.
const SPARE_SESSIONS: usize = 4;

/// A session opened by `describe`: its graph file, options and the session.
type Spare = (PathBuf, session::Options, ort::session::Session);

/// Loads ONNX versions.
pub struct OnnxLoader {
    runtime: Runtime,
    /// Threads available to model code, shared among a model's instances unless `[onnx]`
    /// says otherwise.
    threads: usize,
    /// Sessions opened by `describe`, by graph file and options, newest last.
    spare: Mutex<Vec<Spare>>,
}

impl OnnxLoader {
    pub fn new(library: Option<PathBuf>, threads: usize) -> Self {
        Self { runtime: Runtime::new(library), threads: threads.max(1), spare: Mutex::new(Vec::new()) }
    }

    fn keep(&self, path: PathBuf, options: session::Options, session: ort::session::Session) {
        let mut spare = self.spare.lock().unwrap_or_else(|e| e.into_inner());
        spare.retain(|(p, _, _)| *p != path);
        if spare.len() == SPARE_SESSIONS {
            spare.remove(0);
        }
        spare.push((path, options, session));
    }

    fn take(&self, path: &Path, options: session::Options) -> Option<ort::session::Session> {
        let mut spare = self.spare.lock().unwrap_or_else(|e| e.into_inner());
        let i = spare.iter().position(|(p, o, _)| p == path && *o == options)?;
        Some(spare.remove(i).2)
    }

    /// Reads the graph's declaration (opens one session to do so, which the first `load` of
    /// the version then uses).
    pub fn describe(&self, dir: &Path, model: &ModelConfig) -> Result<Description, LoadError> {
        let path = find(dir)?.ok_or_else(|| LoadError::Config(format!("no {MODEL_FILE} in the version")))?;
        let size = std::fs::metadata(&path)?.len();
        if size > MAX_GRAPH_BYTES {
            return Err(LoadError::Config(format!("{} is {size} bytes; at most {MAX_GRAPH_BYTES}", path.display())));
        }
        let env = self.runtime.open().map_err(LoadError::Unsupported)?;
        let threads = model.onnx.threads.unwrap_or((self.threads / model.instances.max(1)).max(1));
        let options = session::Options {
            threads,
            spinning: model.onnx.spinning.unwrap_or(false),
            fuse: model.onnx.fuse.unwrap_or(true),
        };
        let session = session::open(env, &path, options).map_err(LoadError::Weights)?;
        let mut info = describe::describe(&session, &model.onnx, threads)?;
        if let Some(image) = &model.onnx.image {
            let labels = read_labels(&dir.join(&image.labels))?;
            let classifier = GraphClassifier::resolve(&info.inputs, &info.outputs, image, labels)
                .map_err(|e| LoadError::Config(format!("[onnx.image]: {e}")))?;
            info.classifier = Some(classifier);
        }
        self.keep(path, options, session);
        Ok(Description::Graph(info))
    }

    /// Opens one session (one model instance).
    pub fn load(&self, dir: &Path, description: &Description) -> Result<Loaded, LoadError> {
        let Description::Graph(info) = description else {
            return Err(LoadError::Unsupported("not an ONNX version".into()));
        };
        let path = find(dir)?.ok_or_else(|| LoadError::Config(format!("no {MODEL_FILE} in the version")))?;
        let options = session::Options { threads: info.threads, spinning: info.spinning, fuse: info.fuse };
        let session = match self.take(&path, options) {
            Some(session) => session,
            None => {
                let env = self.runtime.open().map_err(LoadError::Unsupported)?;
                session::open(env, &path, options).map_err(LoadError::Weights)?
            }
        };
        Ok(Loaded::Graph(Box::new(session::OnnxModel::new(session))))
    }
}
