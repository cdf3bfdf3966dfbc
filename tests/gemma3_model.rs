//! Gemma 3 270M (Q4_K_M GGUF, SentencePiece vocabulary) against llama.cpp itself: token ids for
//! texts with Chinese, emoji, accents, code and runs of whitespace, and greedy continuations,
//! from `llama-server`'s `/tokenize` and `/completion` (`tests/data/make_gemma3_reference.sh`,
//! run once; ids committed in `tests/data/gemma3_llamacpp.json`).

use std::path::Path;

use aiserve_core::generate::{GenItem, TextGenerator};
use aiserve_core::sampling::argmax;
use serde_json::Value;

use crate::generate_model::load;

fn gemma3_dir() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::os::unix::fs::symlink(crate::gemma3_gguf(), dir.path().join("model.gguf")).unwrap();
    dir
}

/// `steps` greedy tokens after `prompt`, one sequence; with `argmax_only`, as the engine asks
/// for greedy sequences (only the largest logit exact).
fn greedy_steps(model: &mut dyn TextGenerator, prompt: &[u32], steps: usize, argmax_only: bool) -> Vec<u32> {
    let mut seq = model.new_sequence();
    let mut feed = prompt.to_vec();
    let mut out = Vec::new();
    for _ in 0..steps {
        let mut items =
            [GenItem { state: &mut seq, tokens: &feed, prompt_len: prompt.len(), logits: true, argmax_only }];
        let logits = model.forward(&mut items).unwrap();
        let t = argmax(&logits[0]);
        out.push(t);
        feed = vec![t];
    }
    out
}

fn reference() -> Value {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/gemma3_llamacpp.json");
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

#[test]
fn gemma3_tokenizes_as_llama_cpp_does() {
    let dir = gemma3_dir();
    let (spec, _) = load(dir.path());
    assert_eq!((spec.info.vocab_size, spec.info.max_context), (262_144, 32_768));
    assert!(spec.info.stop_tokens.contains(&1) && spec.info.stop_tokens.contains(&106), "{:?}", spec.info.stop_tokens);
    for case in reference()["tokenize"].as_array().unwrap() {
        let text = case["text"].as_str().unwrap();
        let want: Vec<u32> = serde_json::from_value(case["ids"].clone()).unwrap();
        let got = spec.tokenizer.encode(text, false).unwrap();
        assert_eq!(got, want, "{text:?}");
        if !text.contains("<start_of_turn>") {
            assert_eq!(spec.tokenizer.decode(&got).unwrap(), text, "decode(encode(x)) == x");
        }
        // Raw bytes per token (logprobs' `bytes`) add up to the text, byte pieces included.
        let bytes: Vec<u8> = got.iter().flat_map(|&id| spec.tokenizer.token_bytes(id)).collect();
        if !text.contains("<start_of_turn>") {
            assert_eq!(String::from_utf8(bytes).unwrap(), text);
        }
    }
    // `add_bos_token`: prompts start with `<bos>`.
    assert_eq!(spec.tokenizer.encode("Hi", true).unwrap()[0], 2);
}

/// Logits closer than this are a tie: llama.cpp rounds activations to 8 bits for its products
/// and aiserve to 16, so such a pair can come out either way.
const TIE: f32 = 0.1;

#[test]
fn gemma3_continues_prompts_as_llama_cpp_does() {
    let dir = gemma3_dir();
    let (spec, mut model) = load(dir.path());
    let mut ties = 0;
    for case in reference()["greedy"].as_array().unwrap() {
        let text = case["prompt"].as_str().unwrap();
        let prompt: Vec<u32> = serde_json::from_value(case["prompt_ids"].clone()).unwrap();
        let want: Vec<u32> = serde_json::from_value(case["ids"].clone()).unwrap();
        assert_eq!(spec.tokenizer.encode(text, true).unwrap(), prompt, "{text:?}");
        // Token by token on llama.cpp's own continuation: the same choice at every step, but
        // where the two best logits tie.
        let mut seq = model.new_sequence();
        let mut feed = prompt.clone();
        let mut tied = false;
        for (k, w) in want.iter().enumerate() {
            let mut items = [GenItem::new(&mut seq, &feed, prompt.len())];
            let logits = model.forward(&mut items).unwrap().remove(0);
            let t = argmax(&logits);
            if t != *w {
                let gap = logits[t as usize] - logits[*w as usize];
                assert!(gap < TIE, "{text:?} step {k}: {t} is {gap} above llama.cpp's {w}");
                tied = true;
                ties += 1;
            }
            feed = vec![*w];
        }
        // Without a tie on the way, free-running greedy decoding gives llama.cpp's text.
        if !tied {
            let got = greedy_steps(model.as_mut(), &prompt, want.len(), false);
            assert_eq!(got, want, "{text:?}");
            // The same tokens where only the largest logit is computed exactly (the greedy
            // head, where the CPU has its kernel).
            assert_eq!(greedy_steps(model.as_mut(), &prompt, want.len(), true), want, "{text:?}");
            assert_eq!(spec.tokenizer.decode(&got).unwrap(), case["text"].as_str().unwrap());
        }
    }
    assert!(ties <= 6, "{ties} ties in 192 steps");
}
