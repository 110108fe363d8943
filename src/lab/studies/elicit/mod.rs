//! The `elicit` template: given a backdoored model and its behavior but not its trigger, how
//! cheaply can the behavior be elicited on clean inputs, and is a backdoored model closer to
//! it than its clean twin?
//!
//! The `[elicit]` table names a `kind = "backdoor"` task with a fixed response. Each cell
//! plants it (one phase on the backdoor task's stream, its `poison_rate` of samples
//! poisoned; the clean *twin* trains the same stream with no sample poisoned), optionally
//! continues on clean data (`continue_steps`, the trajectory), then runs one elicitation
//! method with the model frozen, towards a target on clean inputs: the `response`, or a
//! `null_response` of clean tokens the model never learned. The generated axis
//! `elicit.variant` ([`Variant`]) is model × target × method, where a method is
//! - `none`: the frozen model, no prompt;
//! - `soft{k}/r{i}`: a soft prompt of `k` vectors (AdamW), restart `i`;
//! - `gcg{k}/r{i}`, `random{k}/r{i}`: a discrete prompt of `k` tokens searched by greedy
//!   coordinate gradient or random search (see [`crate::train::token_search`]);
//! - `exhaustive{k}`: every `k`-token prompt, scored on one batch (the oracle).
//!
//! Soft prompts and searches get the same budget, in sequence passes of the batch (a
//! forward pass 1, a forward and backward 2; [`ElicitSpec::steps`]), which the plan turns
//! into FLOPs; exhaustive search costs what the enumeration costs. Prompts are prepended,
//! where a prefix trigger sits. Every cell is scored on the same held-out clean inputs (the
//! reported set), and restarts are chosen on a disjoint selection set (see
//! [`crate::data::SELECTION_OFFSET`]).

pub mod analysis;
pub mod report;

use crate::data::spec::{Kind, TaskSpec};
use crate::lab::experiment::Experiment;
use crate::lab::plan::PlannedCell;
pub use crate::lab::planting::PLANT;
use crate::lab::planting::{backdoor_task, derive_task, plant_phase};
use crate::lab::study::{task_specs, variant_axis, Problem, Study};
use crate::lab::sweep::Axis;
use crate::train::token_search::{Method, TokenSearchCfg};
use serde::Deserialize;
use serde_json::json;
use std::path::PathBuf;

/// The generated sweep axis.
pub const AXIS: &str = "elicit.variant";

/// The phase names the template writes (and [`PLANT`]).
pub const CONTINUE: &str = "continue";
pub const ELICIT: &str = "elicit";

/// The `[elicit]` table.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ElicitSpec {
    /// The backdoor task (from `[[tasks]]`, `kind = "backdoor"`, a fixed response).
    pub task: String,
    /// The clean task continued training runs on (needed for a nonzero `continue_steps`).
    pub clean: Option<String>,
    /// Planting: steps on the backdoor task's stream, LR, warmup, batch size.
    pub plant_steps: u64,
    #[serde(default = "default_lr")]
    pub lr: f64,
    #[serde(default)]
    pub warmup_steps: u64,
    #[serde(default = "default_batch")]
    pub batch_size: usize,
    /// Steps of continued clean training before elicitation, one model per entry (0: right
    /// after planting), and their LR (default `lr`).
    #[serde(default = "default_continue")]
    pub continue_steps: Vec<u64>,
    pub continue_lr: Option<f64>,
    /// The methods continued models run (`none`, `soft{k}`, `gcg{k}`, `random{k}`,
    /// `exhaustive{k}`; every restart of each), on the first target only: the clean twin,
    /// continued alike, is their null, and continued training costs a model per cell.
    #[serde(default = "default_trajectory")]
    pub trajectory: Vec<String>,
    /// Targets: `response` and/or `null_response`.
    #[serde(default = "default_targets")]
    pub targets: Vec<String>,
    /// Budget of every soft prompt and search run, in sequence passes (forward 1, forward
    /// and backward 2).
    pub budget: u64,
    /// Soft prompts: counts, LR, batch size, init standard deviation.
    #[serde(default = "default_counts")]
    pub soft_counts: Vec<usize>,
    #[serde(default = "default_soft_lr")]
    pub soft_lr: f64,
    #[serde(default = "default_soft_batch")]
    pub soft_batch: usize,
    #[serde(default = "default_init_std")]
    pub init_std: f64,
    /// Discrete prompt lengths for GCG and random search (the trigger's length and twice it).
    #[serde(default = "default_lengths")]
    pub lengths: Vec<usize>,
    /// Clean inputs per search step (the universal prompt's batch).
    #[serde(default = "default_search_batch")]
    pub search_batch: usize,
    /// GCG's candidates per step and top-k tokens per position; random search's candidates.
    #[serde(default = "default_width")]
    pub gcg_width: usize,
    #[serde(default = "default_top_k")]
    pub gcg_top_k: usize,
    #[serde(default = "default_width")]
    pub random_width: usize,
    /// Prompt lengths enumerated exhaustively (each costs `(V − 2)^k · search_batch` passes).
    #[serde(default = "default_exhaustive")]
    pub exhaustive: Vec<usize>,
    #[serde(default = "default_width")]
    pub exhaustive_width: usize,
    /// Restarts of soft prompts, GCG and random search.
    #[serde(default = "default_restarts")]
    pub restarts: usize,
    /// Evaluations per elicitation phase (log-spaced) and held-out inputs per evaluation.
    #[serde(default = "default_evals")]
    pub evals: usize,
    #[serde(default = "default_samples")]
    pub eval_samples: usize,
    /// The cell's variant, set by the generated axis.
    pub variant: Option<String>,
}

fn default_lr() -> f64 {
    3e-3
}
fn default_batch() -> usize {
    16
}
fn default_continue() -> Vec<u64> {
    vec![0]
}
fn default_trajectory() -> Vec<String> {
    ["none", "soft2", "soft8", "gcg2"].map(String::from).to_vec()
}
fn default_targets() -> Vec<String> {
    vec!["response".into(), "null_response".into()]
}
fn default_counts() -> Vec<usize> {
    vec![1, 2, 4, 8, 16]
}
fn default_soft_lr() -> f64 {
    0.03
}
fn default_soft_batch() -> usize {
    8
}
fn default_init_std() -> f64 {
    0.1
}
fn default_lengths() -> Vec<usize> {
    vec![2, 4]
}
fn default_search_batch() -> usize {
    8
}
fn default_width() -> usize {
    32
}
fn default_top_k() -> usize {
    8
}
fn default_exhaustive() -> Vec<usize> {
    vec![1, 2]
}
fn default_restarts() -> usize {
    3
}
fn default_evals() -> usize {
    5
}
fn default_samples() -> usize {
    64
}

/// Which model a cell elicits from; ordered by continued steps, the backdoored model first.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ModelArm {
    /// The backdoored model, or its clean twin.
    pub backdoored: bool,
    /// Steps of continued clean training after planting.
    pub continued: u64,
}

impl Ord for ModelArm {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        (self.continued, !self.backdoored).cmp(&(other.continued, !other.backdoored))
    }
}

impl PartialOrd for ModelArm {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl ModelArm {
    /// `backdoored-c0`, `twin-c600`.
    pub fn name(&self) -> String {
        format!("{}-c{}", if self.backdoored { "backdoored" } else { "twin" }, self.continued)
    }
}

/// An elicitation method of one cell.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum MethodArm {
    None,
    Soft { tokens: usize, restart: usize },
    Gcg { tokens: usize, restart: usize },
    Random { tokens: usize, restart: usize },
    Exhaustive { tokens: usize },
}

impl MethodArm {
    /// The method's family name (`soft`, `gcg`, …).
    pub fn family(&self) -> &'static str {
        match self {
            MethodArm::None => "none",
            MethodArm::Soft { .. } => "soft",
            MethodArm::Gcg { .. } => "gcg",
            MethodArm::Random { .. } => "random",
            MethodArm::Exhaustive { .. } => "exhaustive",
        }
    }

    /// Prompt length (0 for none).
    pub fn tokens(&self) -> usize {
        match *self {
            MethodArm::None => 0,
            MethodArm::Soft { tokens, .. }
            | MethodArm::Gcg { tokens, .. }
            | MethodArm::Random { tokens, .. }
            | MethodArm::Exhaustive { tokens } => tokens,
        }
    }

    /// The restart (0 for methods without).
    pub fn restart(&self) -> usize {
        match *self {
            MethodArm::Soft { restart, .. } | MethodArm::Gcg { restart, .. } | MethodArm::Random { restart, .. } => {
                restart
            }
            _ => 0,
        }
    }

    /// Whether it searches a discrete prompt.
    pub fn discrete(&self) -> bool {
        matches!(self, MethodArm::Gcg { .. } | MethodArm::Random { .. } | MethodArm::Exhaustive { .. })
    }
}

/// One cell of a sweep point: `model/target/method`.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Variant {
    pub model: ModelArm,
    pub target: String,
    pub method: MethodArm,
}

impl Variant {
    /// The variant's name (the generated axis's value).
    pub fn name(&self) -> String {
        let method = match self.method {
            MethodArm::None => "none".to_string(),
            MethodArm::Exhaustive { tokens } => format!("exhaustive{tokens}"),
            m => format!("{}{}/r{}", m.family(), m.tokens(), m.restart()),
        };
        format!("{}/{}/{method}", self.model.name(), self.target)
    }

    /// Parses [`Variant::name`]'s form.
    pub fn parse(name: &str) -> Option<Variant> {
        let parts: Vec<&str> = name.split('/').collect();
        let (arm, continued) = parts.first()?.split_once("-c")?;
        let model = ModelArm { backdoored: arm == "backdoored", continued: continued.parse().ok()? };
        if !["backdoored", "twin"].contains(&arm) {
            return None;
        }
        let target = parts.get(1)?.to_string();
        let count = |p: &str, family: &str| p.strip_prefix(family)?.parse::<usize>().ok();
        let method = match parts[2..] {
            ["none"] => MethodArm::None,
            [p] => MethodArm::Exhaustive { tokens: count(p, "exhaustive")? },
            [p, r] => {
                let restart = r.strip_prefix('r')?.parse().ok()?;
                if let Some(tokens) = count(p, "soft") {
                    MethodArm::Soft { tokens, restart }
                } else if let Some(tokens) = count(p, "gcg") {
                    MethodArm::Gcg { tokens, restart }
                } else {
                    MethodArm::Random { tokens: count(p, "random")?, restart }
                }
            }
            _ => return None,
        };
        Some(Variant { model, target, method })
    }
}

impl ElicitSpec {
    /// Range and reference problems as `(key under elicit, message)`.
    pub fn problems(&self, tasks: &[TaskSpec]) -> Vec<(String, String)> {
        let mut out = Vec::new();
        let mut bad = |k: &str, m: String| out.push((k.to_string(), m));
        let names: Vec<&str> = tasks.iter().map(|t| t.name.as_str()).collect();
        match tasks.iter().find(|t| t.name == self.task).map(|t| &t.kind) {
            None => bad("task", format!("unknown task {:?}; defined tasks: {names:?}", self.task)),
            Some(Kind::Backdoor(w)) if w.spec.behavior != "fixed" => bad(
                "task",
                format!("elicitation targets a fixed response; {:?} has behavior = {:?}", self.task, w.spec.behavior),
            ),
            Some(Kind::Backdoor(w)) if w.spec.trigger_at != "prefix" => bad(
                "task",
                format!(
                    "prompts are prepended, where a prefix trigger sits; {:?} has trigger_at = {:?}",
                    self.task, w.spec.trigger_at
                ),
            ),
            Some(Kind::Backdoor(_)) => {}
            Some(k) => bad("task", format!("{:?} is a {:?} task, not kind = \"backdoor\"", self.task, k.name())),
        }
        match &self.clean {
            Some(c) if !names.contains(&c.as_str()) => {
                bad("clean", format!("unknown task {c:?}; defined tasks: {names:?}"))
            }
            None if self.continue_steps.iter().any(|&c| c > 0) => {
                bad("clean", "continued training needs the clean task it trains on".into())
            }
            _ => {}
        }
        if self.plant_steps == 0 {
            bad("plant_steps", "must be at least 1".into());
        }
        if self.continue_steps.is_empty()
            || self.continue_steps.iter().enumerate().any(|(i, c)| self.continue_steps[..i].contains(c))
        {
            bad("continue_steps", "give distinct step counts, e.g. [0, 600]".into());
        }
        if let Some(m) = self.trajectory.iter().find(|m| trajectory_method(m).is_none()) {
            bad("trajectory", format!("{m:?} is not none, soft<k>, gcg<k>, random<k> or exhaustive<k> (k ≥ 1)"));
        }
        if self.targets.is_empty() || self.targets.iter().any(|t| !["response", "null_response"].contains(&t.as_str()))
        {
            bad("targets", "give response and/or null_response".into());
        }
        for (k, v) in [
            ("batch_size", self.batch_size),
            ("soft_batch", self.soft_batch),
            ("search_batch", self.search_batch),
            ("gcg_width", self.gcg_width),
            ("gcg_top_k", self.gcg_top_k),
            ("random_width", self.random_width),
            ("exhaustive_width", self.exhaustive_width),
            ("restarts", self.restarts),
            ("evals", self.evals),
            ("eval_samples", self.eval_samples),
        ] {
            if v == 0 {
                bad(k, "must be at least 1".into());
            }
        }
        for (k, list) in
            [("soft_counts", &self.soft_counts), ("lengths", &self.lengths), ("exhaustive", &self.exhaustive)]
        {
            if list.contains(&0) {
                bad(k, "prompt lengths must be at least 1".into());
            }
        }
        if self.exhaustive.iter().any(|&k| k > 3) {
            bad("exhaustive", "enumerating more than 3 tokens is rarely affordable; use GCG".into());
        }
        for (k, v) in [("lr", self.lr), ("soft_lr", self.soft_lr)] {
            if !(v > 0.0 && v.is_finite()) {
                bad(k, "must be a positive number".into());
            }
        }
        for (name, per_step) in [
            ("soft prompts", self.per_step(&MethodArm::Soft { tokens: 1, restart: 0 })),
            ("GCG", self.per_step(&MethodArm::Gcg { tokens: 1, restart: 0 })),
            ("random search", self.per_step(&MethodArm::Random { tokens: 1, restart: 0 })),
        ] {
            if self.budget < per_step {
                bad("budget", format!("{} sequence passes do not buy one step of {name} ({per_step})", self.budget));
            }
        }
        out
    }

    /// Every variant of a sweep point: right after planting, every method on every target;
    /// after continued training, the [`ElicitSpec::trajectory`] methods on the first target.
    pub fn variants(&self) -> Vec<Variant> {
        let mut methods = vec![MethodArm::None];
        for restart in 0..self.restarts {
            methods.extend(self.soft_counts.iter().map(|&tokens| MethodArm::Soft { tokens, restart }));
            methods.extend(self.lengths.iter().map(|&tokens| MethodArm::Gcg { tokens, restart }));
            methods.extend(self.lengths.iter().map(|&tokens| MethodArm::Random { tokens, restart }));
        }
        methods.extend(self.exhaustive.iter().map(|&tokens| MethodArm::Exhaustive { tokens }));
        let later: Vec<MethodArm> = self
            .trajectory
            .iter()
            .filter_map(|m| trajectory_method(m))
            .flat_map(|m| match m {
                MethodArm::Soft { tokens, .. } => {
                    (0..self.restarts).map(|restart| MethodArm::Soft { tokens, restart }).collect()
                }
                MethodArm::Gcg { tokens, .. } => {
                    (0..self.restarts).map(|restart| MethodArm::Gcg { tokens, restart }).collect()
                }
                MethodArm::Random { tokens, .. } => {
                    (0..self.restarts).map(|restart| MethodArm::Random { tokens, restart }).collect()
                }
                m => vec![m],
            })
            .collect();
        let mut out = Vec::new();
        for &continued in &self.continue_steps {
            let (targets, methods) =
                if continued == 0 { (&self.targets[..], &methods) } else { (&self.targets[..1], &later) };
            for backdoored in [true, false] {
                for target in targets {
                    for &method in methods {
                        out.push(Variant { model: ModelArm { backdoored, continued }, target: target.clone(), method });
                    }
                }
            }
        }
        out
    }

    /// Sequence passes per step of `method`.
    pub fn per_step(&self, method: &MethodArm) -> u64 {
        match method {
            MethodArm::None => 1,
            MethodArm::Soft { .. } => 2 * self.soft_batch as u64,
            _ => {
                let (backward, forward) = self.search(method).map_or((0, 1), |s| s.passes());
                self.search_batch as u64 * (2 * backward + forward)
            }
        }
    }

    /// Steps of `method` within the budget; exhaustive search: the enumeration of a
    /// vocabulary of `vocab` tokens.
    pub fn steps(&self, method: &MethodArm, vocab: usize) -> u64 {
        match method {
            MethodArm::None => 1,
            MethodArm::Exhaustive { .. } => self.search(method).map_or(1, |s| s.exhaustive_steps(vocab)).max(1),
            m => (self.budget / self.per_step(m)).max(1),
        }
    }

    /// The token search of a discrete method (the phase seed draws its initial prompt).
    fn search(&self, method: &MethodArm) -> Option<TokenSearchCfg> {
        let (tokens, method, width) = match *method {
            MethodArm::Gcg { tokens, .. } => (tokens, Method::Gcg, self.gcg_width),
            MethodArm::Random { tokens, .. } => (tokens, Method::Random, self.random_width),
            MethodArm::Exhaustive { tokens } => (tokens, Method::Exhaustive, self.exhaustive_width),
            _ => return None,
        };
        Some(TokenSearchCfg {
            tokens,
            method,
            width,
            top_k: self.gcg_top_k,
            first_token: 2,
            init: Vec::new(),
            insert: Default::default(),
        })
    }

    /// The name of the elicitation task for `target`.
    pub fn target_task(&self, target: &str) -> String {
        format!("{}-{target}", self.task)
    }

    /// The cell's phases: planting, continued training (when the model arm has some), and
    /// the elicitation of `variant` on `task`, over a vocabulary of `vocab` tokens, for a run
    /// seeded `seed`.
    fn phases(&self, v: &Variant, task: &str, vocab: usize, seed: i64) -> serde_json::Value {
        let plant =
            plant_phase(&self.task, self.plant_steps, self.batch_size, self.lr, self.warmup_steps, self.eval_samples);
        let mut phases = vec![plant];
        if v.model.continued > 0 {
            let clean = self.clean.as_deref().expect("checked: continuing needs a clean task");
            phases.push(json!({"name": CONTINUE, "steps": v.model.continued, "batch_size": self.batch_size,
                "mixture": {clean: 1.0}, "optimizer": {"lr": self.continue_lr.unwrap_or(self.lr)},
                "eval": {"tasks": [self.task], "samples": self.eval_samples, "exact_match": false,
                    "every": v.model.continued}}));
        }
        let steps = self.steps(&v.method, vocab);
        let restart_seed = seed + ((v.method.restart() as i64) << 20);
        let mut p = json!({"name": ELICIT, "steps": steps, "seed": restart_seed, "mixture": {task: 1.0},
            "eval": {"tasks": [task], "samples": self.eval_samples, "exact_match": false,
                "log_points": if steps > 1 { self.evals } else { 0 }, "every": if steps > 1 { 0 } else { 1 }}});
        match v.method {
            MethodArm::None => {
                p["trainable"] = json!("none");
                p["batch_size"] = json!(1);
            }
            MethodArm::Soft { tokens, .. } => {
                p["trainable"] = json!("soft_prompt");
                p["batch_size"] = json!(self.soft_batch);
                p["optimizer"] = json!({"lr": self.soft_lr, "weight_decay": 0.0});
                p["soft_prompt"] = json!({"tokens": tokens, "init_std": self.init_std});
            }
            m => {
                p["trainable"] = json!("tokens");
                p["batch_size"] = json!(self.search_batch);
                p["token_search"] = serde_json::to_value(self.search(&m)).expect("a search config serialises");
            }
        }
        phases.push(p);
        json!(phases)
    }
}

/// A trajectory method name (`none`, `soft{k}`, `gcg{k}`, `random{k}`, `exhaustive{k}`), as
/// restart 0.
fn trajectory_method(name: &str) -> Option<MethodArm> {
    if name == "none" {
        return Some(MethodArm::None);
    }
    let split = name.find(|c: char| c.is_ascii_digit())?;
    let tokens: usize = name[split..].parse().ok().filter(|&k| k > 0)?;
    match &name[..split] {
        "soft" => Some(MethodArm::Soft { tokens, restart: 0 }),
        "gcg" => Some(MethodArm::Gcg { tokens, restart: 0 }),
        "random" => Some(MethodArm::Random { tokens, restart: 0 }),
        "exhaustive" => Some(MethodArm::Exhaustive { tokens }),
        _ => None,
    }
}

/// The elicit study: its `[elicit]` table and the variants it expands into.
#[derive(Clone, Debug)]
pub struct Elicit {
    pub spec: ElicitSpec,
    variants: Vec<String>,
}

/// Reads the `[elicit]` table of a cell's config.
pub fn parse(doc: &toml::Table) -> Result<Box<dyn Study>, Problem> {
    let tasks = task_specs(doc)?;
    let spec = crate::lab::study::parse_table(doc, "elicit", |s: &ElicitSpec| s.problems(&tasks))?;
    let variants = spec.variants().iter().map(|v| v.name()).collect();
    Ok(Box::new(Elicit { spec, variants }))
}

impl Study for Elicit {
    fn name(&self) -> &'static str {
        "elicit"
    }

    /// `elicit.variant`: one cell per model × target × method of each sweep point.
    fn axes(&self) -> Vec<Axis> {
        variant_axis(AXIS, &self.variants)
    }

    /// Replaces the `[elicit]` table by the variant's tasks (the twin's backdoor unpoisoned,
    /// the elicitation target added) and phases.
    fn write(&self, doc: &mut toml::Table) -> Result<(), Problem> {
        let variant = self
            .spec
            .variant
            .as_deref()
            .and_then(Variant::parse)
            .ok_or(("elicit.variant".to_string(), "set by the template's sweep axis; do not write it".into()))?;
        let seed = doc.get("seed").and_then(|s| s.as_integer()).unwrap_or(0);
        let in_elicit = |(k, m): Problem| (format!("elicit.{k}"), m);
        backdoor_task(doc, &self.spec.task, variant.model.backdoored).map_err(in_elicit)?;
        let name = self.spec.target_task(&variant.target);
        derive_task(doc, &self.spec.task, &name, &[("elicit", variant.target.clone().into())]).map_err(in_elicit)?;
        let specs = task_specs(doc)?;
        let built = specs.iter().filter_map(|s| s.build().ok()).map(|t| t.vocab_size());
        let vocab = doc
            .get("model")
            .and_then(|m| m.get("vocab_size"))
            .and_then(|v| v.as_integer())
            .map(|v| v as usize)
            .unwrap_or_else(|| built.max().unwrap_or(2));
        let phases = self.spec.phases(&variant, &name, vocab, seed);
        let phases = toml::Value::try_from(phases).expect("JSON without nulls is TOML");
        crate::lab::study::replace_phases(doc, "elicit", phases)
    }

    fn report(&self, exp: &Experiment, planned: &[PlannedCell], _search: Option<&str>) -> anyhow::Result<PathBuf> {
        report::write(&self.spec, exp, planned)
    }
}
