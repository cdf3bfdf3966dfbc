//! A sampled token's way out: its text (held back across partial characters and stop-string
//! prefixes), its log-probability, and the end of the sequence where it ends one.

use aiserve_core::sampling::TokenLogprob;
use aiserve_core::scheduler::SeqId;

use super::super::grammar::Constraint;
use super::{Event, FinishReason, Loop};
use crate::error::Error;

impl Loop {
    /// Takes token `t` sampled for sequence `id` (`raw`: its logits and how many alternatives'
    /// log-probabilities to report): sends its text, ends the sequence at an end token, a stop
    /// string or a complete grammar. Returns whether the sequence goes on.
    pub(super) fn take(&mut self, id: SeqId, t: u32, raw: Option<(Vec<f32>, usize)>) -> bool {
        let tok = self.spec.tokenizer.clone();
        let Some(s) = self.seqs.get_mut(&id) else { return false };
        s.tokens.push(t);
        self.metrics.generated.inc();
        let now = std::time::Instant::now();
        match s.last_token.replace(now) {
            None => self.metrics.first_token.observe((now - s.arrived).as_secs_f64()),
            Some(prev) => self.metrics.token_gap.observe((now - prev).as_secs_f64()),
        }
        if self.spec.info.stop_tokens.contains(&t) {
            self.end(id, FinishReason::Stop);
            return false;
        }
        if let Some(c) = &mut s.constraint {
            if let Err(e) = c.commit(t) {
                let err = Error::invalid("response_format", format!("the output grammar failed: {e}"));
                self.finish(id, Some(Event::Failed(err)));
                return false;
            }
        }
        if let Some((raw, top)) = raw {
            let _ = s.events.send(Event::Token(TokenLogprob::of(&raw, t, top)));
        }
        let special = if s.keep_special { tok.special_text(t) } else { None };
        let delta = match special {
            // What the detokenizer holds comes first, then the marker itself.
            Some(marker) => s.detok.flush(tok.as_ref()).map(|held| held + &marker),
            None => s.detok.push(tok.as_ref(), t),
        };
        let delta = match delta {
            Ok(d) => d,
            Err(e) => {
                let api = Error::backend(&self.labels[0], &self.labels[1], &aiserve_core::BackendError(e));
                self.finish(id, Some(Event::Failed(api)));
                return false;
            }
        };
        let released = s.stops.push(&delta);
        if !released.text.is_empty() {
            let _ = s.events.send(Event::Text(released.text));
        }
        let complete = s.constraint.as_ref().is_some_and(Constraint::is_done);
        if released.stopped {
            let done = self.done(id, FinishReason::Stop);
            self.finish(id, Some(done));
            return false;
        }
        if complete {
            // The grammar allows nothing but an end: the sequence ends as if it sampled one.
            self.end(id, FinishReason::Stop);
            return false;
        }
        true
    }

    pub(super) fn done(&self, id: SeqId, reason: FinishReason) -> Event {
        let s = &self.seqs[&id];
        Event::Done {
            reason,
            stop: s.stops.matched().map(str::to_owned),
            prompt_tokens: s.prompt_len,
            completion_tokens: s.tokens.len() - s.prompt_len,
            cached_tokens: s.cached,
        }
    }
}
