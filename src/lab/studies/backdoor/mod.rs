//! The `backdoor` template: pretrain on broad data (or start from `model.load`), plant a
//! backdoor — mixed into pretraining at poison rate p, or as a separate fine-tune with its
//! own optimizer, LR and steps — then continue on clean broad data for a long horizon,
//! evaluating attack success, false triggers and clean loss at log-spaced steps.
//!
//! The backdoor itself is a `kind = "backdoor"` task in `[[tasks]]`; this table names it and
//! the clean task, and may override its poison rate (or give an absolute poison count).

pub mod analysis;
pub mod report;

use crate::lab::experiment::{Cell, Experiment};
use crate::lab::plan::PlannedCell;
use crate::lab::search::Score;
use crate::lab::study::{parse_table, replace_phases, task_kinds, Problem, Study};
use crate::store::Store;
use serde::Deserialize;
use serde_json::json;
use std::path::PathBuf;

/// What a search of backdoor experiments maximizes.
pub const OBJECTIVE: &str = "backdoor.half_life";

/// Reads the `[backdoor]` table of a cell's config.
pub fn parse(doc: &toml::Table) -> Result<Box<dyn Study>, Problem> {
    let tasks = task_kinds(doc);
    Ok(Box::new(parse_table(doc, "backdoor", |s: &BackdoorSpec| s.problems(&tasks))?))
}

impl Study for BackdoorSpec {
    fn name(&self) -> &'static str {
        "backdoor"
    }

    /// The phases, and the planting rate written into the backdoor task.
    fn write(&self, doc: &mut toml::Table) -> Result<(), Problem> {
        replace_phases(doc, "backdoor", self.phases())?;
        let Some(rate) = self.rate() else { return Ok(()) };
        let entries = doc.get_mut("tasks").and_then(|t| t.as_array_mut()).into_iter().flatten();
        for t in entries.filter_map(|t| t.as_table_mut()).filter(|t| t.get("name") == Some(&self.task.clone().into())) {
            t.insert("poison_rate".into(), rate.into());
        }
        Ok(())
    }

    fn objective(&self) -> Option<&'static str> {
        Some(OBJECTIVE)
    }

    /// Divides the continue phase's steps by `divisor`.
    fn shorten(&mut self, divisor: u64) -> Result<(), Problem> {
        let short = self.continue_steps / divisor;
        if short < 1 {
            return Err((
                "search.rungs".into(),
                format!(
                    "the shortest rung would continue for {} / {divisor} = 0 steps; use fewer rungs or a smaller eta",
                    self.continue_steps
                ),
            ));
        }
        self.continue_steps = short;
        Ok(())
    }

    fn score(
        &self,
        exp: &Experiment,
        store: &Store,
        cells: &[Cell],
        members: &[usize],
        params: &[usize],
    ) -> anyhow::Result<Score> {
        let floor = exp.settings.analysis.floor.unwrap_or(0.0);
        let results = analysis::finished_results(self, store, cells, members, params, floor)?;
        Ok(analysis::score(&results.iter().collect::<Vec<_>>()))
    }

    fn report(&self, exp: &Experiment, planned: &[PlannedCell], search: Option<&str>) -> anyhow::Result<PathBuf> {
        let params: Vec<usize> = planned.iter().map(|c| c.params).collect();
        report::write(exp, &analysis::analyse(self, exp, &params)?, search)
    }
}

/// The `[backdoor]` table.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct BackdoorSpec {
    /// Task names (from `[[tasks]]`): the broad clean data and the backdoor task over it.
    pub clean: String,
    pub task: String,
    /// `mixed`: pretraining itself is poisoned; `finetune`: clean pretraining, then a
    /// separate planting phase on the backdoor task.
    #[serde(default = "default_plant")]
    pub plant: String,
    /// Pretraining steps (poisoned when `plant = "mixed"`); 0 with `finetune` skips
    /// pretraining, e.g. when `model.load` gives a pretrained model.
    #[serde(default)]
    pub pretrain_steps: u64,
    /// Fine-tune planting: steps, optimizer (`adamw` or `sgd`) and LR (default `lr`).
    #[serde(default)]
    pub plant_steps: u64,
    #[serde(default = "default_optimizer")]
    pub plant_optimizer: String,
    pub plant_lr: Option<f64>,
    /// Pretraining's schedule: `constant` (default) or `cosine` (warmup, then down to a tenth
    /// of `lr`, towards a converged base).
    #[serde(default = "default_schedule")]
    pub pretrain_schedule: String,
    /// Continued clean training: steps, LR (`continue_lr`, or `continue_lr_fraction` of the
    /// pretraining peak `lr`; default `lr`), warmup, weight decay, an L2 pull towards the
    /// planted weights, and whether the optimizer state of planting is carried (`carry`)
    /// or starts over (`reset`, default).
    pub continue_steps: u64,
    pub continue_lr: Option<f64>,
    pub continue_lr_fraction: Option<f64>,
    #[serde(default)]
    pub continue_warmup_steps: u64,
    #[serde(default = "default_optimizer_state")]
    pub continue_optimizer_state: String,
    /// The control arm: continued training leaves the output head (the unembedding) as
    /// planting left it, so that drift of the response's output rows cannot erase it.
    #[serde(default)]
    pub freeze_head: bool,
    #[serde(default)]
    pub continue_weight_decay: f64,
    #[serde(default)]
    pub continue_l2: f64,
    /// The planting phase's poisoned fraction (overrides the task's `poison_rate`), or an
    /// absolute number of poisoned samples in expectation.
    pub poison_rate: Option<f64>,
    pub poison_count: Option<u64>,
    #[serde(default = "default_batch")]
    pub batch_size: usize,
    /// Pretraining LR (and the mixed planting LR).
    #[serde(default = "default_lr")]
    pub lr: f64,
    #[serde(default)]
    pub warmup_steps: u64,
    pub grad_clip: Option<f64>,
    /// Evaluations while planting (evenly spaced) and while continuing (log-spaced).
    #[serde(default = "default_points")]
    pub plant_evals: u64,
    #[serde(default = "default_log_points")]
    pub continue_evals: usize,
    #[serde(default = "default_samples")]
    pub eval_samples: usize,
}

fn default_plant() -> String {
    "mixed".into()
}
fn default_optimizer() -> String {
    "adamw".into()
}
fn default_schedule() -> String {
    "constant".into()
}
fn default_optimizer_state() -> String {
    "reset".into()
}
fn default_batch() -> usize {
    32
}
fn default_lr() -> f64 {
    3e-3
}
fn default_points() -> u64 {
    4
}
fn default_log_points() -> usize {
    12
}
fn default_samples() -> usize {
    64
}

/// The phase names the template writes.
pub const PRETRAIN: &str = "pretrain";
pub const PLANT: &str = "plant";
pub const CONTINUE: &str = "continue";

impl BackdoorSpec {
    /// Range problems as `(key under backdoor, message)`; `tasks` are `(name, kind)` pairs.
    pub fn problems(&self, tasks: &[(String, String)]) -> Vec<(String, String)> {
        let mut out = Vec::new();
        let mut bad = |k: &str, m: String| out.push((k.to_string(), m));
        let kind_of = |name: &str| tasks.iter().find(|(n, _)| n == name).map(|(_, k)| k.as_str());
        let names: Vec<&str> = tasks.iter().map(|(n, _)| n.as_str()).collect();
        match kind_of(&self.task) {
            None => bad("task", format!("unknown task {:?}; defined tasks: {names:?}", self.task)),
            Some(k) if k != "backdoor" => {
                bad("task", format!("{:?} is a {k:?} task, not kind = \"backdoor\"", self.task))
            }
            _ => {}
        }
        if kind_of(&self.clean).is_none() {
            bad("clean", format!("unknown task {:?}; defined tasks: {names:?}", self.clean));
        }
        match self.plant.as_str() {
            "mixed" if self.pretrain_steps == 0 => {
                bad("pretrain_steps", "mixed planting poisons pretraining: give at least 1 step".into())
            }
            "finetune" if self.plant_steps == 0 => bad("plant_steps", "a fine-tune needs at least 1 step".into()),
            "mixed" | "finetune" => {}
            p => bad("plant", format!("{p:?} is not one of mixed, finetune")),
        }
        if !["adamw", "sgd"].contains(&self.plant_optimizer.as_str()) {
            bad("plant_optimizer", format!("{:?} is not one of adamw, sgd", self.plant_optimizer));
        }
        if self.continue_steps == 0 {
            bad("continue_steps", "must be at least 1".into());
        }
        if !["constant", "cosine"].contains(&self.pretrain_schedule.as_str()) {
            bad("pretrain_schedule", format!("{:?} is not one of constant, cosine", self.pretrain_schedule));
        }
        match (self.continue_lr, self.continue_lr_fraction) {
            (Some(_), Some(_)) => {
                bad("continue_lr_fraction", "give continue_lr or continue_lr_fraction, not both".into())
            }
            (_, Some(f)) if !(f > 0.0 && f.is_finite()) => bad("continue_lr_fraction", "must be positive".into()),
            _ => {}
        }
        match self.continue_optimizer_state.as_str() {
            "reset" => {}
            "carry" if self.plant == "finetune" && self.plant_optimizer != "adamw" => bad(
                "continue_optimizer_state",
                "carry needs the planting optimizer to be adamw, as continued training's is".into(),
            ),
            "carry" => {}
            s => bad("continue_optimizer_state", format!("{s:?} is not one of reset, carry")),
        }
        match (self.poison_rate, self.poison_count) {
            (Some(_), Some(_)) => bad("poison_count", "give poison_rate or poison_count, not both".into()),
            (Some(r), _) if !(0.0..=1.0).contains(&r) => bad("poison_rate", "must be in [0, 1]".into()),
            (_, Some(c)) if c > self.plant_samples() => {
                bad("poison_count", format!("exceeds the {} samples of the planting phase", self.plant_samples()))
            }
            _ => {}
        }
        if self.continue_evals < 2 || self.plant_evals == 0 || self.eval_samples == 0 {
            bad("continue_evals", "planting needs at least 1 evaluation and continuing at least 2".into());
        }
        out
    }

    /// Samples drawn by the planting phase.
    fn plant_samples(&self) -> u64 {
        self.plant_length() * self.batch_size as u64
    }

    /// Steps of the planting phase.
    fn plant_length(&self) -> u64 {
        if self.plant == "mixed" {
            self.pretrain_steps
        } else {
            self.plant_steps
        }
    }

    /// The poison rate to write into the backdoor task, if this table sets one.
    pub fn rate(&self) -> Option<f64> {
        self.poison_rate.or(self.poison_count.map(|c| c as f64 / self.plant_samples().max(1) as f64))
    }

    /// The `[[phases]]` tables: pretrain (fine-tune planting only), plant, continue.
    /// Pretraining evaluates the clean task only, so that cells differing in their backdoor
    /// share one base (see [`crate::train::shared_base`]).
    pub fn phases(&self) -> toml::Value {
        let mut phases = Vec::new();
        if self.plant == "finetune" && self.pretrain_steps > 0 {
            let mut pretrain = self.phase(PRETRAIN, self.pretrain_steps, &self.clean, json!({"lr": self.lr}));
            pretrain["eval"]["tasks"] = json!([self.clean]);
            if self.pretrain_schedule == "cosine" {
                pretrain["schedule"] = json!({"kind": "cosine", "min_lr_ratio": 0.1,
                    "warmup_steps": self.warmup_steps.min(self.pretrain_steps)});
            }
            phases.push(pretrain);
        }
        let plant_optimizer = match self.plant.as_str() {
            "mixed" => json!({"lr": self.lr}),
            _ => json!({"kind": self.plant_optimizer, "lr": self.plant_lr.unwrap_or(self.lr)}),
        };
        phases.push(self.phase(PLANT, self.plant_length(), &self.task, plant_optimizer));
        let mut after = self.phase(
            CONTINUE,
            self.continue_steps,
            &self.clean,
            json!({"lr": self.continue_lr_value(), "weight_decay": self.continue_weight_decay}),
        );
        after["eval"] = json!({"tasks": [self.task], "samples": self.eval_samples, "exact_match": false,
            "log_points": self.continue_evals});
        if self.continue_l2 > 0.0 {
            after["l2_to"] = json!(PLANT);
            after["l2_coef"] = json!(self.continue_l2);
        }
        if self.continue_warmup_steps > 0 {
            after["schedule"] = json!({"warmup_steps": self.continue_warmup_steps.min(self.continue_steps)});
        }
        if self.continue_optimizer_state == "carry" {
            after["optimizer_state"] = json!("carry");
        }
        if self.freeze_head {
            after["trainable"] = json!("all_but_head");
        }
        toml::Value::try_from(json!(phases.into_iter().chain([after]).collect::<Vec<_>>()))
            .expect("JSON without nulls is TOML")
    }

    /// The continued-training LR.
    pub fn continue_lr_value(&self) -> f64 {
        self.continue_lr.or(self.continue_lr_fraction.map(|f| f * self.lr)).unwrap_or(self.lr)
    }

    /// One phase on `task` with this table's shared settings and evenly spaced evaluations.
    fn phase(&self, name: &str, steps: u64, task: &str, optimizer: serde_json::Value) -> serde_json::Value {
        let mut p = json!({"name": name, "steps": steps, "batch_size": self.batch_size, "mixture": {task: 1.0},
            "optimizer": optimizer,
            "eval": {"tasks": [self.task], "samples": self.eval_samples, "exact_match": false,
                "every": (steps / self.plant_evals.max(1)).max(1)}});
        if self.warmup_steps > 0 && name != CONTINUE {
            p["schedule"] = json!({"warmup_steps": self.warmup_steps.min(steps)});
        }
        if let Some(c) = self.grad_clip {
            p["grad_clip"] = json!(c);
        }
        p
    }
}
