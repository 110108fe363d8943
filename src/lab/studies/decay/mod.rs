//! The `decay` template: learn tasks A and B together, then keep training A (optionally
//! with a fraction of B) and watch B fade, evaluated on fixed held-out sets at log-spaced
//! steps, with forgetting measured against the end-of-phase-1 model.
//!
//! Regularisers: `weight_decay` and `dropout` shape both phases (they are training
//! regimes); `l2` (to the end-of-phase-1 weights) and `ewc` (Fisher from A and B at the
//! phase boundary) act in phase 2, where they resist forgetting.
//!
//! Design knobs: phase 1 may run to a criterion (`together_until`: B's exact match,
//! `together_steps` then a cap); phase 2 carries AdamW's state or resets it (with
//! `warmup_after_steps` of warm-up); learning rates may scale as 1/width.
//!
//! The floor B is measured against: with `floor = "measured"` (default) the template adds
//! the generated axis `decay.arm`, whose `floor` cells are twins trained on A alone for phase
//! 1 (same scale, seed and every other setting); B's metric at their end is the level of a
//! model that never learned B. `floor = "chance"` keeps ln(vocab).

pub mod analysis;
pub mod report;

use crate::lab::experiment::Experiment;
use crate::lab::plan::PlannedCell;
use crate::lab::study::{parse_table, replace_phases, task_kinds, Problem, Study};
use crate::lab::sweep::Axis;
use crate::train::config::OptimizerStart;
use serde::Deserialize;
use std::path::PathBuf;

/// What a search of decay experiments maximizes: B's half-life in phase-2 steps.
pub const OBJECTIVE: &str = "decay.half_life";

/// Reads the `[decay]` table of a cell's config.
pub fn parse(doc: &toml::Table) -> Result<Box<dyn Study>, Problem> {
    let names: Vec<String> = task_kinds(doc).into_iter().map(|(name, _)| name).collect();
    Ok(Box::new(parse_table(doc, "decay", |s: &DecaySpec| s.problems(&names))?))
}

impl Study for DecaySpec {
    fn name(&self) -> &'static str {
        "decay"
    }

    fn axes(&self) -> Vec<Axis> {
        match self.floor {
            Floor::Measured => {
                let values = [Arm::Decay, Arm::Floor].iter().map(|a| a.as_str().into()).collect();
                vec![Axis { key: ARM_AXIS.into(), paths: vec![ARM_AXIS.into()], values }]
            }
            Floor::Chance => Vec::new(),
        }
    }

    fn write(&self, doc: &mut toml::Table) -> Result<(), Problem> {
        let width = doc.get("model").and_then(|m| m.get("d_model")).and_then(|d| d.as_integer()).unwrap_or(0);
        let scaled = self.scaled_to(width as usize)?;
        replace_phases(doc, "decay", scaled.phases())
    }

    fn objective(&self) -> Option<&'static str> {
        Some(OBJECTIVE)
    }

    /// Refused: a decay search samples configurations at full length (`method = "random"`).
    fn shorten(&mut self, _divisor: u64) -> Result<(), Problem> {
        Err((
            "search.method".into(),
            "a decay search uses method = \"random\": a shortened rung would still pay for the whole of phase 1 \
             (learning A and B, most of a cell's compute) and for its floor twin, so halving saves little"
                .into(),
        ))
    }

    fn report(&self, exp: &Experiment, planned: &[PlannedCell], search: Option<&str>) -> anyhow::Result<PathBuf> {
        report::write(exp, &analysis::analyse(self, exp, planned)?, search.is_some())
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
    /// Phase 1 ends once B's held-out exact match reaches this (checked at its evaluations;
    /// `together_steps` is then a cap, and the step it stopped at is logged). A is not part
    /// of the criterion: it keeps training in phase 2, and a task with irreducible ambiguity
    /// never reaches 0.99. A floor twin has no B to learn and runs the whole cap.
    pub together_until: Option<f64>,
    /// Phase 2's optimizer: `carry` (default) keeps phase 1's AdamW moments and step count;
    /// `reset` starts fresh, as a new optimizer would.
    #[serde(default = "default_carry")]
    pub optimizer_state: OptimizerStart,
    /// Linear warm-up steps at the start of phase 2 (useful after a reset).
    #[serde(default)]
    pub warmup_after_steps: u64,
    /// `constant`: `lr` and `lr_after` at every width; `inverse_width`: both scaled by
    /// `lr_reference_width / d_model` (µP-style for hidden weights), recorded in each cell's plan.
    #[serde(default)]
    pub lr_scaling: LrScaling,
    #[serde(default = "default_reference_width")]
    pub lr_reference_width: usize,
    /// `measured` (default): a floor arm per cell (see the module doc); `chance`: ln(vocab).
    #[serde(default)]
    pub floor: Floor,
    /// Set by the generated axis `decay.arm`; not written by hand.
    pub arm: Option<String>,
}

/// How learning rates depend on width.
#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum LrScaling {
    #[default]
    Constant,
    InverseWidth,
}

/// What B's half-life is measured towards.
#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum Floor {
    #[default]
    Measured,
    Chance,
}

/// The two arms of a measured-floor decay study.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Arm {
    /// A and B together, then A alone: the decay being measured.
    Decay,
    /// A alone for phase 1: B's "never learned" level.
    Floor,
}

impl Arm {
    pub fn as_str(self) -> &'static str {
        match self {
            Arm::Decay => "decay",
            Arm::Floor => "floor",
        }
    }

    pub fn parse(s: &str) -> Option<Arm> {
        [Arm::Decay, Arm::Floor].into_iter().find(|a| a.as_str() == s)
    }
}

/// The generated axis of a measured floor.
pub const ARM_AXIS: &str = "decay.arm";

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
fn default_carry() -> OptimizerStart {
    OptimizerStart::Carry
}
fn default_reference_width() -> usize {
    64
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
        if self.together_until.is_some_and(|v| !(0.0..=1.0).contains(&v)) {
            bad("together_until", "an exact-match level in [0, 1]".into());
        }
        if self.warmup_after_steps > self.after_steps {
            bad("warmup_after_steps", format!("exceeds after_steps ({})", self.after_steps));
        }
        if self.lr_reference_width == 0 {
            bad("lr_reference_width", "must be at least 1".into());
        }
        match (self.floor, self.arm.as_deref()) {
            (Floor::Chance, Some(_)) => bad("arm", "only a measured floor has arms".into()),
            (Floor::Measured, Some(a)) if Arm::parse(a).is_none() => {
                bad("arm", format!("{a:?} is not \"decay\" or \"floor\"; set by the template's axis"))
            }
            _ => {}
        }
        out
    }

    /// The arm this cell runs (`decay` unless the generated axis says otherwise).
    pub fn arm(&self) -> Arm {
        self.arm.as_deref().and_then(Arm::parse).unwrap_or(Arm::Decay)
    }

    /// This spec with its learning rates for a model of width `d_model`.
    fn scaled_to(&self, d_model: usize) -> Result<DecaySpec, Problem> {
        let mut s = self.clone();
        if self.lr_scaling == LrScaling::InverseWidth {
            if d_model == 0 {
                return Err(("decay.lr_scaling".into(), "inverse_width needs model.d_model or model.scale".into()));
            }
            let factor = self.lr_reference_width as f32 / d_model as f32;
            s.lr = self.lr * factor;
            s.lr_after = Some(self.lr_after.unwrap_or(self.lr) * factor);
        }
        Ok(s)
    }

    /// The `[[phases]]` tables: phase 1 alone for a floor arm, both phases otherwise.
    pub fn phases(&self) -> toml::Value {
        let floor = self.arm() == Arm::Floor;
        let mixture = if floor { self.only_a() } else { self.mixture(1.0) };
        let mut together = self.phase(TOGETHER, self.together_steps, self.lr, mixture, self.together_eval());
        match self.together_until {
            Some(level) if !floor => {
                let mut stop = toml::Table::new();
                stop.insert("task".into(), self.b.clone().into());
                stop.insert("metric".into(), "exact_match".into());
                stop.insert("at_least".into(), level.into());
                together.insert("stop".into(), stop.into());
            }
            _ => {}
        }
        if floor {
            return toml::Value::Array(vec![together.into()]);
        }
        let mut after = self.phase(AFTER, self.after_steps, self.lr_after.unwrap_or(self.lr), self.after_mixture(), {
            let mut e = self.eval_tasks();
            e.insert("log_points".into(), (self.after_evals as i64).into());
            e.insert("kl_to".into(), TOGETHER.into());
            e
        });
        after.insert(
            "optimizer_state".into(),
            match self.optimizer_state {
                OptimizerStart::Carry => "carry",
                OptimizerStart::Reset => "reset",
            }
            .into(),
        );
        if self.warmup_after_steps > 0 {
            let mut schedule = toml::Table::new();
            schedule.insert("warmup_steps".into(), (self.warmup_after_steps as i64).into());
            after.insert("schedule".into(), schedule.into());
        }
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
        self.only_a()
    }

    /// `{ A = 1 }`.
    fn only_a(&self) -> toml::Table {
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
