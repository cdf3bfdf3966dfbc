//! Prompt-lookup drafting (speculative decoding without a second model): the tokens that
//! followed the last place the sequence's most recent n-gram appeared before are guessed to
//! follow again. Answers that copy from their context (extraction, editing code, quoting)
//! repeat long runs of it, and the model verifies a whole guess in one forward pass.

/// Longest and shortest n-grams looked up (longer first: a longer match guesses better).
const MAX_NGRAM: usize = 3;
const MIN_NGRAM: usize = 2;

/// Up to `max` tokens guessed to follow `tokens`: what followed the most recent earlier
/// occurrence of its last 3 (else 2) tokens; empty where none occurred.
pub fn propose(tokens: &[u32], max: usize) -> &[u32] {
    if max == 0 {
        return &[];
    }
    for n in (MIN_NGRAM..=MAX_NGRAM).rev() {
        if tokens.len() <= n {
            continue;
        }
        let tail = &tokens[tokens.len() - n..];
        // Most recent first, and never the tail itself (something must follow the match).
        if let Some(start) = (0..tokens.len() - n).rev().find(|&j| &tokens[j..j + n] == tail) {
            let from = start + n;
            return &tokens[from..(from + max).min(tokens.len())];
        }
    }
    &[]
}

/// Whether a sequence drafts this step: after a draft of which nothing was accepted it waits
/// 1, 2, 4 … up to [`MAX_WAIT`] steps before drafting again (each refused draft costs a wider
/// forward pass), and an accepted one ends the wait. Text that stops copying soon stops
/// paying for guesses; text that copies again later drafts again.
#[derive(Clone, Copy, Debug, Default)]
pub struct Drafting {
    /// Drafts in a row of which nothing was accepted.
    failures: u32,
    /// Steps left before the next draft.
    wait: usize,
}

const MAX_WAIT: usize = 64;

impl Drafting {
    pub fn record(&mut self, accepted: usize) {
        if accepted == 0 {
            self.failures += 1;
            self.wait = (1usize << self.failures.min(6)).min(MAX_WAIT);
        } else {
            self.failures = 0;
            self.wait = 0;
        }
    }

    /// Whether to draft in this step (a step waited counts down).
    pub fn ready(&mut self) -> bool {
        if self.wait > 0 {
            self.wait -= 1;
            return false;
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_most_recent_longest_match_is_continued() {
        // "1 2 3" appeared twice before; the later occurrence is continued: 9 8.
        let t = [1, 2, 3, 4, 5, 1, 2, 3, 9, 8, 7, 1, 2, 3];
        assert_eq!(propose(&t, 2), [9, 8]);
        assert_eq!(propose(&t, 10), [9, 8, 7, 1, 2, 3]);
        // No 3-gram match: the 2-gram "6 2" → 7.
        assert_eq!(propose(&[6, 2, 7, 5, 6, 2], 3), [7, 5, 6]);
        // Nothing repeats, too short, or no room.
        assert!(propose(&[1, 2, 3, 4], 4).is_empty());
        assert!(propose(&[1, 1], 4).is_empty());
        assert!(propose(&t, 0).is_empty());
    }

    #[test]
    fn drafting_backs_off_where_guesses_keep_failing() {
        let mut d = Drafting::default();
        assert!(d.ready());
        // Failures in a row: wait 2, then 4 steps.
        d.record(0);
        assert_eq!((0..3).map(|_| d.ready()).collect::<Vec<_>>(), [false, false, true]);
        d.record(0);
        assert_eq!((0..5).map(|_| d.ready()).collect::<Vec<_>>(), [false, false, false, false, true]);
        // An accepted token ends the wait; long failure runs wait at most 64 steps.
        d.record(1);
        assert!(d.ready());
        (0..20).for_each(|_| d.record(0));
        assert_eq!((0..65).filter(|_| !d.ready()).count(), 64);
    }
}
