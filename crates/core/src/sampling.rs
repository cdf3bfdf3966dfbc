//! Choosing the next token from logits: greedy at temperature 0, otherwise temperature, top-k,
//! top-p (nucleus), OpenAI's logit bias and frequency/presence penalties, with a per-sequence
//! seeded RNG so a request with a `seed` gets the same text every time.

use std::collections::HashMap;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// How one sequence samples.
#[derive(Clone, Debug, PartialEq)]
pub struct SamplingParams {
    /// 0 means greedy (always the most likely token).
    pub temperature: f32,
    /// Keep the smallest set of most likely tokens whose probability reaches `top_p` (1 = all).
    pub top_p: f32,
    /// Keep the `top_k` most likely tokens (0 = all).
    pub top_k: usize,
    pub frequency_penalty: f32,
    pub presence_penalty: f32,
    pub seed: Option<u64>,
    /// Added to these tokens' logits before anything else (OpenAI's `logit_bias`).
    pub logit_bias: Vec<(u32, f32)>,
}

impl Default for SamplingParams {
    fn default() -> Self {
        Self {
            temperature: 1.0,
            top_p: 1.0,
            top_k: 0,
            frequency_penalty: 0.0,
            presence_penalty: 0.0,
            seed: None,
            logit_bias: Vec::new(),
        }
    }
}

/// Tokens considered for top-p before falling back to a full sort: the nucleus nearly always
/// lies far inside them, and selecting them is linear in the vocabulary.
const NUCLEUS_CANDIDATES: usize = 1024;

pub struct Sampler {
    params: SamplingParams,
    rng: ChaCha8Rng,
    /// How often each generated token occurred (for the penalties).
    counts: HashMap<u32, u32>,
    /// Each token's unnormalised probability at the current step (reused between steps).
    weights: Vec<f32>,
}

impl Sampler {
    pub fn new(params: SamplingParams) -> Self {
        let rng = match params.seed {
            Some(s) => ChaCha8Rng::seed_from_u64(s),
            None => ChaCha8Rng::from_rng(&mut rand::rng()),
        };
        Self { params, rng, counts: HashMap::new(), weights: Vec::new() }
    }

    /// Whether the token is always the index of the largest raw logit: temperature 0 with no
    /// bias and no penalties (a model may then compute only that index; see
    /// [`crate::GenItem::argmax_only`]).
    pub fn greedy(&self) -> bool {
        let p = &self.params;
        p.temperature <= 0.0 && p.logit_bias.is_empty() && p.frequency_penalty == 0.0 && p.presence_penalty == 0.0
    }

    /// Picks the next token and remembers it for the penalties. `logits` is scratch.
    pub fn sample(&mut self, logits: &mut [f32]) -> u32 {
        let p = &self.params;
        for (t, bias) in &p.logit_bias {
            if let Some(l) = logits.get_mut(*t as usize) {
                *l += bias;
            }
        }
        if p.frequency_penalty != 0.0 || p.presence_penalty != 0.0 {
            for (&t, &c) in &self.counts {
                if let Some(l) = logits.get_mut(t as usize) {
                    *l -= p.frequency_penalty * c as f32 + p.presence_penalty;
                }
            }
        }
        let token = if p.temperature <= 0.0 { argmax(logits) } else { self.draw(logits) };
        *self.counts.entry(token).or_default() += 1;
        token
    }

    /// Draws a token from `softmax(logits / temperature)`, restricted by top-k / top-p.
    ///
    /// Every token's weight `exp((l - max) / T)` is computed once, in f32 and on vectors
    /// ([`crate::math::exp_scaled`]), into a buffer kept between steps: with a 49 152-token
    /// vocabulary this runs on the engine thread for every sequence of every step, and two f64
    /// passes of libm's `exp` over the vocabulary (what it did before) took 0.5 ms a token.
    fn draw(&mut self, logits: &[f32]) -> u32 {
        let p = &self.params;
        let inv_t = 1.0 / p.temperature;
        let max = crate::math::max(logits);
        self.weights.resize(logits.len(), 0.0);
        let total = crate::math::exp_scaled(logits, max, inv_t, &mut self.weights) as f64;
        let w = &self.weights;
        let keep = if p.top_k > 0 {
            p.top_k
        } else if p.top_p < 1.0 {
            NUCLEUS_CANDIDATES
        } else {
            // The whole distribution: where a uniform draw falls in the running sum.
            let r = (self.rng.random::<f64>() * total) as f32;
            let at = crate::math::cumulative_find(w, r).or_else(|| w.iter().rposition(|v| *v > 0.0));
            return at.unwrap_or(0) as u32;
        };
        let by_logit = |a: &u32, b: &u32| logits[*b as usize].total_cmp(&logits[*a as usize]).then(a.cmp(b));
        let mut cands: Vec<u32> = (0..logits.len() as u32).collect();
        if keep < cands.len() {
            cands.select_nth_unstable_by(keep - 1, by_logit);
            cands.truncate(keep);
        }
        if p.top_p < 1.0 {
            let held: f64 = cands.iter().map(|t| w[*t as usize] as f64).sum::<f64>() / total;
            if held < p.top_p as f64 && cands.len() < logits.len() {
                cands = (0..logits.len() as u32).collect();
            }
            cands.sort_by(by_logit);
            let mut acc = 0.0;
            let mut cut = cands.len();
            for (i, t) in cands.iter().enumerate() {
                acc += w[*t as usize] as f64 / total;
                if acc >= p.top_p as f64 {
                    cut = i + 1;
                    break;
                }
            }
            cands.truncate(cut);
        }
        let mass: f64 = cands.iter().map(|t| w[*t as usize] as f64).sum();
        let mut r = self.rng.random::<f64>() * mass;
        for &t in &cands {
            let w = w[t as usize] as f64;
            if r < w {
                return t;
            }
            r -= w;
        }
        cands.last().copied().unwrap_or(0)
    }
}

/// A generated token's log-probability under the model, and the `top` most likely tokens' (the
/// log-softmax of the raw logits, before temperature and penalties, as vLLM reports them).
#[derive(Clone, Debug, PartialEq)]
pub struct TokenLogprob {
    pub token: u32,
    pub logprob: f32,
    pub top: Vec<(u32, f32)>,
}

impl TokenLogprob {
    /// `token`'s entry from the raw `logits` it was drawn from, with `top` alternatives.
    pub fn of(logits: &[f32], token: u32, top: usize) -> Self {
        let max = crate::math::max(logits);
        // In f64: 50k terms summed in f32 would lose the small ones.
        let sum: f64 = logits.iter().map(|l| ((l - max) as f64).exp()).sum();
        let lse = max + sum.ln() as f32;
        let mut best: Vec<(u32, f32)> = Vec::with_capacity(top + 1);
        for (i, l) in logits.iter().enumerate() {
            if best.len() == top && best.last().is_none_or(|b| *l <= b.1) {
                continue;
            }
            // After the entries at least as large: ties keep the lower id first.
            let at = best.partition_point(|b| b.1 >= *l);
            best.insert(at, (i as u32, *l));
            best.truncate(top);
        }
        let logprob = logits.get(token as usize).map_or(f32::NEG_INFINITY, |l| l - lse);
        Self { token, logprob, top: best.into_iter().map(|(i, l)| (i, l - lse)).collect() }
    }
}

/// Index of the largest value (the first one on ties; NaNs are never the largest). The engine
/// runs this for every greedy sequence of every step: each chunk's maximum comes from vector
/// code ([`crate::math::max`]) in one pass, and only the first chunk holding the largest is
/// searched value by value.
pub fn argmax(v: &[f32]) -> u32 {
    const CHUNK: usize = 512;
    let (mut best, mut at) = (f32::NEG_INFINITY, 0);
    for (i, c) in v.chunks(CHUNK).enumerate() {
        let m = crate::math::max(c);
        if m > best {
            (best, at) = (m, i * CHUNK);
        }
    }
    v[at..].iter().take(CHUNK).position(|x| *x == best).map_or(0, |i| at + i) as u32
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(temperature: f32, top_p: f32, top_k: usize, seed: u64) -> SamplingParams {
        SamplingParams { temperature, top_p, top_k, seed: Some(seed), ..Default::default() }
    }

    #[test]
    fn greedy_takes_the_first_maximum() {
        let mut s = Sampler::new(params(0.0, 1.0, 0, 1));
        assert!(s.greedy());
        // What else changes the token than the largest raw logit.
        for p in [
            params(0.7, 1.0, 0, 1),
            SamplingParams { temperature: 0.0, logit_bias: vec![(3, 1.0)], ..Default::default() },
            SamplingParams { temperature: 0.0, frequency_penalty: 0.5, ..Default::default() },
            SamplingParams { temperature: 0.0, presence_penalty: -0.5, ..Default::default() },
        ] {
            assert!(!Sampler::new(p.clone()).greedy(), "{p:?}");
        }
        assert_eq!(s.sample(&mut [0.1, 3.0, 3.0, -1.0]), 1);
        // Against the plain scan, across chunk boundaries, with NaNs and infinities around.
        let plain = |v: &[f32]| (0..v.len()).fold(0, |b, i| if v[i] > v[b] { i } else { b }) as u32;
        for (len, at) in [(1, 0), (511, 510), (512, 511), (513, 512), (49_152, 30_000), (1000, 0)] {
            let mut v: Vec<f32> = (0..len).map(|i| ((i * 7919) % 1000) as f32 / 100.0 - 5.0).collect();
            v[at] = 7.5;
            if len > 600 {
                v[600] = f32::NAN;
                v[len - 1] = 7.5;
            }
            assert_eq!(argmax(&v), plain(&v), "len {len}");
        }
        assert_eq!(argmax(&[f32::NEG_INFINITY, f32::NEG_INFINITY]), 0);
        assert_eq!(argmax(&[]), 0);
    }

    #[test]
    fn same_seed_same_tokens_and_top_k_top_p_restrict_the_choice() {
        let logits: Vec<f32> = (0..50).map(|i| (i % 7) as f32 * 0.3).collect();
        let run = |p: SamplingParams| {
            let mut s = Sampler::new(p);
            (0..200).map(|_| s.sample(&mut logits.clone())).collect::<Vec<_>>()
        };
        assert_eq!(run(params(1.0, 1.0, 0, 9)), run(params(1.0, 1.0, 0, 9)));
        assert_ne!(run(params(1.0, 1.0, 0, 9)), run(params(1.0, 1.0, 0, 10)));
        // Top-k 1 is greedy; the best logit (1.8) belongs to ids 6, 13, 20, ... → the first.
        assert!(run(params(1.0, 1.0, 1, 3)).iter().all(|t| *t == 6));
        // A tiny nucleus keeps only the single most likely token.
        assert!(run(params(1.0, 0.01, 0, 3)).iter().all(|t| *t == 6));
        // Top-k 8: the eight best are the 1.8s (ids 6,13,20,27,34,41,48) and the first 1.5 (5).
        let allowed = [5, 6, 13, 20, 27, 34, 41, 48];
        assert!(run(params(1.0, 1.0, 8, 4)).iter().all(|t| allowed.contains(t)));
        // Full sampling reaches beyond the best tokens.
        assert!(run(params(1.0, 1.0, 0, 4)).iter().any(|t| !allowed.contains(t)));
    }

    #[test]
    fn draws_follow_the_softmax_at_every_temperature() {
        let logits = [0.0f32, 1.0, 2.0, 3.0, -50.0];
        for (t, top_p, top_k) in [(1.0, 1.0, 0), (0.5, 1.0, 0), (2.0, 1.0, 0), (1.0, 1.0, 4), (1.0, 0.999, 0)] {
            let mut s = Sampler::new(params(t, top_p, top_k, 7));
            let n = 40_000;
            let mut seen = [0usize; 5];
            (0..n).for_each(|_| seen[s.sample(&mut logits.to_vec()) as usize] += 1);
            let e: Vec<f64> = logits.iter().map(|l| (*l as f64 / t as f64).exp()).collect();
            let z: f64 = e.iter().sum();
            for (k, (seen, e)) in seen.iter().zip(&e).enumerate() {
                let (got, want) = (*seen as f64 / n as f64, e / z);
                assert!((got - want).abs() < 0.01, "T={t} top_p={top_p} top_k={top_k} token {k}: {got} vs {want}");
            }
        }
    }

    #[test]
    fn penalties_push_repeated_tokens_down() {
        let p = SamplingParams { temperature: 0.0, presence_penalty: 2.0, ..Default::default() };
        let mut s = Sampler::new(p);
        let logits = [1.0, 0.5, 0.0];
        let picks: Vec<u32> = (0..3).map(|_| s.sample(&mut logits.to_vec())).collect();
        assert_eq!(picks, [0, 1, 2]);
    }

    #[test]
    fn token_logprobs_are_a_log_softmax_with_the_top_alternatives() {
        let logits = [1.0f32, 3.0, 2.0, 3.0, -1.0];
        let sum: f64 = logits.iter().map(|l| (*l as f64).exp()).sum();
        let lp = |l: f32| (l as f64 - sum.ln()) as f32;
        let t = TokenLogprob::of(&logits, 2, 3);
        assert!((t.logprob - lp(2.0)).abs() < 1e-6);
        // Most likely first, ties by lower id.
        let ids: Vec<u32> = t.top.iter().map(|x| x.0).collect();
        assert_eq!(ids, [1, 3, 2]);
        assert!(t.top.iter().all(|(i, l)| (l - lp(logits[*i as usize])).abs() < 1e-6));
        assert!(TokenLogprob::of(&logits, 0, 0).top.is_empty());
        let total: f64 = TokenLogprob::of(&logits, 0, 5).top.iter().map(|(_, l)| (*l as f64).exp()).sum();
        assert!((total - 1.0).abs() < 1e-6);
    }

    #[test]
    fn logit_bias_moves_the_pick() {
        let logits = [1.0f32, 3.0, 2.0];
        let mut greedy = Sampler::new(SamplingParams { temperature: 0.0, ..Default::default() });
        assert_eq!(greedy.sample(&mut logits.clone()), 1);
        let bias = vec![(1, -100.0), (0, 1.5)];
        let mut biased = Sampler::new(SamplingParams { temperature: 0.0, logit_bias: bias, ..Default::default() });
        assert_eq!(biased.sample(&mut logits.clone()), 0);
    }
}
