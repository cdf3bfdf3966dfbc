//! A deterministic fake image classifier and repository helpers for the server tests.
//!
//! The "weights" file is text lines: `shift N` makes the model answer class
//! `(round(9 * mean pixel) + N) % 10` with probability 0.91; `sleep MS` makes every call after
//! warm-up take that long; `waits-for PATH` makes every call after warm-up wait until PATH exists
//! and `load-waits-for PATH` does the same for loading (explicit synchronisation for tests); `panic` panics on every call after warm-up; anything else fails to
//! load. The loader records each batch size and the most calls seen running at once.

use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use aiserve_core::backend::read_version_config;
use aiserve_core::config::ModelConfig;
use aiserve_core::text::{EmbedderInfo, TextTokenizer};
use aiserve_core::{
    BackendError, Description, ImageBatch, ImageClassifier, LoadError, Loaded, ModelLoader, TextEmbedder,
};
use axum::body::Body;
use axum::http::{Request, Response, StatusCode};
use http_body_util::BodyExt;
use serde_json::Value;
use tower::ServiceExt;

use crate::http::state::AppState;
use aiserve_runtime::manager::Manager;
use aiserve_runtime::registry::Registry;
use aiserve_runtime::Limits;

pub const CONFIG: &str = r#"
kind = "image_classifier"
architecture = "fake"
weights = "weights.txt"
labels = ["0","1","2","3","4","5","6","7","8","9"]
[input]
name = "image"
datatype = "FP32"
shape = [28, 28, 1]
range = [0.0, 1.0]
background = 0.0
[output]
name = "probabilities"
datatype = "FP32"
shape = [10]
"#;

/// What the fake models saw, shared by every model the loader made.
#[derive(Default)]
pub struct Observed {
    pub batch_sizes: Mutex<Vec<usize>>,
    pub running: AtomicUsize,
    pub max_running: AtomicUsize,
}

#[derive(Clone, Default)]
pub struct FakeLoader {
    pub observed: Arc<Observed>,
    pub generated: Arc<super::fake_generator::GenObserved>,
}

struct Fake {
    shift: usize,
    panics: bool,
    sleep: Duration,
    /// Every call after warm-up blocks until this file exists (tests release it).
    gate: Option<std::path::PathBuf>,
    warmed: AtomicBool,
    observed: Arc<Observed>,
}

/// Blocks until `path` exists, at most 20 s.
pub fn wait_for_file(path: &Path) {
    let until = std::time::Instant::now() + Duration::from_secs(20);
    while !path.exists() && std::time::Instant::now() < until {
        std::thread::sleep(Duration::from_millis(2));
    }
}

impl ImageClassifier for Fake {
    fn predict(&mut self, batch: &ImageBatch) -> Result<Vec<Vec<f32>>, BackendError> {
        let warm = self.warmed.swap(true, Ordering::Relaxed);
        if self.panics && warm {
            panic!("fake model panics on purpose");
        }
        if warm {
            self.observed.batch_sizes.lock().unwrap().push(batch.n);
            let now = self.observed.running.fetch_add(1, Ordering::SeqCst) + 1;
            self.observed.max_running.fetch_max(now, Ordering::SeqCst);
            std::thread::sleep(self.sleep);
            if let Some(gate) = &self.gate {
                wait_for_file(gate);
            }
            self.observed.running.fetch_sub(1, Ordering::SeqCst);
        }
        let len = batch.height * batch.width * batch.channels;
        Ok(batch
            .data
            .chunks(len)
            .map(|img| {
                let mean = img.iter().sum::<f32>() / len as f32;
                let class = ((mean * 9.0).round() as usize + self.shift) % 10;
                (0..10).map(|c| if c == class { 0.91 } else { 0.01 }).collect()
            })
            .collect())
    }
}

/// Fake tokenizer: one token per whitespace-separated word, id = word length, wrapped in
/// 101 … 102 like BERT's [CLS] … [SEP]; truncation keeps the first `max - 1` and the 102.
pub struct FakeTokenizer {
    pub max_tokens: usize,
}

impl TextTokenizer for FakeTokenizer {
    fn encode(&self, text: &str) -> Result<Vec<u32>, String> {
        let mut ids = vec![101];
        ids.extend(text.split_whitespace().map(|w| w.len() as u32));
        ids.push(102);
        Ok(ids)
    }

    fn encode_truncated(&self, text: &str) -> Result<Vec<u32>, String> {
        let mut ids = self.encode(text)?;
        if ids.len() > self.max_tokens {
            ids.truncate(self.max_tokens - 1);
            ids.push(102);
        }
        Ok(ids)
    }
}

/// Fake embedder: `[tokens, sum of ids, first id, last id]` per sequence, so tests can see
/// exactly which tokens reached the model. Records the tokens of each forward pass.
struct FakeEmbedder {
    observed: Arc<Observed>,
    warmed: bool,
}

impl TextEmbedder for FakeEmbedder {
    fn embed(&mut self, sequences: &[&[u32]]) -> Result<Vec<Vec<f32>>, BackendError> {
        if std::mem::replace(&mut self.warmed, true) {
            self.observed.batch_sizes.lock().unwrap().push(sequences.iter().map(|s| s.len()).sum());
        }
        Ok(sequences
            .iter()
            .map(|s| vec![s.len() as f32, s.iter().sum::<u32>() as f32, s[0] as f32, s[s.len() - 1] as f32])
            .collect())
    }
}

pub const EMBEDDER_FILE: &str = "embedder.txt";

pub fn fake_embedder_info(max_tokens: usize) -> EmbedderInfo {
    EmbedderInfo {
        architecture: "fake".into(),
        dim: 4,
        max_tokens,
        vocab_size: 1000,
        pooling: aiserve_core::text::Pooling::Mean,
        normalize: false,
    }
}

impl ModelLoader for FakeLoader {
    fn describe(&self, dir: &Path, _model: &ModelConfig) -> Result<Description, LoadError> {
        if let Some(d) = super::fake_generator::describe(dir) {
            return d;
        }
        if let Ok(text) = std::fs::read_to_string(dir.join(EMBEDDER_FILE)) {
            let max_tokens = text
                .trim()
                .strip_prefix("max_tokens ")
                .and_then(|n| n.parse().ok())
                .ok_or_else(|| LoadError::Config(format!("unreadable {EMBEDDER_FILE} {text:?}")))?;
            let tokenizer = Arc::new(FakeTokenizer { max_tokens });
            return Ok(Description::Embedder { info: fake_embedder_info(max_tokens), tokenizer });
        }
        if let Some(graph) = super::fake_graph::describe(dir) {
            return Ok(graph);
        }
        Ok(Description::Image(read_version_config(dir)?))
    }

    fn load(&self, dir: &Path, description: &Description) -> Result<Loaded, LoadError> {
        let config = match description {
            Description::Image(c) => c,
            Description::Embedder { .. } => {
                return Ok(Loaded::Embedder(Box::new(FakeEmbedder { observed: self.observed.clone(), warmed: false })))
            }
            Description::Generator(_) => return super::fake_generator::load(dir, &self.generated),
            Description::Graph(_) => return Ok(Loaded::Graph(Box::new(super::fake_graph::load(dir)))),
            Description::Scorer { .. } => {
                return Err(LoadError::Unsupported("the fake loader has no rerankers".into()))
            }
        };
        let text = std::fs::read_to_string(dir.join(&config.weights)).map_err(|e| LoadError::Weights(e.to_string()))?;
        let mut fake = Fake {
            shift: 0,
            panics: false,
            sleep: Duration::ZERO,
            gate: None,
            warmed: AtomicBool::new(false),
            observed: self.observed.clone(),
        };
        for line in text.lines().map(str::trim).filter(|l| !l.is_empty()) {
            let bad = || LoadError::Weights(format!("unreadable fake weights {text:?}"));
            match line.split_once(' ') {
                None if line == "panic" => fake.panics = true,
                Some(("shift", n)) => fake.shift = n.parse().map_err(|_| bad())?,
                Some(("sleep", ms)) => fake.sleep = Duration::from_millis(ms.parse().map_err(|_| bad())?),
                // Loading, or each call, blocks until the file exists: tests release it.
                Some(("load-waits-for", path)) => wait_for_file(Path::new(path)),
                Some(("waits-for", path)) => fake.gate = Some(path.into()),
                _ => return Err(bad()),
            }
        }
        Ok(Loaded::Image(Box::new(fake)))
    }
}

/// Writes `<repo>/<model>/<version>/` as a fake text embedding model.
pub fn write_embedder(repo: &Path, model: &str, version: u64, max_tokens: usize) {
    let dir = repo.join(model).join(version.to_string());
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join(EMBEDDER_FILE), format!("max_tokens {max_tokens}")).unwrap();
}

/// Writes `<repo>/<model>/<version>/` with the fake config and the given weights text.
pub fn write_version(repo: &Path, model: &str, version: u64, weights: &str) {
    let dir = repo.join(model).join(version.to_string());
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("config.toml"), CONFIG).unwrap();
    std::fs::write(dir.join("weights.txt"), weights).unwrap();
}

/// A repository with `digits` v1 (shift 0), a manager that has polled it once, and the app.
pub struct Harness {
    pub dir: tempfile::TempDir,
    pub observed: Arc<Observed>,
    pub generated: Arc<super::fake_generator::GenObserved>,
    pub manager: Arc<Manager>,
    pub state: AppState,
}

impl Harness {
    pub async fn new() -> Self {
        Self::with_limits(Limits::default()).await
    }

    pub async fn with_limits(limits: Limits) -> Self {
        Self::with_config(limits, Default::default()).await
    }

    pub async fn with_config(limits: Limits, generation: aiserve_runtime::generation::engine::EngineConfig) -> Self {
        let dir = tempfile::tempdir().unwrap();
        write_version(dir.path(), "digits", 1, "shift 0");
        let registry = Arc::new(Registry::new());
        let loader = FakeLoader::default();
        let observed = loader.observed.clone();
        let generated = loader.generated.clone();
        let manager = Arc::new(
            Manager::new(dir.path().to_owned(), Arc::new(loader), registry.clone()).with_generation(generation),
        );
        manager.poll_once().await;
        let state = AppState::from_runtime(aiserve_runtime::Runtime::new(registry, Some(manager.clone()), limits));
        Self { dir, observed, generated, manager, state }
    }

    pub fn repo(&self) -> &Path {
        self.dir.path()
    }

    /// Polls, then waits until retiring versions have finished unloading.
    pub async fn poll(&self) {
        self.manager.poll_once().await;
        for _ in 0..100 {
            let busy = self
                .state
                .registry
                .statuses()
                .iter()
                .flat_map(|m| m.versions.iter())
                .any(|v| v.state == aiserve_core::state::VersionState::Unloading);
            if !busy {
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    pub async fn send(&self, req: Request<Body>) -> Response<Body> {
        crate::app(self.state.clone()).oneshot(req).await.unwrap()
    }

    pub async fn json(&self, method: &str, uri: &str, body: Value) -> (StatusCode, Value) {
        let req = Request::builder()
            .method(method)
            .uri(uri)
            .header("content-type", "application/json")
            .body(Body::from(body.to_string()))
            .unwrap();
        read_json(self.send(req).await).await
    }

    pub async fn get(&self, uri: &str) -> (StatusCode, Value) {
        read_json(self.send(Request::get(uri).body(Body::empty()).unwrap()).await).await
    }

    pub async fn get_text(&self, uri: &str) -> String {
        let resp = self.send(Request::get(uri).body(Body::empty()).unwrap()).await;
        String::from_utf8(resp.into_body().collect().await.unwrap().to_bytes().to_vec()).unwrap()
    }

    pub async fn raw(&self, uri: &str, content_type: &str, body: Vec<u8>) -> (StatusCode, Value) {
        let req = Request::post(uri).header("content-type", content_type).body(Body::from(body)).unwrap();
        read_json(self.send(req).await).await
    }
}

pub async fn read_json(resp: Response<Body>) -> (StatusCode, Value) {
    let status = resp.status();
    let bytes = resp.into_body().collect().await.unwrap().to_bytes();
    let value = if bytes.is_empty() {
        Value::Null
    } else {
        serde_json::from_slice(&bytes).unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into()))
    };
    (status, value)
}

/// A 28x28 image whose every pixel is `v` (the fake answers `round(9 v)`).
pub fn flat_image(v: f32) -> Vec<Vec<f32>> {
    vec![vec![v; 28]; 28]
}

pub fn error_text(v: &Value) -> String {
    v["error"].as_str().unwrap_or_else(|| panic!("no error field in {v}")).to_owned()
}

/// One raw HTTP/1.1 exchange on a fresh connection (`Connection: close`): the whole response.
pub async fn http(addr: std::net::SocketAddr, method: &str, path: &str, body: &str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut conn = tokio::net::TcpStream::connect(addr).await.unwrap();
    let req = format!(
        "{method} {path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    conn.write_all(req.as_bytes()).await.unwrap();
    let mut resp = String::new();
    let _ = conn.read_to_string(&mut resp).await;
    resp
}

/// Waits (at most 20 s) until a server started with `crate::serve` reports ready.
pub async fn wait_ready(addr: std::net::SocketAddr) {
    for _ in 0..2000 {
        if http(addr, "GET", "/v2/health/ready", "").await.starts_with("HTTP/1.1 200") {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("the server never became ready");
}

/// A model whose calls block until [`Gate::open`], and the file that opens it.
pub struct Gate {
    dir: tempfile::TempDir,
}

impl Gate {
    pub fn new() -> Self {
        Self { dir: tempfile::tempdir().unwrap() }
    }

    /// The file whose creation opens the gate.
    pub fn file(&self) -> std::path::PathBuf {
        self.dir.path().join("open")
    }

    /// Fake image weights whose every call waits for the gate.
    pub fn weights(&self) -> String {
        format!("waits-for {}", self.file().display())
    }

    pub fn open(&self) {
        std::fs::write(self.file(), "").unwrap();
    }
}

/// Waits (bounded) until `n` calls of the model are running.
pub async fn until_running(observed: &Observed, n: usize) {
    for _ in 0..4000 {
        if observed.running.load(Ordering::SeqCst) == n {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
    panic!("never saw {n} model calls running");
}

/// A self-signed certificate for `localhost` and its PEM files in `dir`: (certificate, cert
/// path, key path).
pub fn self_signed(dir: &Path) -> (rcgen::CertifiedKey<rcgen::KeyPair>, std::path::PathBuf, std::path::PathBuf) {
    let cert = rcgen::generate_simple_self_signed(vec!["localhost".into()]).unwrap();
    let (cert_path, key_path) = (dir.join("cert.pem"), dir.join("key.pem"));
    std::fs::write(&cert_path, cert.cert.pem()).unwrap();
    std::fs::write(&key_path, cert.signing_key.serialize_pem()).unwrap();
    (cert, cert_path, key_path)
}
