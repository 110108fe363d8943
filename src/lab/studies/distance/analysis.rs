//! Analysis of a distance experiment: per sweep point and arm, every cell's [`Outcome`] (its
//! evaluation with the lowest validation loss, and the reported loss there), the
//! loss-versus-token-count curve with its ensemble (restarts × learning rates), saturation
//! `S` from execution fine-tuning, the conditional distance, and a verdict per count on
//! whether more tuning would likely help.
//!
//! Choices are made on the validation set and figures reported on the disjoint reported set
//! (eval indices from [`crate::data::SELECTION_OFFSET`] against `0..n`): a cell's stopping
//! step (early stopping), a count's learning rate and restart, and saturation's learning
//! rate are all chosen by validation loss, so that choosing the best of many runs does not
//! bias the reported loss downward. Runs logged without a validation loss fall back to
//! choosing on the reported loss, and say so.
//!
//! A distance is refused when a count it rules out (a count below it, or any count when no
//! count reaches `S`) had its chosen learning rate at an end of the grid: that count may
//! only be under-tuned, and a grid of fewer than three rates has no interior at all.

use super::{Arm, DistanceSpec, Tuning, Variant, AXIS, PHASE};
use crate::data::spec::Kind;
use crate::lab::experiment::{Cell, Experiment};
use crate::lab::pooling::finished_rows;
use crate::store::{MetricRow, Store};
use anyhow::Result;
use std::collections::BTreeMap;

/// What one finished cell measured: at its evaluation with the lowest validation loss (the
/// last one when none was logged), that validation loss and the reported loss.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Outcome {
    /// Validation loss (NaN when the run logged none).
    pub val: f64,
    /// Reported (test) loss at the same evaluation.
    pub test: f64,
    /// Whether the chosen evaluation is the phase's last and the phase ran to its step cap
    /// (it did not stop early): the run may not have converged.
    pub at_cap: bool,
}

impl Outcome {
    /// An outcome chosen before the cap.
    pub fn new(val: f64, test: f64) -> Outcome {
        Outcome { val, test, at_cap: false }
    }

    /// The choice key: validation loss, or the reported loss without one.
    fn key(&self) -> f64 {
        if self.val.is_nan() {
            self.test
        } else {
            self.val
        }
    }
}

/// One prompt run of a count's ensemble.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct PromptRun {
    pub restart: usize,
    pub lr: f64,
    pub outcome: Outcome,
}

/// The ensemble of one token count.
#[derive(Clone, Debug, PartialEq)]
pub struct CountStats {
    pub tokens: usize,
    /// Every finished run.
    pub runs: Vec<PromptRun>,
    /// The reported loss of the run with the lowest validation loss (the count's point on
    /// the curve), and that run's learning rate.
    pub best: f64,
    pub best_lr: f64,
    /// The lowest reported loss of any run (the ensemble band's lower end; chosen on the
    /// reported set, so optimistic), the mean, and the highest.
    pub lowest: f64,
    pub mean: f64,
    pub worst: f64,
    /// The chosen learning rate is an end of the grid (or the grid has fewer than 3 rates).
    pub lr_at_edge: bool,
    /// The count may be under-tuned for want of a wider grid: the chosen rate is an end and
    /// the validation loss falls towards it across the whole grid (each rate's best run
    /// better than the next rate inward), or some rate has no finished run, or the grid has
    /// fewer than 3 rates. An end chosen where the losses do not fall towards it is a flat
    /// landscape read through noise.
    pub lr_under_tuned: bool,
    /// The validation loss a grid twice as wide on the chosen end's side could reach, were
    /// the last grid step's gain repeated at every added step (an upper estimate when gains
    /// diminish); `None` when it cannot be estimated (a rate missing, fewer than 3 rates),
    /// which refuses whatever the bound; the chosen validation loss when not
    /// [`lr_under_tuned`](Self::lr_under_tuned).
    pub lr_reach: Option<f64>,
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
    /// Refused: this count, which the distance would rule out, had its chosen learning rate
    /// at an end of the grid with the loss falling towards it, so it may only be under-tuned.
    Refused(usize),
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
    /// The run seed of the point's cells (the base model's seed) and, for a `repeat`
    /// behavior, its string's length (set by [`analyse`]).
    pub seed: u64,
    pub string_len: Option<usize>,
    /// Counts in increasing order.
    pub counts: Vec<CountStats>,
    /// The conditional prompts' counts (`[distance.conditional]`; empty otherwise), with the
    /// frozen model as their 0.
    pub cond_counts: Vec<CountStats>,
    /// Saturation by full-weight and LoRA fine-tuning: the reported loss of the run (over
    /// learning rates) and step with the lowest validation loss.
    pub s_full: Option<f64>,
    pub s_lora: Option<f64>,
    /// Conditioned fine-tuning's loss (saturation kind `"conditioned"`): the conditional
    /// prompts' saturation, never the unconditional ones'.
    pub s_conditioned: Option<f64>,
    /// Why `S` may not be converged (empty: every chosen fine-tuning run stopped early).
    pub s_concerns: Vec<String>,
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
/// learning rates disagree, `lrs` the grid, `fewer` the chosen loss of any smaller count.
pub fn count_stats(tokens: usize, runs: Vec<PromptRun>, lrs: &[f64], tolerance: f64, fewer: Option<f64>) -> CountStats {
    let chosen = runs.iter().min_by(|a, b| a.outcome.key().total_cmp(&b.outcome.key())).copied();
    let (best, best_lr) = chosen.map_or((f64::NAN, f64::NAN), |r| (r.outcome.test, r.lr));
    let tests: Vec<f64> = runs.iter().map(|r| r.outcome.test).collect();
    let lowest = tests.iter().copied().fold(f64::INFINITY, f64::min);
    let worst = tests.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    let mean = tests.iter().sum::<f64>() / tests.len().max(1) as f64;
    let (lo, hi) = (lrs.iter().copied().fold(f64::INFINITY, f64::min), lrs.iter().copied().fold(0.0, f64::max));
    let lr_at_edge = tokens > 0 && (lrs.len() < 3 || best_lr == lo || best_lr == hi);
    let falls = (lrs.len() >= 3).then(|| falls_towards(&runs, lrs, best_lr == hi)).flatten();
    let lr_under_tuned = lr_at_edge && falls.is_none_or(|gain| gain.is_some());
    let chosen_val = chosen.map_or(f64::NAN, |r| r.outcome.key());
    let lr_reach = match (lr_under_tuned, falls) {
        (false, _) => Some(chosen_val),
        (true, Some(Some(gain))) => Some(chosen_val - gain * (lrs.len() - 1) as f64),
        (true, _) => None,
    };
    let mut concerns = Vec::new();
    if runs.iter().any(|r| r.outcome.val.is_nan()) {
        concerns.push("no validation loss: chosen on the reported set".into());
    }
    if worst - lowest > tolerance {
        concerns.push(format!("restarts and learning rates disagree by {:.3}", worst - lowest));
    }
    if tokens > 0 && lrs.len() < 3 {
        concerns.push("fewer than 3 learning rates: no interior rate".into());
    } else if lr_at_edge {
        let end = if best_lr == hi { "largest" } else { "smallest" };
        let trend = if lr_under_tuned {
            match lr_reach {
                None => "and a rate of the grid has no finished run".to_string(),
                Some(reach) => format!("and the loss falls towards it (a grid twice as wide might reach {reach:.3})"),
            }
        } else {
            "but the loss does not fall towards it".into()
        };
        concerns.push(format!("the chosen learning rate is the grid's {end} {trend}"));
    }
    if fewer.is_some_and(|f| best > f + tolerance) {
        concerns.push("worse than a shorter prompt: under-tuned".into());
    }
    if runs.iter().any(|r| r.outcome.at_cap) && chosen.is_some_and(|r| r.outcome.at_cap) {
        concerns.push("still improving at its last evaluation".into());
    }
    CountStats { tokens, runs, best, best_lr, lowest, mean, worst, lr_at_edge, lr_under_tuned, lr_reach, concerns }
}

/// Whether each rate's lowest validation loss is below the next rate's inward from the chosen
/// end (`upward`: the largest rate), across the whole grid: `Some(Some(gain))` with the
/// gain of the grid's last step towards the end when it is, `Some(None)` when not, `None`
/// when a rate has no run.
fn falls_towards(runs: &[PromptRun], lrs: &[f64], upward: bool) -> Option<Option<f64>> {
    let mut sorted = lrs.to_vec();
    sorted.sort_by(f64::total_cmp);
    if upward {
        sorted.reverse();
    }
    let best_of = |lr: f64| runs.iter().filter(|r| r.lr == lr).map(|r| r.outcome.key()).reduce(f64::min);
    let losses = sorted.iter().map(|&lr| best_of(lr)).collect::<Option<Vec<f64>>>()?;
    Some(losses.windows(2).all(|w| w[0] < w[1]).then(|| losses[1] - losses[0]))
}

/// An arm's evaluated task, seed, string length and its cells' outcomes.
type ArmRuns = (String, u64, Option<usize>, Vec<(Variant, Outcome)>);

/// Reads every cell's final held-out loss from the experiment's store and analyses them.
pub fn analyse(spec: &DistanceSpec, exp: &Experiment) -> Result<DistanceAnalysis> {
    let store = Store::open(&exp.db())?;
    let mut groups: BTreeMap<(String, Arm), ArmRuns> = BTreeMap::new();
    let mut missing = Vec::new();
    for cell in &exp.cells {
        let Some(variant) = variant_of(cell) else { continue };
        let task = cell.config.phases.last().and_then(|p| p.eval.tasks.first()).cloned().unwrap_or_default();
        let string_len = cell.config.tasks.iter().find(|t| t.name == spec.behavior).and_then(|t| match &t.kind {
            Kind::Repeat(r) => Some(r.spec.string.len()),
            _ => None,
        });
        let entry = groups
            .entry((point_name(cell), variant.arm))
            .or_insert_with(|| (task.clone(), cell.config.seed, string_len, Vec::new()));
        match finished_rows(&store, cell)? {
            Ok(rows) => match outcome(&rows, &task, phase_index(cell), phase_steps(cell)) {
                Some(o) => entry.3.push((variant, o)),
                None => missing.push((cell.id.clone(), "no held-out loss".into())),
            },
            Err(status) => missing.push((cell.id.clone(), status)),
        }
    }
    let arms = groups
        .into_iter()
        .map(|((point, arm), (task, seed, string_len, runs))| ArmResult {
            seed,
            string_len,
            ..arm_result(spec, point, arm, task, &runs)
        })
        .collect();
    Ok(DistanceAnalysis { spec: spec.clone(), arms, missing })
}

/// The curve, saturation and distance of one arm from its cells' outcomes.
pub fn arm_result(
    spec: &DistanceSpec,
    point: String,
    arm: Arm,
    task: String,
    runs: &[(Variant, Outcome)],
) -> ArmResult {
    let mut by_count: BTreeMap<usize, Vec<PromptRun>> = BTreeMap::new();
    let mut by_cond_count: BTreeMap<usize, Vec<PromptRun>> = BTreeMap::new();
    let (mut full, mut lora, mut told) = (None::<Outcome>, None::<Outcome>, None::<Outcome>);
    let better = |slot: &mut Option<Outcome>, o: Outcome| {
        if slot.is_none_or(|s| o.key() < s.key()) {
            *slot = Some(o);
        }
    };
    for &(v, outcome) in runs {
        match v.tuning {
            Tuning::Frozen => {
                let run = PromptRun { restart: 0, lr: 0.0, outcome };
                by_count.entry(0).or_default().push(run);
                by_cond_count.entry(0).or_default().push(run);
            }
            Tuning::Prompt { tokens, restart, lr } => {
                by_count.entry(tokens).or_default().push(PromptRun { restart, lr, outcome })
            }
            Tuning::CondPrompt { tokens, restart, lr } => {
                by_cond_count.entry(tokens).or_default().push(PromptRun { restart, lr, outcome })
            }
            Tuning::Full { .. } => better(&mut full, outcome),
            Tuning::Lora { .. } => better(&mut lora, outcome),
            Tuning::Conditioned { .. } => better(&mut told, outcome),
        }
    }
    let (s_full, s_lora) = (full.map(|o| o.test), lora.map(|o| o.test));
    let chosen = [full, lora].into_iter().flatten().min_by(|a, b| a.key().total_cmp(&b.key()));
    let s = chosen.map(|o| o.test);
    let mut s_concerns = Vec::new();
    if chosen.is_some_and(|o| o.at_cap) {
        s_concerns
            .push("the chosen fine-tuning run was still improving at its step cap: S may not be converged".into());
    }
    if chosen.is_some_and(|o| o.val.is_nan()) {
        s_concerns.push("no validation loss: S chosen on the reported set".into());
    }
    let (counts, distance) = curve_of(spec, by_count, s);
    let (cond_counts, cond_distance) = match spec.conditional {
        Some(_) => {
            // Conditional prompts saturate at conditioned fine-tuning where it ran: a model
            // told each sample's condition, as the conditional prompt is.
            let (c, d) = curve_of(spec, by_cond_count, told.map(|o| o.test).or(s));
            (c, Some(d))
        }
        None => (Vec::new(), None),
    };
    ArmResult {
        point,
        arm,
        task,
        seed: 0,
        string_len: None,
        counts,
        cond_counts,
        s_full,
        s_lora,
        s_conditioned: told.map(|o| o.test),
        s_concerns,
        distance,
        cond_distance,
    }
}

/// The per-count ensembles of one prompt kind and its distance against saturation `s`.
fn curve_of(
    spec: &DistanceSpec,
    by_count: BTreeMap<usize, Vec<PromptRun>>,
    s: Option<f64>,
) -> (Vec<CountStats>, Distance) {
    let l0 = by_count.get(&0).and_then(|runs| runs.first()).map(|r| r.outcome.test);
    let epsilon = l0.map_or(f64::INFINITY, |l0| tolerance(spec.epsilon_rel, l0, s));
    let mut counts: Vec<CountStats> = Vec::new();
    for (tokens, runs) in by_count {
        let fewer = counts.iter().map(|c| c.best).reduce(f64::min);
        counts.push(count_stats(tokens, runs, &spec.lrs, epsilon, fewer));
    }
    let curve: Vec<(usize, f64)> = counts.iter().map(|c| (c.tokens, c.best)).collect();
    let bound = s.map_or(f64::INFINITY, |s| s + epsilon);
    let distance = refuse_at_edges(conditional_distance(&curve, s, spec.epsilon_rel), &counts, bound);
    (counts, distance)
}

/// `distance`, or [`Distance::Refused`] at the first count it rules out (below a reached
/// count, or any count beyond) that may be under-tuned for want of a wider learning-rate grid
/// ([`CountStats::lr_under_tuned`]) by enough that a wider grid might bring it within `bound`
/// (`S + ε`; [`CountStats::lr_reach`]).
pub fn refuse_at_edges(distance: Distance, counts: &[CountStats], bound: f64) -> Distance {
    let ruled_out = |c: &&CountStats| match distance {
        Distance::Reached(n) => c.tokens < n,
        Distance::Beyond(_) => true,
        Distance::Refused(_) | Distance::Unknown => false,
    };
    match counts.iter().filter(ruled_out).find(|c| c.lr_under_tuned && c.lr_reach.is_none_or(|r| r <= bound)) {
        Some(c) => Distance::Refused(c.tokens),
        None => distance,
    }
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

/// The evaluation a run of phase `phase` on `task` is judged at: the one with the lowest
/// `val_loss` (the earliest of ties; the last evaluation when none logged one).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Chosen {
    /// The evaluation's step.
    pub step: u64,
    /// The phase's last evaluation step.
    pub last: u64,
    /// Validation loss there (NaN when the run logged none).
    pub val: f64,
    /// Reported loss there.
    pub test: f64,
}

/// The chosen evaluation of `task` in phase `phase` (None when it logged no reported loss).
pub fn chosen_evaluation(rows: &[MetricRow], task: &str, phase: u32) -> Option<Chosen> {
    let of = |metric: &str| -> BTreeMap<u64, f64> {
        rows.iter()
            .filter(|r| r.phase == phase && r.task == task && r.metric == metric && r.value.is_finite())
            .map(|r| (r.step, r.value))
            .collect()
    };
    let (test, val) = (of("loss"), of("val_loss"));
    let last = *test.keys().next_back()?;
    let chosen = val.iter().filter(|(s, _)| test.contains_key(s)).min_by(|a, b| a.1.total_cmp(b.1));
    let (step, val) = chosen.map_or((last, f64::NAN), |(s, v)| (*s, *v));
    Some(Chosen { step, last, val, test: test[&step] })
}

/// The outcome of a run of a `steps`-step phase `phase` on `task`, at its chosen evaluation.
pub fn outcome(rows: &[MetricRow], task: &str, phase: u32, steps: u64) -> Option<Outcome> {
    let c = chosen_evaluation(rows, task, phase)?;
    Some(Outcome { val: c.val, test: c.test, at_cap: c.step == c.last && c.last >= steps && steps > 1 })
}

/// The step cap of a cell's measurement phase.
fn phase_steps(cell: &Cell) -> u64 {
    cell.config.phases.get(phase_index(cell) as usize).map_or(0, |p| p.steps)
}
