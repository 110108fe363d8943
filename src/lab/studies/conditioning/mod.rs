//! The `conditioning` template: can a model trained purely by prediction, with condition
//! metatokens, reach what RL-derived gradients reach, keeping more of its diversity and
//! exploiting less; and how does sparse reward compare with dense?
//!
//! Every cell pretrains one base by prediction on a pathfinding task's noisy paths
//! (`pretrain`, the same in every cell of a seed, so it is trained once and shared), then
//! trains it in the task's environment (see [`crate::train::reinforce`] and
//! [`crate::data::environment`]) for `steps` steps of `prompts × k` sampled completions,
//! scored by the proxy reward: one cell per *variant* `{arm}/{reward}`, a generated sweep
//! axis `conditioning.variant`:
//! - `conditioning`: condition metatokens, the proxy-return bins of trajectories written
//!   before the board (by default the task's own noisy trajectories, the pretraining
//!   distribution, as many per step as a policy-gradient step's FLOPs buy; or the model's own
//!   samples, `conditioning_source = "samples"`); evaluated on the best bin;
//! - `shuffled`: the same with bins drawn at random (the control: a condition that carries no
//!   information);
//! - `reinforce`: REINFORCE with a leave-one-out baseline over the batch;
//! - `rloo`: RLOO, the leave-one-out baseline over each episode's `k` completions;
//! - `mix{λ}`: the prediction loss on the pretraining data plus λ times the RLOO gradient;
//! - rewards `sparse` and `dense` (both with the planted exploit, see
//!   [`crate::data::environment`]).
//!
//! The measurement phase `train` evaluates at its start (the base: every arm's floor, the
//! same samples) and `evals` times after, on the same held-out boards with `eval_k` sampled
//! completions each. Every step of every arm samples the same number of completions; FLOPs
//! count sampling as well as training, and the report compares arms at equal FLOPs.

pub mod analysis;
pub mod report;

use crate::data::environment::{RewardCfg, RewardKind};
use crate::lab::experiment::Experiment;
use crate::lab::plan::PlannedCell;
use crate::lab::study::{parse_table, replace_phases, task_specs, variant_axis, Problem, Study};
use crate::lab::sweep::Axis;
use crate::train::config::TaskSpec;
use crate::train::reinforce::{Method, Source};
use serde::Deserialize;
use serde_json::json;
use std::path::PathBuf;

/// The generated sweep axis.
pub const AXIS: &str = "conditioning.variant";
/// The pretraining phase.
pub const PRETRAIN: &str = "pretrain";
/// The measurement phase.
pub const TRAIN: &str = "train";
/// The arms, as written in `arms` (`mix` expands to one arm per λ).
pub const ARMS: [&str; 5] = ["conditioning", "shuffled", "reinforce", "rloo", "mix"];

/// The `[conditioning]` table.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ConditioningSpec {
    /// The environment's task (a plain pathfinding or a coins task): pretraining data and the
    /// episodes' prompts.
    pub task: String,
    /// Pretraining by prediction.
    pub pretrain_steps: u64,
    #[serde(default = "default_pretrain_lr")]
    pub pretrain_lr: f64,
    #[serde(default = "default_batch")]
    pub batch_size: usize,
    #[serde(default = "default_arms")]
    pub arms: Vec<String>,
    #[serde(default = "default_rewards")]
    pub rewards: Vec<RewardKind>,
    /// The RL weights λ of the `mix` arms.
    #[serde(default = "default_lambdas")]
    pub lambdas: Vec<f64>,
    /// Steps of the measurement phase, and its learning rate for each family of arms.
    pub steps: u64,
    #[serde(default = "default_lr")]
    pub rl_lr: f64,
    #[serde(default = "default_lr")]
    pub conditioning_lr: f64,
    #[serde(default = "default_prompts")]
    pub prompts: usize,
    #[serde(default = "default_k")]
    pub k: usize,
    #[serde(default = "default_temperature")]
    pub temperature: f64,
    #[serde(default)]
    pub kl_coef: f64,
    #[serde(default)]
    pub entropy_coef: f64,
    /// The proxy reward's cost per move and (dense) penalty per invalid move.
    #[serde(default = "default_step_cost")]
    pub step_cost: f64,
    #[serde(default = "default_invalid_penalty")]
    pub invalid_penalty: f64,
    /// Credit sparse reward only for paths of at most the optimal length.
    #[serde(default)]
    pub optimal_only: bool,
    /// Conditioning bin edges on the sparse and on the dense proxy return.
    #[serde(default = "default_sparse_bins")]
    pub sparse_bins: Vec<f64>,
    #[serde(default = "default_dense_bins")]
    pub dense_bins: Vec<f64>,
    /// What the conditioning arms train on: `data` (default), the task's own noisy
    /// trajectories, as many per step as a policy-gradient step's FLOPs buy; or `samples`,
    /// the model's own completions, like the policy-gradient arms.
    #[serde(default = "default_source")]
    pub conditioning_source: Source,
    /// The fraction of conditioning completions trained without a condition.
    #[serde(default = "default_unconditioned")]
    pub unconditioned: f64,
    /// Held-out boards, completions sampled per board, and evaluations after the start.
    #[serde(default = "default_episodes")]
    pub eval_episodes: usize,
    #[serde(default = "default_eval_k")]
    pub eval_k: usize,
    #[serde(default = "default_evals")]
    pub evals: u64,
    /// The cell's variant, set by the generated axis.
    pub variant: Option<String>,
}

fn default_pretrain_lr() -> f64 {
    3e-3
}
fn default_batch() -> usize {
    32
}
fn default_arms() -> Vec<String> {
    ARMS.iter().map(|a| a.to_string()).collect()
}
fn default_rewards() -> Vec<RewardKind> {
    vec![RewardKind::Sparse, RewardKind::Dense]
}
fn default_lambdas() -> Vec<f64> {
    vec![1.0]
}
fn default_lr() -> f64 {
    3e-4
}
fn default_prompts() -> usize {
    8
}
fn default_k() -> usize {
    4
}
fn default_temperature() -> f64 {
    1.0
}
fn default_step_cost() -> f64 {
    0.05
}
fn default_invalid_penalty() -> f64 {
    0.5
}
fn default_sparse_bins() -> Vec<f64> {
    vec![0.5]
}
fn default_dense_bins() -> Vec<f64> {
    vec![1.0, 2.5]
}
fn default_source() -> Source {
    Source::Data
}
fn default_unconditioned() -> f64 {
    0.01
}
fn default_episodes() -> usize {
    32
}
fn default_eval_k() -> usize {
    8
}
fn default_evals() -> u64 {
    4
}

/// One arm.
#[derive(Clone, Copy, Debug, PartialEq, PartialOrd)]
pub enum Arm {
    Conditioning,
    Shuffled,
    Reinforce,
    Rloo,
    Mix(f64),
}

impl Arm {
    pub fn name(self) -> String {
        match self {
            Arm::Conditioning => "conditioning".into(),
            Arm::Shuffled => "shuffled".into(),
            Arm::Reinforce => "reinforce".into(),
            Arm::Rloo => "rloo".into(),
            Arm::Mix(l) => format!("mix{l}"),
        }
    }

    pub fn parse(name: &str) -> Option<Arm> {
        match name {
            "conditioning" => Some(Arm::Conditioning),
            "shuffled" => Some(Arm::Shuffled),
            "reinforce" => Some(Arm::Reinforce),
            "rloo" => Some(Arm::Rloo),
            n => n.strip_prefix("mix").and_then(|l| l.parse().ok()).filter(|l: &f64| *l >= 0.0).map(Arm::Mix),
        }
    }

    /// Whether the arm trains by prediction on condition metatokens.
    pub fn conditions(self) -> bool {
        matches!(self, Arm::Conditioning | Arm::Shuffled)
    }
}

/// One cell's arm and reward.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Variant {
    pub arm: Arm,
    pub reward: RewardKind,
}

impl Variant {
    pub fn name(&self) -> String {
        format!("{}/{}", self.arm.name(), self.reward.name())
    }

    pub fn parse(name: &str) -> Option<Variant> {
        let (arm, reward) = name.split_once('/')?;
        let reward = match reward {
            "sparse" => RewardKind::Sparse,
            "dense" => RewardKind::Dense,
            _ => return None,
        };
        Some(Variant { arm: Arm::parse(arm)?, reward })
    }
}

impl ConditioningSpec {
    /// Range and reference checks, as `(key, message)`.
    pub fn problems(&self, tasks: &[TaskSpec]) -> Vec<Problem> {
        let mut out = Vec::new();
        let mut bad = |k: &str, m: String| out.push((k.to_string(), m));
        let probe = self.rl_cfg(Variant { arm: Arm::Rloo, reward: RewardKind::Sparse });
        if let Err(m) = crate::train::reinforce::environment(&probe, tasks) {
            bad("task", m);
        }
        if let Some(a) = self.arms.iter().find(|a| !ARMS.contains(&a.as_str())) {
            bad("arms", format!("{a:?} is not one of {}", ARMS.join(", ")));
        }
        if self.arms.is_empty() || self.rewards.is_empty() {
            bad("arms", "give at least one arm and one reward".into());
        }
        if self.arms.iter().any(|a| a == "mix")
            && (self.lambdas.is_empty() || self.lambdas.iter().any(|l| !l.is_finite() || *l <= 0.0))
        {
            bad("lambdas", "the mix arms need at least one positive λ".into());
        }
        for (k, v) in [("pretrain_steps", self.pretrain_steps), ("steps", self.steps), ("evals", self.evals)] {
            if v == 0 {
                bad(k, "must be at least 1".into());
            }
        }
        if self.evals > self.steps {
            bad("evals", format!("at most steps = {}", self.steps));
        }
        for (k, v) in
            [("pretrain_lr", self.pretrain_lr), ("rl_lr", self.rl_lr), ("conditioning_lr", self.conditioning_lr)]
        {
            if !(v > 0.0 && v.is_finite()) {
                bad(k, "must be a positive number".into());
            }
        }
        out.extend(self.rl_cfg(Variant { arm: Arm::Mix(1.0), reward: RewardKind::Sparse }).problems());
        for reward in [RewardKind::Sparse, RewardKind::Dense] {
            let conditioned = Variant { arm: Arm::Conditioning, reward };
            out.extend(self.rl_cfg(conditioned).problems().into_iter().map(|(k, m)| match k.as_str() {
                "bins" => (format!("{}_bins", reward.name()), m),
                _ => (k, m),
            }));
        }
        out
    }

    /// Every variant: per reward, every arm (`mix` once per λ).
    pub fn variants(&self) -> Vec<Variant> {
        let mut arms = Vec::new();
        for a in &self.arms {
            match a.as_str() {
                "mix" => arms.extend(self.lambdas.iter().map(|&l| Arm::Mix(l))),
                n => arms.extend(Arm::parse(n)),
            }
        }
        self.rewards.iter().flat_map(|&reward| arms.iter().map(move |&arm| Variant { arm, reward })).collect()
    }

    /// Condition tokens the model needs room for: the most bins of any reward, plus one.
    pub fn n_conditions(&self) -> usize {
        self.sparse_bins.len().max(self.dense_bins.len()) + 1
    }

    /// The bin edges of `reward`.
    pub fn bins(&self, reward: RewardKind) -> &[f64] {
        match reward {
            RewardKind::Sparse => &self.sparse_bins,
            RewardKind::Dense => &self.dense_bins,
        }
    }

    /// The proxy reward of `kind`.
    pub fn reward(&self, kind: RewardKind) -> RewardCfg {
        RewardCfg {
            kind,
            optimal_only: self.optimal_only,
            step_cost: self.step_cost,
            invalid_penalty: self.invalid_penalty,
            exploitable: true,
        }
    }

    /// The `[phases.rl]` table of variant `v`.
    pub fn rl_cfg(&self, v: Variant) -> crate::train::reinforce::RlCfg {
        let method = match v.arm {
            Arm::Conditioning | Arm::Shuffled => Method::Conditioning,
            Arm::Reinforce => Method::Reinforce,
            Arm::Rloo | Arm::Mix(_) => Method::Rloo,
        };
        let conditioned = v.arm.conditions();
        // Offline conditioning samples nothing: it gets the trajectories a policy-gradient
        // step's FLOPs buy (a sampled token costs a forward, 2·N, next to training's 6·N; a
        // KL penalty or entropy bonus adds forwards).
        let shaped = f64::from(u8::from(self.kl_coef > 0.0 || self.entropy_coef > 0.0) + u8::from(self.kl_coef > 0.0));
        let offline = conditioned && self.conditioning_source == Source::Data;
        let (prompts, k) = match offline {
            true => (((self.prompts * self.k) as f64 * (8.0 + 2.0 * shaped) / 6.0).ceil() as usize, 1),
            false => (self.prompts, self.k),
        };
        crate::train::reinforce::RlCfg {
            env: self.task.clone(),
            reward: self.reward(v.reward),
            method,
            prompts,
            k,
            temperature: self.temperature as f32,
            weight: if let Arm::Mix(l) = v.arm { l } else { 1.0 },
            prediction: if matches!(v.arm, Arm::Mix(_)) { 1.0 } else { 0.0 },
            kl_coef: if conditioned { 0.0 } else { self.kl_coef },
            kl_to: (!conditioned && self.kl_coef > 0.0).then(|| PRETRAIN.to_string()),
            entropy_coef: if conditioned { 0.0 } else { self.entropy_coef },
            bins: if conditioned { self.bins(v.reward).to_vec() } else { Vec::new() },
            unconditioned: self.unconditioned,
            shuffle_bins: v.arm == Arm::Shuffled,
            source: if conditioned { self.conditioning_source } else { Source::Samples },
            eval_k: self.eval_k,
        }
    }

    fn phases(&self, v: Variant) -> serde_json::Value {
        let pretrain = json!({"name": PRETRAIN, "steps": self.pretrain_steps, "batch_size": self.batch_size,
            "mixture": {self.task.clone(): 1.0}, "optimizer": {"lr": self.pretrain_lr},
            "schedule": {"kind": "cosine", "warmup_steps": (self.pretrain_steps / 20).max(1)},
            "eval": {"every": self.pretrain_steps, "samples": self.eval_episodes * 2}});
        let lr = if v.arm.conditions() { self.conditioning_lr } else { self.rl_lr };
        let rl = serde_json::to_value(self.rl_cfg(v)).expect("a serialisable table");
        let train = json!({"name": TRAIN, "steps": self.steps, "batch_size": self.batch_size,
            "mixture": {self.task.clone(): 1.0}, "optimizer": {"lr": lr, "weight_decay": 0.0}, "rl": rl,
            "eval": {"every": (self.steps / self.evals).max(1), "samples": self.eval_episodes,
                "exact_match": false, "kl_to": PRETRAIN}});
        json!([pretrain, train])
    }
}

/// The conditioning study.
#[derive(Clone, Debug)]
pub struct Conditioning {
    pub spec: ConditioningSpec,
    variants: Vec<String>,
}

/// Reads the `[conditioning]` table of a cell's config.
pub fn parse(doc: &toml::Table) -> Result<Box<dyn Study>, Problem> {
    let tasks = task_specs(doc)?;
    let spec = parse_table(doc, "conditioning", |s: &ConditioningSpec| s.problems(&tasks))?;
    let variants = spec.variants().iter().map(|v| v.name()).collect();
    Ok(Box::new(Conditioning { spec, variants }))
}

impl Study for Conditioning {
    fn name(&self) -> &'static str {
        "conditioning"
    }

    /// `conditioning.variant`: one cell per arm × reward.
    fn axes(&self) -> Vec<Axis> {
        variant_axis(AXIS, &self.variants)
    }

    /// Replaces the `[conditioning]` table by the variant's phases, and gives the model room
    /// for the condition tokens (the same in every cell, so the base is shared).
    fn write(&self, doc: &mut toml::Table) -> Result<(), Problem> {
        let s = &self.spec;
        let variant = s.variant.as_deref().and_then(Variant::parse).ok_or((
            "conditioning.variant".to_string(),
            "set by the template's sweep axis; do not write it".to_string(),
        ))?;
        let has_vocab = doc.get("model").and_then(|m| m.get("vocab_size")).is_some();
        if !has_vocab {
            let spec = task_specs(doc)?.into_iter().find(|t| t.name == s.task);
            let task =
                spec.map(|t| t.build()).transpose().map_err(|e| ("conditioning.task".to_string(), e.to_string()))?;
            let vocab = task.map_or(0, |t| t.vocab_size()) + s.n_conditions();
            let model = doc.entry("model").or_insert_with(|| toml::Table::new().into());
            let model = model.as_table_mut().ok_or(("model".to_string(), "must be a table".to_string()))?;
            model.insert("vocab_size".into(), (vocab as i64).into());
        }
        let phases = toml::Value::try_from(s.phases(variant)).expect("JSON without nulls is TOML");
        replace_phases(doc, "conditioning", phases)
    }

    fn report(&self, exp: &Experiment, planned: &[PlannedCell], _search: Option<&str>) -> anyhow::Result<PathBuf> {
        report::write(&self.spec, exp, planned)
    }
}
