//! What a pass runs beyond the scheduler's plan: cached prefixes copied, sequences waiting a
//! step for a prompt another is computing, drafted tokens.

use std::collections::HashMap;

use aiserve_core::scheduler::{Prefill, SeqId, Step};

use super::super::draft;
use super::super::prefix;
use super::Loop;

impl Loop {
    /// Sequences starting their prompt copy the longest cached prefix, where the scheduler can
    /// fit it; at least one token is left to feed, for the logits.
    pub(super) fn reuse_prefixes(&mut self, step: &mut Step) {
        let mut cached = 0;
        for p in step.prefill.iter_mut().filter(|p| p.start == 0) {
            let Some(s) = self.seqs.get_mut(&p.id).filter(|s| s.state.is_none()) else { continue };
            let limit = s.tokens.len() - 1;
            let Some((len, state)) = self.prefix.lookup(&s.tokens, limit, self.generator.as_ref()) else { continue };
            if let Some(moved) = self.sched.reuse(p.id, len) {
                s.state = Some(state);
                s.cached = len.min(s.prompt_len);
                *p = moved;
                cached += len;
            }
        }
        self.metrics.cached.inc_by(cached as u64);
    }

    /// Sequences starting the way another one that completes its prompt in this step starts
    /// (the `n` choices of one prompt, a burst of requests behind one system prompt) wait a
    /// step, once, and then copy that prefix. Returns the sequences whose prompts they wait for
    /// (kept in the cache after the pass).
    pub(super) fn defer_followers(&mut self, step: &mut Step) -> Vec<SeqId> {
        if !self.generator.shares_prefixes() {
            return Vec::new();
        }
        let starting: Vec<Prefill> = step.prefill.iter().filter(|p| p.start == 0).copied().collect();
        let (mut deferred, mut leaders) = (Vec::new(), Vec::new());
        for (k, p) in starting.iter().enumerate() {
            let s = &self.seqs[&p.id];
            if s.deferred {
                continue;
            }
            let leader = starting[..k].iter().find(|l| {
                l.last && !deferred.contains(&l.id) && {
                    let t = &self.seqs[&l.id].tokens;
                    t.iter().zip(&s.tokens).take_while(|(a, b)| a == b).count() >= prefix::BLOCK
                }
            });
            if let Some(l) = leader {
                deferred.push(p.id);
                leaders.push(l.id);
            }
        }
        // Later ones first: each goes to the head of the queue.
        deferred.reverse();
        deferred.retain(|id| self.sched.defer(*id));
        for id in &deferred {
            if let Some(s) = self.seqs.get_mut(id) {
                s.deferred = true;
            }
        }
        step.prefill.retain(|p| !deferred.contains(&p.id));
        leaders
    }

    /// Speculative decoding: decoding sequences whose recent tokens appeared before feed what
    /// followed them there too, as far as the scheduler has room.
    pub(super) fn drafts(&mut self, step: &Step) -> HashMap<SeqId, Vec<u32>> {
        let mut drafts = HashMap::new();
        if self.draft_tokens == 0 || step.decode.len() > self.draft_max_seqs || !self.generator.verifies_drafts() {
            return drafts;
        }
        for id in &step.decode {
            let Some(s) = self.seqs.get_mut(id).filter(|s| s.constraint.is_none()) else { continue };
            let guess = draft::propose(&s.tokens, self.draft_tokens);
            if guess.is_empty() || !s.drafting.ready() {
                continue;
            }
            let k = self.sched.draft(*id, guess.len());
            if k > 0 {
                drafts.insert(*id, guess[..k].to_vec());
            }
        }
        drafts
    }
}
