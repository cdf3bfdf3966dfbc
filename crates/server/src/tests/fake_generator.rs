//! A deterministic fake text generator: token ids are ASCII bytes, and the next token is always
//! the byte after the last one (`"ab"` continues `"cdef…"`, at any temperature), until `~` is followed by the end
//! token 127. The version directory's `generator.txt` may say `sleep MS` (every forward pass
//! after warm-up takes that long); a `!` in the input makes the forward pass panic, and
//! decoding byte 2 panics in the tokenizer. Live
//! sequences and batch sizes are counted in [`GenObserved`].

use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use aiserve_core::chat::ChatTemplate;
use aiserve_core::generate::{GenItem, GeneratorInfo, GeneratorSpec, PromptTokenizer, SeqState, TextGenerator};
use aiserve_core::{BackendError, Description, LoadError, Loaded};

pub const GENERATOR_FILE: &str = "generator.txt";
pub const VOCAB: usize = 128;
pub const END: u32 = 127;
pub const CONTEXT: usize = 64;
/// Decoding this byte panics (a bug outside the model, in the engine's own thread).
pub const DECODE_PANIC: u32 = 2;
/// A prompt holding this byte (`!`) makes the forward pass panic.
pub const PANIC: u32 = b'!' as u32;

#[derive(Default)]
pub struct GenObserved {
    pub live_seqs: AtomicUsize,
    /// Sequence states ever made (a preempted sequence gets a new one when it resumes).
    pub made_seqs: AtomicUsize,
    /// Sequences in each forward pass after warm-up.
    pub batch_items: Mutex<Vec<usize>>,
}

pub struct Bytes;

impl PromptTokenizer for Bytes {
    fn encode(&self, text: &str, _: bool) -> Result<Vec<u32>, String> {
        Ok(text.bytes().map(u32::from).collect())
    }
    fn decode(&self, ids: &[u32]) -> Result<String, String> {
        assert!(!ids.contains(&DECODE_PANIC), "the fake tokenizer panics on byte 2 on purpose");
        Ok(String::from_utf8_lossy(&ids.iter().filter(|i| **i < END).map(|i| *i as u8).collect::<Vec<_>>())
            .into_owned())
    }
    fn token_bytes(&self, id: u32) -> Vec<u8> {
        if id < END {
            vec![id as u8]
        } else {
            Vec::new()
        }
    }
}

pub fn describe(dir: &Path) -> Option<Result<Description, LoadError>> {
    let text = std::fs::read_to_string(dir.join(GENERATOR_FILE)).ok()?;
    let _ = text;
    // The comment makes the template one that takes tools in the Hermes format (they are not
    // rendered: the fake's context is short).
    let template =
        ChatTemplate::new("{# tools, <tool_call> #}{% for m in messages %}{{ m.content }}{% endfor %}", "", "")
            .unwrap();
    Some(Ok(Description::Generator(GeneratorSpec {
        info: GeneratorInfo {
            architecture: "fake".into(),
            max_context: CONTEXT,
            vocab_size: VOCAB,
            kv_bytes_per_token: 1024,
            stop_tokens: vec![END],
            chunked_prefill: true,
        },
        tokenizer: Arc::new(Bytes),
        chat_template: Some(Arc::new(template)),
    })))
}

pub fn load(dir: &Path, observed: &Arc<GenObserved>) -> Result<Loaded, LoadError> {
    let text = std::fs::read_to_string(dir.join(GENERATOR_FILE)).map_err(|e| LoadError::Weights(e.to_string()))?;
    let (mut sleep, mut gate) = (Duration::ZERO, None);
    match text.trim().split_once(' ') {
        Some(("sleep", ms)) => sleep = Duration::from_millis(ms.parse().map_err(|_| LoadError::Weights(text.clone()))?),
        Some(("first-pass-waits-for", path)) => gate = Some(std::path::PathBuf::from(path)),
        _ => {}
    }
    Ok(Loaded::Generator(Box::new(FakeGenerator { sleep, gate, warmed: false, observed: observed.clone() })))
}

/// Writes `<repo>/<model>/<version>/` as a fake generator (`sleep MS`, `first-pass-waits-for
/// PATH`: the first pass after warm-up blocks until PATH exists, or empty).
pub fn write_generator(repo: &Path, model: &str, version: u64, text: &str) {
    let dir = repo.join(model).join(version.to_string());
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join(GENERATOR_FILE), text).unwrap();
}

struct FakeGenerator {
    sleep: Duration,
    gate: Option<std::path::PathBuf>,
    warmed: bool,
    observed: Arc<GenObserved>,
}

struct Seq {
    last: Option<u32>,
    observed: Arc<GenObserved>,
}

impl Drop for Seq {
    fn drop(&mut self) {
        self.observed.live_seqs.fetch_sub(1, Ordering::SeqCst);
    }
}

impl TextGenerator for FakeGenerator {
    fn new_sequence(&self) -> SeqState {
        self.observed.live_seqs.fetch_add(1, Ordering::SeqCst);
        self.observed.made_seqs.fetch_add(1, Ordering::SeqCst);
        Box::new(Seq { last: None, observed: self.observed.clone() })
    }

    fn forward(&mut self, items: &mut [GenItem<'_>]) -> Result<Vec<Vec<f32>>, BackendError> {
        if self.warmed {
            self.observed.batch_items.lock().unwrap().push(items.len());
            std::thread::sleep(self.sleep);
            if let Some(gate) = self.gate.take() {
                super::fake::wait_for_file(&gate);
            }
        }
        self.warmed = true;
        let mut out = Vec::new();
        if items.iter().any(|i| i.tokens.contains(&PANIC)) {
            panic!("the fake generator panics on `!` on purpose");
        }
        for item in items.iter_mut() {
            let seq = item.state.downcast_mut::<Seq>().ok_or_else(|| BackendError("foreign state".into()))?;
            seq.last = item.tokens.last().copied().or(seq.last);
            if item.logits {
                let next = match seq.last {
                    Some(t) if t + 1 < END => t + 1,
                    _ => END,
                };
                let mut logits = vec![0.0f32; VOCAB];
                // Far above the rest: sampling at any temperature the tests use picks it (e^-100).
                logits[next as usize] = 100.0;
                out.push(logits);
            }
        }
        Ok(out)
    }
}
