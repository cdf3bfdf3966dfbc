//! Prefix caching: the KV caches of sequences that ended stay here, so a later prompt that
//! starts with the same tokens (a shared system prompt, a chat re-sending its history, the same
//! prompt again) copies those positions instead of computing them (vLLM's automatic prefix
//! caching, llama.cpp's `cache_prompt`).
//!
//! Entries are found through hashed blocks of [`BLOCK`] tokens: each whole block of an entry's
//! tokens is indexed by a hash of it and every block before it, so a prompt's blocks are looked
//! up one after another until one is missing; the tokens themselves are then compared, so a
//! hash collision costs a miss, never a wrong answer. The positions reused are the tokens
//! common to the prompt and the entry (not only whole blocks). A forked copy holds exactly what
//! feeding those tokens would compute, so greedy answers do not change. The engine keeps the
//! cache within what its KV budget leaves free, evicting the least recently used entries.

use std::collections::HashMap;
use std::hash::{BuildHasher, Hasher, RandomState};

use aiserve_core::generate::{SeqState, TextGenerator};

/// Tokens per hashed block; shorter common prefixes are not reused.
pub const BLOCK: usize = 16;

struct Entry {
    /// The tokens whose positions `state` holds.
    tokens: Vec<u32>,
    state: SeqState,
    /// When it was last inserted or used (the cache's clock).
    used: u64,
}

#[derive(Default)]
pub struct PrefixCache {
    entries: HashMap<u64, Entry>,
    /// Hash of each whole-block prefix of an entry → the entries that start with it.
    index: HashMap<u64, Vec<u64>>,
    hasher: RandomState,
    next_id: u64,
    clock: u64,
    tokens: usize,
}

impl PrefixCache {
    /// Positions held by all entries.
    pub fn tokens(&self) -> usize {
        self.tokens
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The hash of each whole block of `tokens` with every block before it.
    fn block_hashes<'a>(&'a self, tokens: &'a [u32]) -> impl Iterator<Item = u64> + 'a {
        tokens.chunks_exact(BLOCK).scan(0u64, move |prev, block| {
            let mut h = self.hasher.build_hasher();
            h.write_u64(*prev);
            block.iter().for_each(|t| h.write_u32(*t));
            *prev = h.finish();
            Some(*prev)
        })
    }

    /// The entry sharing the longest prefix with `tokens`, and that prefix's length.
    fn best(&self, tokens: &[u32]) -> Option<(u64, usize)> {
        let mut found = None;
        for h in self.block_hashes(tokens) {
            let Some(ids) = self.index.get(&h) else { break };
            found = ids.iter().max_by_key(|id| self.entries[id].used).copied().or(found);
        }
        let id = found?;
        let common = self.entries[&id].tokens.iter().zip(tokens).take_while(|(a, b)| a == b).count();
        Some((id, common))
    }

    /// Keeps `state`, which holds the positions of `tokens`, for prompts that start with them.
    /// An entry it extends is replaced; if an entry already extends it, that one is kept.
    pub fn insert(&mut self, tokens: Vec<u32>, state: SeqState) {
        if tokens.len() < BLOCK {
            return;
        }
        self.clock += 1;
        if let Some((id, common)) = self.best(&tokens) {
            let entry = self.entries.get_mut(&id).expect("indexed entries exist");
            if common == tokens.len() {
                entry.used = self.clock;
                return;
            }
            if common == entry.tokens.len() {
                self.remove(id);
            }
        }
        let id = self.next_id;
        self.next_id += 1;
        let hashes: Vec<u64> = self.block_hashes(&tokens).collect();
        for h in hashes {
            self.index.entry(h).or_default().push(id);
        }
        self.tokens += tokens.len();
        self.entries.insert(id, Entry { tokens, state, used: self.clock });
    }

    /// A sequence holding the longest cached prefix of `tokens` (at most `limit` positions, at
    /// least [`BLOCK`]), copied by `model`, and its length.
    pub fn lookup(&mut self, tokens: &[u32], limit: usize, model: &dyn TextGenerator) -> Option<(usize, SeqState)> {
        let (id, common) = self.best(tokens)?;
        let len = common.min(limit);
        if len < BLOCK {
            return None;
        }
        self.clock += 1;
        let entry = self.entries.get_mut(&id).expect("indexed entries exist");
        entry.used = self.clock;
        Some((len, model.fork(&entry.state, len)?))
    }

    /// Evicts the least recently used entries until at most `limit` positions stay.
    pub fn shrink_to(&mut self, limit: usize) {
        while self.tokens > limit {
            let Some(oldest) = self.entries.iter().min_by_key(|(_, e)| e.used).map(|(id, _)| *id) else { break };
            self.remove(oldest);
        }
    }

    fn remove(&mut self, id: u64) {
        let Some(entry) = self.entries.remove(&id) else { return };
        self.tokens -= entry.tokens.len();
        let hashes: Vec<u64> = self.block_hashes(&entry.tokens).collect();
        for h in hashes {
            if let Some(ids) = self.index.get_mut(&h) {
                ids.retain(|i| *i != id);
                if ids.is_empty() {
                    self.index.remove(&h);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use aiserve_core::generate::GenItem;
    use aiserve_core::BackendError;

    use super::*;

    /// A model whose state is the list of tokens fed: a fork is their first `len`.
    struct Tokens;

    impl TextGenerator for Tokens {
        fn new_sequence(&self) -> SeqState {
            Box::new(Vec::<u32>::new())
        }
        fn forward(&mut self, _: &mut [GenItem<'_>]) -> Result<Vec<Vec<f32>>, BackendError> {
            Ok(Vec::new())
        }
        fn shared_len(&self, state: &SeqState) -> Option<usize> {
            state.downcast_ref::<Vec<u32>>().map(Vec::len)
        }
        fn fork(&self, state: &SeqState, len: usize) -> Option<SeqState> {
            let v = state.downcast_ref::<Vec<u32>>()?;
            (len <= v.len()).then(|| Box::new(v[..len].to_vec()) as SeqState)
        }
    }

    fn held(s: &SeqState) -> Vec<u32> {
        s.downcast_ref::<Vec<u32>>().unwrap().clone()
    }

    #[test]
    fn the_longest_common_prefix_is_reused_and_verified_token_by_token() {
        let mut cache = PrefixCache::default();
        let system: Vec<u32> = (0..40).collect();
        let first = [system.clone(), vec![100, 101, 102]].concat();
        cache.insert(first.clone(), Box::new(first.clone()));
        // Same system prompt, another question: the 40 shared tokens (not only 32 in blocks).
        let second = [system.clone(), vec![200, 201]].concat();
        let (len, state) = cache.lookup(&second, second.len() - 1, &Tokens).unwrap();
        assert_eq!((len, held(&state)), (40, system.clone()));
        // The same prompt again: all but the last token (limit), which must be fed for logits.
        let (len, _) = cache.lookup(&first, first.len() - 1, &Tokens).unwrap();
        assert_eq!(len, 42);
        // Under one block in common, or a first block that differs: nothing.
        assert!(cache.lookup(&system[..10], 9, &Tokens).is_none());
        let other: Vec<u32> = (1..60).collect();
        assert!(cache.lookup(&other, 58, &Tokens).is_none());
    }

    #[test]
    fn extensions_replace_entries_and_eviction_is_least_recently_used() {
        let mut cache = PrefixCache::default();
        let turn1: Vec<u32> = (0..20).collect();
        let turn2: Vec<u32> = (0..50).collect();
        cache.insert(turn1.clone(), Box::new(turn1.clone()));
        cache.insert(turn2.clone(), Box::new(turn2.clone()));
        assert_eq!((cache.len(), cache.tokens()), (1, 50), "the longer chat replaces its start");
        cache.insert(turn1.clone(), Box::new(turn1.clone()));
        assert_eq!((cache.len(), cache.tokens()), (1, 50), "a prefix of an entry adds nothing");
        let other: Vec<u32> = (1000..1030).collect();
        cache.insert(other.clone(), Box::new(other.clone()));
        // Using the chat makes `other` the least recently used.
        cache.lookup(&turn2, 49, &Tokens).unwrap();
        cache.shrink_to(60);
        assert_eq!((cache.len(), cache.tokens()), (1, 50));
        assert!(cache.lookup(&other, 29, &Tokens).is_none());
        cache.shrink_to(0);
        assert!(cache.is_empty() && cache.index.is_empty());
    }
}
