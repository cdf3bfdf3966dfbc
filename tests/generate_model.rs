//! Text generation models against their references, through the loader the server uses:
//! SmolLM2-135M-Instruct Q4_1 (GGUF) answers exactly as transformers does on the dequantized
//! weights, greedy decoding gives the same tokens alone and batched (16- and 8-bit activations); tiny llama and T5 models
//! built here from a weight formula match transformers' logits and greedy tokens
//! (`tests/data/tiny_generators.json`, made by `tests/data/make_tiny_generators.py`).

use std::path::Path;

use aiserve_core::chat::Message;
use aiserve_core::generate::{GenItem, GeneratorSpec, SeqState, TextGenerator};
use aiserve_core::sampling::argmax;
use aiserve_core::{Description, Loaded, ModelLoader};
use aiserve_models::llm::kv::KvDtype;
use aiserve_models::quant::Bits;
use aiserve_models::CandleLoader;
use serde_json::{json, Value};

pub fn load(dir: &Path) -> (GeneratorSpec, Box<dyn TextGenerator>) {
    load_with(dir, Bits::default())
}

fn load_with(dir: &Path, bits: Bits) -> (GeneratorSpec, Box<dyn TextGenerator>) {
    load_with_kv(dir, bits, KvDtype::default())
}

fn load_with_kv(dir: &Path, bits: Bits, kv: KvDtype) -> (GeneratorSpec, Box<dyn TextGenerator>) {
    let loader = CandleLoader::cpu().with_activation_bits(bits).with_kv_dtype(kv);
    let description = loader.describe(dir, &aiserve_core::config::ModelConfig::new_default()).unwrap();
    let Description::Generator(spec) = &description else { panic!("not described as a generator") };
    let spec = spec.clone();
    match loader.load(dir, &description).unwrap() {
        Loaded::Generator(g) => (spec, g),
        _ => panic!("not loaded as a generator"),
    }
}

/// Greedy tokens (`steps` of them, or up to a stop token) for each prompt, all in one batch.
pub fn greedy(model: &mut dyn TextGenerator, prompts: &[Vec<u32>], steps: usize, stop: &[u32]) -> Vec<Vec<u32>> {
    let mut seqs: Vec<SeqState> = prompts.iter().map(|_| model.new_sequence()).collect();
    let mut out: Vec<Vec<u32>> = vec![Vec::new(); prompts.len()];
    let mut feed: Vec<Vec<u32>> = prompts.to_vec();
    let mut live: Vec<usize> = (0..prompts.len()).collect();
    for _ in 0..steps {
        if live.is_empty() {
            break;
        }
        let mut batch: Vec<(usize, &mut SeqState)> =
            seqs.iter_mut().enumerate().filter(|(i, _)| live.contains(i)).collect();
        let mut items: Vec<GenItem> =
            batch.iter_mut().map(|(i, s)| GenItem::new(s, &feed[*i], prompts[*i].len())).collect();
        let logits = model.forward(&mut items).unwrap();
        drop(items);
        let mut next_live = Vec::new();
        for (&i, l) in live.iter().zip(&logits) {
            let t = argmax(l);
            out[i].push(t);
            feed[i] = vec![t];
            if !stop.contains(&t) {
                next_live.push(i);
            }
        }
        live = next_live;
    }
    out
}

pub fn smollm2_dir() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let gguf = crate::assets_dir().join("smollm2/SmolLM2-135M-Instruct.Q4_1.gguf");
    std::os::unix::fs::symlink(gguf, dir.path().join("model.gguf")).unwrap();
    dir
}

pub fn chat_ids(spec: &GeneratorSpec, question: &str) -> Vec<u32> {
    let text = spec.chat_template.as_ref().unwrap().render(&[Message::new("user", question)], true).unwrap();
    spec.tokenizer.encode(&text, false).unwrap()
}

#[test]
fn smollm2_answers_like_transformers_with_its_own_template() {
    let dir = smollm2_dir();
    let (spec, mut model) = load(dir.path());
    assert_eq!((spec.info.max_context, spec.info.vocab_size), (8192, 49152));
    assert!(spec.info.stop_tokens.contains(&2), "{:?}", spec.info.stop_tokens);
    // Greedy ids from transformers 5.24 on the same GGUF (dequantized to f32), same prompt.
    let cases: [(&str, &[u32], &str); 2] = [
        (
            "Which city is the capital of France?",
            &[504, 3575, 282, 4649, 314, 7042, 30, 2],
            "The capital of France is Paris.",
        ),
        (
            "What is 2 + 2?",
            &[504, 2988, 288, 451, 8170, 4119, 1732, 314, 216, 36, 30, 2],
            "The answer to this classic math problem is 4.",
        ),
    ];
    for (q, want_ids, want_text) in cases {
        let ids = chat_ids(&spec, q);
        assert_eq!(ids.len(), 38, "the template adds SmolLM's default system prompt");
        let got = greedy(model.as_mut(), &[ids], 32, &spec.info.stop_tokens).remove(0);
        assert_eq!(got, want_ids, "{q}");
        assert_eq!(spec.tokenizer.decode(&got).unwrap(), want_text);
    }
}

const QUESTIONS: [&str; 8] = [
    "Which city is the capital of France?",
    "What is 2 + 2?",
    "Name three colors.",
    "Write a haiku about the sea.",
    "Who wrote Hamlet?",
    "What is the boiling point of water?",
    "Say hello in Spanish.",
    "List the days of the week, starting on Monday.",
];

#[test]
fn smollm2_with_8_bit_activations_stays_close_to_16_bit() {
    // 8-bit activations move this tiny model's logits by a few units (measured: up to 2.8 on
    // logits of 23-33), more than the gap between its two best first tokens for some prompts,
    // so greedy answers change (see `Bits::Eight`). What must hold: each first token it picks
    // is one that 16 bits rate within half a unit of their best, and no logit moves by 4.
    let dir = smollm2_dir();
    let (spec, mut fine) = load_with(dir.path(), Bits::Sixteen);
    let (_, mut coarse) = load_with(dir.path(), Bits::Eight);
    for q in QUESTIONS {
        let ids = chat_ids(&spec, q);
        let first = |m: &mut Box<dyn TextGenerator>| {
            let mut seq = m.new_sequence();
            let item = GenItem::new(&mut seq, &ids, ids.len());
            m.forward(&mut [item]).unwrap().remove(0)
        };
        let (a, b) = (first(&mut fine), first(&mut coarse));
        let regret = a[argmax(&a) as usize] - a[argmax(&b) as usize];
        assert!(regret < 0.5, "{q}: 8 bits pick token {} that 16 bits rate {regret} below their best", argmax(&b));
        let moved = a.iter().zip(&b).map(|(x, y)| (x - y).abs()).fold(0.0, f32::max);
        assert!(moved < 4.0, "{q}: 8-bit logits moved by up to {moved}");
    }
}

#[test]
fn smollm2_with_an_f16_kv_cache_keeps_its_answers_in_half_the_memory() {
    let dir = smollm2_dir();
    let (spec, mut model) = load_with_kv(dir.path(), Bits::Sixteen, KvDtype::F16);
    let (f32_spec, _) = load(dir.path());
    assert_eq!(spec.info.kv_bytes_per_token * 2, f32_spec.info.kv_bytes_per_token);
    for (q, want) in [
        ("Which city is the capital of France?", "The capital of France is Paris."),
        ("What is 2 + 2?", "The answer to this classic math problem is 4."),
    ] {
        let got = greedy(model.as_mut(), &[chat_ids(&spec, q)], 32, &spec.info.stop_tokens).remove(0);
        assert_eq!(spec.tokenizer.decode(&got).unwrap(), want, "{q}");
    }
}

#[test]
fn greedy_tokens_are_the_same_alone_and_in_a_batch_of_8() {
    for (bits, kv) in [(Bits::Sixteen, KvDtype::F32), (Bits::Eight, KvDtype::F32), (Bits::Sixteen, KvDtype::F16)] {
        let dir = smollm2_dir();
        let (spec, mut model) = load_with_kv(dir.path(), bits, kv);
        let prompts: Vec<Vec<u32>> = QUESTIONS.iter().map(|q| chat_ids(&spec, q)).collect();
        let together = greedy(model.as_mut(), &prompts, 24, &[]);
        for (i, p) in prompts.iter().enumerate() {
            let alone = greedy(model.as_mut(), std::slice::from_ref(p), 24, &[]).remove(0);
            assert_eq!(alone, together[i], "{bits:?} {kv:?} {:?}", QUESTIONS[i]);
        }
    }
}

/// FNV-1a (32 bit) of a tensor name: the seed of its values.
fn fnv1a(name: &str) -> u32 {
    name.bytes().fold(2166136261u32, |h, b| (h ^ b as u32).wrapping_mul(16777619))
}

/// The reference script's weight formula (see `make_tiny_generators.py`).
fn formula(name: &str, n: usize) -> Vec<f32> {
    let h = fnv1a(name) as u64;
    (0..n as u64)
        .map(|i| {
            let x = (h + i * 2654435761) % (1u64 << 32);
            let u = x as f64 / 4294967296.0 - 0.5;
            (if name.ends_with("norm.weight") { 1.0 + 0.2 * u } else { 0.4 * u }) as f32
        })
        .collect()
}

fn reference() -> Value {
    serde_json::from_str(include_str!("data/tiny_generators.json")).unwrap()
}

/// A Hugging Face directory for `case` of the reference: config, formula weights (one per tied
/// group) and a word-level tokenizer over `t0 … t95`.
fn tiny_dir(case: &Value, model_type: &str) -> tempfile::TempDir {
    tiny_dir_with(case, model_type, 1.0)
}

/// [`tiny_dir`] with every query projection scaled by `q_scale`, and for `qwen3` query and key
/// norms (ones) in every layer.
fn tiny_dir_with(case: &Value, model_type: &str, q_scale: f32) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let mut config = case["config"].clone();
    config["model_type"] = model_type.into();
    config["architectures"] =
        json!([if model_type == "t5" { "T5ForConditionalGeneration" } else { "LlamaForCausalLM" }]);
    std::fs::write(dir.path().join("config.json"), config.to_string()).unwrap();
    let tied_followers: Vec<&str> = case["tied"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|g| g.as_array().unwrap()[1..].iter().map(|n| n.as_str().unwrap()))
        .collect();
    let mut tensors = Vec::new();
    for key in case["keys"].as_array().unwrap() {
        let name = key[0].as_str().unwrap();
        if tied_followers.contains(&name) {
            continue;
        }
        let shape: Vec<usize> = key[1].as_array().unwrap().iter().map(|d| d.as_u64().unwrap() as usize).collect();
        let scale = if name.ends_with("q_proj.weight") { q_scale } else { 1.0 };
        let values = formula(name, shape.iter().product());
        let bytes: Vec<u8> = values.iter().flat_map(|v| (v * scale).to_le_bytes()).collect();
        if model_type == "qwen3" && name.ends_with("q_proj.weight") {
            let c = &case["config"];
            let head_dim = c["hidden_size"].as_u64().unwrap() / c["num_attention_heads"].as_u64().unwrap();
            for norm in ["q_norm", "k_norm"] {
                let ones: Vec<u8> = (0..head_dim).flat_map(|_| 1.0f32.to_le_bytes()).collect();
                tensors.push((name.replace("q_proj", norm), vec![head_dim as usize], ones));
            }
        }
        tensors.push((name.to_owned(), shape, bytes));
    }
    let views: Vec<(String, safetensors::tensor::TensorView)> = tensors
        .iter()
        .map(|(n, s, b)| {
            (n.clone(), safetensors::tensor::TensorView::new(safetensors::Dtype::F32, s.clone(), b).unwrap())
        })
        .collect();
    safetensors::serialize_to_file(views, None, &dir.path().join("model.safetensors")).unwrap();
    let vocab: serde_json::Map<String, Value> = (0..96).map(|i| (format!("t{i}"), json!(i))).collect();
    let tokenizer = json!({
        "version": "1.0", "truncation": null, "padding": null, "added_tokens": [], "normalizer": null,
        "pre_tokenizer": { "type": "WhitespaceSplit" }, "post_processor": null,
        "decoder": null, "model": { "type": "WordLevel", "vocab": vocab, "unk_token": "t0" }
    });
    std::fs::write(dir.path().join("tokenizer.json"), tokenizer.to_string()).unwrap();
    dir
}

fn ids(v: &Value) -> Vec<u32> {
    v.as_array().unwrap().iter().map(|x| x.as_u64().unwrap() as u32).collect()
}

fn first_logits(model: &mut dyn TextGenerator, prompt: &[u32]) -> Vec<f32> {
    let mut seq = model.new_sequence();
    model.forward(&mut [GenItem::new(&mut seq, prompt, prompt.len())]).unwrap().remove(0)
}

fn assert_close(got: &[f32], want: &Value, what: &str) {
    let want: Vec<f64> = want.as_array().unwrap().iter().map(|x| x.as_f64().unwrap()).collect();
    assert_eq!(got.len(), want.len(), "{what}");
    let worst = got.iter().zip(&want).map(|(g, w)| (*g as f64 - w).abs()).fold(0.0, f64::max);
    assert!(worst < 1e-4, "{what}: logits differ from transformers by up to {worst}");
}

#[test]
fn tiny_hf_llama_matches_transformers() {
    let refs = reference();
    let case = &refs["llama"];
    let dir = tiny_dir(case, "llama");
    let (spec, mut model) = load(dir.path());
    assert_eq!((spec.info.max_context, spec.info.vocab_size, spec.info.stop_tokens.clone()), (128, 96, vec![2]));
    assert_eq!(spec.tokenizer.encode("t5 t9", false).unwrap(), [5, 9]);
    for p in ["P1", "P2"] {
        let prompt = ids(&case[p]["prompt"]);
        assert_close(&first_logits(model.as_mut(), &prompt), &case[p]["first_logits"], p);
        let got = greedy(model.as_mut(), &[prompt], 16, &[]).remove(0);
        assert_eq!(got, ids(&case[p]["greedy"]), "{p}");
    }
    // Both prompts in one batch: the same tokens.
    let prompts = [ids(&case["P1"]["prompt"]), ids(&case["P2"]["prompt"])];
    let both = greedy(model.as_mut(), &prompts, 16, &[]);
    assert_eq!(both, [ids(&case["P1"]["greedy"]), ids(&case["P2"]["greedy"])]);
}

/// Qwen 3 (a Hugging Face directory) normalises each query and key head before attention, so
/// scaling the query projections changes nothing but for the norm's epsilon; a llama's would.
#[test]
fn tiny_hf_qwen3_normalises_query_and_key_heads() {
    let refs = reference();
    let case = &refs["llama"];
    let prompt = ids(&case["P1"]["prompt"]);
    let logits = |model_type: &str, q_scale: f32| {
        let dir = tiny_dir_with(case, model_type, q_scale);
        let (_, mut model) = load(dir.path());
        first_logits(model.as_mut(), &prompt)
    };
    let worst = |a: &[f32], b: &[f32]| a.iter().zip(b).map(|(a, b)| (a - b).abs()).fold(0.0, f32::max);
    assert!(worst(&logits("qwen3", 1.0), &logits("qwen3", 3.0)) < 1e-4);
    assert!(worst(&logits("llama", 1.0), &logits("llama", 3.0)) > 1e-2);
}

#[test]
fn tiny_t5_matches_transformers_tied_and_untied() {
    let refs = reference();
    for variant in ["t5_flan", "t5_t5"] {
        let case = &refs[variant];
        let dir = tiny_dir(case, "t5");
        let (spec, mut model) = load(dir.path());
        assert!(!spec.info.chunked_prefill);
        assert_eq!(spec.info.stop_tokens, [1]);
        for e in ["E1", "E2"] {
            let input = ids(&case[e]["input"]);
            assert_close(&first_logits(model.as_mut(), &input), &case[e]["first_logits"], &format!("{variant} {e}"));
            let got = greedy(model.as_mut(), &[input], 12, &[]).remove(0);
            assert_eq!(got, ids(&case[e]["greedy"]), "{variant} {e}");
        }
    }
}

/// A fork of a sequence's first positions is what feeding those tokens computes: the rest of
/// the prompt fed to the fork gives the logits of the whole prompt fed at once, to the bit.
#[test]
fn a_forked_prefix_gives_the_same_logits_as_a_fresh_prompt() {
    let dir = smollm2_dir();
    for kv in [KvDtype::F32, KvDtype::F16] {
        let (spec, mut model) = load_with_kv(dir.path(), Bits::default(), kv);
        let ids = chat_ids(&spec, "Write a haiku about the sea.");
        let whole = first_logits(model.as_mut(), &ids);
        let mut seq = model.new_sequence();
        let mut item =
            [GenItem { state: &mut seq, tokens: &ids, prompt_len: ids.len(), logits: false, argmax_only: false }];
        model.forward(&mut item).unwrap();
        assert_eq!(model.shared_len(&seq), Some(ids.len()));
        assert!(model.fork(&seq, ids.len() + 1).is_none(), "no more positions than it holds");
        let mut fork = model.fork(&seq, 30).unwrap();
        drop(seq);
        let rest = &ids[30..];
        let mut item = [GenItem::new(&mut fork, rest, ids.len())];
        assert_eq!(model.forward(&mut item).unwrap().remove(0), whole, "{kv:?}");
    }
}

/// Verifying drafts: logits after each of several tokens fed at once are those of feeding
/// them one at a time, to the bit, and dropping refused positions leaves the sequence as if
/// they had never been fed.
#[test]
fn logits_after_each_drafted_token_match_one_at_a_time() {
    let dir = smollm2_dir();
    let (spec, mut model) = load(dir.path());
    assert!(model.verifies_drafts());
    let ids = chat_ids(&spec, "Write a haiku about the sea.");
    let extra = [504u32, 2988, 288, 451, 8170];
    let prefilled = |model: &mut Box<dyn TextGenerator>| {
        let mut seq = model.new_sequence();
        let mut item =
            [GenItem { state: &mut seq, tokens: &ids, prompt_len: ids.len(), logits: false, argmax_only: false }];
        model.forward(&mut item).unwrap();
        seq
    };
    let mut a = prefilled(&mut model);
    let one: Vec<Vec<f32>> = extra
        .iter()
        .map(|t| {
            let token = [*t];
            let mut item = [GenItem::new(&mut a, &token, ids.len())];
            model.forward(&mut item).unwrap().remove(0)
        })
        .collect();
    let mut b = prefilled(&mut model);
    let mut item = [GenItem::new(&mut b, &extra, ids.len())];
    assert_eq!(model.forward_rows(&mut item, &[5]).unwrap(), one);
    // Two of the four drafts after `extra[0]` accepted: keep their positions, feed the next.
    assert!(model.truncate(&mut b, ids.len() + 3));
    assert!(!model.truncate(&mut b, ids.len() + 4), "it cannot grow back");
    let mut item = [GenItem::new(&mut b, &extra[3..4], ids.len())];
    assert_eq!(model.forward(&mut item).unwrap().remove(0), one[3]);
}
