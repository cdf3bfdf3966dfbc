//! The generation engine of one model version: a dedicated thread that runs the continuous-
//! batching loop around the model.
//!
//! Each loop turn takes new requests off the channel, drops sequences whose client went away
//! (their receiver is closed: the KV cache is freed before the next forward pass), asks the
//! [`Scheduler`] which decodes and prompt chunks run next, runs them as one forward pass, then
//! samples, detokenises, checks stop tokens and stop strings, and sends each sequence's new text
//! to its receiver. Nothing here runs on the async runtime. Sequences that end leave their KV
//! caches to the [`PrefixCache`], which later prompts starting the same way copy from.

use std::collections::HashMap;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{mpsc, Arc};

use aiserve_core::generate::{GenItem, GeneratorSpec, SeqState, TextGenerator};
use aiserve_core::sampling::Sampler;
use aiserve_core::scheduler::{Scheduler, SchedulerConfig, SeqId};
use aiserve_core::stop::{Detokenizer, StopStrings};
use tokio::sync::mpsc::{unbounded_channel, UnboundedReceiver, UnboundedSender};

use super::draft::Drafting;
use super::grammar::{apply_mask, Constraint};
use super::prefix::PrefixCache;
use crate::error::Error;
use crate::metrics::METRICS;

mod emit;
mod plan;
mod types;

pub use types::{EngineConfig, Event, FinishReason, GenRequest};

struct Submit {
    id: SeqId,
    req: GenRequest,
    events: UnboundedSender<Event>,
}

/// Handle to a running engine; dropping it lets the thread finish its sequences and exit.
pub struct Engine {
    tx: mpsc::Sender<Submit>,
    spec: GeneratorSpec,
    kv_budget_tokens: usize,
    max_queued: usize,
    /// Sequences submitted and not finished.
    queued: Arc<AtomicUsize>,
    next_id: AtomicUsize,
    model: String,
    version: String,
    /// This version's cumulative statistics (the loop records passes and finished sequences).
    stats: Arc<crate::stats::VersionStats>,
}

impl Engine {
    pub fn start(
        model: &str,
        version: &str,
        generator: Box<dyn TextGenerator>,
        spec: GeneratorSpec,
        cfg: EngineConfig,
    ) -> std::io::Result<Self> {
        let kv_budget_tokens = (cfg.kv_cache_bytes / spec.info.kv_bytes_per_token.max(1)).max(1);
        let prefill_chunk = if spec.info.chunked_prefill { cfg.prefill_chunk } else { kv_budget_tokens };
        let sched = SchedulerConfig {
            kv_budget_tokens,
            max_seqs: cfg.max_seqs.max(1),
            max_step_tokens: cfg.max_step_tokens.max(1).max(if spec.info.chunked_prefill {
                1
            } else {
                spec.info.max_context
            }),
            prefill_chunk: prefill_chunk.max(1),
        };
        let (tx, rx) = mpsc::channel();
        let queued = Arc::new(AtomicUsize::new(0));
        let metrics = EngineMetrics::of(model, version);
        let stats = metrics.stats.clone();
        let mut lp = Loop {
            rx,
            generator,
            spec: spec.clone(),
            sched: Scheduler::new(sched.clone()),
            sched_cfg: sched,
            seqs: HashMap::new(),
            prefix: PrefixCache::default(),
            draft_tokens: cfg.draft_tokens,
            draft_max_seqs: cfg.draft_max_seqs,
            queued: queued.clone(),
            labels: [model.to_string(), version.to_string()],
            metrics,
        };
        std::thread::Builder::new().name(format!("gen-{model}-{version}")).spawn(move || lp.run())?;
        Ok(Self {
            tx,
            spec,
            kv_budget_tokens,
            max_queued: cfg.max_queued,
            queued,
            next_id: AtomicUsize::new(0),
            model: model.into(),
            version: version.into(),
            stats,
        })
    }

    /// This version's cumulative statistics.
    pub fn stats(&self) -> &Arc<crate::stats::VersionStats> {
        &self.stats
    }

    pub fn spec(&self) -> &GeneratorSpec {
        &self.spec
    }

    /// Sequences submitted and not finished yet (running or waiting).
    pub fn in_flight(&self) -> usize {
        self.queued.load(Ordering::SeqCst)
    }

    /// Most sequences running or waiting at once (`--max-queued-seqs`).
    pub fn max_queued(&self) -> usize {
        self.max_queued
    }

    /// Most tokens (prompt plus generated) one sequence may hold: the model's context or the
    /// KV cache budget, whichever is smaller.
    pub fn max_sequence_tokens(&self) -> usize {
        self.spec.info.max_context.min(self.kv_budget_tokens)
    }

    /// Queues a sequence; its text arrives on the returned receiver. Dropping the receiver
    /// cancels the sequence.
    pub fn submit(&self, req: GenRequest) -> Result<UnboundedReceiver<Event>, Error> {
        let limit = self.max_sequence_tokens();
        if req.prompt.is_empty() {
            return Err(Error::invalid("prompt", "the prompt has no tokens"));
        }
        if req.prompt.len() + req.max_tokens > limit {
            return Err(Error::invalid(
                "max_tokens",
                format!(
                    "prompt ({} tokens) plus max_tokens ({}) exceeds the {limit} tokens model `{}` can hold",
                    req.prompt.len(),
                    req.max_tokens,
                    self.model
                ),
            ));
        }
        if let Some(t) = req.prompt.iter().find(|t| **t as usize >= self.spec.info.vocab_size) {
            return Err(Error::invalid(
                "prompt",
                format!("token id {t} is outside the vocabulary of {}", self.spec.info.vocab_size),
            ));
        }
        let queued = self.queued.fetch_add(1, Ordering::SeqCst);
        if queued >= self.max_queued {
            self.queued.fetch_sub(1, Ordering::SeqCst);
            return Err(Error::Overloaded { model: self.model.clone(), version: self.version.clone(), queued });
        }
        let (events, rx) = unbounded_channel();
        let id = self.next_id.fetch_add(1, Ordering::Relaxed) as SeqId;
        if self.tx.send(Submit { id, req, events }).is_err() {
            self.queued.fetch_sub(1, Ordering::SeqCst);
            return Err(Error::NotReady { model: self.model.clone(), detail: "the generation engine stopped".into() });
        }
        Ok(rx)
    }
}

/// A sequence the loop owns.
struct Active {
    /// Prompt then generated tokens.
    tokens: Vec<u32>,
    prompt_len: usize,
    state: Option<SeqState>,
    sampler: Sampler,
    detok: Detokenizer,
    stops: StopStrings,
    logprobs: Option<usize>,
    constraint: Option<Constraint>,
    keep_special: bool,
    events: UnboundedSender<Event>,
    /// When the engine took the sequence, then when it last produced a token.
    arrived: std::time::Instant,
    last_token: Option<std::time::Instant>,
    /// Until when it may wait for its first token.
    deadline: Option<std::time::Instant>,
    /// How its drafts fared (speculative decoding stops where they keep failing).
    drafting: Drafting,
    /// Prompt tokens copied from the prefix cache.
    cached: usize,
    /// Whether it already waited a step for another sequence's prefix.
    deferred: bool,
}

struct Loop {
    rx: mpsc::Receiver<Submit>,
    generator: Box<dyn TextGenerator>,
    spec: GeneratorSpec,
    sched: Scheduler,
    sched_cfg: SchedulerConfig,
    seqs: HashMap<SeqId, Active>,
    /// KV caches of ended sequences, within what the budget leaves free.
    prefix: PrefixCache,
    /// Most drafted tokens per sequence and pass.
    draft_tokens: usize,
    /// Most decoding sequences in a pass that drafts.
    draft_max_seqs: usize,
    queued: Arc<AtomicUsize>,
    labels: [String; 2],
    metrics: EngineMetrics,
}

/// This version's series, looked up once: no label lookup per step, and a step after the
/// version was unloaded (and its series removed) cannot bring the series back.
struct EngineMetrics {
    depth: prometheus::IntGauge,
    batch: prometheus::Histogram,
    tokens_per_pass: prometheus::Histogram,
    generated: prometheus::IntCounter,
    /// Prompt tokens whose KV came from the prefix cache.
    cached: prometheus::IntCounter,
    /// Tokens drafted (speculative decoding), and those of them accepted.
    drafted: prometheus::IntCounter,
    accepted: prometheus::IntCounter,
    first_token: prometheus::Histogram,
    token_gap: prometheus::Histogram,
    /// The version's cumulative statistics: passes, and sequences finished.
    stats: Arc<crate::stats::VersionStats>,
}

impl EngineMetrics {
    fn of(model: &str, version: &str) -> Self {
        let labels = [model, version];
        Self {
            depth: METRICS.queue_depth.with_label_values(&labels),
            batch: METRICS.batch_size.with_label_values(&labels),
            tokens_per_pass: METRICS.batch_tokens.with_label_values(&labels),
            generated: METRICS.tokens.with_label_values(&[model, "generated"]),
            cached: METRICS.tokens.with_label_values(&[model, "prompt_cached"]),
            drafted: METRICS.tokens.with_label_values(&[model, "drafted"]),
            accepted: METRICS.tokens.with_label_values(&[model, "draft_accepted"]),
            first_token: METRICS.first_token_seconds.with_label_values(&labels),
            token_gap: METRICS.token_seconds.with_label_values(&labels),
            stats: Default::default(),
        }
    }
}

impl Loop {
    fn run(&mut self) {
        let mut open = true;
        loop {
            if self.sched.is_idle() {
                self.report();
                if !open {
                    return;
                }
                match self.rx.recv() {
                    Ok(s) => self.admit(s),
                    Err(_) => return,
                }
            }
            loop {
                match self.rx.try_recv() {
                    Ok(s) => self.admit(s),
                    Err(mpsc::TryRecvError::Empty) => break,
                    Err(mpsc::TryRecvError::Disconnected) => {
                        open = false;
                        break;
                    }
                }
            }
            let gone: Vec<SeqId> = self.seqs.iter().filter(|(_, s)| s.events.is_closed()).map(|(id, _)| *id).collect();
            for id in gone {
                self.finish(id, None);
            }
            let now = std::time::Instant::now();
            let late: Vec<SeqId> = self
                .seqs
                .iter()
                .filter(|(_, s)| s.last_token.is_none() && s.deadline.is_some_and(|d| d <= now))
                .map(|(id, _)| *id)
                .collect();
            for id in late {
                self.finish(id, Some(Event::Failed(Error::Timeout)));
            }
            if !self.sched.is_idle() && catch_unwind(AssertUnwindSafe(|| self.step())).is_err() {
                self.reset_after_panic();
            }
        }
    }

    /// A panic outside the model's forward pass (sampling, detokenising) leaves this loop's
    /// state unknown: every sequence fails with one error id and the loop starts afresh, so the
    /// version keeps serving new requests.
    fn reset_after_panic(&mut self) {
        let ids: Vec<SeqId> = self.seqs.keys().copied().collect();
        self.fail_all(&ids, aiserve_core::BackendError("the generation engine panicked".into()));
        self.sched = Scheduler::new(self.sched_cfg.clone());
    }

    fn admit(&mut self, s: Submit) {
        let Submit { id, req, events } = s;
        if let Err(e) = self.sched.submit(id, req.prompt.len(), req.max_tokens) {
            let _ = events.send(Event::Failed(Error::invalid("max_tokens", format!("{e:?}"))));
            self.queued.fetch_sub(1, Ordering::SeqCst);
            return;
        }
        let prompt_len = req.prompt.len();
        self.seqs.insert(
            id,
            Active {
                tokens: req.prompt,
                prompt_len,
                state: None,
                sampler: Sampler::new(req.sampling),
                detok: Detokenizer::default(),
                stops: StopStrings::new(req.stop),
                logprobs: req.logprobs,
                constraint: req.constraint,
                keep_special: req.keep_special,
                events,
                arrived: std::time::Instant::now(),
                last_token: None,
                deadline: req.deadline,
                drafting: Drafting::default(),
                cached: 0,
                deferred: false,
            },
        );
    }

    /// Removes a sequence everywhere; sends its final event if it has one. Its KV cache goes to
    /// the prefix cache, if the model can share it and the budget has room.
    fn finish(&mut self, id: SeqId, last: Option<Event>) {
        self.sched.remove(id);
        if let Some(mut s) = self.seqs.remove(&id) {
            self.queued.fetch_sub(1, Ordering::SeqCst);
            if let Some(mut state) = s.state.take() {
                // Every position but the last token's was fed (refused drafts' positions, if
                // the sequence ended among them, are dropped here).
                let fed = self.generator.shared_len(&state).map(|n| n.min(s.tokens.len().saturating_sub(1)));
                if let Some(n) = fed.filter(|n| self.generator.truncate(&mut state, *n)) {
                    // The sequence ends here: its tokens move to the cache, not a copy.
                    let mut tokens = std::mem::take(&mut s.tokens);
                    tokens.truncate(n);
                    self.prefix.insert(tokens, state);
                }
                self.prefix.shrink_to(self.sched_cfg.kv_budget_tokens.saturating_sub(self.sched.kv_used()));
            }
            // The KV cache goes before the client hears the sequence ended.
            let events = s.events.clone();
            drop(s);
            if let Some(e) = last {
                let _ = events.send(e);
            }
        }
    }

    /// Logs `err` once and fails each of `ids` with its error id.
    fn fail_all(&mut self, ids: &[SeqId], err: aiserve_core::BackendError) {
        let Error::Internal { id: error_id } = Error::backend(&self.labels[0], &self.labels[1], &err) else {
            unreachable!("backend failures are internal errors")
        };
        for id in ids {
            self.finish(*id, Some(Event::Failed(Error::Internal { id: error_id.clone() })));
        }
    }

    /// Ends a sequence that stopped at an end token or its length: the text still held back
    /// (an incomplete character, a possible stop-string prefix) goes out before `Done`.
    fn end(&mut self, id: SeqId, reason: FinishReason) {
        let tok = self.spec.tokenizer.clone();
        let Some(s) = self.seqs.get_mut(&id) else { return };
        let tail = s.detok.flush(tok.as_ref()).unwrap_or_default();
        let mut text = s.stops.push(&tail).text;
        text.push_str(&s.stops.finish());
        if !text.is_empty() {
            let _ = s.events.send(Event::Text(text));
        }
        let done = self.done(id, reason);
        self.finish(id, Some(done));
        self.metrics.stats.sequences(1);
    }

    fn report(&self) {
        self.metrics.depth.set(self.seqs.len() as i64);
    }

    fn step(&mut self) {
        let mut step = self.sched.schedule();
        for id in &step.preempted {
            if let Some(s) = self.seqs.get_mut(id) {
                s.state = None;
            }
        }
        if step.is_empty() {
            return;
        }
        self.reuse_prefixes(&mut step);
        let leaders = self.defer_followers(&mut step);
        // What runs now comes first: the cache keeps only the budget's rest.
        self.prefix.shrink_to(self.sched_cfg.kv_budget_tokens.saturating_sub(self.sched.kv_used() + step.tokens()));
        self.report();
        self.metrics.batch.observe((step.decode.len() + step.prefill.len()) as f64);
        let mut drafts = self.drafts(&step);
        self.metrics.tokens_per_pass.observe((step.tokens() + drafts.values().map(Vec::len).sum::<usize>()) as f64);
        // (sequence, token range fed, logit rows wanted) in batch order.
        let mut plan: Vec<(SeqId, std::ops::Range<usize>, usize)> = Vec::new();
        for id in &step.decode {
            let len = self.seqs[id].tokens.len();
            plan.push((*id, len - 1..len, 1 + drafts.get(id).map_or(0, Vec::len)));
        }
        for p in &step.prefill {
            plan.push((p.id, p.start..p.start + p.len, p.last as usize));
        }
        // What drafting sequences feed: their last token, then the draft.
        let fed: HashMap<SeqId, Vec<u32>> = drafts
            .iter()
            .map(|(id, d)| {
                (*id, [&[*self.seqs[id].tokens.last().expect("a decoding sequence has tokens")], &d[..]].concat())
            })
            .collect();
        let mut states: Vec<SeqState> = plan
            .iter()
            .map(|(id, _, _)| {
                self.seqs.get_mut(id).and_then(|s| s.state.take()).unwrap_or_else(|| self.generator.new_sequence())
            })
            .collect();
        // Greedy sequences whose logits nothing else reads (log-probabilities, a grammar) need
        // only the index of the largest.
        let argmax_only: Vec<bool> = plan
            .iter()
            .map(|(id, _, _)| {
                let s = &self.seqs[id];
                s.sampler.greedy() && s.logprobs.is_none() && s.constraint.is_none()
            })
            .collect();
        // Grammar masks of the constrained sequences that sample this step: they depend only on
        // tokens already committed, so another thread computes them while the forward pass runs.
        let mut constrained: Vec<(SeqId, Constraint)> = plan
            .iter()
            .filter(|p| p.2 > 0)
            .filter_map(|(id, _, _)| Some((*id, self.seqs.get_mut(id)?.constraint.take()?)))
            .collect();
        let mut masks = HashMap::new();
        let rows: Vec<usize> = plan.iter().map(|p| p.2).collect();
        let result = std::thread::scope(|scope| {
            let masking = (!constrained.is_empty())
                .then(|| scope.spawn(|| constrained.iter_mut().map(|(id, c)| (*id, c.mask())).collect::<Vec<_>>()));
            let mut items: Vec<GenItem> = states
                .iter_mut()
                .zip(plan.iter().zip(&argmax_only))
                .map(|(state, ((id, range, rows), argmax_only))| GenItem {
                    state,
                    tokens: fed.get(id).map_or(&self.seqs[id].tokens[range.clone()], Vec::as_slice),
                    prompt_len: self.seqs[id].prompt_len,
                    logits: *rows > 0,
                    argmax_only: *argmax_only,
                })
                .collect();
            let generator = &mut self.generator;
            let started = std::time::Instant::now();
            let r = catch_unwind(AssertUnwindSafe(|| {
                if drafts.is_empty() {
                    generator.forward(&mut items)
                } else {
                    generator.forward_rows(&mut items, &rows)
                }
            }));
            self.metrics.stats.execution(items.len(), 0, started.elapsed());
            if let Some(m) = masking {
                masks.extend(m.join().unwrap_or_default());
            }
            r
        });
        for (id, c) in constrained {
            if let Some(s) = self.seqs.get_mut(&id) {
                s.constraint = Some(c);
            }
        }
        let logits = match result {
            Ok(Ok(l)) if l.len() == rows.iter().sum::<usize>() => l,
            other => {
                let err = match other {
                    Ok(Ok(l)) => aiserve_core::BackendError(format!("model returned {} logit rows", l.len())),
                    Ok(Err(e)) => e,
                    Err(_) => aiserve_core::BackendError("the model panicked".into()),
                };
                self.sched.complete();
                // One log line and error id for the batch; every sequence in it reports that id.
                let ids: Vec<SeqId> = plan.iter().map(|p| p.0).collect();
                self.fail_all(&ids, err);
                return;
            }
        };
        for ((id, _, _), state) in plan.iter().zip(states) {
            if let Some(s) = self.seqs.get_mut(id) {
                s.state = Some(state);
            }
        }
        // The prompts others wait for go into the prefix cache now.
        for id in &leaders {
            let Some(s) = self.seqs.get(id) else { continue };
            let Some(state) = &s.state else { continue };
            let n = s.prompt_len.min(s.tokens.len() - 1);
            if let Some(copy) = self.generator.fork(state, n) {
                self.prefix.insert(s.tokens[..n].to_vec(), copy);
            }
        }
        if !leaders.is_empty() {
            let budget = self.sched_cfg.kv_budget_tokens;
            self.prefix.shrink_to(budget.saturating_sub(self.sched.kv_used() + step.tokens()));
        }
        let mut logits = logits.into_iter();
        for (id, _, want) in plan.iter().filter(|p| p.2 > 0) {
            let mine: Vec<Vec<f32>> = logits.by_ref().take(*want).collect();
            let draft = drafts.remove(id).unwrap_or_default();
            let mut accepted = 0;
            for (i, mut row) in mine.into_iter().enumerate() {
                let Some(s) = self.seqs.get_mut(id) else { break };
                // The sampler rewrites the row; log-probabilities are of the model's own logits.
                let raw = s.logprobs.map(|top| (row.clone(), top));
                if s.constraint.is_some() {
                    match masks.remove(id) {
                        Some(Ok(mask)) => apply_mask(&mask, &mut row),
                        other => {
                            let why = match other {
                                Some(Err(e)) => e,
                                _ => "the grammar's mask could not be computed".into(),
                            };
                            let err = Error::invalid("response_format", format!("the output grammar failed: {why}"));
                            self.finish(*id, Some(Event::Failed(err)));
                            break;
                        }
                    }
                }
                let t = s.sampler.sample(&mut row);
                // A drafted token the model would have sampled anyway is accepted: with one
                // guess per position, that is the exact rule of speculative sampling, so the
                // tokens are distributed as without drafts (and greedy ones are the same).
                if !self.take(*id, t, raw) || draft.get(i) != Some(&t) {
                    break;
                }
                accepted += 1;
            }
            if !draft.is_empty() {
                self.metrics.drafted.inc_by(draft.len() as u64);
                self.metrics.accepted.inc_by(accepted as u64);
                if let Some(s) = self.seqs.get_mut(id) {
                    s.drafting.record(accepted);
                    self.sched.accept(*id, accepted);
                    // The positions of refused drafts go (an ended sequence's go in `finish`).
                    if let Some(state) = s.state.as_mut() {
                        let keep = s.tokens.len() - 1;
                        if !self.generator.truncate(state, keep) {
                            s.state = None;
                            self.sched.remove(*id);
                            let err = aiserve_core::BackendError("the model could not drop drafted positions".into());
                            self.fail_all(&[*id], err);
                        }
                    }
                }
            }
        }
        for id in self.sched.complete() {
            self.end(id, FinishReason::Length);
        }
    }
}
