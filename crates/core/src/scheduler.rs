//! The continuous-batching scheduler's decisions for text generation, as plain synchronous code
//! (vLLM's scheduler in spirit): which sequences run in the next forward pass, how much of each
//! long prompt is prefilled, and which sequence gives its KV cache back when memory runs out.
//!
//! Every step the engine asks [`Scheduler::schedule`] for a [`Step`], runs it as one forward
//! pass, and reports back with [`Scheduler::complete`]. Between steps new sequences are admitted
//! and finished or cancelled ones leave, so concurrent chats share every pass.
//!
//! - **Budget per step**: every running sequence that finished its prompt decodes one token;
//!   the rest of `max_step_tokens` goes to prompt prefill in chunks of at most `prefill_chunk`,
//!   so a long prompt is spread over several steps and never stalls the running streams.
//! - **KV cache budget**: a sequence holds one KV slot per token it has processed. Admission
//!   needs room for its first prefill chunk; when decoding would overflow the budget, the most
//!   recently admitted sequence is preempted: its slots are freed and it goes back to the front
//!   of the queue to be recomputed later (its generated tokens become part of its prompt).
//! - **Cancellation** (a client went away) and finishing free a sequence's slots at once.
//!
//! Nothing here knows about models, tensors or clocks.

use std::collections::VecDeque;

/// Identifies a sequence (one choice of one request).
pub type SeqId = u64;

/// Scheduling knobs of one generation model.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SchedulerConfig {
    /// KV cache slots (tokens) all running sequences may hold together.
    pub kv_budget_tokens: usize,
    /// Most sequences in one forward pass.
    pub max_seqs: usize,
    /// Most tokens (decode + prefill) in one forward pass.
    pub max_step_tokens: usize,
    /// Most prompt tokens of one sequence prefilled in one pass.
    pub prefill_chunk: usize,
}

/// Why a sequence cannot be queued.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Refused {
    /// Prompt plus `max_new_tokens` can never fit the KV budget, even alone.
    TooLong { needed: usize, budget: usize },
    /// The id is already queued or running.
    Duplicate(SeqId),
}

/// A piece of prompt to prefill this step: tokens `start..start + len` of the sequence's prompt.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Prefill {
    pub id: SeqId,
    pub start: usize,
    pub len: usize,
    /// True when this chunk ends the prompt, so the pass also yields the first new token.
    pub last: bool,
}

/// What the next forward pass runs.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Step {
    /// Sequences that decode one token each.
    pub decode: Vec<SeqId>,
    /// Prompt chunks to prefill.
    pub prefill: Vec<Prefill>,
    /// Sequences whose KV cache the engine must drop now (they will be prefilled again later).
    pub preempted: Vec<SeqId>,
    /// Decoding sequences that also feed this many drafted tokens (speculative decoding).
    pub drafts: Vec<(SeqId, usize)>,
}

impl Step {
    pub fn is_empty(&self) -> bool {
        self.decode.is_empty() && self.prefill.is_empty()
    }

    pub fn tokens(&self) -> usize {
        self.decode.len()
            + self.prefill.iter().map(|p| p.len).sum::<usize>()
            + self.drafts.iter().map(|d| d.1).sum::<usize>()
    }
}

#[derive(Clone, Debug)]
struct Seq {
    id: SeqId,
    prompt: usize,
    generated: usize,
    max_new: usize,
    /// Tokens whose KV is in the cache (0 after a preemption).
    fed: usize,
}

impl Seq {
    /// Tokens known but not yet fed: the prompt (and, after a preemption, what was generated),
    /// or just the last generated token in steady decoding.
    fn pending(&self) -> usize {
        self.prompt + self.generated - self.fed
    }

    fn decoding(&self) -> bool {
        self.generated > 0 && self.pending() == 1
    }
}

/// The scheduler state: waiting sequences (FIFO) and running ones (in admission order).
#[derive(Debug)]
pub struct Scheduler {
    cfg: SchedulerConfig,
    waiting: VecDeque<Seq>,
    running: Vec<Seq>,
    /// The step handed out and not yet completed.
    in_flight: Option<Step>,
    /// Drafted tokens accepted in the step in flight, by sequence.
    accepted: Vec<(SeqId, usize)>,
}

impl Scheduler {
    pub fn new(cfg: SchedulerConfig) -> Self {
        assert!(cfg.max_seqs > 0 && cfg.max_step_tokens > 0 && cfg.prefill_chunk > 0 && cfg.kv_budget_tokens > 0);
        Self { cfg, waiting: VecDeque::new(), running: Vec::new(), in_flight: None, accepted: Vec::new() }
    }

    /// Queues a sequence with `prompt` tokens that may generate up to `max_new` more.
    pub fn submit(&mut self, id: SeqId, prompt: usize, max_new: usize) -> Result<(), Refused> {
        let needed = prompt + max_new;
        if prompt == 0 || needed > self.cfg.kv_budget_tokens {
            return Err(Refused::TooLong { needed, budget: self.cfg.kv_budget_tokens });
        }
        if self.find(id).is_some() {
            return Err(Refused::Duplicate(id));
        }
        self.waiting.push_back(Seq { id, prompt, generated: 0, max_new, fed: 0 });
        Ok(())
    }

    fn find(&self, id: SeqId) -> Option<&Seq> {
        self.running.iter().chain(self.waiting.iter()).find(|s| s.id == id)
    }

    /// KV slots held by running sequences.
    pub fn kv_used(&self) -> usize {
        self.running.iter().map(|s| s.fed).sum()
    }

    pub fn waiting(&self) -> usize {
        self.waiting.len()
    }

    pub fn running(&self) -> usize {
        self.running.len()
    }

    pub fn is_idle(&self) -> bool {
        self.waiting.is_empty() && self.running.is_empty()
    }

    /// Removes a sequence wherever it is (finished by a stop condition, or its client went
    /// away); its KV slots are free for the next step. Unknown ids are ignored.
    pub fn remove(&mut self, id: SeqId) {
        self.running.retain(|s| s.id != id);
        self.waiting.retain(|s| s.id != id);
    }

    /// The next forward pass. Call [`Scheduler::complete`] after running it.
    pub fn schedule(&mut self) -> Step {
        assert!(self.in_flight.is_none(), "schedule called before the previous step completed");
        let mut preempted = Vec::new();
        loop {
            // Every decoding sequence needs one more slot: preempt the youngest until they fit.
            while self.running.len() > 1 {
                let decoders = self.running.iter().filter(|s| s.decoding()).count().min(self.cfg.max_step_tokens);
                if self.kv_used() + decoders <= self.cfg.kv_budget_tokens {
                    break;
                }
                preempted.push(self.preempt_youngest());
            }
            let mut step = self.plan(preempted.is_empty());
            // Sequences part-way through their prompts can fill the cache with nobody decoding:
            // give the youngest's slots back so the others can move.
            if step.is_empty() && self.running.len() > 1 {
                preempted.push(self.preempt_youngest());
                continue;
            }
            step.preempted = preempted;
            if !step.is_empty() {
                self.in_flight = Some(step.clone());
            }
            return step;
        }
    }

    fn preempt_youngest(&mut self) -> SeqId {
        let mut victim = self.running.pop().expect("a running sequence");
        victim.fed = 0;
        let id = victim.id;
        self.waiting.push_front(victim);
        id
    }

    /// Decodes, prompt chunks of running sequences, then admissions (unless `admit` is false).
    fn plan(&mut self, admit: bool) -> Step {
        let cfg = &self.cfg;
        let mut step = Step::default();
        let mut kv = self.running.iter().map(|s| s.fed).sum::<usize>();
        for s in self.running.iter().filter(|s| s.decoding()) {
            if step.decode.len() == cfg.max_step_tokens || kv == cfg.kv_budget_tokens {
                break;
            }
            step.decode.push(s.id);
            kv += 1;
        }
        let mut tokens = step.decode.len();
        for s in self.running.iter().filter(|s| !s.decoding()) {
            let room = (cfg.max_step_tokens - tokens).min(cfg.kv_budget_tokens - kv);
            let len = s.pending().min(cfg.prefill_chunk).min(room);
            if len == 0 {
                break;
            }
            step.prefill.push(Prefill { id: s.id, start: s.fed, len, last: len == s.pending() });
            tokens += len;
            kv += len;
        }
        // Admit waiting sequences, oldest first, while their whole first chunk fits (not in a
        // step that preempted: that would only thrash).
        while admit && self.running.len() < cfg.max_seqs {
            let Some(next) = self.waiting.front() else { break };
            let want = next.pending().min(cfg.prefill_chunk);
            if want > (cfg.max_step_tokens - tokens).min(cfg.kv_budget_tokens - kv) {
                break;
            }
            let s = self.waiting.pop_front().expect("front exists");
            step.prefill.push(Prefill { id: s.id, start: s.fed, len: want, last: want == s.pending() });
            tokens += want;
            kv += want;
            self.running.push(s);
        }
        step
    }

    /// Prefix caching: sequence `id`, whose first prompt chunk the step in flight feeds from
    /// position 0, already has its first `cached` tokens in a cache it was given. Its chunk is
    /// moved past them (same length or what is left of the prompt); returns the new chunk, or
    /// `None` (nothing changed) where that does not apply or the cached tokens would not fit
    /// the KV budget beside what runs. At least one prompt token is always left to feed, so
    /// the pass still yields the next token's logits.
    pub fn reuse(&mut self, id: SeqId, cached: usize) -> Option<Prefill> {
        let running_kv = self.kv_used();
        let step = self.in_flight.as_mut()?;
        let planned = running_kv + step.tokens();
        let s = self.running.iter_mut().find(|s| s.id == id)?;
        let p = step.prefill.iter_mut().find(|p| p.id == id && p.start == 0)?;
        let total = s.pending();
        if cached == 0 || s.fed != 0 || cached >= total {
            return None;
        }
        let len = p.len.min(total - cached);
        if planned - p.len + cached + len > self.cfg.kv_budget_tokens {
            return None;
        }
        s.fed = cached;
        *p = Prefill { id, start: cached, len, last: cached + len == total };
        Some(*p)
    }

    /// Prefix caching: sequence `id`, whose first chunk the step in flight feeds from position
    /// 0, goes back to the head of the queue instead, to copy next step the prefix another
    /// sequence of this step computes. Returns false (nothing changed) where that does not apply.
    pub fn defer(&mut self, id: SeqId) -> bool {
        let Some(step) = self.in_flight.as_mut() else { return false };
        let Some(i) = step.prefill.iter().position(|p| p.id == id && p.start == 0) else { return false };
        let Some(r) = self.running.iter().position(|s| s.id == id && s.fed == 0) else { return false };
        step.prefill.remove(i);
        let s = self.running.remove(r);
        self.waiting.push_front(s);
        true
    }

    /// Speculative decoding: decoding sequence `id` of the step in flight may also feed up to
    /// `k` drafted tokens after its last one. Returns how many it may: within its `max_new`
    /// (each accepted draft is a generated token, and one more is sampled after them), the
    /// step's token limit and the KV budget; 0 where it does not decode in this step.
    pub fn draft(&mut self, id: SeqId, k: usize) -> usize {
        let running_kv = self.kv_used();
        let Some(step) = self.in_flight.as_mut() else { return 0 };
        let Some(s) = self.running.iter().find(|s| s.id == id) else { return 0 };
        if !step.decode.contains(&id) || step.drafts.iter().any(|d| d.0 == id) {
            return 0;
        }
        let tokens = step.tokens();
        let k = k
            .min(s.max_new.saturating_sub(s.generated + 1))
            .min(self.cfg.max_step_tokens.saturating_sub(tokens))
            .min(self.cfg.kv_budget_tokens.saturating_sub(running_kv + tokens));
        if k > 0 {
            step.drafts.push((id, k));
        }
        k
    }

    /// `n` of the tokens sequence `id` drafted in the step in flight were accepted: they and
    /// the token sampled after them were generated, and their KV stays.
    pub fn accept(&mut self, id: SeqId, n: usize) {
        let drafted = self.in_flight.as_ref().and_then(|s| s.drafts.iter().find(|d| d.0 == id)).map_or(0, |d| d.1);
        self.accepted.retain(|a| a.0 != id);
        self.accepted.push((id, n.min(drafted)));
    }

    /// Records that the last step ran: fed tokens now hold KV slots, decodes and final prompt
    /// chunks produced one token each (a decode with accepted drafts, one more per draft). Returns the sequences that reached their `max_new`
    /// (already removed). Sequences removed while the step ran are skipped.
    pub fn complete(&mut self) -> Vec<SeqId> {
        let Some(step) = self.in_flight.take() else { return Vec::new() };
        let accepted = std::mem::take(&mut self.accepted);
        for id in &step.decode {
            if let Some(s) = self.running.iter_mut().find(|s| s.id == *id) {
                let n = accepted.iter().find(|a| a.0 == *id).map_or(0, |a| a.1);
                s.fed += 1 + n;
                s.generated += 1 + n;
            }
        }
        for p in &step.prefill {
            if let Some(s) = self.running.iter_mut().find(|s| s.id == p.id) {
                s.fed += p.len;
                if p.last {
                    s.generated += 1;
                }
            }
        }
        let done: Vec<SeqId> = self.running.iter().filter(|s| s.generated >= s.max_new).map(|s| s.id).collect();
        self.running.retain(|s| s.generated < s.max_new);
        done
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(kv: usize, seqs: usize, step: usize, chunk: usize) -> SchedulerConfig {
        SchedulerConfig { kv_budget_tokens: kv, max_seqs: seqs, max_step_tokens: step, prefill_chunk: chunk }
    }

    /// Runs steps until idle (or `limit` steps), returning every step.
    fn drain(s: &mut Scheduler, limit: usize) -> Vec<Step> {
        let mut steps = Vec::new();
        while !s.is_idle() && steps.len() < limit {
            let step = s.schedule();
            assert!(!step.is_empty(), "stalled with work left: {s:?}");
            assert!(step.tokens() <= s.cfg.max_step_tokens);
            steps.push(step);
            s.complete();
            assert!(s.kv_used() <= s.cfg.kv_budget_tokens);
        }
        steps
    }

    #[test]
    fn new_sequences_join_between_steps_and_share_passes() {
        let mut s = Scheduler::new(cfg(1000, 8, 64, 32));
        s.submit(1, 5, 3).unwrap();
        let first = s.schedule();
        assert_eq!(first.prefill, [Prefill { id: 1, start: 0, len: 5, last: true }]);
        s.complete();
        s.submit(2, 4, 3).unwrap();
        let second = s.schedule();
        assert_eq!(second.decode, [1], "the running sequence keeps decoding");
        assert_eq!(
            second.prefill,
            [Prefill { id: 2, start: 0, len: 4, last: true }],
            "the new one joins the same pass"
        );
        s.complete();
        assert_eq!(s.schedule().decode, [1, 2]);
        assert_eq!(s.complete(), [1], "1 has its 3 tokens");
        assert_eq!(s.schedule().decode, [2]);
        assert_eq!(s.complete(), [2]);
        assert!(s.is_idle() && s.kv_used() == 0);
    }

    #[test]
    fn a_long_prompt_is_chunked_and_never_stalls_running_streams() {
        let mut s = Scheduler::new(cfg(10_000, 8, 40, 32));
        s.submit(1, 3, 100).unwrap();
        s.schedule();
        s.complete();
        s.submit(2, 100, 1).unwrap();
        let mut chunks = Vec::new();
        for _ in 0..4 {
            let step = s.schedule();
            assert_eq!(step.decode, [1], "stream 1 decodes in every step");
            chunks.extend(step.prefill.iter().map(|p| (p.start, p.len, p.last)));
            s.complete();
        }
        assert_eq!(chunks, [(0, 32, false), (32, 32, false), (64, 32, false), (96, 4, true)]);
    }

    #[test]
    fn kv_budget_preempts_the_youngest_and_recomputes_it_later() {
        // Two sequences of 4 prompt tokens that generate up to 8: 12 slots each, budget 16.
        let mut s = Scheduler::new(cfg(16, 8, 64, 64));
        s.submit(1, 4, 8).unwrap();
        s.submit(2, 4, 8).unwrap();
        let steps = drain(&mut s, 100);
        let preempted: Vec<SeqId> = steps.iter().flat_map(|st| st.preempted.clone()).collect();
        assert_eq!(preempted.first(), Some(&2), "the younger sequence gives its cache back");
        // After the preemption, 2 is prefilled again from 0 over its prompt and generated tokens.
        let i = steps.iter().position(|st| st.preempted == [2]).unwrap();
        let re = steps[i + 1..].iter().flat_map(|st| &st.prefill).find(|p| p.id == 2).unwrap();
        assert_eq!(re.start, 0);
        assert!(re.len > 4, "recompute covers generated tokens too: {re:?}");
        // Both finish: 8 tokens each were produced in all.
        let produced = |id| {
            steps
                .iter()
                .map(|st| {
                    st.decode.iter().filter(|d| **d == id).count()
                        + st.prefill.iter().filter(|p| p.id == id && p.last).count()
                })
                .sum::<usize>()
        };
        assert_eq!(produced(1), 8);
        assert_eq!(produced(2), 8, "preempted work is recomputed, never lost or repeated");
    }

    #[test]
    fn admission_respects_max_seqs_and_fifo() {
        let mut s = Scheduler::new(cfg(1000, 2, 64, 8));
        for id in 1..=4 {
            s.submit(id, 2, 2).unwrap();
        }
        let first = s.schedule();
        assert_eq!(first.prefill.iter().map(|p| p.id).collect::<Vec<_>>(), [1, 2]);
        assert_eq!((s.running(), s.waiting()), (2, 2));
        s.complete();
        s.schedule();
        assert_eq!(s.complete(), [1, 2]);
        assert_eq!(s.schedule().prefill.iter().map(|p| p.id).collect::<Vec<_>>(), [3, 4]);
    }

    #[test]
    fn cancellation_frees_the_cache_at_once() {
        let mut s = Scheduler::new(cfg(1000, 8, 64, 64));
        s.submit(1, 10, 50).unwrap();
        s.submit(2, 10, 50).unwrap();
        s.schedule();
        s.complete();
        assert_eq!(s.kv_used(), 20);
        s.remove(1);
        assert_eq!(s.kv_used(), 10);
        assert_eq!(s.schedule().decode, [2]);
        // Removing a sequence while its step runs: the completion skips it.
        s.remove(2);
        assert!(s.complete().is_empty());
        assert!(s.is_idle());
    }

    #[test]
    fn half_prefilled_prompts_that_fill_the_cache_do_not_deadlock() {
        // Budget 16, chunks of 8: A and B each get 8 prompt slots and nobody decodes.
        let mut s = Scheduler::new(cfg(16, 8, 64, 8));
        s.submit(1, 10, 2).unwrap();
        s.submit(2, 10, 2).unwrap();
        let first = s.schedule();
        assert_eq!(first.prefill.len(), 2);
        s.complete();
        let second = s.schedule();
        assert_eq!(second.preempted, [2]);
        assert_eq!(second.prefill, [Prefill { id: 1, start: 8, len: 2, last: true }]);
        s.complete();
        drain(&mut s, 100);
        assert!(s.is_idle());
    }

    #[test]
    fn a_cached_prefix_moves_the_first_chunk_past_it_within_the_budget() {
        let mut s = Scheduler::new(cfg(100, 4, 64, 16));
        s.submit(1, 40, 5).unwrap();
        let step = s.schedule();
        assert_eq!(step.prefill, [Prefill { id: 1, start: 0, len: 16, last: false }]);
        // 30 tokens cached: the chunk feeds 30..40 and ends the prompt.
        assert_eq!(s.reuse(1, 30), Some(Prefill { id: 1, start: 30, len: 10, last: true }));
        assert_eq!(s.reuse(1, 20), None, "only the first chunk, once");
        assert!(s.complete().is_empty());
        assert_eq!((s.kv_used(), s.schedule().decode), (40, vec![1]));
        s.complete();
        // Never the whole prompt (the pass must yield logits), never past the budget.
        let mut s = Scheduler::new(cfg(38, 4, 64, 16));
        s.submit(2, 20, 5).unwrap();
        s.submit(3, 20, 5).unwrap();
        s.schedule();
        assert_eq!(s.reuse(2, 20), None);
        assert_eq!(s.reuse(2, 19), Some(Prefill { id: 2, start: 19, len: 1, last: true }));
        // 19 + 1 for sequence 2, then 19 + 1 for sequence 3: 40 slots of 38.
        assert_eq!(s.reuse(3, 19), None);
        s.complete();
        assert!(s.kv_used() <= 38);
    }

    #[test]
    fn a_deferred_sequence_waits_at_the_head_of_the_queue() {
        let mut s = Scheduler::new(cfg(100, 4, 64, 16));
        for id in 1..=3 {
            s.submit(id, 10, 5).unwrap();
        }
        let step = s.schedule();
        assert_eq!(step.prefill.len(), 3);
        assert!(s.defer(3) && s.defer(2));
        assert!(!s.defer(2), "once");
        assert_eq!((s.running(), s.waiting()), (1, 2));
        s.complete();
        // Next step: 1 decodes, 2 and 3 start, in their order.
        let step = s.schedule();
        assert_eq!(step.decode, [1]);
        assert_eq!(step.prefill.iter().map(|p| p.id).collect::<Vec<_>>(), [2, 3]);
    }

    #[test]
    fn drafts_fit_max_new_the_step_and_the_budget_and_count_when_accepted() {
        let mut s = Scheduler::new(cfg(100, 4, 8, 16));
        s.submit(1, 3, 6).unwrap();
        s.submit(2, 3, 50).unwrap();
        s.schedule();
        s.complete();
        let step = s.schedule();
        assert_eq!(step.decode, [1, 2]);
        // Sequence 1 has generated 1 of 6: at most 4 drafts (plus the token after them).
        assert_eq!(s.draft(1, 8), 4);
        assert_eq!(s.draft(1, 2), 0, "once per step");
        // The step holds 2 decodes + 4 drafts of its 8 tokens.
        assert_eq!(s.draft(2, 8), 2);
        s.accept(1, 3);
        s.accept(2, 7);
        assert!(s.complete().is_empty());
        // 1: 3 + 1 + 3 fed, 5 generated; 2: 3 + 1 + 2 (capped at its drafts).
        assert_eq!(s.kv_used(), 7 + 6);
        let step = s.schedule();
        assert_eq!(s.draft(1, 8), 0, "one token left: nothing to draft");
        assert_eq!(step.decode, [1, 2]);
        assert_eq!(s.complete(), [1]);
    }

    #[test]
    fn refuses_what_can_never_fit_and_duplicates() {
        let mut s = Scheduler::new(cfg(100, 8, 64, 64));
        assert_eq!(s.submit(1, 90, 20), Err(Refused::TooLong { needed: 110, budget: 100 }));
        assert_eq!(s.submit(1, 0, 5), Err(Refused::TooLong { needed: 5, budget: 100 }));
        s.submit(1, 10, 10).unwrap();
        assert_eq!(s.submit(1, 10, 10), Err(Refused::Duplicate(1)));
    }

    #[test]
    fn many_streams_under_pressure_all_finish_within_budget() {
        let mut s = Scheduler::new(cfg(64, 6, 16, 8));
        for id in 0..20u64 {
            s.submit(id, 8 + id as usize % 5, 20 + id as usize % 7).unwrap();
        }
        let steps = drain(&mut s, 10_000);
        assert!(s.is_idle(), "every sequence finished");
        for id in 0..20u64 {
            let produced: usize = steps
                .iter()
                .map(|st| {
                    st.decode.iter().filter(|d| **d == id).count()
                        + st.prefill.iter().filter(|p| p.id == id && p.last).count()
                })
                .sum();
            assert_eq!(produced, 20 + id as usize % 7, "sequence {id} produced exactly its max_new tokens");
        }
        assert!(steps.iter().all(|st| st.decode.len() + st.prefill.len() <= 6), "never more than max_seqs per pass");
        assert!(steps.iter().any(|st| !st.preempted.is_empty()), "this load needs preemption");
    }
}
