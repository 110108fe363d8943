//! Analysis of a decay experiment: per cell, the curves of A and B in phase 2, the decay
//! laws fitted to B and its half-life; per condition (a cell's sweep point without the
//! seed), half-lives with censoring-aware intervals over seeds; and scaling fits of half-life against
//! parameter count, regulariser strength and task overlap (pooling from [`crate::lab::pooling`]).

use super::DecaySpec;
use crate::analysis::{BootstrapConfig, Fit, HalfLife};
use crate::lab::experiment::{AnalysisSpec, Cell, Experiment};
use crate::lab::plan::PlannedCell;
use crate::lab::pooling::{
    condition_name, conditions, decay_of, finished_rows, moved_toward, scaling_fits, series, Condition, ScalingFit,
    SeedResult, Series,
};
use crate::store::{MetricRow, Store};
use anyhow::Result;

/// One finished cell's analysis.
#[derive(Clone, Debug)]
pub struct CellResult {
    pub id: String,
    /// The sweep point without the seed (`axis = value`), which names the condition.
    pub condition: String,
    /// The cell's sweep point.
    pub point: Vec<(String, toml::Value)>,
    pub seed: u64,
    pub params: usize,
    pub a: Series,
    pub b: Series,
    /// B's forgetting (KL to the end-of-phase-1 model).
    pub b_kl: Series,
    /// B's metric at the end of phase 1 and its chance level.
    pub start: f64,
    pub floor: f64,
    /// Every law fitted to B, best (lowest AIC) first; empty when there are too few points.
    pub fits: Vec<Fit>,
    pub half_life: HalfLife,
    /// The best law's half-life (may extrapolate beyond the horizon).
    pub fit_half_life: Option<f64>,
}

/// Everything the report shows.
#[derive(Clone, Debug)]
pub struct DecayAnalysis {
    pub metric: String,
    pub a: String,
    pub b: String,
    pub cells: Vec<CellResult>,
    pub conditions: Vec<Condition>,
    pub scaling: Vec<ScalingFit>,
    /// Cells without a finished run, and why.
    pub missing: Vec<(String, String)>,
}

/// Reads every cell's metrics from the experiment's store and analyses them.
pub fn analyse(study: &DecaySpec, exp: &Experiment, planned: &[PlannedCell]) -> Result<DecayAnalysis> {
    let store = Store::open(&exp.db())?;
    let spec = &exp.settings.analysis;
    let (a, b) = (study.a.clone(), study.b.clone());
    let mut cells = Vec::new();
    let mut missing = Vec::new();
    for cell in &exp.cells {
        match finished_rows(&store, cell)? {
            Ok(rows) => {
                let names = (a.as_str(), b.as_str(), spec.metric.as_str());
                let plan = &planned[cell.index];
                cells.push(cell_result(cell, &rows, plan.params, names, floor(spec, plan.vocab)));
            }
            Err(status) => missing.push((cell.id.clone(), status)),
        }
    }
    let boot = BootstrapConfig { n_resamples: spec.resamples, ..Default::default() };
    let conditions = conditions(&cells, &boot);
    let scaling = scaling_fits(exp, &cells);
    Ok(DecayAnalysis { metric: spec.metric.clone(), a, b, cells, conditions, scaling, missing })
}

/// The chance level of the analysed metric: configured, or ln(vocab) for a loss, else 0.
fn floor(spec: &AnalysisSpec, vocab: usize) -> f64 {
    spec.floor.unwrap_or(if spec.metric == "loss" { (vocab as f64).ln() } else { 0.0 })
}

/// Fits and half-lives of one cell.
fn cell_result(
    cell: &Cell,
    rows: &[MetricRow],
    params: usize,
    (a, b, metric): (&str, &str, &str),
    floor: f64,
) -> CellResult {
    let step = |r: &MetricRow| r.step;
    let (sa, sb) = (series(rows, 1, a, metric, step), series(rows, 1, b, metric, step));
    let start = sb.y.first().copied().unwrap_or(f64::NAN);
    let (fits, half_life, fit_half_life) = decay_of(&sb, start, floor);
    CellResult {
        id: cell.id.clone(),
        condition: condition_name(&cell.point),
        point: cell.point.clone(),
        seed: cell.config.seed,
        params,
        b_kl: series(rows, 1, b, "forgetting_kl", step),
        a: sa,
        b: sb,
        start,
        floor,
        fits,
        half_life,
        fit_half_life,
    }
}

impl SeedResult for CellResult {
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
        moved_toward(&self.b, self.start, self.floor)
    }
}
