//! Analysis of a backdoor experiment: per cell, the attack success, false-trigger and clean
//! loss curves over the continue phase (in tokens), the decay laws fitted to attack success
//! and its persistence half-life (tokens until it falls halfway to its floor); per condition,
//! half-lives with censoring-aware intervals over seeds; a scaling fit against parameters; and the effect
//! of each swept knob (mean half-life per value); after a successive-halving search, every
//! rung's configurations with their scores and which went on. Pooling and fits come from
//! [`crate::lab::pooling`].

use super::{BackdoorSpec, CONTINUE, PLANT};
use crate::analysis::{BootstrapConfig, Fit, HalfLife};
use crate::lab::experiment::{Cell, Experiment};
use crate::lab::knobs::{knob_effects, KnobEffect};
use crate::lab::pooling::{
    condition_name, conditions, decay_of, finished_rows, moved_toward, persistence, scaling_fits, series, Condition,
    ScalingFit, SeedResult, Series,
};
use crate::lab::search::{configurations, ranking, Score};
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
    /// The rungs of a successive-halving search, when its first rung has finished cells.
    pub halving: Option<HalvingResult>,
}

/// What a successive-halving search found.
#[derive(Clone, Debug)]
pub struct HalvingResult {
    /// Shortest rung first.
    pub rungs: Vec<Rung>,
    /// Knob effects at the first rung, where the most configurations ran.
    pub knobs: Vec<KnobEffect>,
}

/// One rung of a halving search.
#[derive(Clone, Debug)]
pub struct Rung {
    /// How many times shorter its continue phase is than the full one.
    pub divisor: u64,
    /// The longest continue-phase horizon in tokens among its planted cells.
    pub horizon: f64,
    /// Best first.
    pub configs: Vec<RungConfig>,
}

/// One configuration at one rung.
#[derive(Clone, Debug)]
pub struct RungConfig {
    pub name: String,
    pub params: usize,
    pub score: Score,
    /// Finished cells (seeds), planted ones, and planted ones still above halfway at the horizon.
    pub seeds: usize,
    pub planted: usize,
    pub censored: usize,
    /// Whether it ranked in the best `1/eta` and so ran at the next rung.
    pub promoted: bool,
}

/// Reads every cell's metrics from the experiment's store and analyses them.
pub fn analyse(spec: &BackdoorSpec, exp: &Experiment, params: &[usize]) -> Result<BackdoorAnalysis> {
    let store = Store::open(&exp.db())?;
    let floor = exp.settings.analysis.floor.unwrap_or(0.0);
    let (mut cells, mut unplanted, mut missing) = (Vec::new(), Vec::new(), Vec::new());
    for cell in &exp.cells {
        match finished_rows(&store, cell)? {
            Ok(rows) => {
                let result = cell_result(&spec.task, cell, &rows, params[cell.index], floor);
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
    let halving = halving(spec, exp, &store, params, floor)?;
    Ok(BackdoorAnalysis { cells, unplanted, conditions, scaling, knobs, missing, halving })
}

/// The finished cells among `members` (grid indices) of `cells`, analysed.
pub fn finished_results(
    spec: &BackdoorSpec,
    store: &Store,
    cells: &[Cell],
    members: &[usize],
    params: &[usize],
    floor: f64,
) -> Result<Vec<BackdoorCell>> {
    let mut out = Vec::new();
    for &i in members {
        if let Ok(rows) = finished_rows(store, &cells[i])? {
            out.push(cell_result(&spec.task, &cells[i], &rows, params[i], floor));
        }
    }
    Ok(out)
}

/// Replays a halving search from the store: the configurations with finished cells at the
/// first rung, ranked; the best `1/eta` of them go on to the next rung, as when it ran.
fn halving(
    spec: &BackdoorSpec,
    exp: &Experiment,
    store: &Store,
    params: &[usize],
    floor: f64,
) -> Result<Option<HalvingResult>> {
    let Some(search) = exp.settings.search.as_ref().filter(|_| !exp.rungs.is_empty()) else { return Ok(None) };
    let order = configurations(exp, search);
    let all: Vec<&[Cell]> = exp.rungs.iter().map(Vec::as_slice).chain([exp.cells.as_slice()]).collect();
    let (mut alive, mut rungs, mut knobs) = ((0..order.len()).collect::<Vec<usize>>(), Vec::new(), Vec::new());
    for (k, cells) in all.iter().enumerate() {
        let mut results = Vec::new();
        for &p in &alive {
            results.push(finished_results(spec, store, cells, &order[p], params, floor)?);
        }
        let present: Vec<usize> = (0..alive.len()).filter(|&j| !results[j].is_empty()).collect();
        if present.is_empty() {
            break;
        }
        let (alive_here, results): (Vec<usize>, Vec<Vec<BackdoorCell>>) =
            present.iter().map(|&j| (alive[j], std::mem::take(&mut results[j]))).unzip();
        let scores: Vec<Score> = alive_here
            .iter()
            .zip(&results)
            .map(|(&p, r)| score(&r.iter().collect::<Vec<_>>(), order[p].len()))
            .collect();
        let ranked = ranking(&scores);
        let keep = if k + 1 < all.len() { (alive_here.len() / search.eta).max(1) } else { 0 };
        if k == 0 {
            let planted: Vec<BackdoorCell> = results.iter().flatten().filter(|c| c.planted()).cloned().collect();
            knobs = knob_effects(&planted);
        }
        let configs = ranked
            .iter()
            .enumerate()
            .map(|(rank, &j)| {
                let r = &results[j];
                let planted: Vec<&BackdoorCell> = r.iter().filter(|c| c.planted()).collect();
                RungConfig {
                    name: condition_name(&r[0].point),
                    params: r[0].params,
                    score: scores[j],
                    seeds: r.len(),
                    planted: planted.len(),
                    censored: planted.iter().filter(|c| censored(c)).count(),
                    promoted: rank < keep,
                }
            })
            .collect();
        let horizon = results.iter().flatten().filter_map(|c| c.attack.t.last().copied()).fold(0.0, f64::max);
        rungs.push(Rung { divisor: search.divisor(k), horizon, configs });
        alive = ranked[..keep].iter().map(|&j| alive_here[j]).collect();
        alive.sort_unstable();
    }
    Ok((!rungs.is_empty()).then_some(HalvingResult { rungs, knobs }))
}

/// Whether a cell's half-life was censored (it outlasted the horizon).
fn censored(c: &BackdoorCell) -> bool {
    matches!(c.half_life, HalfLife::Censored { .. })
}

/// The curves, fits and half-life of one cell whose backdoor task is `task`.
pub fn cell_result(task: &str, cell: &Cell, rows: &[MetricRow], params: usize, floor: f64) -> BackdoorCell {
    let phase = cell.config.phases.iter().position(|p| p.name == CONTINUE).unwrap_or(0) as u32;
    let curve = |metric| series(rows, phase, task, metric, |r: &MetricRow| r.tokens);
    let attack = curve(METRIC);
    let start = attack.y.first().copied().unwrap_or(0.0);
    let (fits, half_life, fit_half_life) = decay_of(&attack, start, floor);
    BackdoorCell {
        id: cell.id.clone(),
        point: cell.point.clone(),
        seed: cell.config.seed,
        params,
        planting: planting(task, cell),
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

/// The planting phase's recorded settings: optimizer, LR, steps and the poison rate of the
/// backdoor task `task`.
fn planting(task: &str, cell: &Cell) -> Vec<(String, String)> {
    let rate = cell
        .config
        .tasks
        .iter()
        .find(|t| t.name == task)
        .and_then(|t| match &t.kind {
            crate::data::spec::Kind::Backdoor(b) => b.spec.poison_rate,
            _ => None,
        })
        .unwrap_or(0.0);
    let Some(p) = cell.config.phases.iter().find(|p| p.name == PLANT) else { return Vec::new() };
    let settings = [("optimizer", p.optimizer.kind.clone()), ("lr", p.optimizer.lr.to_string())];
    let counts = [("steps", p.steps.to_string()), ("poison_rate", rate.to_string())];
    settings.into_iter().chain(counts).map(|(k, v)| (k.to_string(), v)).collect()
}

/// The score of one configuration from its finished cells, over `seeds` cells in all (a
/// seed without a finished cell counts as 0): the mean over seeds of the half-life where
/// reached, else the horizon, and of the fraction of attack success remaining at the horizon;
/// a seed where the backdoor was not planted counts as 0 for both.
pub fn score(cells: &[&BackdoorCell], seeds: usize) -> Score {
    let per_cell = |c: &&BackdoorCell| match c.planted() {
        true => (c.persistence(), 1.0 - moved_toward(&c.attack, c.start, c.floor)),
        false => (0.0, 0.0),
    };
    Score::mean_over(cells.iter().map(per_cell), cells.len(), seeds)
}
