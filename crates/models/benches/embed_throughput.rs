//! Sentence embedding throughput and latency of a Hugging Face model directory, measured the
//! way `../shared/peers/embeddings_minilm/bench_encode.py` measures sentence-transformers:
//! tokenise + encode N sentences in batches of 32 (median of 5 runs), then batch-of-1 latency.
//!
//!     AISERVE_EMBED_MODEL=~/.cache/aiserve-assets/minilm AISERVE_EMBED_SENTENCES=sentences.txt \
//!       cargo bench -p aiserve-models --bench embed_throughput
//!
//! Prints one JSON line. `RAYON_NUM_THREADS` sets the threads. Without a sentences file it uses
//! 1000 generated ~12-word sentences.

use std::time::Instant;

use aiserve_core::{Description, Loaded, ModelLoader};
use aiserve_models::CandleLoader;

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return; // `cargo test --benches` asks for the bench names; there is nothing to list
    }
    aiserve_models::configure_threads();
    let dir = std::env::var("AISERVE_EMBED_MODEL")
        .unwrap_or_else(|_| format!("{}/.cache/aiserve-assets/minilm", std::env::var("HOME").unwrap_or_default()));
    let sentences: Vec<String> = match std::env::var("AISERVE_EMBED_SENTENCES") {
        Ok(path) => std::fs::read_to_string(&path)
            .unwrap_or_else(|e| panic!("{path}: {e}"))
            .lines()
            .map(str::to_owned)
            .filter(|l| !l.is_empty())
            .collect(),
        Err(_) => generated(1000),
    };
    let batch: usize = std::env::var("AISERVE_EMBED_BATCH").ok().and_then(|b| b.parse().ok()).unwrap_or(32);
    // The same loader the server uses.
    let (loader, dir) = (CandleLoader::cpu(), std::path::Path::new(&dir));
    let description =
        loader.describe(dir, &aiserve_core::config::ModelConfig::new_default()).expect("reading the model directory");
    let Description::Embedder { tokenizer, .. } = &description else { panic!("not a text embedding model") };
    let Ok(Loaded::Embedder(mut model)) = loader.load(dir, &description) else { panic!("loading the weights failed") };
    let mut encode = |texts: &[String]| {
        let ids: Vec<Vec<u32>> = texts.iter().map(|t| tokenizer.encode_truncated(t).unwrap()).collect();
        let refs: Vec<&[u32]> = ids.iter().map(|v| v.as_slice()).collect();
        model.embed(&refs).unwrap()
    };
    encode(&sentences[..64.min(sentences.len())]); // warm-up
    let mut runs = Vec::new();
    for _ in 0..5 {
        let t = Instant::now();
        for chunk in sentences.chunks(batch) {
            std::hint::black_box(encode(chunk));
        }
        runs.push(t.elapsed().as_secs_f64());
    }
    runs.sort_by(f64::total_cmp);
    let mut lat: Vec<f64> = sentences
        .iter()
        .take(200)
        .map(|s| {
            let t = Instant::now();
            std::hint::black_box(encode(std::slice::from_ref(s)));
            t.elapsed().as_secs_f64() * 1000.0
        })
        .collect();
    lat.sort_by(f64::total_cmp);
    let tokens: usize = sentences.iter().map(|s| tokenizer.encode(s).unwrap().len()).sum();
    println!(
        "{{\"engine\":\"aiserve\",\"sentences\":{},\"batch_size\":{batch},\"threads\":{},\"mean_tokens\":{:.2},\"seconds_per_run\":{:?},\"sentences_per_second_median\":{:.1},\"single_sentence_ms_p50\":{:.2},\"single_sentence_ms_p99\":{:.2}}}",
        sentences.len(),
        aiserve_models::compute_threads(),
        tokens as f64 / sentences.len() as f64,
        runs.iter().map(|r| (r * 1000.0).round() / 1000.0).collect::<Vec<_>>(),
        sentences.len() as f64 / runs[2],
        lat[lat.len() / 2],
        lat[(lat.len() * 99 / 100).saturating_sub(1)],
    );
}

/// Deterministic ~12-word sentences when no file is given.
fn generated(n: usize) -> Vec<String> {
    const WORDS: &[&str] = &[
        "the", "quick", "brown", "fox", "jumps", "over", "a", "lazy", "dog", "while", "small", "red", "birds", "sing",
        "near", "old", "stone", "bridges", "under", "bright", "morning", "light", "and", "cold", "rivers",
    ];
    let mut state = 1234u64;
    let mut next = move || {
        state = state.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        (state >> 33) as usize
    };
    (0..n)
        .map(|_| {
            let k = 11 + next() % 3;
            let words: Vec<&str> = (0..k).map(|_| WORDS[next() % WORDS.len()]).collect();
            format!("{}.", words.join(" "))
        })
        .collect()
}
