//! The `distance` template: how many soft-prompt tokens a frozen model needs to show a
//! behavior (its conditional distance), next to what fine-tuning its weights reaches.
//!
//! The `[distance]` table names the behavior (a task) and the budgets. The run config's own
//! `[[phases]]`, if any, are pre-training that installs what the model knows (they run in
//! every cell, identically, since every cell has the run's seed); the template appends one
//! measurement phase, `distance`. Each sweep point of the experiment expands into one cell
//! per *variant*, a generated sweep axis `distance.variant` (see [`Variant`]):
//! - for every arm (below), the frozen model under the same insertion masking (`p0`), a soft
//!   prompt per token count × restart × learning rate, and execution fine-tuning (`full`,
//!   `lora`) per saturation learning rate;
//! - arms: `target` (the behavior on the model), `null_target` (a random-target behavior of
//!   matched entropy: for a `repeat` behavior, a random string of the same length, else
//!   `null_task`), `null_model` (the behavior on a model that never learned it: `null_model`,
//!   or without it the same model without the pre-training phases).
//!
//! Every cell keeps the run's seed, so every count (0 included), restart and fine-tuning run
//! is scored on the same reported and validation samples with the same insertion points; a
//! restart changes only the phase seed (prompt init and data order). Choices (stopping step,
//! learning rate, restart) are made on validation loss, figures are reported losses.
//! Saturation `S` is the chosen fine-tuning run's loss (fine-tuning stops early on
//! validation loss); the conditional distance is the smallest count whose chosen run is
//! within `ε = epsilon_rel · (L0 − S)` of `S`, `L0` the frozen model's loss, refused when a
//! count it rules out chose a learning rate at the grid's edge with the validation loss
//! falling towards it steeply enough that a wider grid might close the gap (see
//! [`analysis`]).
//!
//! With a `[distance.conditional]` table ([`Conditional`]) the behavior is a pathfinding task
//! and every count also gets a *conditional* prompt (`arm/c{n}/r{k}/lr{lr}`): an MLP maps each
//! sample's own `(extra_moves, invalid_moves)` to its prompt. Prompts train on
//! `{behavior}-prompt`, the behavior without the `held_out` conditions (a filtered stream, so
//! they never occur in training by construction), and every cell is scored on that task and
//! on one task per evaluated condition, `{behavior}-e{extra}i{invalid}` (only that condition),
//! with sampled generations whose extra and invalid moves show whether the prompt follows the
//! condition it is given (see [`conditional`]).

pub mod analysis;
pub mod conditional;
pub mod lengths;
pub mod report;

use crate::data::spec::{default_vocab, Kind};
use crate::lab::experiment::Experiment;
use crate::lab::plan::PlannedCell;
use crate::lab::study::{task_specs, variant_axis, Problem, Study};
use crate::lab::sweep::Axis;
use crate::train::batching::Insert;
use crate::train::config::TaskSpec;
use serde::Deserialize;
use std::collections::BTreeMap;
use std::path::PathBuf;

/// The saturation kinds: full fine-tuning, LoRA, and conditioned full fine-tuning.
pub const SATURATION_KINDS: [&str; 3] = ["full", "lora", "conditioned"];

/// The measurement phase's name.
pub const PHASE: &str = "distance";

/// The generated sweep axis.
pub const AXIS: &str = "distance.variant";

/// The `[distance]` table.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct DistanceSpec {
    /// The target behavior: a task name from `[[tasks]]`.
    pub behavior: String,
    /// The random-target null behavior (default for a `repeat` behavior: a random string of
    /// the same length over the same inputs).
    pub null_task: Option<String>,
    /// A model directory that never learned the behavior (default when the config has
    /// pre-training phases: the same model without them, or see `null_mixture`).
    pub null_model: Option<PathBuf>,
    /// The null model's pre-training: the config's pre-training phases with this mixture
    /// instead (e.g. the same text without the capability), so that the null model is a
    /// trained model that lacks only what the behavior would draw on.
    pub null_mixture: Option<BTreeMap<String, f64>>,
    /// Soft-prompt token counts (0: the frozen model).
    #[serde(default = "default_counts")]
    pub counts: Vec<usize>,
    /// The null arms' token counts (default: `counts`): a coarser grid where compute is
    /// short, since a null arm's distance only needs to be placed against the target's.
    pub null_counts: Option<Vec<usize>>,
    #[serde(default)]
    pub insert: Insert,
    /// Restarts per count and learning rate.
    #[serde(default = "one")]
    pub restarts: usize,
    /// Soft-prompt learning rates (AdamW, constant).
    #[serde(default = "default_lrs")]
    pub lrs: Vec<f64>,
    #[serde(default = "default_steps")]
    pub steps: u64,
    #[serde(default = "default_batch")]
    pub batch_size: usize,
    /// Prompt init: normal with this standard deviation (0: zero init).
    #[serde(default = "default_init_std")]
    pub init_std: f64,
    #[serde(default = "default_weight_decay")]
    pub weight_decay: f64,
    /// Held-out samples (the same for every cell): the reported set.
    #[serde(default = "default_samples")]
    pub eval_samples: usize,
    /// Validation samples (default: `eval_samples`), disjoint from the reported ones: the
    /// set on which stopping steps, learning rates and restarts are chosen.
    pub validation_samples: Option<usize>,
    /// Evaluations per measurement phase.
    #[serde(default = "default_evals")]
    pub evals: u64,
    /// How close to `S` counts as saturated, as a fraction of the gap between the frozen
    /// model's loss and `S`: `ε = epsilon_rel · (L0 − S)`.
    #[serde(default = "default_epsilon")]
    pub epsilon_rel: f64,
    #[serde(default)]
    pub saturation: Saturation,
    /// Conditional prompts on pathfinding conditions (absent: unconditional prompts only).
    pub conditional: Option<Conditional>,
    /// The cell's variant, set by the generated axis.
    pub variant: Option<String>,
}

/// The `[distance.conditional]` table: conditional soft prompts on a pathfinding behavior's
/// path conditions `(extra_moves, invalid_moves)`, next to unconditional prompts of the same
/// lengths (which cannot follow a condition, so the comparison can fail).
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Conditional {
    /// Conditions `[extra_moves, invalid_moves]` the prompts never train on; evaluated.
    pub held_out: Vec<[i64; 2]>,
    /// Training conditions also evaluated one by one.
    #[serde(default)]
    pub seen: Vec<[i64; 2]>,
    /// Hidden width per prompt token of the condition MLP.
    #[serde(default = "crate::train::config::default_hidden")]
    pub hidden: usize,
    /// Conditions are multiplied by this before the MLP.
    #[serde(default = "default_scale")]
    pub scale: f64,
    /// Generations are sampled at this temperature (greedy decoding would give the mode, the
    /// optimal path, whatever the condition).
    #[serde(default = "default_temperature")]
    pub temperature: f64,
    /// Prompts train only on paths with at most this many extra moves, so that held-out
    /// conditions beyond it are extrapolations, not interpolations (`None`: no bound).
    pub train_max_extra: Option<i64>,
}

fn default_scale() -> f64 {
    0.25
}
fn default_temperature() -> f64 {
    1.0
}

impl Conditional {
    /// Every evaluated condition, seen first, and whether it is held out.
    pub fn evaluated(&self) -> Vec<([i64; 2], bool)> {
        self.seen.iter().map(|c| (*c, false)).chain(self.held_out.iter().map(|c| (*c, true))).collect()
    }

    /// Whether held-out condition `c` lies beyond the training conditions' range.
    pub fn extrapolated(&self, c: [i64; 2]) -> bool {
        self.train_max_extra.is_some_and(|m| c[0] > m)
    }

    /// The name of the task that holds only condition `c` of `behavior`.
    pub fn task_name(behavior: &str, c: [i64; 2]) -> String {
        format!("{behavior}-e{}i{}", c[0], c[1])
    }

    /// The name of the prompts' training task (the behavior without the held-out conditions).
    pub fn prompt_task(behavior: &str) -> String {
        format!("{behavior}-prompt")
    }

    /// Range problems as `(key under distance.conditional, message)`.
    fn problems(&self, max_moves: i64) -> Vec<(String, String)> {
        let mut out = Vec::new();
        let mut bad = |k: &str, m: String| out.push((format!("conditional.{k}"), m));
        if self.held_out.is_empty() {
            bad("held_out", "give at least one [extra_moves, invalid_moves] pair the prompts never see".into());
        }
        for (k, list) in [("held_out", &self.held_out), ("seen", &self.seen)] {
            if let Some([e, i]) = list.iter().find(|[e, i]| *i < 0 || *i > max_moves || e.abs() > max_moves) {
                bad(k, format!("[{e}, {i}]: need 0 ≤ invalid ≤ {max_moves} and |extra| ≤ {max_moves} (max_moves)"));
            }
            if list.iter().enumerate().any(|(j, c)| list[..j].contains(c)) {
                bad(k, "lists a condition twice".into());
            }
        }
        if let Some([e, i]) = self.seen.iter().find(|c| self.held_out.contains(c)) {
            bad("seen", format!("[{e}, {i}] is held out: a condition is either seen or held out"));
        }
        if let (Some(m), Some([e, i])) = (self.train_max_extra, self.seen.iter().find(|c| self.extrapolated(**c))) {
            bad(
                "seen",
                format!("[{e}, {i}] has more than train_max_extra = {m} extra moves: the prompts never see it"),
            );
        }
        if self.hidden == 0 {
            bad("hidden", "must be at least 1".into());
        }
        for (k, v) in [("scale", self.scale), ("temperature", self.temperature)] {
            if !(v > 0.0 && v.is_finite()) {
                bad(k, "must be a positive number".into());
            }
        }
        out
    }
}

/// Execution fine-tuning, trained to convergence: its own step cap, evaluated `evals` times,
/// stopped early once `patience` evaluations in a row fail to lower the validation loss; its
/// reported loss is read at its lowest validation loss.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct Saturation {
    /// `full` and/or `lora`.
    pub kinds: Vec<String>,
    /// Step cap (default: the soft prompts' steps); batch size as the soft prompts'.
    pub steps: Option<u64>,
    pub lrs: Vec<f64>,
    pub lora_rank: usize,
    /// Evaluations over the step cap.
    pub evals: u64,
    /// Early stopping: evaluations in a row without a lower validation loss.
    pub patience: usize,
}

impl Default for Saturation {
    fn default() -> Self {
        Saturation {
            kinds: vec!["full".into(), "lora".into()],
            steps: None,
            lrs: vec![1e-3, 3e-3],
            lora_rank: 8,
            evals: 10,
            patience: 3,
        }
    }
}

fn default_counts() -> Vec<usize> {
    vec![0, 1, 2, 4, 8, 16, 32, 64]
}
fn one() -> usize {
    1
}
fn default_lrs() -> Vec<f64> {
    vec![1e-3]
}
fn default_steps() -> u64 {
    512
}
fn default_batch() -> usize {
    32
}
fn default_init_std() -> f64 {
    0.1
}
fn default_weight_decay() -> f64 {
    1e-4
}
fn default_samples() -> usize {
    128
}
fn default_evals() -> u64 {
    4
}
fn default_epsilon() -> f64 {
    0.05
}

/// What the model is asked to do in a cell.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Arm {
    Target,
    NullTarget,
    NullModel,
}

impl Arm {
    /// The arm's name in variant names and reports.
    pub fn name(self) -> &'static str {
        match self {
            Arm::Target => "target",
            Arm::NullTarget => "null_target",
            Arm::NullModel => "null_model",
        }
    }
}

/// What a cell trains in its measurement phase.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Tuning {
    /// The frozen model (0 prompt tokens).
    Frozen,
    Prompt {
        tokens: usize,
        restart: usize,
        lr: f64,
    },
    /// A conditional prompt (`[distance.conditional]`).
    CondPrompt {
        tokens: usize,
        restart: usize,
        lr: f64,
    },
    Full {
        lr: f64,
    },
    Lora {
        lr: f64,
    },
    /// Full fine-tuning with each sample's condition written before its board (pathfinding's
    /// `condition_prefix`): the model is *told* the condition, the saturation of conditional
    /// prompts (`[distance.conditional]`, saturation kind `"conditioned"`).
    Conditioned {
        lr: f64,
    },
}

/// One cell of a sweep point: `arm/p0`, `arm/p{n}/r{k}/lr{lr}`, `arm/c{n}/r{k}/lr{lr}`
/// (conditional), `arm/full/lr{lr}`, `arm/lora/lr{lr}`, `arm/cft/lr{lr}` (conditioned).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Variant {
    pub arm: Arm,
    pub tuning: Tuning,
}

impl Variant {
    /// The variant's name (the generated axis's value).
    pub fn name(&self) -> String {
        let tuning = match self.tuning {
            Tuning::Frozen => "p0".to_string(),
            Tuning::Prompt { tokens, restart, lr } => format!("p{tokens}/r{restart}/lr{lr}"),
            Tuning::CondPrompt { tokens, restart, lr } => format!("c{tokens}/r{restart}/lr{lr}"),
            Tuning::Full { lr } => format!("full/lr{lr}"),
            Tuning::Lora { lr } => format!("lora/lr{lr}"),
            Tuning::Conditioned { lr } => format!("cft/lr{lr}"),
        };
        format!("{}/{tuning}", self.arm.name())
    }

    /// Parses [`Variant::name`]'s form.
    pub fn parse(name: &str) -> Option<Variant> {
        let parts: Vec<&str> = name.split('/').collect();
        let arm = [Arm::Target, Arm::NullTarget, Arm::NullModel].into_iter().find(|a| a.name() == parts[0])?;
        let lr = |s: &str| s.strip_prefix("lr")?.parse::<f64>().ok();
        let tuning = match parts[1..] {
            ["p0"] => Tuning::Frozen,
            ["full", l] => Tuning::Full { lr: lr(l)? },
            ["lora", l] => Tuning::Lora { lr: lr(l)? },
            ["cft", l] => Tuning::Conditioned { lr: lr(l)? },
            [p, r, l] => {
                let (restart, lr) = (r.strip_prefix('r')?.parse().ok()?, lr(l)?);
                match (p.strip_prefix('p'), p.strip_prefix('c')) {
                    (Some(n), _) => Tuning::Prompt { tokens: n.parse().ok()?, restart, lr },
                    (_, Some(n)) => Tuning::CondPrompt { tokens: n.parse().ok()?, restart, lr },
                    _ => return None,
                }
            }
            _ => return None,
        };
        Some(Variant { arm, tuning })
    }
}

impl DistanceSpec {
    /// Range and reference problems as `(key under distance, message)`.
    pub fn problems(&self, tasks: &[TaskSpec], pretrained: bool) -> Vec<(String, String)> {
        let mut out = Vec::new();
        let mut bad = |k: &str, m: String| out.push((k.to_string(), m));
        let names: Vec<&str> = tasks.iter().map(|t| t.name.as_str()).collect();
        let mixture = self.null_mixture.iter().flat_map(|m| m.keys()).map(|n| ("null_mixture", Some(n)));
        for (k, name) in
            [("behavior", Some(&self.behavior)), ("null_task", self.null_task.as_ref())].into_iter().chain(mixture)
        {
            if name.is_some_and(|n| !names.contains(&n.as_str())) {
                bad(k, format!("unknown task {name:?}; defined tasks: {names:?}"));
            }
        }
        if self.null_mixture.is_some() && (self.null_model.is_some() || !pretrained) {
            bad("null_mixture", "replaces the mixture of the config's [[phases]]: give it with pre-training phases and without null_model".into());
        }
        for (k, counts) in [("counts", Some(&self.counts)), ("null_counts", self.null_counts.as_ref())] {
            if counts.is_some_and(|c| c.is_empty() || !c.windows(2).all(|w| w[0] < w[1])) {
                bad(k, "give increasing token counts, e.g. [0, 1, 4, 16]".into());
            }
        }
        for (k, v) in
            [("restarts", self.restarts), ("batch_size", self.batch_size), ("eval_samples", self.eval_samples)]
        {
            if v == 0 {
                bad(k, "must be at least 1".into());
            }
        }
        if self.steps == 0 || self.evals == 0 {
            bad("steps", "steps and evals must be at least 1".into());
        }
        if self.validation_samples == Some(0) {
            bad("validation_samples", "must be at least 1: choices are made on the validation set".into());
        }
        if self.saturation.evals < 2 || self.saturation.patience == 0 {
            bad("saturation.evals", "need at least 2 evaluations and a patience of at least 1 to stop early".into());
        }
        for (k, lrs) in [("lrs", &self.lrs), ("saturation.lrs", &self.saturation.lrs)] {
            if lrs.is_empty() || lrs.iter().any(|l| !(*l > 0.0 && l.is_finite())) {
                bad(k, "give at least one positive learning rate".into());
            }
        }
        if let Some(k) = self.saturation.kinds.iter().find(|k| !SATURATION_KINDS.contains(&k.as_str())) {
            bad("saturation.kinds", format!("{k:?} is not one of {SATURATION_KINDS:?}"));
        }
        if self.saturation.kinds.iter().any(|k| k == "conditioned") && self.conditional.is_none() {
            bad(
                "saturation.kinds",
                "\"conditioned\" fine-tunes on boards that state their condition: it saturates conditional prompts, \
                 so it needs a [distance.conditional] table"
                    .into(),
            );
        }
        if !self.saturation.kinds.iter().any(|k| k == "full" || k == "lora") {
            bad(
                "saturation.kinds",
                "name \"full\" or \"lora\": the unconditional prompts' saturation defines their distance".into(),
            );
        }
        if !(self.epsilon_rel >= 0.0 && self.epsilon_rel < 1.0) {
            bad("epsilon_rel", "must be a fraction of the gap L0 − S in [0, 1)".into());
        }
        if self.arms(tasks, pretrained).is_empty() {
            bad("behavior", "no arm to run".into());
        }
        if let Some(c) = &self.conditional {
            match tasks.iter().find(|t| t.name == self.behavior) {
                Some(TaskSpec { kind: Kind::Pathfinding(p), .. }) => out.extend(c.problems(p.max_moves as i64)),
                Some(t) => bad(
                    "conditional",
                    format!(
                        "conditions are pathfinding's (extra, invalid moves); behavior {:?} is {:?}",
                        t.name,
                        t.kind.name()
                    ),
                ),
                None => {}
            }
            if self.insert != Insert::Prepend {
                out.push((
                    "insert".into(),
                    "conditional prompts are prepended: use insert = \"prepend\" so both prompt kinds score alike"
                        .into(),
                ));
            }
        }
        out
    }

    /// The arms this study runs: the target, and the null baselines it can build.
    pub fn arms(&self, tasks: &[TaskSpec], pretrained: bool) -> Vec<Arm> {
        let mut arms = vec![Arm::Target];
        let behavior = tasks.iter().find(|t| t.name == self.behavior);
        if self.null_task.is_some() || behavior.is_some_and(|t| matches!(t.kind, Kind::Repeat(_))) {
            arms.push(Arm::NullTarget);
        }
        if self.null_model.is_some() || pretrained {
            arms.push(Arm::NullModel);
        }
        arms
    }

    /// Every variant of a sweep point, arm by arm.
    pub fn variants(&self, arms: &[Arm]) -> Vec<Variant> {
        let null_counts = self.null_counts.as_ref().unwrap_or(&self.counts);
        let target = self.tunings(&self.counts);
        let null = self.tunings(null_counts);
        arms.iter()
            .flat_map(|&arm| {
                let tunings = if arm == Arm::Target { &target } else { &null };
                tunings.iter().map(move |&tuning| Variant { arm, tuning })
            })
            .collect()
    }

    /// The tunings of one arm with token counts `counts`.
    fn tunings(&self, counts: &[usize]) -> Vec<Tuning> {
        let mut tunings = Vec::new();
        for &tokens in counts {
            if tokens == 0 {
                tunings.push(Tuning::Frozen);
                continue;
            }
            for &lr in &self.lrs {
                tunings.extend((0..self.restarts).map(|restart| Tuning::Prompt { tokens, restart, lr }));
            }
            if self.conditional.is_some() {
                for &lr in &self.lrs {
                    tunings.extend((0..self.restarts).map(|restart| Tuning::CondPrompt { tokens, restart, lr }));
                }
            }
        }
        for kind in &self.saturation.kinds {
            for &lr in &self.saturation.lrs {
                tunings.push(match kind.as_str() {
                    "full" => Tuning::Full { lr },
                    "lora" => Tuning::Lora { lr },
                    _ => Tuning::Conditioned { lr },
                });
            }
        }
        tunings
    }

    /// The random-target twin of a `repeat` behavior: the same spec with a random string of
    /// the same length in tokens (a `text` string is encoded to count them), drawn from the
    /// base vocabulary's ids `2..vocab`.
    pub fn null_repeat(&self, behavior: &TaskSpec) -> Result<Vec<u32>, String> {
        let Kind::Repeat(repeat) = &behavior.kind else { return Ok(Vec::new()) };
        let vocab = repeat.base.spec().kind.vocab().unwrap_or_else(default_vocab).max(3) as u64;
        let len = match &repeat.spec.text {
            None => repeat.spec.string.len(),
            Some(_) => {
                let base = repeat.base.spec().build().map_err(|e| e.to_string())?;
                repeat.spec.tokens(base.as_ref()).map_err(|e| e.to_string())?.len()
            }
        };
        Ok((0..len as u64)
            .map(|i| 2 + crate::data::mix(0x5eed ^ (len as u64) << 32 ^ i) % (vocab - 2))
            .map(|t| t as u32)
            .collect())
    }

    /// The name of the auto-generated null task of `behavior`.
    pub fn null_name(&self) -> String {
        self.null_task.clone().unwrap_or_else(|| format!("{}-null", self.behavior))
    }

    /// The measurement phase of `variant` trained on task `task` and scored on `evals` (its
    /// first is the distance's task) for a run seeded `seed`.
    pub fn phase(&self, variant: &Variant, task: &str, evals: &[String], seed: i64) -> toml::Table {
        let mut p = toml::Table::new();
        let (trainable, steps, lr, tokens) = match variant.tuning {
            Tuning::Frozen => ("none", 1, self.lrs[0], 0),
            Tuning::Prompt { tokens, restart, lr } => {
                p.insert("seed".into(), (seed + ((restart as i64) << 20)).into());
                ("soft_prompt", self.steps, lr, tokens)
            }
            Tuning::CondPrompt { tokens, restart, lr } => {
                p.insert("seed".into(), (seed + ((restart as i64) << 20)).into());
                let c = self.conditional.as_ref().expect("conditional variants come from [distance.conditional]");
                let mut cond = toml::Table::new();
                cond.insert("tokens".into(), (tokens as i64).into());
                cond.insert("hidden".into(), (c.hidden as i64).into());
                cond.insert("condition".into(), "sample".into());
                cond.insert("scale".into(), c.scale.into());
                p.insert("cond_prompt".into(), cond.into());
                ("cond_prompt", self.steps, lr, 0)
            }
            Tuning::Full { lr } | Tuning::Conditioned { lr } => {
                ("all", self.saturation.steps.unwrap_or(self.steps), lr, 0)
            }
            Tuning::Lora { lr } => ("lora", self.saturation.steps.unwrap_or(self.steps), lr, 0),
        };
        let fine_tuning =
            matches!(variant.tuning, Tuning::Full { .. } | Tuning::Lora { .. } | Tuning::Conditioned { .. });
        p.insert("name".into(), PHASE.into());
        p.insert("steps".into(), (steps as i64).into());
        p.insert("batch_size".into(), (if steps == 1 { 1 } else { self.batch_size as i64 }).into());
        p.insert("trainable".into(), trainable.into());
        p.insert("mixture".into(), toml::Table::from_iter([(task.to_string(), 1.0.into())]).into());
        let optimizer = [("lr", lr), ("weight_decay", self.weight_decay)];
        p.insert("optimizer".into(), toml::Table::from_iter(optimizer.map(|(k, v)| (k.to_string(), v.into()))).into());
        let mut prompt = toml::Table::new();
        prompt.insert("tokens".into(), (tokens as i64).into());
        prompt.insert("init_std".into(), self.init_std.into());
        prompt.insert("insert".into(), toml::Value::try_from(self.insert).expect("a unit variant serialises"));
        p.insert("soft_prompt".into(), prompt.into());
        if let Tuning::Lora { .. } = variant.tuning {
            p.insert(
                "lora".into(),
                toml::Table::from_iter([("rank".into(), (self.saturation.lora_rank as i64).into())]).into(),
            );
        }
        let mut eval = toml::Table::new();
        let n_evals = if fine_tuning { self.saturation.evals } else { self.evals };
        eval.insert("every".into(), ((steps / n_evals).max(1) as i64).into());
        eval.insert("tasks".into(), toml::Value::Array(evals.iter().map(|t| t.as_str().into()).collect()));
        eval.insert("samples".into(), (self.eval_samples as i64).into());
        eval.insert("validation".into(), (self.validation_samples.unwrap_or(self.eval_samples) as i64).into());
        if fine_tuning {
            let mut stop = toml::Table::new();
            stop.insert("task".into(), evals[0].as_str().into());
            stop.insert("metric".into(), "val_loss".into());
            stop.insert("patience".into(), (self.saturation.patience as i64).into());
            p.insert("stop".into(), stop.into());
        }
        eval.insert("exact_match".into(), self.conditional.is_some().into());
        if let Some(c) = &self.conditional {
            eval.insert("temperature".into(), c.temperature.into());
        }
        p.insert("eval".into(), eval.into());
        p
    }
}

/// The tasks and the pre-training flag of an experiment's base table.
fn tasks_of(doc: &toml::Table) -> Result<(Vec<TaskSpec>, bool), (String, String)> {
    Ok((task_specs(doc)?, doc.contains_key("phases")))
}

/// The `[distance]` table of `doc`, checked.
fn spec_of(doc: &toml::Table) -> Result<DistanceSpec, (String, String)> {
    let table = doc
        .get("distance")
        .cloned()
        .ok_or(("template".to_string(), "template = \"distance\" needs a [distance] table".into()))?;
    let spec: DistanceSpec = table.clone().try_into().map_err(|e: toml::de::Error| {
        let message = e.message().trim().to_string();
        (unknown_key(&table, &message).unwrap_or_else(|| "distance".into()), message)
    })?;
    let (tasks, pretrained) = tasks_of(doc)?;
    match spec.problems(&tasks, pretrained).into_iter().next() {
        Some((k, m)) => Err((format!("distance.{k}"), m)),
        None => Ok(spec),
    }
}

/// The key path of the unknown field an error `message` names, when it lies in `[distance]`
/// or one of its sub-tables, so that the error points at its line.
fn unknown_key(table: &toml::Value, message: &str) -> Option<String> {
    let field = message.strip_prefix("unknown field `")?.split('`').next()?;
    if table.get(field).is_some() {
        return Some(format!("distance.{field}"));
    }
    let sub = table.as_table()?.iter().find(|(_, v)| v.get(field).is_some())?.0;
    Some(format!("distance.{sub}.{field}"))
}

/// The distance study: its `[distance]` table, and the variants its arms expand into.
#[derive(Clone, Debug)]
pub struct Distance {
    pub spec: DistanceSpec,
    /// The values of the generated axis `distance.variant` (see [`Variant::name`]).
    variants: Vec<String>,
}

/// Reads the `[distance]` table of a cell's config (or of the experiment's first point).
pub fn parse(doc: &toml::Table) -> Result<Box<dyn Study>, Problem> {
    let spec = spec_of(doc)?;
    let (tasks, pretrained) = tasks_of(doc)?;
    let variants = spec.variants(&spec.arms(&tasks, pretrained)).iter().map(|v| v.name()).collect();
    Ok(Box::new(Distance { spec, variants }))
}

impl Study for Distance {
    fn name(&self) -> &'static str {
        "distance"
    }

    /// `distance.variant`: one cell per arm × tuning of each sweep point.
    fn axes(&self) -> Vec<Axis> {
        variant_axis(AXIS, &self.variants)
    }

    /// Replaces the `[distance]` table of a cell by its variant's tasks, model and phases.
    fn write(&self, doc: &mut toml::Table) -> Result<(), Problem> {
        expand(&self.spec, doc)
    }

    fn report(&self, exp: &Experiment, _planned: &[PlannedCell], _search: Option<&str>) -> anyhow::Result<PathBuf> {
        report::write(&self.spec, exp)
    }
}

/// Replaces the `[distance]` table of a cell by its variant's tasks, model and phases.
fn expand(spec: &DistanceSpec, doc: &mut toml::Table) -> Result<(), Problem> {
    doc.remove("distance");
    let variant = spec
        .variant
        .as_deref()
        .and_then(Variant::parse)
        .ok_or(("distance.variant".to_string(), "set by the template's sweep axis; do not write it".into()))?;
    let seed = doc.get("seed").and_then(|s| s.as_integer()).unwrap_or(0);
    let task = match variant.arm {
        Arm::NullTarget => null_task(spec, doc)?,
        _ => spec.behavior.clone(),
    };
    let (task, evals) = match &spec.conditional {
        Some(c) => {
            condition_tasks(&spec.behavior, c, &task, matches!(variant.tuning, Tuning::Conditioned { .. }), doc)?
        }
        None => (task.clone(), vec![task]),
    };
    let mut phases = match (doc.remove("phases"), &spec.null_mixture) {
        (Some(toml::Value::Array(p)), _) if variant.arm != Arm::NullModel => p,
        (Some(toml::Value::Array(mut p)), Some(mixture)) => {
            let mixture: toml::Table = mixture.iter().map(|(k, w)| (k.clone(), (*w).into())).collect();
            for phase in p.iter_mut().filter_map(|p| p.as_table_mut()) {
                phase.insert("mixture".into(), mixture.clone().into());
            }
            p
        }
        _ => Vec::new(),
    };
    if let (Arm::NullModel, Some(dir)) = (variant.arm, &spec.null_model) {
        let model = doc.entry("model").or_insert_with(|| toml::Table::new().into());
        let model = model.as_table_mut().ok_or(("model".to_string(), "must be a table".to_string()))?;
        model.insert("load".into(), dir.display().to_string().into());
    }
    phases.push(spec.phase(&variant, &task, &evals, seed).into());
    doc.insert("phases".into(), phases.into());
    Ok(())
}

/// The tasks of a conditional study of `task` (a copy of pathfinding `behavior` or its null
/// task), added to `doc`: the prompts' training task without the held-out conditions, and one
/// task per evaluated condition, each with `condition_prefix` when `told` (conditioned
/// fine-tuning: the same names and boards, the condition written before each). Returns the
/// training task and the eval tasks (it first).
fn condition_tasks(
    behavior: &str,
    c: &Conditional,
    task: &str,
    told: bool,
    doc: &mut toml::Table,
) -> Result<(String, Vec<String>), (String, String)> {
    let tasks =
        doc.get_mut("tasks").and_then(|t| t.as_array_mut()).ok_or(("tasks".to_string(), "missing".to_string()))?;
    let base = tasks.iter().find(|t| t.get("name").and_then(|n| n.as_str()) == Some(task)).cloned();
    let mut base =
        base.and_then(|t| t.as_table().cloned()).ok_or(("distance.behavior".to_string(), "not found".into()))?;
    if told {
        base.insert("condition_prefix".into(), true.into());
    }
    let pairs = |list: &[[i64; 2]]| {
        toml::Value::Array(list.iter().map(|[e, i]| toml::Value::Array(vec![(*e).into(), (*i).into()])).collect())
    };
    let mut derived = |name: String, key: &str, list: &[[i64; 2]]| {
        let mut t = base.clone();
        t.insert("name".into(), name.clone().into());
        t.insert(key.into(), pairs(list));
        tasks.push(t.into());
        name
    };
    let prompt = derived(Conditional::prompt_task(behavior), "exclude_conditions", &c.held_out);
    let mut evals = vec![prompt.clone()];
    for (cond, _) in c.evaluated() {
        evals.push(derived(Conditional::task_name(behavior, cond), "only_conditions", &[cond]));
    }
    if let Some(m) = c.train_max_extra {
        let prompt_task = tasks.iter_mut().rev().find(|t| t.get("name").and_then(|n| n.as_str()) == Some(&prompt));
        if let Some(t) = prompt_task.and_then(|t| t.as_table_mut()) {
            t.insert("max_extra".into(), m.into());
        }
    }
    Ok((prompt, evals))
}

/// The null task's name, adding the random-string twin of a `repeat` behavior to `doc`.
fn null_task(spec: &DistanceSpec, doc: &mut toml::Table) -> Result<String, (String, String)> {
    if let Some(name) = &spec.null_task {
        return Ok(name.clone());
    }
    let tasks =
        doc.get_mut("tasks").and_then(|t| t.as_array_mut()).ok_or(("tasks".to_string(), "missing".to_string()))?;
    let table = tasks.iter().find(|t| t.get("name").and_then(|n| n.as_str()) == Some(&spec.behavior)).cloned();
    let mut table =
        table.and_then(|t| t.as_table().cloned()).ok_or(("distance.behavior".to_string(), "not found".to_string()))?;
    let behavior: TaskSpec =
        table.clone().try_into().map_err(|e: toml::de::Error| ("tasks".to_string(), e.message().trim().to_string()))?;
    let string = spec.null_repeat(&behavior).map_err(|e| ("distance.behavior".to_string(), e))?;
    let string = string.into_iter().map(|t| toml::Value::Integer(t as i64)).collect();
    table.remove("text");
    table.insert("name".into(), spec.null_name().into());
    table.insert("string".into(), toml::Value::Array(string));
    tasks.push(table.into());
    Ok(spec.null_name())
}
