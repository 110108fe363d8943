//! Analysis of a decay experiment: per cell, the curves of A and B in phase 2, the decay
//! laws fitted to B and its half-life; per condition (a cell's sweep point without the
//! seed), half-lives with censoring-aware intervals over seeds; and scaling fits of half-life against
//! parameter count, regulariser strength and task overlap (pooling from [`crate::lab::pooling`]).

use super::{Arm, DecaySpec, Floor, ARM_AXIS};
use crate::analysis::{fit_forgetting_law, BootstrapConfig, Fit, ForgettingCurve, ForgettingLaw, HalfLife};
use crate::lab::experiment::{AnalysisSpec, Cell, Experiment};
use crate::lab::plan::PlannedCell;
use crate::lab::pooling::{
    condition_name, conditions, decay_of, finished_rows, moved_toward, persistence, scaling_fits, series, Condition,
    ScalingFit, SeedResult, Series,
};
use crate::lab::search::Score;
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
    /// B's metric at the end of phase 1, and the level half-life is measured towards: the
    /// floor twin's (see [`FloorSource`]) or the chance level.
    pub start: f64,
    pub floor: f64,
    pub floor_source: FloorSource,
    /// A's and B's exact match at the end of phase 1, and the step phase 1 stopped at.
    pub learned: (f64, f64),
    pub together_steps: u64,
    /// Every law fitted to B, best (lowest AIC) first; empty when there are too few points.
    pub fits: Vec<Fit>,
    pub half_life: HalfLife,
    /// The best law's half-life (may extrapolate beyond the horizon).
    pub fit_half_life: Option<f64>,
}

/// Where a cell's floor comes from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FloorSource {
    /// B's metric at the end of the cell's floor twin (trained on A alone).
    Measured,
    /// ln(vocab) (or `analysis.floor`): configured, or the twin had not finished.
    Chance,
}

/// A floor twin's result: B's and A's metric at the end of its phase 1.
#[derive(Clone, Debug)]
pub struct FloorTwin {
    pub id: String,
    pub condition: String,
    pub seed: u64,
    pub b: f64,
    pub a: f64,
}

/// Everything the report shows.
#[derive(Clone, Debug)]
pub struct DecayAnalysis {
    pub metric: String,
    pub a: String,
    pub b: String,
    pub cells: Vec<CellResult>,
    /// The floor twins that finished.
    pub floors: Vec<FloorTwin>,
    pub conditions: Vec<Condition>,
    pub scaling: Vec<ScalingFit>,
    /// Kalajdzievski's joint law of B's forgetting (KL) per family of cells sharing every axis
    /// but the model's and the seed (families with at least two sizes), or why it failed.
    pub forgetting_laws: Vec<FamilyLaw>,
    /// Cells without a finished run, and why.
    pub missing: Vec<(String, String)>,
}

/// Reads every cell's metrics from the experiment's store and analyses them.
pub fn analyse(study: &DecaySpec, exp: &Experiment, planned: &[PlannedCell]) -> Result<DecayAnalysis> {
    let store = Store::open(&exp.db())?;
    let spec = &exp.settings.analysis;
    let (a, b) = (study.a.clone(), study.b.clone());
    let names = (a.as_str(), b.as_str(), spec.metric.as_str());
    let mut floors = Vec::new();
    let mut decays = Vec::new();
    let mut missing = Vec::new();
    for cell in &exp.cells {
        let (arm, point) = split_arm(&cell.point);
        match finished_rows(&store, cell)? {
            Ok(rows) if arm == Arm::Floor => floors.push(floor_twin(cell, &point, &rows, names)),
            Ok(rows) => decays.push((cell, point, rows)),
            Err(status) => missing.push((cell.id.clone(), status)),
        }
    }
    let cells: Vec<CellResult> = decays
        .into_iter()
        .map(|(cell, point, rows)| {
            let plan = &planned[cell.index];
            let twin = floors.iter().find(|f| f.condition == condition_name(&point) && f.seed == cell.config.seed);
            let floor = match (study.floor, twin) {
                (Floor::Measured, Some(t)) => (t.b, FloorSource::Measured),
                _ => (chance(spec, plan.vocab), FloorSource::Chance),
            };
            cell_result(cell, point, &rows, plan.params, names, floor)
        })
        .collect();
    let boot = BootstrapConfig { n_resamples: spec.resamples, ..Default::default() };
    let conditions = conditions(&cells, &boot);
    let scaling = scaling_fits(exp, &cells);
    let forgetting_laws = forgetting_laws(&cells, &boot);
    Ok(DecayAnalysis {
        metric: spec.metric.clone(),
        a,
        b,
        cells,
        floors,
        conditions,
        scaling,
        forgetting_laws,
        missing,
    })
}

/// One family's joint forgetting law.
#[derive(Clone, Debug)]
pub struct FamilyLaw {
    pub family: String,
    pub cells: usize,
    pub law: Result<ForgettingLaw, String>,
}

/// The joint forgetting law of each family of cells that differ in size (and seed) only.
fn forgetting_laws(cells: &[CellResult], boot: &BootstrapConfig) -> Vec<FamilyLaw> {
    let mut families: std::collections::BTreeMap<String, Vec<&CellResult>> = Default::default();
    for c in cells {
        let rest: Vec<(String, toml::Value)> =
            c.point.iter().filter(|(k, _)| !k.starts_with("model.")).cloned().collect();
        families.entry(condition_name(&rest)).or_default().push(c);
    }
    families
        .into_iter()
        .filter(|(_, members)| members.iter().any(|c| c.params != members[0].params))
        .map(|(family, members)| {
            let curves: Vec<ForgettingCurve> = members
                .iter()
                .map(|c| ForgettingCurve { params: c.params as f64, t: c.b_kl.t.clone(), f: c.b_kl.y.clone() })
                .collect();
            let law = fit_forgetting_law(&curves, boot).map_err(|e| e.to_string());
            FamilyLaw { family, cells: members.len(), law }
        })
        .collect()
}

/// A cell's arm and its sweep point without the arm axis.
fn split_arm(point: &[(String, toml::Value)]) -> (Arm, Vec<(String, toml::Value)>) {
    let arm = point.iter().find(|(k, _)| k == ARM_AXIS).and_then(|(_, v)| v.as_str()).and_then(Arm::parse);
    (arm.unwrap_or(Arm::Decay), point.iter().filter(|(k, _)| k != ARM_AXIS).cloned().collect())
}

/// B's and A's metric at the last evaluation of a floor twin.
fn floor_twin(
    cell: &Cell,
    point: &[(String, toml::Value)],
    rows: &[MetricRow],
    (a, b, metric): (&str, &str, &str),
) -> FloorTwin {
    let last = |task: &str| series(rows, 0, task, metric, |r| r.step).y.last().copied().unwrap_or(f64::NAN);
    FloorTwin { id: cell.id.clone(), condition: condition_name(point), seed: cell.config.seed, b: last(b), a: last(a) }
}

/// The chance level of the analysed metric: configured, or ln(vocab) for a loss, else 0.
fn chance(spec: &AnalysisSpec, vocab: usize) -> f64 {
    spec.floor.unwrap_or(if spec.metric == "loss" { (vocab as f64).ln() } else { 0.0 })
}

/// Fits and half-lives of one cell.
fn cell_result(
    cell: &Cell,
    point: Vec<(String, toml::Value)>,
    rows: &[MetricRow],
    params: usize,
    (a, b, metric): (&str, &str, &str),
    (floor, floor_source): (f64, FloorSource),
) -> CellResult {
    let step = |r: &MetricRow| r.step;
    let (sa, sb) = (series(rows, 1, a, metric, step), series(rows, 1, b, metric, step));
    let start = sb.y.first().copied().unwrap_or(f64::NAN);
    let (fits, half_life, fit_half_life) = decay_of(&sb, start, floor);
    let exact = |task: &str| series(rows, 1, task, "exact_match", step).y.first().copied().unwrap_or(f64::NAN);
    let together_steps = rows.iter().filter(|r| r.phase == 0).map(|r| r.step).max().unwrap_or(0);
    CellResult {
        id: cell.id.clone(),
        condition: condition_name(&point),
        point,
        floor_source,
        learned: (exact(a), exact(b)),
        together_steps,
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

/// A searched configuration's standing from its cells (one per seed that finished) out of
/// `seeds`: the mean over seeds of the half-life where B crossed halfway, else the horizon
/// (a lower bound), ties broken by the mean fraction of B remaining at the horizon; a seed
/// without a finished cell counts as 0.
pub fn score(cells: &[&CellResult], seeds: usize) -> Score {
    let per_cell = cells.iter().map(|c| (persistence(&c.half_life), 1.0 - moved_toward(&c.b, c.start, c.floor)));
    Score::mean_over(per_cell, cells.len(), seeds)
}
