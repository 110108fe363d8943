//! Analysis of a distance experiment: per sweep point and arm, the final held-out loss of
//! every cell, the loss-versus-token-count curve with its ensemble (restarts × learning
//! rates), saturation `S` from execution fine-tuning, the conditional distance, and a verdict
//! per count on whether more tuning would likely help.

use super::{Arm, DistanceSpec, Tuning, Variant, AXIS, PHASE};
use crate::lab::experiment::{Cell, Experiment};
use crate::lab::pooling::finished_rows;
use crate::store::{MetricRow, Store};
use anyhow::Result;
use std::collections::BTreeMap;

/// The ensemble of one token count.
#[derive(Clone, Debug, PartialEq)]
pub struct CountStats {
    pub tokens: usize,
    /// `(restart, lr, final held-out loss)` of every finished run.
    pub runs: Vec<(usize, f64, f64)>,
    /// The lowest loss and its learning rate.
    pub best: f64,
    pub best_lr: f64,
    /// The highest loss.
    pub worst: f64,
    /// Why more tuning would likely help (empty: the ensemble agrees).
    pub concerns: Vec<String>,
}

/// Where the best curve comes within the tolerance of saturation (see [`tolerance`]).
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Distance {
    /// The smallest such count.
    Reached(usize),
    /// No count tried (the largest is given) gets there.
    Beyond(usize),
    /// No fine-tuning run finished, so `S` is unknown.
    Unknown,
}

/// One arm of one sweep point.
#[derive(Clone, Debug)]
pub struct ArmResult {
    /// The sweep point without the variant axis (`axis=value, …`, or `all`).
    pub point: String,
    pub arm: Arm,
    /// The evaluated task.
    pub task: String,
    /// Counts in increasing order.
    pub counts: Vec<CountStats>,
    /// The conditional prompts' counts (`[distance.conditional]`; empty otherwise), with the
    /// frozen model as their 0.
    pub cond_counts: Vec<CountStats>,
    /// Best final loss of full-weight and LoRA fine-tuning.
    pub s_full: Option<f64>,
    pub s_lora: Option<f64>,
    pub distance: Distance,
    /// The conditional prompts' distance (`None` without conditional prompts).
    pub cond_distance: Option<Distance>,
}

impl ArmResult {
    /// Saturation: the best fine-tuning loss of either kind.
    pub fn saturation(&self) -> Option<f64> {
        [self.s_full, self.s_lora].into_iter().flatten().reduce(f64::min)
    }
}

/// Everything the report shows.
#[derive(Clone, Debug)]
pub struct DistanceAnalysis {
    pub spec: DistanceSpec,
    pub arms: Vec<ArmResult>,
    /// Cells without a finished run, and why.
    pub missing: Vec<(String, String)>,
}

/// How close to saturation `s` counts as saturated: `epsilon_rel` of the gap between the
/// frozen model's loss `l0` (0 prompt tokens) and `s`, so that the criterion does not depend
/// on the loss's scale; without `s`, `epsilon_rel · l0`.
pub fn tolerance(epsilon_rel: f64, l0: f64, s: Option<f64>) -> f64 {
    epsilon_rel * s.map_or(l0, |s| (l0 - s).max(0.0))
}

/// The conditional distance of a curve `(count, best loss)` (increasing counts, starting at
/// 0 tokens) against saturation `s`: the smallest count whose loss is at most `s + ε`, with
/// `ε` the [`tolerance`] of `epsilon_rel`. Unknown without `s` or without the 0-token loss.
pub fn conditional_distance(curve: &[(usize, f64)], s: Option<f64>, epsilon_rel: f64) -> Distance {
    let (Some(s), Some(&(_, l0))) = (s, curve.iter().find(|(n, _)| *n == 0)) else { return Distance::Unknown };
    let epsilon = tolerance(epsilon_rel, l0, Some(s));
    match curve.iter().find(|(_, loss)| *loss <= s + epsilon) {
        Some(&(n, _)) => Distance::Reached(n),
        None => Distance::Beyond(curve.last().map_or(0, |c| c.0)),
    }
}

/// The ensemble statistics of one count; `tolerance` is the spread above which restarts and
/// learning rates disagree, `lrs` the grid, `fewer` the best loss of any smaller count.
pub fn count_stats(
    tokens: usize,
    runs: Vec<(usize, f64, f64)>,
    lrs: &[f64],
    tolerance: f64,
    fewer: Option<f64>,
) -> CountStats {
    let (mut best, mut best_lr, mut worst) = (f64::INFINITY, f64::NAN, f64::NEG_INFINITY);
    for &(_, lr, loss) in &runs {
        if loss < best {
            (best, best_lr) = (loss, lr);
        }
        worst = worst.max(loss);
    }
    let mut concerns = Vec::new();
    if worst - best > tolerance {
        concerns.push(format!("restarts and learning rates disagree by {:.3}", worst - best));
    }
    let edge = lrs.iter().copied().reduce(f64::max);
    if tokens > 0 && lrs.len() > 1 && edge == Some(best_lr) {
        concerns.push("the best learning rate is the grid's largest".into());
    }
    if fewer.is_some_and(|f| best > f + tolerance) {
        concerns.push("worse than a shorter prompt: under-tuned".into());
    }
    CountStats { tokens, runs, best, best_lr, worst, concerns }
}

/// An arm's evaluated task and its cells' final losses.
type ArmRuns = (String, Vec<(Variant, f64)>);

/// Reads every cell's final held-out loss from the experiment's store and analyses them.
pub fn analyse(spec: &DistanceSpec, exp: &Experiment) -> Result<DistanceAnalysis> {
    let store = Store::open(&exp.db())?;
    let mut groups: BTreeMap<(String, Arm), ArmRuns> = BTreeMap::new();
    let mut missing = Vec::new();
    for cell in &exp.cells {
        let Some(variant) = variant_of(cell) else { continue };
        let task = cell.config.phases.last().and_then(|p| p.eval.tasks.first()).cloned().unwrap_or_default();
        let entry = groups.entry((point_name(cell), variant.arm)).or_insert_with(|| (task.clone(), Vec::new()));
        match finished_rows(&store, cell)? {
            Ok(rows) => match final_loss(&rows, &task, phase_index(cell)) {
                Some(loss) => entry.1.push((variant, loss)),
                None => missing.push((cell.id.clone(), "no final held-out loss".into())),
            },
            Err(status) => missing.push((cell.id.clone(), status)),
        }
    }
    let arms =
        groups.into_iter().map(|((point, arm), (task, runs))| arm_result(spec, point, arm, task, &runs)).collect();
    Ok(DistanceAnalysis { spec: spec.clone(), arms, missing })
}

/// The curve, saturation and distance of one arm from its cells' final losses.
pub fn arm_result(spec: &DistanceSpec, point: String, arm: Arm, task: String, runs: &[(Variant, f64)]) -> ArmResult {
    let mut by_count: BTreeMap<usize, Vec<(usize, f64, f64)>> = BTreeMap::new();
    let mut by_cond_count: BTreeMap<usize, Vec<(usize, f64, f64)>> = BTreeMap::new();
    let (mut s_full, mut s_lora) = (None::<f64>, None::<f64>);
    for (v, loss) in runs {
        match v.tuning {
            Tuning::Frozen => {
                by_count.entry(0).or_default().push((0, 0.0, *loss));
                by_cond_count.entry(0).or_default().push((0, 0.0, *loss));
            }
            Tuning::Prompt { tokens, restart, lr } => by_count.entry(tokens).or_default().push((restart, lr, *loss)),
            Tuning::CondPrompt { tokens, restart, lr } => {
                by_cond_count.entry(tokens).or_default().push((restart, lr, *loss))
            }
            Tuning::Full { .. } => s_full = Some(s_full.map_or(*loss, |s| s.min(*loss))),
            Tuning::Lora { .. } => s_lora = Some(s_lora.map_or(*loss, |s| s.min(*loss))),
        }
    }
    let s = [s_full, s_lora].into_iter().flatten().reduce(f64::min);
    let (counts, distance) = curve_of(spec, by_count, s);
    let (cond_counts, cond_distance) = match spec.conditional {
        Some(_) => {
            let (c, d) = curve_of(spec, by_cond_count, s);
            (c, Some(d))
        }
        None => (Vec::new(), None),
    };
    ArmResult { point, arm, task, counts, cond_counts, s_full, s_lora, distance, cond_distance }
}

/// The per-count ensembles of one prompt kind and its distance against saturation `s`.
fn curve_of(
    spec: &DistanceSpec,
    by_count: BTreeMap<usize, Vec<(usize, f64, f64)>>,
    s: Option<f64>,
) -> (Vec<CountStats>, Distance) {
    let l0 = by_count.get(&0).and_then(|runs| runs.iter().map(|r| r.2).reduce(f64::min));
    let epsilon = l0.map_or(f64::INFINITY, |l0| tolerance(spec.epsilon_rel, l0, s));
    let mut counts: Vec<CountStats> = Vec::new();
    for (tokens, runs) in by_count {
        let fewer = counts.iter().map(|c| c.best).reduce(f64::min);
        counts.push(count_stats(tokens, runs, &spec.lrs, epsilon, fewer));
    }
    let curve: Vec<(usize, f64)> = counts.iter().map(|c| (c.tokens, c.best)).collect();
    let distance = conditional_distance(&curve, s, spec.epsilon_rel);
    (counts, distance)
}

/// The cell's variant (from its sweep point).
pub fn variant_of(cell: &Cell) -> Option<Variant> {
    cell.point.iter().find(|(k, _)| k == AXIS).and_then(|(_, v)| Variant::parse(v.as_str()?))
}

/// `axis=value, …` of a cell's sweep point without the variant axis.
pub fn point_name(cell: &Cell) -> String {
    let parts: Vec<String> = cell
        .point
        .iter()
        .filter(|(k, _)| k != AXIS)
        .map(|(k, v)| format!("{k}={}", crate::lab::sweep::slug(v)))
        .collect();
    if parts.is_empty() {
        "all".into()
    } else {
        parts.join(", ")
    }
}

/// The index of the measurement phase.
pub fn phase_index(cell: &Cell) -> u32 {
    cell.config.phases.iter().position(|p| p.name == PHASE).unwrap_or(0) as u32
}

/// The last held-out loss of `task` logged in phase `phase`.
fn final_loss(rows: &[MetricRow], task: &str, phase: u32) -> Option<f64> {
    final_metric(rows, task, "loss", phase)
}

/// The last finite value of `task`'s `metric` logged in phase `phase`.
pub fn final_metric(rows: &[MetricRow], task: &str, metric: &str, phase: u32) -> Option<f64> {
    rows.iter()
        .filter(|r| r.phase == phase && r.task == task && r.metric == metric && r.value.is_finite())
        .max_by_key(|r| r.step)
        .map(|r| r.value)
}
