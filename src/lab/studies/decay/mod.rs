//! The `decay` template: learn tasks A and B together, then keep training A (optionally
//! with a fraction of B) and watch B fade, evaluated on fixed held-out sets at log-spaced
//! steps, with forgetting measured against the end-of-phase-1 model.
//!
//! Regularisers: `weight_decay` and `dropout` shape both phases (they are training
//! regimes); `l2` (to the end-of-phase-1 weights) and `ewc` (Fisher from A and B at the
//! phase boundary) act in phase 2, where they resist forgetting.

pub mod analysis;
pub mod report;

use crate::lab::plan::PlannedCell;
use crate::lab::experiment::Experiment;
use crate::lab::study::{parse_table, replace_phases, task_kinds, Problem, Study};
use serde::Deserialize;
use std::path::PathBuf;

/// Reads the `[decay]` table of a cell's config.
pub fn parse(doc: &toml::Table) -> Result<Box<dyn Study>, Problem> {
    let names: Vec<String> = task_kinds(doc).into_iter().map(|(name, _)| name).collect();
    Ok(Box::new(parse_table(doc, "decay", |s: &DecaySpec| s.problems(&names))?))
}

impl Study for DecaySpec {
    fn name(&self) -> &'static str {
        "decay"
    }

    fn write(&self, doc: &mut toml::Table) -> Result<(), Problem> {
        replace_phases(doc, "decay", self.phases())
    }

    fn report(&self, exp: &Experiment, planned: &[PlannedCell], _search: Option<&str>) -> anyhow::Result<PathBuf> {
        report::write(exp, &analysis::analyse(self, exp, planned)?)
    }
}

/// The `[decay]` table.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct DecaySpec {
    /// Task names (from `[[tasks]]`) of the kept task A and the dropped task B.
    pub a: String,
    pub b: String,
    /// Phase 1 (A + B) and phase 2 (A, plus `b_fraction` of B) lengths in steps.
    pub together_steps: u64,
    pub after_steps: u64,
    #[serde(default)]
    pub b_fraction: f64,
    #[serde(default = "default_batch")]
    pub batch_size: usize,
    #[serde(default = "default_lr")]
    pub lr: f32,
    /// Phase-2 learning rate (default: `lr`).
    pub lr_after: Option<f32>,
    #[serde(default)]
    pub warmup_steps: u64,
    /// Evaluations in phase 1 (evenly spaced) and phase 2 (log-spaced).
    #[serde(default = "default_points")]
    pub together_evals: u64,
    #[serde(default = "default_log_points")]
    pub after_evals: usize,
    #[serde(default = "default_samples")]
    pub eval_samples: usize,
    /// `none`, `weight_decay`, `dropout`, `l2` or `ewc`.
    #[serde(default = "default_regularizer")]
    pub regularizer: String,
    /// The regulariser's coefficient (weight decay, dropout probability, L2 or EWC strength).
    #[serde(default)]
    pub strength: f32,
    /// Gradient-norm clip in both phases.
    pub grad_clip: Option<f32>,
}

fn default_batch() -> usize {
    32
}
fn default_lr() -> f32 {
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
fn default_regularizer() -> String {
    "none".into()
}

/// The regulariser names.
pub const REGULARIZERS: [&str; 5] = ["none", "weight_decay", "dropout", "l2", "ewc"];

/// The phase names the template writes.
pub const TOGETHER: &str = "together";
pub const AFTER: &str = "after";

impl DecaySpec {
    /// Range problems as `(key under decay, message)`.
    pub fn problems(&self, tasks: &[String]) -> Vec<(String, String)> {
        let mut out = Vec::new();
        let mut bad = |k: &str, m: String| out.push((k.to_string(), m));
        for (k, name) in [("a", &self.a), ("b", &self.b)] {
            if !tasks.contains(name) {
                bad(k, format!("unknown task {name:?}; defined tasks: {tasks:?}"));
            }
        }
        if self.a == self.b {
            bad("b", "must differ from a".into());
        }
        for (k, v) in [("together_steps", self.together_steps), ("after_steps", self.after_steps)] {
            if v == 0 {
                bad(k, "must be at least 1".into());
            }
        }
        if !(0.0..1.0).contains(&self.b_fraction) {
            bad("b_fraction", "must be in [0, 1)".into());
        }
        if !REGULARIZERS.contains(&self.regularizer.as_str()) {
            bad("regularizer", format!("{:?} is not one of {}", self.regularizer, REGULARIZERS.join(", ")));
        }
        if !(self.strength >= 0.0 && self.strength.is_finite()) {
            bad("strength", "must be a number ≥ 0".into());
        }
        if self.regularizer == "dropout" && self.strength >= 1.0 {
            bad("strength", "a dropout probability must be below 1".into());
        }
        if self.together_evals == 0 || self.after_evals < 2 {
            bad("after_evals", "phase 1 needs at least 1 evaluation and phase 2 at least 2".into());
        }
        out
    }

    /// The two `[[phases]]` tables.
    pub fn phases(&self) -> toml::Value {
        let together = self.phase(TOGETHER, self.together_steps, self.lr, self.mixture(1.0), self.together_eval());
        let mut after = self.phase(AFTER, self.after_steps, self.lr_after.unwrap_or(self.lr), self.after_mixture(), {
            let mut e = self.eval_tasks();
            e.insert("log_points".into(), (self.after_evals as i64).into());
            e.insert("kl_to".into(), TOGETHER.into());
            e
        });
        match self.regularizer.as_str() {
            "l2" => {
                after.insert("l2_to".into(), TOGETHER.into());
                after.insert("l2_coef".into(), (self.strength as f64).into());
            }
            "ewc" => {
                after.insert("ewc_coef".into(), (self.strength as f64).into());
            }
            _ => {}
        }
        toml::Value::Array(vec![together.into(), after.into()])
    }

    /// One phase with the shared settings and this phase's regime.
    fn phase(&self, name: &str, steps: u64, lr: f32, mixture: toml::Table, eval: toml::Table) -> toml::Table {
        let mut optimizer = toml::Table::new();
        optimizer.insert("lr".into(), (lr as f64).into());
        if self.regularizer == "weight_decay" {
            optimizer.insert("weight_decay".into(), (self.strength as f64).into());
        }
        let mut p = toml::Table::new();
        p.insert("name".into(), name.into());
        p.insert("steps".into(), (steps as i64).into());
        p.insert("batch_size".into(), (self.batch_size as i64).into());
        p.insert("mixture".into(), mixture.into());
        p.insert("optimizer".into(), optimizer.into());
        if self.warmup_steps > 0 && name == TOGETHER {
            let mut schedule = toml::Table::new();
            schedule.insert("warmup_steps".into(), (self.warmup_steps as i64).into());
            p.insert("schedule".into(), schedule.into());
        }
        if let Some(c) = self.grad_clip {
            p.insert("grad_clip".into(), (c as f64).into());
        }
        if self.regularizer == "dropout" {
            p.insert("dropout_attn".into(), (self.strength as f64).into());
            p.insert("dropout_resid".into(), (self.strength as f64).into());
        }
        p.insert("eval".into(), eval.into());
        p
    }

    /// `{ A = 1, B = b }`.
    fn mixture(&self, b: f64) -> toml::Table {
        let mut m = toml::Table::new();
        m.insert(self.a.clone(), 1.0.into());
        m.insert(self.b.clone(), b.into());
        m
    }

    /// Phase 2's mixture: A, plus B at `b_fraction` of the samples when positive.
    fn after_mixture(&self) -> toml::Table {
        if self.b_fraction > 0.0 {
            return self.mixture(self.b_fraction / (1.0 - self.b_fraction));
        }
        let mut m = toml::Table::new();
        m.insert(self.a.clone(), 1.0.into());
        m
    }

    /// Evaluate A and B on `eval_samples` held-out samples each.
    fn eval_tasks(&self) -> toml::Table {
        let mut e = toml::Table::new();
        e.insert("tasks".into(), toml::Value::Array(vec![self.a.clone().into(), self.b.clone().into()]));
        e.insert("samples".into(), (self.eval_samples as i64).into());
        e
    }

    /// Phase 1 evaluates `together_evals` times, evenly spaced.
    fn together_eval(&self) -> toml::Table {
        let mut e = self.eval_tasks();
        e.insert(
            "every".into(),
            (self.together_steps / self.together_evals).max(1).try_into().unwrap_or(i64::MAX).into(),
        );
        e
    }
}
