//! Analysis of a backdoor experiment: per cell, the attack success, false-trigger and clean
//! loss curves over the continue phase (in tokens), the decay laws fitted to attack success
//! and its persistence half-life (tokens until it falls halfway to its floor); per condition,
//! half-lives with bootstrap CIs over seeds; a scaling fit against parameters; and the effect
//! of each swept knob (mean half-life per value). Pooling and fits reuse the decay study's
//! machinery ([`super::decay_analysis`]).

use super::backdoor::{CONTINUE, PLANT};
use super::decay_analysis::{
    conditions, decay_of, finished_rows, knob_effects, moved_toward, persistence, scaling_fits, series, Condition,
    KnobEffect, ScalingFit, SeedResult, Series,
};
use super::experiment::{Cell, Experiment};
use crate::analysis::{BootstrapConfig, Fit, HalfLife};
use crate::store::{MetricRow, Store};
use anyhow::Result;

/// The metric whose decay defines persistence.
pub const METRIC: &str = "attack_success";
/// Attack success at the start of continued training below which a cell counts as not planted.
pub const PLANTED: f64 = 0.5;

/// One finished cell's analysis.
#[derive(Clone, Debug)]
pub struct BackdoorCell {
    pub id: String,
    pub point: Vec<(String, toml::Value)>,
    pub seed: u64,
    pub params: usize,
    /// How the backdoor was planted: `(setting, value)` read from the resolved phases.
    pub planting: Vec<(String, String)>,
    /// Over continued-training tokens.
    pub attack: Series,
    pub false_clean: Series,
    pub false_near_miss: Series,
    pub clean_loss: Series,
    /// Attack success when continued training began, and its floor.
    pub start: f64,
    pub floor: f64,
    /// The decay laws fitted to attack success, best first.
    pub fits: Vec<Fit>,
    pub half_life: HalfLife,
    pub fit_half_life: Option<f64>,
}

impl SeedResult for BackdoorCell {
    fn point(&self) -> &[(String, toml::Value)] {
        &self.point
    }
    fn params(&self) -> usize {
        self.params
    }
    fn half_life(&self) -> &HalfLife {
        &self.half_life
    }
    fn moved(&self) -> f64 {
        moved_toward(&self.attack, self.start, self.floor)
    }
}

impl BackdoorCell {
    /// Whether the backdoor was in place when continued training began.
    pub fn planted(&self) -> bool {
        self.start >= PLANTED
    }

    /// The half-life when reached, else the horizon it outlasted (a lower bound).
    pub fn persistence(&self) -> f64 {
        persistence(&self.half_life)
    }
}

/// Everything the report shows.
#[derive(Clone, Debug)]
pub struct BackdoorAnalysis {
    /// Planted cells (the half-life is defined for them), then [`BackdoorAnalysis::unplanted`].
    pub cells: Vec<BackdoorCell>,
    pub unplanted: Vec<BackdoorCell>,
    pub conditions: Vec<Condition>,
    pub scaling: Vec<ScalingFit>,
    /// Knobs, most influential first.
    pub knobs: Vec<KnobEffect>,
    pub missing: Vec<(String, String)>,
}

/// Reads every cell's metrics from the experiment's store and analyses them.
pub fn analyse(exp: &Experiment, params: &[usize]) -> Result<BackdoorAnalysis> {
    let store = Store::open(&exp.db())?;
    let floor = exp.settings.analysis.floor.unwrap_or(0.0);
    let (mut cells, mut unplanted, mut missing) = (Vec::new(), Vec::new(), Vec::new());
    for cell in &exp.cells {
        match finished_rows(&store, cell)? {
            Ok(rows) => {
                let result = cell_result(cell, &rows, params[cell.index], floor);
                if result.planted() {
                    cells.push(result)
                } else {
                    unplanted.push(result)
                }
            }
            Err(status) => missing.push((cell.id.clone(), status)),
        }
    }
    let boot = BootstrapConfig { n_resamples: exp.settings.analysis.resamples, ..Default::default() };
    let conditions = conditions(&cells, &boot);
    let scaling = scaling_fits(exp, &cells);
    let knobs = knob_effects(&cells);
    Ok(BackdoorAnalysis { cells, unplanted, conditions, scaling, knobs, missing })
}

/// The curves, fits and half-life of one cell.
pub fn cell_result(cell: &Cell, rows: &[MetricRow], params: usize, floor: f64) -> BackdoorCell {
    let task = backdoor_task(cell);
    let phase = cell.config.phases.iter().position(|p| p.name == CONTINUE).unwrap_or(0) as u32;
    let curve = |metric| series(rows, phase, &task, metric, |r: &MetricRow| r.tokens);
    let attack = curve(METRIC);
    let start = attack.y.first().copied().unwrap_or(0.0);
    let (fits, half_life, fit_half_life) = decay_of(&attack, start, floor);
    BackdoorCell {
        id: cell.id.clone(),
        point: cell.point.clone(),
        seed: cell.config.seed,
        params,
        planting: planting(cell),
        false_clean: curve("false_trigger_clean"),
        false_near_miss: curve("false_trigger_near_miss"),
        clean_loss: curve("clean_loss"),
        attack,
        start,
        floor,
        fits,
        half_life,
        fit_half_life,
    }
}

/// The task the continue phase evaluates: the backdoor task.
fn backdoor_task(cell: &Cell) -> String {
    let last = cell.config.phases.last().map(|p| p.eval.tasks.clone()).unwrap_or_default();
    last.first().cloned().unwrap_or_default()
}

/// The planting phase's recorded settings: optimizer, LR, steps and poison rate.
fn planting(cell: &Cell) -> Vec<(String, String)> {
    let task = backdoor_task(cell);
    let rate = cell.config.tasks.iter().find(|t| t.name == task).and_then(|t| t.poison_rate).unwrap_or(0.0);
    let Some(p) = cell.config.phases.iter().find(|p| p.name == PLANT) else { return Vec::new() };
    let settings = [("optimizer", p.optimizer.kind.clone()), ("lr", p.optimizer.lr.to_string())];
    let counts = [("steps", p.steps.to_string()), ("poison_rate", rate.to_string())];
    settings.into_iter().chain(counts).map(|(k, v)| (k.to_string(), v)).collect()
}
