//! Text generation speed of a GGUF model on this machine, model only (no HTTP, no engine):
//! time to first token for a chat prompt, single-stream greedy decode tokens/s, prefill
//! tokens/s, and aggregate decode tokens/s with 1, 2, 4, 8 sequences sharing each forward pass.
//!
//!   AISERVE_GGUF=path/to/model.gguf cargo bench -p aiserve-models --bench generate
//!
//! Threads: rayon's pool (`RAYON_NUM_THREADS=1` for one thread). `AISERVE_ONLY_BATCH=1` skips the
//! answers, `AISERVE_BATCHES=1,8` picks the batch sizes, `AISERVE_CONTEXT=1000` decodes after a
//! 1000-token prompt instead of a short one, `AISERVE_ACTIVATION_BITS=8` the
//! 8-bit activations (16 by default, as the server), `AISERVE_KV_CACHE_DTYPE=f16` f16 KV caches,
//! `AISERVE_ARGMAX_ONLY=1` batched decode steps that need only the largest logit, as the server
//! runs greedy sequences (`GenItem::argmax_only`; the model may then skip most output rows),
//! `AISERVE_AS_SERVED=1` the four requests one client of `bench/generate_load.py` sends, as the
//! server answers them (chat template, prefix cache, greedy steps), prompts included.

use std::time::Instant;

use aiserve_core::chat::{ChatTemplate, Message};
use aiserve_core::generate::{GenItem, GeneratorSpec, SeqState, TextGenerator};
use aiserve_core::sampling::{argmax, Sampler, SamplingParams};
use aiserve_models::llm::kv::KvDtype;
use aiserve_models::llm::{gguf, Options};
use aiserve_models::quant::Bits;

fn main() {
    let path = std::env::var("AISERVE_GGUF").unwrap_or_else(|_| {
        let assets = std::env::var("AISERVE_ASSETS")
            .unwrap_or_else(|_| format!("{}/.cache/aiserve-assets", std::env::var("HOME").unwrap()));
        format!("{assets}/smollm2/SmolLM2-135M-Instruct.Q4_1.gguf")
    });
    let decode_tokens: usize = std::env::var("AISERVE_DECODE_TOKENS").ok().and_then(|v| v.parse().ok()).unwrap_or(128);
    let path = std::path::Path::new(&path);
    let kv = match std::env::var("AISERVE_KV_CACHE_DTYPE").as_deref() {
        Ok("f16") => KvDtype::F16,
        _ => KvDtype::F32,
    };
    let spec = gguf::describe(path, kv).expect("describe");
    let bits = match std::env::var("AISERVE_ACTIVATION_BITS").as_deref() {
        Ok("8") => Bits::Eight,
        _ => Bits::Sixteen,
    };
    let mut model = gguf::load(path, Options { bits, kv }).expect("load");
    println!(
        "model {} ({} MB of weights read per token, greedy head {} MB, {bits:?}-bit activations, {kv:?} KV \
         cache), {} threads",
        path.display(),
        model.weight_bytes() / 1_000_000,
        model.head_bytes() / 1_000_000,
        rayon::current_num_threads()
    );
    // Base models (Gemma 3 270M) have no chat template: their questions go in as plain text.
    let template = spec.chat_template.clone();

    // Greedy answers and time to first token.
    let skip = std::env::var_os("AISERVE_ONLY_BATCH").is_some();
    for q in if skip {
        &[][..]
    } else {
        &[
            "Which city is the capital of France?",
            "What is 2 + 2?",
            "Write a long story about a robot who learns to paint.",
        ][..]
    } {
        let ids = match &template {
            Some(t) => spec.tokenizer.encode(&t.render(&[Message::new("user", q)], true).unwrap(), false).unwrap(),
            None => spec.tokenizer.encode(q, true).unwrap(),
        };
        let mut seq: SeqState = model.new_sequence();
        let t0 = Instant::now();
        let logits = model.forward(&mut [GenItem::new(&mut seq, &ids, ids.len())]).unwrap();
        let ttft = t0.elapsed();
        let mut next = argmax(&logits[0]);
        let mut out = vec![next];
        let t1 = Instant::now();
        while out.len() < decode_tokens && !spec.info.stop_tokens.contains(&next) {
            let logits = model.forward(&mut [GenItem::new(&mut seq, &[next], ids.len())]).unwrap();
            next = argmax(&logits[0]);
            out.push(next);
        }
        let dt = t1.elapsed();
        let text = spec.tokenizer.decode(&out).unwrap();
        println!(
            "{q:?} -> {text:?}\n  prompt {} tokens, first token {:.1} ms, decode {:.1} tok/s ({} tokens), ids {:?}",
            ids.len(),
            ttft.as_secs_f64() * 1e3,
            (out.len() - 1) as f64 / dt.as_secs_f64(),
            out.len(),
            &out[..out.len().min(12)]
        );
    }

    // `AISERVE_AS_SERVED=1`: the requests bench/generate_load.py sends one client, as the server
    // answers them without HTTP: four questions (its first four topics) in the chat template
    // (plain text plus a blank line for base models), each prompt's tokens that an earlier one
    // began with taken from it in whole blocks of 16 (the server's prefix cache), then 128
    // greedy tokens that need only the largest logit. Time includes the prompts: the rate one
    // streamed client over HTTP is compared with.
    if std::env::var_os("AISERVE_AS_SERVED").is_some() {
        as_served(&mut model, &spec, template.as_deref());
    }

    // llama.cpp's own measure (../shared/peers/llamacpp/bench.py): a raw prompt, 128 greedy tokens,
    // time including the prompt.
    let ids = spec.tokenizer.encode("Write a long story about a robot who learns to paint.", true).unwrap();
    let mut seq = model.new_sequence();
    let t = Instant::now();
    let mut logits = model.forward(&mut [GenItem::new(&mut seq, &ids, ids.len())]).unwrap();
    for _ in 1..128 {
        let next = [argmax(&logits[0])];
        logits = model.forward(&mut [GenItem::new(&mut seq, &next, ids.len())]).unwrap();
    }
    println!(
        "as llama.cpp measures it: 128 tokens incl. a {}-token prompt: {:.1} tok/s",
        ids.len(),
        128.0 / t.elapsed().as_secs_f64()
    );

    // llama-bench's tg128: 128 single-token passes from an empty sequence (its first token is
    // the BOS), every pass timed.
    let bos = spec.tokenizer.encode("", true).unwrap().first().copied().unwrap_or(0);
    let mut seq = model.new_sequence();
    let mut next = [bos];
    let t = Instant::now();
    for _ in 0..128 {
        let logits = model.forward(&mut [GenItem::new(&mut seq, &next, 1)]).unwrap();
        next = [argmax(&logits[0])];
    }
    println!("as llama-bench measures it: tg128 {:.1} tok/s", 128.0 / t.elapsed().as_secs_f64());

    // Prefill speed: 201 tokens as one chunk (llama-bench's pp201 feeds 201 tokens at once).
    let mut ids = spec.tokenizer.encode(&"word ".repeat(300), false).unwrap();
    ids.truncate(201);
    let mut seq = model.new_sequence();
    let t = Instant::now();
    model.forward(&mut [GenItem::new(&mut seq, &ids, ids.len())]).unwrap();
    println!("prefill {} tokens: {:.0} tok/s", ids.len(), ids.len() as f64 / t.elapsed().as_secs_f64());

    // Sampling at OpenAI's default temperature (1, no top-k/top-p) over the whole vocabulary:
    // the engine thread does this for every sequence of every step.
    let ids = spec.tokenizer.encode("Once upon a time", false).unwrap();
    let mut seq = model.new_sequence();
    let logits = model.forward(&mut [GenItem::new(&mut seq, &ids, ids.len())]).unwrap().remove(0);
    let mut sampler = Sampler::new(SamplingParams { seed: Some(1), ..Default::default() });
    let mut row = logits.clone();
    let t = Instant::now();
    for _ in 0..200 {
        row.copy_from_slice(&logits);
        sampler.sample(&mut row);
    }
    println!(
        "sampling at temperature 1 over {} logits: {:.1} µs per token",
        logits.len(),
        t.elapsed().as_secs_f64() * 1e6 / 200.0
    );

    // Aggregate decode with b sequences per pass (64 steps each after a short prompt).
    // `AISERVE_CONTEXT=N`: a prompt of N tokens instead, for decoding at long contexts.
    let prompt = match std::env::var("AISERVE_CONTEXT").ok().and_then(|v| v.parse::<usize>().ok()).filter(|n| *n > 0) {
        Some(n) => spec.tokenizer.encode(&"word ".repeat(n), false).unwrap()[..n].to_vec(),
        None => spec.tokenizer.encode("Once upon a time", false).unwrap(),
    };
    // AISERVE_BATCHES="8" measures one size (for a profiler); the ratio needs 1 first.
    let batches: Vec<usize> = std::env::var("AISERVE_BATCHES")
        .ok()
        .map(|v| v.split(',').filter_map(|b| b.trim().parse().ok()).collect())
        .unwrap_or_else(|| vec![1, 2, 4, 8, 16]);
    let argmax_only = std::env::var_os("AISERVE_ARGMAX_ONLY").is_some();
    let mut base = f64::NAN;
    for b in batches {
        let mut seqs: Vec<SeqState> = (0..b).map(|_| model.new_sequence()).collect();
        let mut items: Vec<GenItem> = seqs.iter_mut().map(|s| GenItem::new(s, &prompt, prompt.len())).collect();
        let logits = model.forward(&mut items).unwrap();
        let mut next: Vec<[u32; 1]> = logits.iter().map(|l| [argmax(l)]).collect();
        let steps = 64;
        let t = Instant::now();
        for _ in 0..steps {
            let mut items: Vec<GenItem> = seqs
                .iter_mut()
                .zip(&next)
                .map(|(s, t)| GenItem { state: s, tokens: t, prompt_len: prompt.len(), logits: true, argmax_only })
                .collect();
            let logits = model.forward(&mut items).unwrap();
            next = logits.iter().map(|l| [argmax(l)]).collect();
        }
        let rate = (steps * b) as f64 / t.elapsed().as_secs_f64();
        if b == 1 {
            base = rate;
        }
        println!("decode batch {b}: {rate:.1} tok/s aggregate ({:.2}x batch 1)", rate / base);
    }
}

/// The server's prefix cache shares prompts in blocks of this many tokens (the runtime's
/// `generation::prefix::BLOCK`; this crate sits below the runtime, so the value is repeated).
const PREFIX_BLOCK: usize = 16;

/// A step of a greedy sequence, as the server runs it: only the largest logit is needed.
fn greedy<'a>(state: &'a mut SeqState, tokens: &'a [u32], prompt_len: usize) -> GenItem<'a> {
    GenItem { argmax_only: true, ..GenItem::new(state, tokens, prompt_len) }
}

/// See `AISERVE_AS_SERVED` in `main`.
fn as_served(model: &mut dyn TextGenerator, spec: &GeneratorSpec, template: Option<&ChatTemplate>) {
    let topics = ["a robot who learns to paint", "the sea at night", "a city of glass", "an old lighthouse keeper"];
    let prompts: Vec<Vec<u32>> = topics
        .iter()
        .map(|topic| {
            let ask = format!("Write a long story about {topic}.");
            match template {
                Some(t) => spec.tokenizer.encode(&t.render(&[Message::new("user", &ask)], true).unwrap(), false),
                None => spec.tokenizer.encode(&format!("{ask}\n\n"), true),
            }
            .unwrap()
        })
        .collect();
    let (mut seen, mut fed, mut decoding) = (Vec::<(Vec<u32>, SeqState)>::new(), 0, 0.0);
    let t = Instant::now();
    for ids in &prompts {
        // The longest whole-block prefix an earlier prompt shares (one token is always fed).
        let shared = |p: &[u32]| p.iter().zip(ids).take_while(|(a, b)| a == b).count().min(ids.len() - 1);
        let reuse = seen.iter().map(|(p, s)| (shared(p) / PREFIX_BLOCK * PREFIX_BLOCK, s)).max_by_key(|(n, _)| *n);
        let (mut seq, from) = match reuse {
            Some((n, s)) if n > 0 => (model.fork(s, n).expect("fork"), n),
            _ => (model.new_sequence(), 0),
        };
        fed += ids.len() - from;
        let logits = model.forward(&mut [greedy(&mut seq, &ids[from..], ids.len())]).unwrap();
        let mut next = [argmax(&logits[0])];
        let d = Instant::now();
        for _ in 1..128 {
            let logits = model.forward(&mut [greedy(&mut seq, &next, ids.len())]).unwrap();
            next = [argmax(&logits[0])];
        }
        decoding += d.elapsed().as_secs_f64();
        seen.push((ids.clone(), model.fork(&seq, ids.len()).expect("fork")));
    }
    let all = t.elapsed().as_secs_f64();
    println!(
        "as served: {} requests (prompts of {}-{} tokens, {fed} fed), 128 greedy tokens each, the prompts \
         included: {:.1} tok/s; their steps after the first token alone {:.1} tok/s",
        prompts.len(),
        prompts.iter().map(Vec::len).min().unwrap(),
        prompts.iter().map(Vec::len).max().unwrap(),
        (128 * prompts.len()) as f64 / all,
        (127 * prompts.len()) as f64 / decoding
    );
}
