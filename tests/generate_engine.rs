//! Prefix caching and prompt-lookup drafting through the generation engine, on SmolLM2: cached
//! prefixes, sequences that wait for a shared prompt and drafted tokens change no answer.

use aiserve_core::generate::{GenItem, SeqState, TextGenerator};

use crate::generate_model::{chat_ids, greedy, load, smollm2_dir};

/// A greedy (or `sampling`) request for `prompt`.
fn request(
    prompt: &[u32],
    max_tokens: usize,
    sampling: aiserve_core::sampling::SamplingParams,
) -> aiserve_runtime::generation::engine::GenRequest {
    aiserve_runtime::generation::engine::GenRequest {
        prompt: prompt.to_vec(),
        max_tokens,
        sampling,
        stop: Vec::new(),
        logprobs: None,
        deadline: None,
        constraint: None,
        keep_special: false,
    }
}

/// A sequence's text, and how many of its prompt tokens came from the prefix cache.
fn collect(
    mut rx: tokio::sync::mpsc::UnboundedReceiver<aiserve_runtime::generation::engine::Event>,
) -> (String, usize) {
    use aiserve_runtime::generation::engine::Event;
    let mut text = String::new();
    loop {
        match rx.blocking_recv().expect("an event") {
            Event::Text(t) => text.push_str(&t),
            Event::Done { cached_tokens, .. } => return (text, cached_tokens),
            Event::Failed(e) => panic!("{e}"),
            Event::Token(_) => {}
        }
    }
}

/// The text the engine generates for `prompt`, and how many prompt tokens came from its
/// prefix cache.
fn engine_answer(
    engine: &aiserve_runtime::generation::engine::Engine,
    prompt: &[u32],
    max_tokens: usize,
    sampling: aiserve_core::sampling::SamplingParams,
) -> (String, usize) {
    collect(engine.submit(request(prompt, max_tokens, sampling)).unwrap())
}

/// A model that sleeps before each pass, so that requests sent meanwhile start together.
struct Slow(Box<dyn TextGenerator>);

impl TextGenerator for Slow {
    fn new_sequence(&self) -> SeqState {
        self.0.new_sequence()
    }
    fn forward(&mut self, items: &mut [GenItem<'_>]) -> Result<Vec<Vec<f32>>, aiserve_core::BackendError> {
        std::thread::sleep(std::time::Duration::from_millis(100));
        self.0.forward(items)
    }
    fn verifies_drafts(&self) -> bool {
        self.0.verifies_drafts()
    }
    fn forward_rows(
        &mut self,
        items: &mut [GenItem<'_>],
        rows: &[usize],
    ) -> Result<Vec<Vec<f32>>, aiserve_core::BackendError> {
        std::thread::sleep(std::time::Duration::from_millis(100));
        self.0.forward_rows(items, rows)
    }
    fn truncate(&self, state: &mut SeqState, len: usize) -> bool {
        self.0.truncate(state, len)
    }
    fn shares_prefixes(&self) -> bool {
        self.0.shares_prefixes()
    }
    fn shared_len(&self, state: &SeqState) -> Option<usize> {
        self.0.shared_len(state)
    }
    fn fork(&self, state: &SeqState, len: usize) -> Option<SeqState> {
        self.0.fork(state, len)
    }
}

/// The `n` choices of one prompt arriving together: the second waits a step and copies the
/// first one's prompt instead of computing it again, and answers the same.
#[test]
fn sequences_arriving_together_with_one_prompt_compute_it_once() {
    use aiserve_core::sampling::SamplingParams;
    use aiserve_runtime::generation::engine::{Engine, EngineConfig};
    let dir = smollm2_dir();
    let (spec, model) = load(dir.path());
    let engine =
        Engine::start("together-test", "1", Box::new(Slow(model)), spec.clone(), EngineConfig::default()).unwrap();
    let greedy = || SamplingParams { temperature: 0.0, ..Default::default() };
    // Something running, so that the two below arrive during one pass.
    let busy = engine.submit(request(&chat_ids(&spec, "Name three colors."), 6, greedy())).unwrap();
    std::thread::sleep(std::time::Duration::from_millis(30));
    let prompt = chat_ids(&spec, "Which city is the capital of France?");
    let first = engine.submit(request(&prompt, 12, greedy())).unwrap();
    let second = engine.submit(request(&prompt, 12, greedy())).unwrap();
    let (a, b) = (collect(first), collect(second));
    collect(busy);
    assert_eq!(a.1, 0);
    assert_eq!(b, (a.0.clone(), prompt.len() - 1), "the same answer, all of the prompt but its last token copied");
}

/// Prompt-lookup speculative decoding: on an answer that copies its prompt, drafts are
/// accepted, and the answers (greedy, and sampled with a seed) are those without drafts.
#[test]
fn drafted_tokens_change_no_answer() {
    use aiserve_core::sampling::SamplingParams;
    use aiserve_runtime::generation::engine::{Engine, EngineConfig};
    use aiserve_runtime::metrics::METRICS;
    let dir = smollm2_dir();
    let (spec, _) = load(dir.path());
    let text = "The invoice number is INV-2024-00173, issued to Northwind Traders, 42 Harbour Road, \
                Portsmouth, for 17 crates of green tea at 12.50 each.";
    let prompt = chat_ids(&spec, &format!("Repeat this sentence exactly: {text}"));
    let mut answers = Vec::new();
    for (name, draft_tokens) in [("drafts-off", 0), ("drafts-on", 4)] {
        let (_, model) = load(dir.path());
        let cfg = EngineConfig { draft_tokens, ..Default::default() };
        let engine = Engine::start(name, "1", model, spec.clone(), cfg).unwrap();
        let greedy = engine_answer(&engine, &prompt, 60, SamplingParams { temperature: 0.0, ..Default::default() }).0;
        let sampled = (0..3)
            .map(|seed| {
                engine_answer(&engine, &prompt, 40, SamplingParams { seed: Some(seed), ..Default::default() }).0
            })
            .collect::<Vec<_>>();
        let drafted = METRICS.tokens.with_label_values(&[name, "drafted"]).get();
        let accepted = METRICS.tokens.with_label_values(&[name, "draft_accepted"]).get();
        answers.push((greedy, sampled, drafted, accepted));
    }
    let (off, on) = (&answers[0], &answers[1]);
    assert!(off.0.contains("Northwind Traders, 42 Harbour Road"), "the model copies: {:?}", off.0);
    assert_eq!(on.0, off.0, "greedy");
    assert_eq!(on.1, off.1, "sampled, seeded");
    assert_eq!((off.2, off.3), (0, 0));
    assert!(on.3 >= 20 && on.3 <= on.2, "{} of {} drafted tokens accepted", on.3, on.2);
}

/// Drafting with everything else a request may ask: log-probabilities (each token's, from its
/// own row of the verifying pass), a stop string met inside an accepted draft, penalties and
/// a short `max_tokens` give the same events with drafts on and off.
#[test]
fn drafting_keeps_logprobs_stop_strings_penalties_and_lengths() {
    use aiserve_core::sampling::{SamplingParams, TokenLogprob};
    use aiserve_runtime::generation::engine::{Engine, EngineConfig, Event};
    let dir = smollm2_dir();
    let (spec, _) = load(dir.path());
    let text = "Northwind Traders, 42 Harbour Road, Portsmouth, ordered 17 crates of green tea.";
    let prompt = chat_ids(&spec, &format!("Repeat this sentence exactly: {text}"));
    let cases = [
        (60, vec![], SamplingParams { temperature: 0.0, ..Default::default() }),
        (60, vec!["Portsmouth".to_string()], SamplingParams { temperature: 0.0, ..Default::default() }),
        (9, vec![], SamplingParams { temperature: 0.0, ..Default::default() }),
        (
            40,
            vec![],
            SamplingParams { seed: Some(5), frequency_penalty: 0.5, presence_penalty: 0.3, ..Default::default() },
        ),
    ];
    let mut runs: Vec<Vec<(String, Vec<TokenLogprob>, String)>> = Vec::new();
    for draft_tokens in [0, 4] {
        let (_, model) = load(dir.path());
        let engine = Engine::start(
            &format!("drafting-{draft_tokens}"),
            "1",
            model,
            spec.clone(),
            EngineConfig { draft_tokens, ..Default::default() },
        )
        .unwrap();
        let mut run = Vec::new();
        for (max_tokens, stop, sampling) in &cases {
            let mut req = request(&prompt, *max_tokens, sampling.clone());
            req.stop = stop.clone();
            req.logprobs = Some(2);
            let mut rx = engine.submit(req).unwrap();
            let (mut out, mut lps) = (String::new(), Vec::new());
            let end = loop {
                match rx.blocking_recv().expect("an event") {
                    Event::Text(t) => out.push_str(&t),
                    Event::Token(t) => lps.push(t),
                    Event::Done { reason, stop, completion_tokens, .. } => {
                        break format!("{reason:?} {stop:?} {completion_tokens}")
                    }
                    Event::Failed(e) => panic!("{e}"),
                }
            };
            run.push((out, lps, end));
        }
        runs.push(run);
    }
    assert!(runs[0][1].2.contains("Portsmouth"), "the stop string ends the second case: {:?}", runs[0][1]);
    assert!(runs[0][2].2.ends_with(" 9"), "nine tokens: {:?}", runs[0][2].2);
    for (i, (off, on)) in runs[0].iter().zip(&runs[1]).enumerate() {
        assert_eq!(on, off, "case {i}");
    }
    let accepted =
        |name: &str| aiserve_runtime::metrics::METRICS.tokens.with_label_values(&[name, "draft_accepted"]).get();
    assert_eq!(accepted("drafting-0"), 0);
    assert!(accepted("drafting-4") >= 10, "drafts were taken: {}", accepted("drafting-4"));
}

/// Through the engine: a prompt seen before is answered the same, its prefix copied from the
/// cache (counted in `aiserve_tokens_total{kind="prompt_cached"}`), a different question after
/// the same system prompt reuses the system prompt.
#[test]
fn the_engine_reuses_cached_prefixes_without_changing_greedy_answers() {
    use aiserve_core::sampling::SamplingParams;
    use aiserve_runtime::generation::engine::{Engine, EngineConfig};
    use aiserve_runtime::metrics::METRICS;
    let dir = smollm2_dir();
    let (spec, model) = load(dir.path());
    let engine = Engine::start("prefix-test", "1", model, spec.clone(), EngineConfig::default()).unwrap();
    let cached = || METRICS.tokens.with_label_values(&["prefix-test", "prompt_cached"]).get();
    let answer =
        |prompt: &[u32]| engine_answer(&engine, prompt, 24, SamplingParams { temperature: 0.0, ..Default::default() });
    let first = chat_ids(&spec, "Which city is the capital of France?");
    let cold = answer(&first);
    assert_eq!((cached(), cold.1), (0, 0));
    let again = answer(&first);
    assert_eq!(again.0, cold.0, "the same answer from the cached prefix");
    assert_eq!(again.1, first.len() - 1, "all of the prompt but its last token, in the sequence's usage");
    assert_eq!(cached() as usize, first.len() - 1, "and in the metric");
    // SmolLM2's template puts its system prompt first: 30-odd tokens shared.
    let second = chat_ids(&spec, "What is 2 + 2?");
    let shared = first.iter().zip(&second).take_while(|(a, b)| a == b).count();
    let before = cached();
    let (_, mut fresh) = load(dir.path());
    let want = greedy(fresh.as_mut(), std::slice::from_ref(&second), 24, &spec.info.stop_tokens).remove(0);
    assert_eq!(answer(&second), (spec.tokenizer.decode(&want).unwrap(), shared));
    assert_eq!((cached() - before) as usize, shared);
}

/// A model that records, for every row of logits asked of it, whether only the largest was.
struct Record(Box<dyn TextGenerator>, std::sync::Arc<std::sync::Mutex<Vec<bool>>>);

impl TextGenerator for Record {
    fn new_sequence(&self) -> SeqState {
        self.0.new_sequence()
    }
    fn forward(&mut self, items: &mut [GenItem<'_>]) -> Result<Vec<Vec<f32>>, aiserve_core::BackendError> {
        self.1.lock().unwrap().extend(items.iter().filter(|i| i.logits).map(|i| i.argmax_only));
        self.0.forward(items)
    }
}

/// Greedy sequences ask the model for the largest logit alone (which it may compute without
/// the others) and answer as with every logit; whatever reads the logits (log-probabilities,
/// sampling, penalties) asks for all of them.
#[test]
fn only_plain_greedy_sequences_ask_for_the_largest_logit_alone() {
    use aiserve_core::sampling::SamplingParams;
    use aiserve_runtime::generation::engine::{Engine, EngineConfig};
    let dir = smollm2_dir();
    let (spec, mut plain) = load(dir.path());
    let (_, model) = load(dir.path());
    let asked = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let cfg = EngineConfig { draft_tokens: 0, ..Default::default() };
    let engine = Engine::start("argmax-test", "1", Box::new(Record(model, asked.clone())), spec.clone(), cfg).unwrap();
    let prompt = chat_ids(&spec, "Which city is the capital of France?");
    let greedy_params = SamplingParams { temperature: 0.0, ..Default::default() };
    let (text, _) = engine_answer(&engine, &prompt, 12, greedy_params.clone());
    let want = greedy(plain.as_mut(), std::slice::from_ref(&prompt), 12, &spec.info.stop_tokens).remove(0);
    assert_eq!(text, spec.tokenizer.decode(&want).unwrap());
    let rows = std::mem::take(&mut *asked.lock().unwrap());
    assert!(rows.len() >= want.len() && rows.iter().all(|a| *a), "{rows:?}");
    let mut with_logprobs = request(&prompt, 4, greedy_params.clone());
    with_logprobs.logprobs = Some(2);
    let others = [
        with_logprobs,
        request(&prompt, 4, SamplingParams { seed: Some(1), ..Default::default() }),
        request(&prompt, 4, SamplingParams { presence_penalty: 0.5, ..greedy_params.clone() }),
        request(&prompt, 4, SamplingParams { logit_bias: vec![(42, 2.0)], ..greedy_params }),
    ];
    for req in others {
        collect(engine.submit(req).unwrap());
        let rows = std::mem::take(&mut *asked.lock().unwrap());
        assert!(!rows.is_empty() && rows.iter().all(|a| !a), "{rows:?}");
    }
}
