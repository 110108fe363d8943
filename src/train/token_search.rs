//! Discrete prompt search: a prompt of `k` vocabulary tokens, placed where a soft prompt
//! goes, searched with the model frozen by greedy coordinate gradient (GCG, Zou et al. 2023),
//! by random search, or by enumerating every prompt (the oracle, for small `k` and
//! vocabularies).
//!
//! A discrete prompt is a soft prompt whose rows are embedding rows, so it runs through the
//! same batches, insertion points and losses as a soft prompt. GCG reads the gradient of the
//! loss with respect to the prompt's one-hot inputs, `∂L/∂x[p, v] = wte[v] · ∂L/∂e[p]` (the
//! input of slot `p` is `e[p] = x[p] · wte`), takes the `top_k` most negative tokens per
//! position as candidates, and scores `width` single-token swaps (a random position, a random
//! candidate token) by their exact loss on the step's batch. Random search scores `width`
//! random single-token swaps instead. Both keep the best swap when it beats the current
//! prompt on that batch (whose loss the same step measures), so a step never makes the prompt
//! worse on the inputs it was judged on. The loss is the batch's weighted mean over its
//! samples: "universal" prompts, one prompt for every input, as in GCG's multi-prompt mode.
//!
//! Exhaustive search scores prompts `width` at a time in lexicographic order, all on the
//! phase's first batch, keeping the best seen.
//!
//! Cost per step, in sequence passes of the batch (`batch` sequences): GCG one forward and
//! one backward (activation gradients only) plus `width` forwards; random search `width + 1`
//! forwards; exhaustive `width` forwards ([`TokenSearchCfg::passes`]).

use super::batching::{batch_at, Insert};
use crate::data::{mix, Sample};
use crate::engine::activations::Activations;
use crate::engine::backward::GradSinks;
use crate::engine::kernels::dropout::Dropout;
use crate::engine::kernels::loss::default_norm;
use crate::engine::model::Model;
use crate::engine::shards::ShardedPass;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

/// How the prompt is searched.
#[derive(Clone, Copy, Debug, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum Method {
    Gcg,
    Random,
    Exhaustive,
}

/// The `[phases.token_search]` table of a `trainable = "tokens"` phase.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct TokenSearchCfg {
    /// Prompt length in tokens.
    pub tokens: usize,
    pub method: Method,
    /// Candidate prompts scored per step.
    #[serde(default = "default_width")]
    pub width: usize,
    /// GCG: candidate tokens per position (the most negative one-hot gradients).
    #[serde(default = "default_top_k")]
    pub top_k: usize,
    /// The smallest token id searched (ids below it are reserved: 0 padding, 1 separator).
    #[serde(default = "default_first_token")]
    pub first_token: u32,
    /// The starting prompt (default: random tokens from the phase seed). A phase of 0 steps
    /// evaluates a given prompt, e.g. the true trigger.
    #[serde(default)]
    pub init: Vec<u32>,
    #[serde(default)]
    pub insert: Insert,
}

fn default_width() -> usize {
    64
}
fn default_top_k() -> usize {
    16
}
fn default_first_token() -> u32 {
    2
}

impl TokenSearchCfg {
    /// Sequence passes of a batch per step: `(forward-and-backward, forward-only)`.
    pub fn passes(&self) -> (u64, u64) {
        match self.method {
            Method::Gcg => (1, self.width as u64),
            Method::Random => (0, self.width as u64 + 1),
            Method::Exhaustive => (0, self.width as u64),
        }
    }

    /// Steps that enumerate every prompt over a vocabulary of `vocab` tokens.
    pub fn exhaustive_steps(&self, vocab: usize) -> u64 {
        let space = self.space(vocab);
        space.div_ceil(self.width.max(1) as u64)
    }

    /// The number of distinct prompts over a vocabulary of `vocab` tokens.
    pub fn space(&self, vocab: usize) -> u64 {
        let symbols = vocab.saturating_sub(self.first_token as usize) as u64;
        symbols.saturating_pow(self.tokens as u32)
    }

    /// Range problems as `(key under token_search, message)`.
    pub fn problems(&self) -> Vec<(&'static str, String)> {
        let mut out = Vec::new();
        if self.tokens == 0 {
            out.push(("tokens", "must be at least 1".into()));
        }
        if self.width == 0 || self.top_k == 0 {
            out.push(("width", "width and top_k must be at least 1".into()));
        }
        if !self.init.is_empty() && self.init.len() != self.tokens {
            out.push(("init", format!("gives {} tokens for a {}-token prompt", self.init.len(), self.tokens)));
        }
        out
    }
}

/// What one search step did.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct StepReport {
    /// The current prompt's loss on the step's batch (exhaustive: the best prompt's so far).
    pub loss: f32,
    /// The best candidate's loss on the same batch.
    pub best_candidate: f32,
    /// Whether the prompt changed.
    pub accepted: bool,
}

/// A discrete prompt being searched.
#[derive(Clone, Debug)]
pub struct TokenSearch {
    pub cfg: TokenSearchCfg,
    /// The prompt's tokens.
    pub tokens: Vec<u32>,
    /// Exhaustive search: the best prompt's loss on the fixed batch (∞ before the first step).
    pub best: f32,
    vocab: usize,
}

impl TokenSearch {
    /// A search over a vocabulary of `vocab` tokens from `cfg.init`, or random tokens drawn
    /// from `seed`; `saved` (from [`TokenSearch::saved`]) resumes one.
    pub fn new(cfg: TokenSearchCfg, vocab: usize, seed: u64, saved: Option<Vec<f32>>) -> Self {
        let (tokens, best) = match saved {
            Some(s) => (s[..cfg.tokens].iter().map(|&t| t as u32).collect(), s[cfg.tokens]),
            None if !cfg.init.is_empty() => (cfg.init.clone(), f32::INFINITY),
            None => {
                let mut rng = ChaCha8Rng::seed_from_u64(seed);
                let first = cfg.first_token.min(vocab as u32 - 1);
                ((0..cfg.tokens).map(|_| rng.random_range(first..vocab as u32)).collect(), f32::INFINITY)
            }
        };
        TokenSearch { cfg, tokens, best, vocab }
    }

    /// The state a checkpoint keeps: the tokens (as `f32`, exact below 2²⁴), then `best`.
    pub fn saved(&self) -> Vec<f32> {
        self.tokens.iter().map(|&t| t as f32).chain([self.best]).collect()
    }

    /// The prompt's rows: the embedding rows of its tokens, `[k, d]`.
    pub fn rows(&self, model: &Model) -> Vec<f32> {
        embedding_rows(model, &self.tokens)
    }

    /// Whether every step scores the phase's first batch (exhaustive search compares
    /// prompts across steps, so they must be judged on the same inputs).
    pub fn fixed_batch(&self) -> bool {
        self.cfg.method == Method::Exhaustive
    }

    /// One search step on `samples` (prompt inserted before token `at[b]`); `key` seeds the
    /// step's random choices.
    pub fn step(
        &mut self,
        model: &Model,
        pass: &mut ShardedPass,
        samples: &[Sample],
        at: &[usize],
        step: u64,
        key: u64,
    ) -> StepReport {
        let mut rng = ChaCha8Rng::seed_from_u64(mix(key ^ mix(step)));
        let (current, candidates) = match self.cfg.method {
            Method::Gcg => {
                let (loss, grad) = prompt_gradient(model, pass, samples, at, &self.rows(model));
                let onehot = one_hot_gradient(model, &grad);
                (Some(loss), self.gcg_candidates(&onehot, &mut rng))
            }
            Method::Random => (None, self.random_candidates(&mut rng)),
            Method::Exhaustive => (Some(self.best), self.enumerated(step)),
        };
        let mut scored = candidates.clone();
        if current.is_none() {
            scored.push(self.tokens.clone());
        }
        let losses = score(model, samples, at, &scored);
        let current = current.unwrap_or_else(|| *losses.last().expect("the current prompt is scored"));
        let Some((best, &best_loss)) = losses[..candidates.len()].iter().enumerate().min_by(|a, b| a.1.total_cmp(b.1))
        else {
            return StepReport { loss: current, best_candidate: f32::INFINITY, accepted: false };
        };
        let accepted = best_loss < current;
        if accepted {
            self.tokens = candidates[best].clone();
            if self.fixed_batch() {
                self.best = best_loss;
            }
        }
        StepReport {
            loss: if accepted && self.fixed_batch() { best_loss } else { current },
            best_candidate: best_loss,
            accepted,
        }
    }

    /// `width` distinct single-token swaps: a uniform position, a uniform token among the
    /// position's `top_k` most negative one-hot gradients (`onehot: [k, V]`), never the
    /// position's current token.
    pub fn gcg_candidates(&self, onehot: &[f32], rng: &mut ChaCha8Rng) -> Vec<Vec<u32>> {
        let v = self.vocab;
        let first = self.cfg.first_token as usize;
        let top: Vec<Vec<u32>> = (0..self.tokens.len())
            .map(|p| {
                let row = &onehot[p * v..(p + 1) * v];
                let mut ids: Vec<u32> = (first..v).map(|t| t as u32).filter(|&t| t != self.tokens[p]).collect();
                ids.sort_by(|&a, &b| row[a as usize].total_cmp(&row[b as usize]).then(a.cmp(&b)));
                ids.truncate(self.cfg.top_k);
                ids
            })
            .collect();
        self.distinct_swaps(rng, |rng, p| top[p].get(rng.random_range(0..top[p].len().max(1))).copied())
    }

    /// `width` distinct uniform single-token swaps.
    pub fn random_candidates(&self, rng: &mut ChaCha8Rng) -> Vec<Vec<u32>> {
        let (first, v) = (self.cfg.first_token, self.vocab as u32);
        let tokens = &self.tokens;
        self.distinct_swaps(rng, |rng, p| {
            (v > first + 1).then(|| {
                let t = rng.random_range(first..v - 1);
                if t >= tokens[p] {
                    t + 1
                } else {
                    t
                }
            })
        })
    }

    /// Up to `width` distinct prompts that differ from the current one in one position
    /// (uniform), at the token `pick` draws; gives up after `4 · width` draws.
    fn distinct_swaps(
        &self,
        rng: &mut ChaCha8Rng,
        pick: impl Fn(&mut ChaCha8Rng, usize) -> Option<u32>,
    ) -> Vec<Vec<u32>> {
        let mut out: Vec<Vec<u32>> = Vec::with_capacity(self.cfg.width);
        for _ in 0..4 * self.cfg.width {
            if out.len() == self.cfg.width {
                break;
            }
            let p = rng.random_range(0..self.tokens.len());
            let Some(t) = pick(rng, p) else { continue };
            let mut c = self.tokens.clone();
            c[p] = t;
            if !out.contains(&c) {
                out.push(c);
            }
        }
        out
    }

    /// Prompts `step · width ..` of the lexicographic enumeration (fewer at its end).
    fn enumerated(&self, step: u64) -> Vec<Vec<u32>> {
        let symbols = self.vocab.saturating_sub(self.cfg.first_token as usize) as u64;
        let space = self.cfg.space(self.vocab);
        let from = step.saturating_mul(self.cfg.width as u64);
        (from..(from + self.cfg.width as u64).min(space))
            .map(|mut i| {
                let mut c = vec![0u32; self.cfg.tokens];
                for slot in c.iter_mut().rev() {
                    *slot = self.cfg.first_token + (i % symbols) as u32;
                    i /= symbols;
                }
                c
            })
            .collect()
    }
}

/// The embedding rows of `tokens`, `[k, d]`.
pub fn embedding_rows(model: &Model, tokens: &[u32]) -> Vec<f32> {
    let (d, wte) = (model.cfg.d_model, model.w(&model.layout.wte));
    tokens.iter().flat_map(|&t| wte[t as usize * d..(t as usize + 1) * d].iter().copied()).collect()
}

/// The weighted mean loss of `samples` under prompt `rows` (`[k, d]`, inserted before token
/// `at[b]`) and its gradient with respect to the rows.
pub fn prompt_gradient(
    model: &Model,
    pass: &mut ShardedPass,
    samples: &[Sample],
    at: &[usize],
    rows: &[f32],
) -> (f32, Vec<f32>) {
    let k = rows.len() / model.cfg.d_model;
    let batch = batch_at(samples, k, at);
    let norm = default_norm(&batch.targets, &batch.weights);
    let mut grad = vec![0.0; rows.len()];
    let sinks = GradSinks { prompts: Some(&mut grad), ..Default::default() };
    let loss = pass.run(model, &batch, rows, &[], norm, Dropout::default(), sinks);
    (loss, grad)
}

/// `∂L/∂x[p, v] = wte[v] · grad[p]`: the gradient with respect to one-hot inputs, `[k, V]`,
/// from the gradient with respect to the prompt rows, `grad: [k, d]`.
pub fn one_hot_gradient(model: &Model, grad: &[f32]) -> Vec<f32> {
    let (d, v, wte) = (model.cfg.d_model, model.cfg.vocab_size, model.w(&model.layout.wte));
    grad.chunks_exact(d)
        .flat_map(|g| wte.chunks_exact(d).take(v).map(move |e| e.iter().zip(g).map(|(a, b)| a * b).sum::<f32>()))
        .collect()
}

/// Sequences scored per forward when scoring candidates (bounds the activations' memory).
const SCORE_CHUNK: usize = 512;

/// The loss of each prompt in `prompts` on `samples` (inserted before token `at[b]`): the
/// same weighted mean over the batch as [`prompt_gradient`]'s, computed for all prompts in
/// forwards of up to [`SCORE_CHUNK`] sequences.
pub fn score(model: &Model, samples: &[Sample], at: &[usize], prompts: &[Vec<u32>]) -> Vec<f32> {
    let Some(k) = prompts.first().map(|p| p.len()) else { return Vec::new() };
    let n = samples.len();
    let single = batch_at(samples, k, at);
    let norm = default_norm(&single.targets, &single.weights);
    let per_forward = (SCORE_CHUNK / n.max(1)).max(1);
    let mut acts = Activations::default();
    let mut out = Vec::with_capacity(prompts.len());
    for group in prompts.chunks(per_forward) {
        let repeated: Vec<Sample> = group.iter().flat_map(|_| samples.iter().cloned()).collect();
        let points: Vec<usize> = group.iter().flat_map(|_| at.iter().copied()).collect();
        let batch = batch_at(&repeated, k, &points).per_sequence_prompts(k);
        let rows: Vec<f32> =
            group.iter().flat_map(|p| std::iter::repeat_n(embedding_rows(model, p), n).flatten()).collect();
        model.forward(&mut acts, &batch, &rows, &[], norm);
        let per_candidate = n * batch.seq;
        for c in 0..group.len() {
            let rows = c * per_candidate..(c + 1) * per_candidate;
            let sum: f32 = rows.filter(|&r| batch.targets[r] >= 0).map(|r| batch.weights[r] * acts.row_loss[r]).sum();
            out.push(sum / norm);
        }
    }
    out
}
