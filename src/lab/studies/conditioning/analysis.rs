//! Analysis of a conditioning experiment: per cell, the rollout evaluations of the `train`
//! phase against the FLOPs spent since its start (sampling included); per variant, each
//! metric at equal FLOPs (the largest budget every cell reached, read off each cell's curve
//! by linear interpolation) with a t-interval over seeds; distinct solved paths per board
//! pooled across seeds; and where the proxy reward's own optimum is an exploit.

use super::{ConditioningSpec, Variant, AXIS, TRAIN};
use crate::analysis::Interval;
use crate::data::environment::{reward_maximizer, RewardKind};
use crate::data::Split;
use crate::lab::experiment::{Cell, Experiment};
use crate::lab::plan::PlannedCell;
use crate::lab::pooling::{seed_interval, variant_results};
use crate::store::{read_sample_scores, MetricRow};
use crate::train::reinforce::{environment, EVAL_BOARDS};
use crate::train::step_loop::sample_scores_path;
use anyhow::Result;
use std::collections::{BTreeMap, BTreeSet};

/// Confidence level of every interval.
pub const LEVEL: f64 = 0.95;

/// The rollout metrics the report tables, in order, with their bounds.
pub const METRICS: [(&str, f64, f64); 10] = [
    ("success", 0.0, 1.0),
    ("optimal", 0.0, 1.0),
    ("reward", f64::NEG_INFINITY, f64::INFINITY),
    ("exploit", 0.0, 1.0),
    ("distinct_solved", 0.0, f64::INFINITY),
    ("entropy", 0.0, f64::INFINITY),
    ("overlap", 0.0, 1.0),
    ("kl", f64::NEG_INFINITY, f64::INFINITY),
    ("equal_batch", 0.0, 1.0),
    ("equal_episodes", 0.0, 1.0),
];

/// One finished cell.
#[derive(Clone, Debug)]
pub struct CellResult {
    pub variant: Variant,
    pub seed: i64,
    /// Per evaluation of `train`, in order: FLOPs since its start, and the rollout metrics.
    pub evals: Vec<(f64, BTreeMap<String, f64>)>,
    /// The pretraining's FLOPs.
    pub base_flops: f64,
    /// Means over the training steps: the fraction of batches (and of episodes) whose
    /// completions all earned the same proxy return.
    pub equal_batch: f64,
    pub equal_episodes: f64,
    /// Per held-out board at the last evaluation: the ids of its solved completions.
    pub solved: Vec<BTreeSet<u64>>,
}

impl CellResult {
    /// `metric` at `flops` by linear interpolation between evaluations (`equal_batch` and
    /// `equal_episodes`: the phase means); `None` past the last evaluation or where undefined.
    pub fn at(&self, metric: &str, flops: f64) -> Option<f64> {
        match metric {
            // Conditioning has no baseline for equal rewards to starve.
            "equal_batch" | "equal_episodes" if self.variant.arm.conditions() => return None,
            "equal_batch" => return Some(self.equal_batch),
            "equal_episodes" => return Some(self.equal_episodes),
            _ => {}
        }
        let points: Vec<(f64, f64)> = self
            .evals
            .iter()
            .filter_map(|(f, m)| m.get(metric).map(|v| (*f, *v)))
            .filter(|(_, v)| v.is_finite())
            .collect();
        let after = points.iter().position(|(f, _)| *f >= flops - 1e-9 * flops.abs().max(1.0))?;
        if after == 0 || (points[after].0 - flops).abs() <= 1e-9 * flops.abs().max(1.0) {
            return Some(points[after].1);
        }
        let ((f0, v0), (f1, v1)) = (points[after - 1], points[after]);
        Some(v0 + (v1 - v0) * (flops - f0) / (f1 - f0))
    }

    /// `metric` at the first evaluation (the base, before any training of this phase).
    pub fn base(&self, metric: &str) -> Option<f64> {
        self.evals.first().and_then(|(_, m)| m.get(metric).copied())
    }

    /// The FLOPs of the last evaluation.
    pub fn last_flops(&self) -> f64 {
        self.evals.last().map_or(0.0, |(f, _)| *f)
    }
}

/// Everything the report shows.
#[derive(Clone, Debug)]
pub struct ConditioningAnalysis {
    pub spec: ConditioningSpec,
    pub cells: Vec<CellResult>,
    pub missing: Vec<(String, String)>,
    /// The largest FLOPs every cell reached.
    pub common_flops: f64,
    /// Per reward: held-out boards searched, and the fraction whose best completion under the
    /// proxy (exhaustive search up to the optimal length) is an exploit.
    pub maximizer: Vec<(RewardKind, usize, f64)>,
}

impl ConditioningAnalysis {
    /// The cells of variant `v`.
    pub fn of(&self, v: &Variant) -> Vec<&CellResult> {
        self.cells.iter().filter(|c| c.variant == *v).collect()
    }

    /// The variants with cells, in the spec's order.
    pub fn variants(&self) -> Vec<Variant> {
        self.spec.variants().into_iter().filter(|v| !self.of(v).is_empty()).collect()
    }

    /// `metric` of `v` at `flops`: a t-interval over seeds.
    pub fn at(&self, v: &Variant, metric: &str, flops: f64) -> Option<Interval> {
        let values: Vec<f64> = self.of(v).iter().filter_map(|c| c.at(metric, flops)).collect();
        interval(&values, metric)
    }

    /// `metric` of the base under reward `r`: the first evaluation of the policy-gradient
    /// cells (plain prompts; a conditioning arm's first evaluation already carries its
    /// untrained condition token), one value per seed (the cells of a seed share the base
    /// and its samples).
    pub fn base(&self, r: RewardKind, metric: &str) -> Option<Interval> {
        let mut per_seed: BTreeMap<i64, f64> = BTreeMap::new();
        for c in self.cells.iter().filter(|c| c.variant.reward == r && !c.variant.arm.conditions()) {
            if let Some(v) = c.base(metric) {
                per_seed.entry(c.seed).or_insert(v);
            }
        }
        interval(&per_seed.into_values().collect::<Vec<_>>(), metric)
    }

    /// Distinct solved completions per held-out board pooled across the seeds of `v` (every
    /// seed evaluates the same boards), averaged over boards.
    pub fn pooled_distinct(&self, v: &Variant) -> Option<f64> {
        let cells = self.of(v);
        let boards = cells.iter().map(|c| c.solved.len()).min().filter(|&b| b > 0)?;
        let pooled = (0..boards).map(|b| cells.iter().flat_map(|c| c.solved[b].iter()).collect::<BTreeSet<_>>().len());
        Some(pooled.sum::<usize>() as f64 / boards as f64)
    }
}

/// A t-interval over seeds clipped to the metric's bounds (a rate's per-bin variants too);
/// `None` below 2 values.
pub fn interval(values: &[f64], metric: &str) -> Option<Interval> {
    let name = metric.rsplit('_').next().filter(|_| metric.starts_with("bin")).unwrap_or(metric);
    let bounds = METRICS.iter().find(|(m, _, _)| *m == name);
    let (lo, hi) = bounds.map_or((f64::NEG_INFINITY, f64::INFINITY), |m| (m.1, m.2));
    seed_interval(values, LEVEL, lo, hi)
}

/// Reads every cell from the experiment's store.
pub fn analyse(spec: &ConditioningSpec, exp: &Experiment, planned: &[PlannedCell]) -> Result<ConditioningAnalysis> {
    let (cells, missing) =
        variant_results(exp, AXIS, Variant::parse, |cell, v, rows| cell_result(exp, cell, v, rows, planned))?;
    let common_flops = cells.iter().map(CellResult::last_flops).fold(f64::INFINITY, f64::min);
    let common_flops = if common_flops.is_finite() { common_flops } else { 0.0 };
    let maximizer = match exp.cells.first() {
        Some(cell) => maximizer_exploits(spec, cell),
        None => Vec::new(),
    };
    Ok(ConditioningAnalysis { spec: spec.clone(), cells, missing, common_flops, maximizer })
}

fn cell_result(
    exp: &Experiment,
    cell: &Cell,
    variant: Variant,
    rows: &[MetricRow],
    planned: &[PlannedCell],
) -> Result<Option<CellResult>> {
    let Some(train) = cell.config.phases.iter().position(|p| p.name == TRAIN) else { return Ok(None) };
    let phase = train as u32;
    let params = planned.get(cell.index).map_or(0, |c| c.params) as f64;
    let mine: Vec<&MetricRow> = rows.iter().filter(|r| r.phase == phase).collect();
    let start_tokens = mine.iter().filter(|r| r.task == "rollouts").map(|r| r.tokens).min();
    let Some(start_tokens) = start_tokens else { return Ok(None) };
    let mut evals: BTreeMap<u64, (f64, BTreeMap<String, f64>)> = BTreeMap::new();
    for r in mine.iter().filter(|r| r.task == "rollouts") {
        let flops = 6.0 * params * (r.tokens - start_tokens) as f64;
        evals.entry(r.step).or_insert((flops, BTreeMap::new())).1.insert(r.metric.clone(), r.value);
    }
    let mean = |metric: &str| {
        let v: Vec<f64> = mine.iter().filter(|r| r.task == "rl" && r.metric == metric).map(|r| r.value).collect();
        v.iter().sum::<f64>() / v.len().max(1) as f64
    };
    let base_tokens = rows.iter().filter(|r| r.phase == 0).map(|r| r.tokens).max().unwrap_or(0);
    let last_step = evals.keys().max().copied().unwrap_or(0);
    let path = sample_scores_path(&exp.cells_dir().join(&cell.id), phase, last_step, "rollouts");
    let solved = read_solved(&path, cell.config.phases[train].rl.as_ref().map_or(1, |r| r.eval_k));
    Ok(Some(CellResult {
        variant,
        seed: cell.config.seed as i64,
        evals: evals.into_values().collect(),
        base_flops: 6.0 * params * base_tokens as f64,
        equal_batch: mean("equal_batch"),
        equal_episodes: mean("equal_episodes"),
        solved,
    }))
}

/// Per board (episode-major runs of `k` completions), the solution ids of its solved
/// completions, from a rollouts scores file; empty without one.
fn read_solved(path: &std::path::Path, k: usize) -> Vec<BTreeSet<u64>> {
    let Ok(columns) = read_sample_scores(path) else { return Vec::new() };
    let column = |name: &str| columns.iter().find(|(n, _)| n == name).map(|(_, v)| v.clone()).unwrap_or_default();
    let (success, ids) = (column("success"), column("solution"));
    success
        .chunks(k.max(1))
        .zip(ids.chunks(k.max(1)))
        .map(|(s, i)| s.iter().zip(i).filter(|(s, _)| **s > 0.5).map(|(_, id)| *id as u64).collect())
        .collect()
}

/// Per reward, the held-out boards whose proxy optimum (searched up to the
/// board's optimal length) the true scorer rejects.
fn maximizer_exploits(spec: &ConditioningSpec, cell: &Cell) -> Vec<(RewardKind, usize, f64)> {
    let mut out = Vec::new();
    for &reward in &spec.rewards {
        let rl = spec.rl_cfg(Variant { arm: super::Arm::Rloo, reward });
        let Ok(env) = environment(&rl, &cell.config.tasks) else { continue };
        let boards = spec.eval_episodes;
        let mut exploits = 0;
        for i in 0..boards as u64 {
            let prompt = env.prompt(EVAL_BOARDS, Split::Eval, i);
            let depth = env.optimal_len(&prompt).unwrap_or(0);
            let (best, _) = reward_maximizer(env.as_ref(), &prompt, depth);
            exploits += usize::from(env.verdict(&prompt, &best).exploit());
        }
        out.push((reward, boards, exploits as f64 / boards.max(1) as f64));
    }
    out
}
