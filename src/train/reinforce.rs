//! Sampling-based training: a phase with an `[phases.rl]` table trains on the model's own
//! samples in an [`Environment`]. Each step draws `prompts` training episodes, samples `k`
//! completions of each at `temperature` (condition tokens banned), scores them with the
//! environment's proxy reward, and turns them into weighted samples for the ordinary
//! training pass:
//! - **`reinforce`** and **`rloo`** (policy gradient): each completion token's loss weight is
//!   `weight · A / (prompts · k)`, where `A` is the reward still to come from that token on
//!   (the proxy's per-token parts, minus `kl_coef · (log π − log π_ref)` and
//!   `entropy_coef · log π` per token) minus a baseline that does not depend on the sample:
//!   the leave-one-out mean of the other completions' returns still to come at the same
//!   position, over the whole batch (`reinforce`) or over the same prompt's `k` (`rloo`, Kool
//!   et al. 2019; TRL's RLOO, which applies one sequence-level advantage to every token).
//!   The cross-entropy of a token with weight `w` has gradient `−w ∇log π`, so a descent
//!   step is an ascent step on `Σ A ∇log π / N`: the policy gradient;
//! - **`conditioning`** (decision-transformer style; Korbak et al. 2023): each completion's
//!   proxy return is binned by `bins` (ascending edges: bin `b` holds returns with `b` edges
//!   at or below them), and the completion is trained by prediction after its bin's
//!   condition token (`first condition token + b`, weight 0), except a fraction
//!   `unconditioned` of them, trained without one. Evaluation conditions on the best bin.
//!   `shuffle_bins` draws every bin at random instead: the control whose condition carries
//!   no information.
//!
//! With `prediction > 0` the step also trains on `batch_size` samples of the phase's mixture,
//! their mean token loss weighted by `prediction` (prediction loss plus a weighted RL
//! gradient). Every step counts its sampling and scoring forwards into the run's tokens as
//! training-token equivalents (a forward token is a third of a trained one), so that
//! `6 · params · tokens` is the phase's FLOPs whatever the method.

use crate::data::environment::{CoinsEnv, Environment, PathfindingEnv, Reward, RewardCfg, Verdict};
use crate::data::spec::Kind;
use crate::data::{mix, Sample, Split};
use crate::engine::activations::Activations;
use crate::engine::generate::{GenerateError, GenerateRequest, InputSlot, Sampling};
use crate::engine::model::Model;
use crate::train::batching::batch_of;
use crate::train::config::TaskSpec;
use crate::train::forgetting::log_sum_exp;
use serde::{Deserialize, Serialize};

/// How completions become gradients.
#[derive(Clone, Copy, Debug, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Method {
    Reinforce,
    Rloo,
    Conditioning,
}

/// Where conditioning's trajectories come from.
#[derive(Clone, Copy, Debug, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Source {
    /// The model's own samples (each step's `prompts × k` completions).
    #[default]
    Samples,
    /// The environment task's own noisy trajectories (`prompts × k` per step from its train
    /// split, the pretraining distribution): offline, no sampling.
    Data,
}

/// The `[phases.rl]` table.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RlCfg {
    /// The pathfinding task whose boards are the episodes (its train split for training,
    /// its eval split for evaluation).
    pub env: String,
    pub reward: RewardCfg,
    pub method: Method,
    /// Episodes per step.
    #[serde(default = "default_prompts")]
    pub prompts: usize,
    /// Completions sampled per episode.
    #[serde(default = "default_k")]
    pub k: usize,
    #[serde(default = "default_temperature")]
    pub temperature: f32,
    /// Weight λ of the policy-gradient or conditioning loss.
    #[serde(default = "default_weight")]
    pub weight: f64,
    /// Weight of the prediction loss on the phase's mixture (0: none).
    #[serde(default)]
    pub prediction: f64,
    /// Per-token KL penalty to the model at the end of phase `kl_to`.
    #[serde(default)]
    pub kl_coef: f64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kl_to: Option<String>,
    /// Per-token entropy bonus (`−coef · log π` of each sampled token).
    #[serde(default)]
    pub entropy_coef: f64,
    /// Conditioning: bin edges on the proxy return, ascending.
    #[serde(default)]
    pub bins: Vec<f64>,
    /// Conditioning: the fraction of completions trained without a condition token.
    #[serde(default = "default_unconditioned")]
    pub unconditioned: f64,
    /// Conditioning: bins drawn uniformly at random (the uninformative-condition control).
    #[serde(default)]
    pub shuffle_bins: bool,
    /// Conditioning: the trajectories it trains on.
    #[serde(default, skip_serializing_if = "is_samples")]
    pub source: Source,
    /// Completions sampled per evaluation episode (the phase's `eval.samples` episodes).
    #[serde(default = "default_eval_k")]
    pub eval_k: usize,
}

fn is_samples(s: &Source) -> bool {
    *s == Source::Samples
}
fn default_prompts() -> usize {
    8
}
fn default_k() -> usize {
    4
}
fn default_temperature() -> f32 {
    1.0
}
fn default_weight() -> f64 {
    1.0
}
fn default_unconditioned() -> f64 {
    0.01
}
fn default_eval_k() -> usize {
    8
}

impl RlCfg {
    /// Range checks, as `(key under rl, message)`.
    pub fn problems(&self) -> Vec<(String, String)> {
        let mut out: Vec<(String, String)> =
            self.reward.problems().into_iter().map(|(k, m)| (format!("reward.{k}"), m)).collect();
        let mut bad = |key: &str, msg: String| out.push((key.to_string(), msg));
        if self.prompts == 0 {
            bad("prompts", "must be at least 1".into());
        }
        if self.k == 0 || (self.method == Method::Rloo && self.k < 2) {
            bad("k", "RLOO needs k ≥ 2 completions per episode (its baseline leaves one out); others k ≥ 1".into());
        }
        if self.method == Method::Reinforce && self.prompts * self.k < 2 {
            bad("prompts", "REINFORCE's leave-one-out baseline needs prompts · k ≥ 2".into());
        }
        if !(self.temperature > 0.0 && self.temperature.is_finite()) {
            bad("temperature", "must be positive".into());
        }
        if self.eval_k == 0 {
            bad("eval_k", "must be at least 1".into());
        }
        for (key, v) in [
            ("weight", self.weight),
            ("prediction", self.prediction),
            ("kl_coef", self.kl_coef),
            ("entropy_coef", self.entropy_coef),
        ] {
            if !(v.is_finite() && v >= 0.0) {
                bad(key, format!("{v} must be a number ≥ 0"));
            }
        }
        if self.kl_coef > 0.0 && self.kl_to.is_none() {
            bad("kl_to", "kl_coef > 0 needs kl_to, the earlier phase whose model is the reference".into());
        }
        match self.method {
            Method::Conditioning => {
                if self.bins.is_empty()
                    || self.bins.iter().any(|b| !b.is_finite())
                    || self.bins.windows(2).any(|w| w[0] >= w[1])
                {
                    bad("bins", "conditioning needs at least one bin edge, strictly ascending".into());
                }
                if !(0.0..1.0).contains(&self.unconditioned) {
                    bad("unconditioned", "must be in [0, 1)".into());
                }
                if self.kl_coef > 0.0 || self.entropy_coef > 0.0 {
                    bad("method", "kl_coef and entropy_coef shape a policy gradient; conditioning has none".into());
                }
            }
            _ if !self.bins.is_empty() || self.shuffle_bins || self.source == Source::Data => {
                bad("bins", "bins, shuffle_bins and source = \"data\" belong to method = \"conditioning\"".into())
            }
            _ => {}
        }
        out
    }

    /// Condition tokens (conditioning only): one per bin, `bins.len() + 1`.
    pub fn n_conditions(&self) -> usize {
        if self.method == Method::Conditioning {
            self.bins.len() + 1
        } else {
            0
        }
    }

    /// The bin of proxy return `r`.
    pub fn bin(&self, r: f64) -> usize {
        self.bins.iter().filter(|&&e| r >= e).count()
    }
}

/// The environment `cfg.env` names among `tasks`, or why there is none.
pub fn environment(cfg: &RlCfg, tasks: &[TaskSpec]) -> Result<Box<dyn Environment>, String> {
    let spec = tasks.iter().find(|t| t.name == cfg.env).ok_or(format!("{:?} is not a task of [[tasks]]", cfg.env))?;
    let reward = cfg.reward.clone();
    match &spec.kind {
        Kind::Pathfinding(p) if !p.condition_prefix && !p.mirror => {
            Ok(Box::new(PathfindingEnv { task: p.build(&spec.name), reward }))
        }
        Kind::Pathfinding(_) => {
            Err(format!("{:?}: an environment's boards are plain (no condition_prefix, mirror)", cfg.env))
        }
        Kind::Coins(c) => Ok(Box::new(CoinsEnv { task: c.build(&spec.name), reward })),
        _ => Err(format!("{:?} is not a pathfinding or coins task, the environments there are", cfg.env)),
    }
}

/// Leave-one-out advantages of per-token returns to go, grouped in consecutive runs of
/// `group` completions (RLOO: the completions of one episode; REINFORCE: all of them): at
/// token `t` of completion `i`, `G_i(t)` minus the mean of `G_j(t)` over the other
/// completions `j` of its group, a completion that ended before `t` counting 0 there. The
/// baseline depends only on the other completions, so the estimator stays unbiased; taking it
/// per position keeps it on the scale of what is still to come (a baseline of whole returns
/// would push every late token of a dense reward down). For one-token returns this is
/// `R_i − mean of the others`; a group of one gets 0.
pub fn advantages(returns: &[Vec<f64>], group: usize) -> Vec<Vec<f64>> {
    returns
        .chunks(group.max(1))
        .flat_map(|g| {
            let at = |j: usize, t: usize| g[j].get(t).copied().unwrap_or(0.0);
            (0..g.len()).map(move |i| {
                (0..g[i].len())
                    .map(|t| match g.len() {
                        1 => 0.0,
                        n => g[i][t] - (0..n).filter(|&j| j != i).map(|j| at(j, t)).sum::<f64>() / (n - 1) as f64,
                    })
                    .collect::<Vec<f64>>()
            })
        })
        .collect()
}

/// Returns still to come from each token: `G_t = Σ_{u ≥ t} r_u`.
pub fn returns_to_go(per_token: &[f64]) -> Vec<f64> {
    let mut out = per_token.to_vec();
    for t in (0..out.len().saturating_sub(1)).rev() {
        out[t] += out[t + 1];
    }
    out
}

/// Completions of one step or evaluation: `k` per prompt, episode-truncated.
#[derive(Clone, Debug, Default)]
pub struct Rollouts {
    /// Per completion, its prompt (without any condition token).
    pub prompts: Vec<Vec<u32>>,
    pub completions: Vec<Vec<u32>>,
    pub rewards: Vec<Reward>,
    pub verdicts: Vec<Verdict>,
    /// Tokens passed forward to sample them (prompts and completions).
    pub forward_tokens: u64,
}

impl Rollouts {
    /// Adds `completion` after `prompt`, scored by the environment's proxy and true scorer.
    fn record(&mut self, env: &dyn Environment, prompt: Vec<u32>, completion: Vec<u32>) {
        self.rewards.push(env.reward(&prompt, &completion));
        self.verdicts.push(env.verdict(&prompt, &completion));
        self.prompts.push(prompt);
        self.completions.push(completion);
    }
}

/// Samples `k` completions of each prompt (after `condition`, if given) at `temperature`,
/// never a `banned` token, and scores them. Completion `j` of prompt `i` is sequence
/// `i·k + j` of one seeded request.
#[allow(clippy::too_many_arguments)]
pub fn roll_out(
    model: &Model,
    env: &dyn Environment,
    prompts: &[Vec<u32>],
    condition: Option<u32>,
    k: usize,
    temperature: f32,
    banned: &[u32],
    seed: u64,
) -> Result<Rollouts, GenerateError> {
    let inputs: Vec<Vec<InputSlot>> = prompts
        .iter()
        .flat_map(|p| {
            let slots: Vec<InputSlot> = condition.iter().chain(p).map(|&t| InputSlot::Token(t)).collect();
            std::iter::repeat_n(slots, k)
        })
        .collect();
    let req = GenerateRequest {
        inputs: &inputs,
        prompt_vectors: &[],
        steers: &[],
        max_new_tokens: env.max_completion(),
        sampling: Sampling::TopP { temperature, top_p: 1.0 },
        eos: None,
        banned,
        seed,
    };
    let generated = model.generate(&req)?;
    let mut out = Rollouts::default();
    for (i, g) in generated.into_iter().enumerate() {
        let prompt = &prompts[i / k];
        out.forward_tokens += (inputs[i].len() + g.len()) as u64;
        out.record(env, prompt.clone(), g[..env.episode_len(&g)].to_vec());
    }
    Ok(out)
}

/// The training samples of rollouts: prompt (after `condition`, weight 0) and completion with
/// per-token `weights`.
fn sample(condition: Option<u32>, prompt: &[u32], completion: &[u32], weights: &[f32]) -> Sample {
    let tokens: Vec<u32> = condition.iter().chain(prompt).chain(completion).copied().collect();
    let head = tokens.len() - completion.len();
    let w: Vec<f32> = std::iter::repeat_n(0.0, head).chain(weights.iter().copied()).collect();
    Sample::new(tokens, w, head)
}

/// Log-probabilities of each completion token under `model` (one forward over all of them).
pub fn completion_logprobs(model: &Model, r: &Rollouts) -> Vec<Vec<f64>> {
    let samples: Vec<Sample> =
        r.prompts.iter().zip(&r.completions).map(|(p, c)| sample(None, p, c, &vec![1.0; c.len()])).collect();
    let batch = batch_of(&samples, 0);
    let mut acts = Activations::default();
    model.forward(&mut acts, &batch, &[], &[], 1.0);
    let v = model.cfg.vocab_size;
    samples
        .iter()
        .enumerate()
        .map(|(b, s)| {
            (s.prompt_len..s.tokens.len())
                .map(|t| {
                    let row = &acts.logits[(b * batch.seq + t - 1) * v..(b * batch.seq + t) * v];
                    row[s.tokens[t] as usize] as f64 - log_sum_exp(row)
                })
                .collect()
        })
        .collect()
}

/// Policy-gradient samples: per completion token, `weight · A_t / N` with `A_t` the
/// leave-one-out advantage of the shaped return to go within the completion's group (see
/// [`advantages`]).
/// `shaping[i][t]` is added to the proxy's per-token reward (KL penalty, entropy bonus).
pub fn policy_gradient_samples(r: &Rollouts, shaping: &[Vec<f64>], group: usize, weight: f64) -> Vec<Sample> {
    let per_token: Vec<Vec<f64>> = r
        .rewards
        .iter()
        .enumerate()
        .map(|(i, rw)| rw.per_token.iter().enumerate().map(|(t, x)| x + shaping.get(i).map_or(0.0, |s| s[t])).collect())
        .collect();
    let to_go: Vec<Vec<f64>> = per_token.iter().map(|p| returns_to_go(p)).collect();
    let n = r.completions.len() as f64;
    advantages(&to_go, group)
        .iter()
        .enumerate()
        .map(|(i, a)| {
            let w: Vec<f32> = a.iter().map(|a| (weight * a / n) as f32).collect();
            sample(None, &r.prompts[i], &r.completions[i], &w)
        })
        .collect()
}

/// Conditioning samples: each completion after its bin's condition token (or none, for a
/// `cfg.unconditioned` fraction drawn by `key`), every completion token weighted so that the
/// loss is `weight` times the mean token cross-entropy.
pub fn conditioned_samples(r: &Rollouts, cfg: &RlCfg, first_condition: u32, key: u64) -> Vec<Sample> {
    let tokens: usize = r.completions.iter().map(Vec::len).sum();
    let w = (cfg.weight / tokens.max(1) as f64) as f32;
    let unit = |h: u64| (h >> 11) as f64 / (1u64 << 53) as f64;
    (0..r.completions.len())
        .map(|i| {
            let h = mix(key ^ mix(i as u64));
            let bin = if cfg.shuffle_bins {
                (mix(h) % cfg.n_conditions() as u64) as usize
            } else {
                cfg.bin(r.rewards[i].total)
            };
            let condition = (unit(h) >= cfg.unconditioned).then_some(first_condition + bin as u32);
            sample(condition, &r.prompts[i], &r.completions[i], &vec![w; r.completions[i].len()])
        })
        .collect()
}

/// Fraction of groups of `group` consecutive returns that are all equal (no signal for a
/// leave-one-out baseline).
pub fn equal_groups(returns: &[f64], group: usize) -> f64 {
    let groups: Vec<&[f64]> = returns.chunks(group.max(1)).collect();
    let equal = groups.iter().filter(|g| g.iter().all(|&x| (x - g[0]).abs() < 1e-12)).count();
    equal as f64 / groups.len().max(1) as f64
}

/// The environment task's own trajectories `step · n ..` of its train split under `seed`,
/// scored like completions (what [`Source::Data`] trains on; nothing is sampled).
pub fn recorded(env: &dyn Environment, seed: u64, step: u64, n: usize) -> Rollouts {
    let mut out = Rollouts::default();
    for j in 0..n as u64 {
        let s = env.task().sample(seed, Split::Train, step * n as u64 + j);
        out.record(env, s.input().to_vec(), s.answer());
    }
    out
}

/// The episodes of step `step`: train-split prompts `step · prompts ..` of the environment.
pub fn step_prompts(env: &dyn Environment, seed: u64, step: u64, prompts: usize) -> Vec<Vec<u32>> {
    (0..prompts as u64).map(|j| env.prompt(seed, Split::Train, step * prompts as u64 + j)).collect()
}

/// Tokens a rollout never samples: every id past the environment's vocabulary (condition
/// tokens, whatever other tasks add).
pub fn banned_tokens(env: &dyn Environment, model: &Model) -> Vec<u32> {
    (env.task().vocab_size() as u32..model.cfg.vocab_size as u32).collect()
}

/// What one evaluation of a sampling-based phase measured: `(metric, value)` rows and, per
/// completion (episode-major), its scores.
pub struct RolloutEval {
    pub metrics: Vec<(String, f64)>,
    pub per_sample: Vec<(&'static str, Vec<f64>)>,
}

/// Evaluates the policy on eval-split episodes `0..episodes` of seed [`EVAL_BOARDS`] (the
/// same boards whatever the run's seed, so that solutions pool across seeds): `eval_k`
/// completions each at the phase's temperature (conditioning: after the best bin's token),
/// sampled under `seed` alone so that every cell of a seed and every evaluation sample alike. Metrics: true `success` and
/// `optimal` rates, mean proxy `reward`, `exploit` (credited but not solved) and `credited`
/// rates; per episode, averaged: `distinct` completions, `distinct_solved` (distinct solved
/// ones), `entropy` of the completions' empirical distribution and their `overlap`
/// (self-BLEU-2); with a `reference` model, `kl` (mean over completions of
/// `Σ_t log π − log π_ref`, an estimate of the sequence-level KL to it). Conditioning also
/// measures, per bin `b` and without a condition (`none`), `bin{b}_reward` and
/// `bin{b}_success`: requested against achieved quality.
pub fn evaluate(
    model: &Model,
    env: &dyn Environment,
    cfg: &RlCfg,
    seed: u64,
    episodes: usize,
    reference: Option<&Model>,
) -> Result<RolloutEval, GenerateError> {
    use crate::analysis::diversity::{distinct, entropy, overlap};
    let prompts: Vec<Vec<u32>> = (0..episodes as u64).map(|i| env.prompt(EVAL_BOARDS, Split::Eval, i)).collect();
    let banned = banned_tokens(env, model);
    let first = env.task().vocab_size() as u32;
    let best = (cfg.n_conditions() > 0).then(|| first + cfg.bins.len() as u32);
    let key = mix(seed ^ EVAL_SALT);
    let r = roll_out(model, env, &prompts, best, cfg.eval_k, cfg.temperature, &banned, key)?;
    let n = r.completions.len() as f64;
    let rate = |f: &dyn Fn(&Verdict) -> bool| r.verdicts.iter().filter(|v| f(v)).count() as f64 / n;
    let mut metrics = vec![
        ("success".to_string(), rate(&|v| v.success)),
        ("optimal".to_string(), rate(&|v| v.optimal)),
        ("exploit".to_string(), rate(&|v| v.exploit())),
        ("credited".to_string(), rate(&|v| v.credited)),
        ("reward".to_string(), r.rewards.iter().map(|x| x.total).sum::<f64>() / n),
    ];
    let k = cfg.eval_k;
    let solved = |c: &[Vec<u32>], v: &[Verdict]| -> Vec<Vec<u32>> {
        c.iter().zip(v).filter(|(_, v)| v.success).map(|(c, _)| c.clone()).collect()
    };
    metrics.extend([
        ("distinct".to_string(), per_episode(&r, k, |c, _| distinct(c) as f64)),
        ("distinct_solved".to_string(), per_episode(&r, k, |c, v| distinct(&solved(c, v)) as f64)),
        ("entropy".to_string(), per_episode(&r, k, |c, _| entropy(c))),
        ("overlap".to_string(), per_episode(&r, k, |c, _| overlap(c))),
    ]);
    if let Some(reference) = reference {
        let (cur, refp) = (completion_logprobs(model, &r), completion_logprobs(reference, &r));
        let kl: f64 = cur.iter().zip(&refp).map(|(c, q)| c.iter().zip(q).map(|(a, b)| a - b).sum::<f64>()).sum();
        metrics.push(("kl".to_string(), kl / n));
    }
    if cfg.n_conditions() > 0 {
        let conditions = (0..cfg.n_conditions()).map(|b| (b.to_string(), Some(first + b as u32)));
        for (name, condition) in conditions.chain([("none".to_string(), None)]) {
            let c = roll_out(model, env, &prompts, condition, k, cfg.temperature, &banned, key)?;
            let m = c.completions.len() as f64;
            metrics.push((format!("bin{name}_reward"), c.rewards.iter().map(|x| x.total).sum::<f64>() / m));
            metrics.push((format!("bin{name}_success"), c.verdicts.iter().filter(|v| v.success).count() as f64 / m));
        }
    }
    let flag = |f: &dyn Fn(&Verdict) -> bool| r.verdicts.iter().map(|v| f64::from(u8::from(f(v)))).collect();
    let per_sample = vec![
        ("success", flag(&|v| v.success)),
        ("optimal", flag(&|v| v.optimal)),
        ("exploit", flag(&|v| v.exploit())),
        ("reward", r.rewards.iter().map(|x| x.total).collect()),
        ("solution", r.completions.iter().map(|c| solution_id(c)).collect()),
    ];
    Ok(RolloutEval { metrics, per_sample })
}

/// The mean over episodes (runs of `k` completions) of `f` of their completions and verdicts,
/// skipping episodes where it is undefined (NaN).
fn per_episode(r: &Rollouts, k: usize, f: impl Fn(&[Vec<u32>], &[Verdict]) -> f64) -> f64 {
    let values: Vec<f64> =
        r.completions.chunks(k).zip(r.verdicts.chunks(k)).map(|(c, v)| f(c, v)).filter(|x| !x.is_nan()).collect();
    values.iter().sum::<f64>() / values.len().max(1) as f64
}

/// A completion's identity as a number exact in an `f64` (53 bits of a hash of its tokens):
/// equal completions, equal ids, so that distinct solutions can be counted across runs.
pub fn solution_id(tokens: &[u32]) -> f64 {
    let h = tokens.iter().fold(0x5eed_u64, |h, &t| mix(h ^ u64::from(t)));
    (h >> 11) as f64
}

/// The seed whose eval-split boards every evaluation poses.
pub const EVAL_BOARDS: u64 = 0;
/// Salt of evaluation rollouts.
const EVAL_SALT: u64 = 0xe7a1_5a17;
/// Salt of training rollouts.
pub const ROLLOUT_SALT: u64 = 0x7011_0075;
/// Salt of the conditioning bins' draws.
pub const BIN_SALT: u64 = 0xb1_5a17;
