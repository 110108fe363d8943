//! Whether conditional soft prompts follow pathfinding conditions (`[distance.conditional]`):
//! per sweep point, arm and tuning (the frozen model, unconditional and conditional prompts
//! per count, fine-tuning), the final metrics of the best run on every evaluated condition —
//! loss, and the mean extra and invalid moves of sampled paths against the requested ones —
//! and, per count, the verdict of conditional against unconditional prompts on the held-out
//! conditions, which the conditional prompts never trained on.

use super::analysis::{chosen_evaluation, phase_index, point_name, variant_of};
use super::{Arm, Conditional, DistanceSpec, Tuning};
use crate::analysis::scaling::slope_only;
use crate::analysis::{mean_interval, BootstrapConfig, Interval};
use crate::lab::experiment::Experiment;
use crate::lab::pooling::{finished_rows, seed_interval};
use crate::report::Table;
use crate::store::{read_sample_scores, Store};
use crate::train::step_loop::sample_scores_path;
use anyhow::Result;
use std::collections::BTreeMap;
use std::path::Path;

/// The metrics of one tuning on one evaluated condition.
#[derive(Clone, Debug, PartialEq)]
pub struct ConditionResult {
    /// `(extra_moves, invalid_moves)` asked for.
    pub condition: [i64; 2],
    pub held_out: bool,
    /// Held out beyond the training conditions' range (`train_max_extra`).
    pub extrapolated: bool,
    pub loss: f64,
    /// The fraction of sampled paths that reach the target.
    pub reached: f64,
    /// Means over the sampled paths (extra moves: over those that reach the target; NaN when
    /// none does).
    pub extra: f64,
    pub invalid: f64,
    /// Mean absolute differences from the requested condition (extra moves: reached paths).
    pub extra_gap: f64,
    pub invalid_gap: f64,
    /// 95% intervals over the sampled paths (percentile bootstrap of the mean from 8 paths,
    /// t below) of the reach rate and the mean extra and invalid moves, from the per-sample
    /// scores the evaluation stored; `None` where there are none.
    pub reached_ci: Option<(f64, f64)>,
    pub extra_ci: Option<(f64, f64)>,
    pub invalid_ci: Option<(f64, f64)>,
}

/// What a cell's measurement phase trained, for grouping.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Kind {
    Frozen,
    Soft(usize),
    Cond(usize),
    Full,
    Lora,
    /// Conditioned fine-tuning: the model is told the condition.
    Conditioned,
}

impl Kind {
    fn of(t: Tuning) -> Kind {
        match t {
            Tuning::Frozen => Kind::Frozen,
            Tuning::Prompt { tokens, .. } => Kind::Soft(tokens),
            Tuning::CondPrompt { tokens, .. } => Kind::Cond(tokens),
            Tuning::Full { .. } => Kind::Full,
            Tuning::Lora { .. } => Kind::Lora,
            Tuning::Conditioned { .. } => Kind::Conditioned,
        }
    }

    /// `frozen`, `soft 16`, `cond 16`, `full`, `lora`.
    pub fn name(self) -> String {
        match self {
            Kind::Frozen => "frozen".into(),
            Kind::Soft(n) => format!("soft {n}"),
            Kind::Cond(n) => format!("cond {n}"),
            Kind::Full => "full".into(),
            Kind::Lora => "lora".into(),
            Kind::Conditioned => "conditioned ft".into(),
        }
    }
}

/// The chosen run (lowest validation loss on the prompts' training task, or lowest reported
/// loss without one) of one tuning, read at its evaluation with that validation loss.
#[derive(Clone, Debug)]
pub struct TuningResult {
    pub point: String,
    pub arm: Arm,
    pub kind: Kind,
    /// Its loss on the training conditions' held-out boards.
    pub loss: f64,
    pub conditions: Vec<ConditionResult>,
}

impl TuningResult {
    /// Means over the held-out (or seen) conditions of the loss, the per-path gap
    /// `|extra gap| + |invalid gap|`, and the error of the means `|mean extra − extra| +
    /// |mean invalid − invalid|` (which per-path sampling noise does not inflate).
    pub fn mean_over(&self, held_out: bool) -> Option<Means> {
        self.means_where(|c| c.held_out == held_out)
    }

    /// [`TuningResult::mean_over`] on the conditions `pick` keeps (`None` when it keeps none).
    pub fn means_where(&self, pick: impl Fn(&ConditionResult) -> bool) -> Option<Means> {
        let picked: Vec<&ConditionResult> = self.conditions.iter().filter(|c| pick(c)).collect();
        let n = picked.len() as f64;
        let mean = |f: &dyn Fn(&ConditionResult) -> f64| picked.iter().map(|c| f(c)).sum::<f64>() / n;
        (n > 0.0).then(|| Means {
            loss: mean(&|c| c.loss),
            gap: mean(&|c| c.extra_gap + c.invalid_gap),
            error: mean(&|c| (c.extra - c.condition[0] as f64).abs() + (c.invalid - c.condition[1] as f64).abs()),
            reached: mean(&|c| c.reached),
        })
    }

    /// Least-squares slope of the mean generated extra moves against the requested ones over
    /// every evaluated condition: near 1 when the condition is followed, near 0 when ignored.
    pub fn extra_slope(&self) -> Option<f64> {
        let x: Vec<f64> = self.conditions.iter().map(|c| c.condition[0] as f64).collect();
        let y: Vec<f64> = self.conditions.iter().map(|c| c.extra).collect();
        slope_only(&x, &y)
    }
}

/// A tuning's means over a set of conditions (see [`TuningResult::mean_over`]).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Means {
    pub loss: f64,
    pub gap: f64,
    pub error: f64,
    /// The fraction of sampled paths that reach the target.
    pub reached: f64,
}

/// One arm's tuning over the base seeds (the sweep's points): 95% t-intervals of its
/// per-seed figures, each over the seeds where it is defined.
#[derive(Clone, Debug)]
pub struct OverSeeds {
    pub arm: Arm,
    pub kind: Kind,
    /// The seeds that ran it.
    pub seeds: usize,
    /// Extra-move slope over every evaluated condition ([`TuningResult::extra_slope`]).
    pub slope: Option<Interval>,
    /// A conditional prompt's slope minus the unconditional prompt's of the same length and
    /// seed (paired by seed): what the condition adds.
    pub slope_gain: Option<Interval>,
    /// Error of the mean moves on the held-out conditions, and on the extrapolated ones only.
    pub held_out_error: Option<Interval>,
    pub extrapolated_error: Option<Interval>,
    /// Per-path gap and reach rate on the held-out conditions.
    pub held_out_gap: Option<Interval>,
    pub held_out_reached: Option<Interval>,
}

/// Confidence level of the intervals over seeds.
const SEED_LEVEL: f64 = 0.95;

/// Per arm and tuning, its figures over the base seeds (the points of the sweep).
pub fn over_seeds(tunings: &[TuningResult]) -> Vec<OverSeeds> {
    let mut groups: BTreeMap<(Arm, Kind), Vec<&TuningResult>> = BTreeMap::new();
    for t in tunings {
        groups.entry((t.arm, t.kind)).or_default().push(t);
    }
    // Clipped to the figure's range: errors and gaps are ≥ 0, a reach rate lies in [0, 1].
    let of = |runs: &[&TuningResult], (lo, hi): (f64, f64), f: &dyn Fn(&TuningResult) -> Option<f64>| {
        let finite: Vec<f64> = runs.iter().filter_map(|t| f(t)).filter(|v| v.is_finite()).collect();
        seed_interval(&finite, SEED_LEVEL, lo, hi)
    };
    let (any, positive, rate) = ((f64::NEG_INFINITY, f64::INFINITY), (0.0, f64::INFINITY), (0.0, 1.0));
    groups
        .iter()
        .map(|(&(arm, kind), runs)| {
            let unconditional = |t: &TuningResult| match kind {
                Kind::Cond(n) => groups.get(&(arm, Kind::Soft(n)))?.iter().find(|s| s.point == t.point).copied(),
                _ => None,
            };
            OverSeeds {
                arm,
                kind,
                seeds: runs.len(),
                slope: of(runs, any, &|t| t.extra_slope()),
                slope_gain: of(runs, any, &|t| Some(t.extra_slope()? - unconditional(t)?.extra_slope()?)),
                held_out_error: of(runs, positive, &|t| t.mean_over(true).map(|m| m.error)),
                extrapolated_error: of(runs, positive, &|t| t.means_where(|c| c.extrapolated).map(|m| m.error)),
                held_out_gap: of(runs, positive, &|t| t.mean_over(true).map(|m| m.gap)),
                held_out_reached: of(runs, rate, &|t| t.mean_over(true).map(|m| m.reached)),
            }
        })
        .collect()
}

/// One row per arm and tuning: [`over_seeds`].
pub fn over_seeds_table(rows: &[OverSeeds]) -> Table {
    let header = [
        "arm",
        "tuning",
        "extra slope",
        "slope − soft's (paired)",
        "held-out error of mean moves",
        "extrapolated error",
        "held-out per-path gap",
        "held-out reach",
    ]
    .map(String::from)
    .to_vec();
    let rows = rows
        .iter()
        .map(|r| {
            // The seeds behind a figure, where fewer than ran the tuning define it.
            let show = |i: &Option<Interval>| match i {
                None => "-".to_string(),
                Some(i) if i.n < r.seeds => format!("{:.2} [{:.2}, {:.2}] (n={})", i.value, i.lo, i.hi, i.n),
                Some(i) => format!("{:.2} [{:.2}, {:.2}]", i.value, i.lo, i.hi),
            };
            let cells = [&r.slope, &r.slope_gain, &r.held_out_error, &r.extrapolated_error, &r.held_out_gap];
            let mut row = vec![r.arm.name().into(), r.kind.name()];
            row.extend(cells.into_iter().map(show));
            row.push(show(&r.held_out_reached));
            row
        })
        .collect();
    Table {
        caption: format!(
            "Over base seeds: mean and {:.0}% t-interval over the seeds, clipped to the figure's range (n: the \
             seeds that define a figure, where fewer than ran the tuning; no interval below 2) of each tuning's \
             extra-move slope, a conditional prompt's slope minus the unconditional prompt's of the same length \
             and seed, the error of its mean moves on the held-out and on the extrapolated conditions, its \
             per-path gap and reach rate on the held-out conditions",
            SEED_LEVEL * 100.0
        ),
        header,
        rows,
    }
}

/// Conditional against unconditional prompts of one count on the held-out conditions.
#[derive(Clone, Debug)]
pub struct Verdict {
    pub point: String,
    pub arm: Arm,
    pub tokens: usize,
    /// Means over the held-out conditions.
    pub soft: Means,
    pub cond: Means,
    pub soft_slope: Option<f64>,
    pub cond_slope: Option<f64>,
    /// Conditioned fine-tuning's means and slope (the model told the condition), where it ran.
    pub told: Option<(Means, Option<f64>)>,
    /// The conditional prompt has the lower held-out loss and its mean moves are nearer the
    /// requested ones.
    pub follows_on_average: bool,
    /// ... and its paths are also nearer one by one (the lower per-path gap).
    pub follows_per_path: bool,
}

/// The conditional study's results.
#[derive(Clone, Debug, Default)]
pub struct CondAnalysis {
    pub tunings: Vec<TuningResult>,
    pub verdicts: Vec<Verdict>,
}

/// Reads every cell's per-condition metrics at its chosen evaluation (empty without
/// `[distance.conditional]`).
pub fn analyse(spec: &DistanceSpec, exp: &Experiment) -> Result<CondAnalysis> {
    let Some(c) = &spec.conditional else { return Ok(CondAnalysis::default()) };
    let store = Store::open(&exp.db())?;
    let mut best: BTreeMap<(String, Arm, Kind), (f64, TuningResult)> = BTreeMap::new();
    for cell in &exp.cells {
        let Some(variant) = variant_of(cell) else { continue };
        let Ok(rows) = finished_rows(&store, cell)? else { continue };
        let phase = phase_index(cell);
        let prompt_task = Conditional::prompt_task(&spec.behavior);
        // Every figure at the evaluation the run is judged at (the lowest validation loss on
        // the prompt task, as the distance table's), so a fine-tuning run stopped early is not
        // read at the evaluations after its best; runs are chosen by that validation loss, so
        // the choice is not made on the reported samples.
        let Some(chosen) = chosen_evaluation(&rows, &prompt_task, phase) else { continue };
        let (loss, step) = (chosen.test, chosen.step);
        let select = if chosen.val.is_nan() { loss } else { chosen.val };
        // A metric that evaluation does not define (the extra moves when no path reached the
        // target) is NaN, not another evaluation's value.
        let metric = |task: &str, m: &str| {
            let at = rows.iter().find(|r| r.step == step && r.phase == phase && r.task == task && r.metric == m);
            at.map_or(f64::NAN, |r| r.value)
        };
        let dir = exp.cells_dir().join(&cell.id);
        let interval = |task: &str, m: &str| sample_interval(&sample_scores_path(&dir, phase, step, task), m);
        let conditions = c
            .evaluated()
            .into_iter()
            .map(|(condition, held_out)| {
                let task = Conditional::task_name(&spec.behavior, condition);
                ConditionResult {
                    condition,
                    held_out,
                    extrapolated: c.extrapolated(condition),
                    loss: metric(&task, "loss"),
                    reached: metric(&task, "reached_target"),
                    extra: metric(&task, "extra_moves"),
                    invalid: metric(&task, "invalid_moves"),
                    extra_gap: metric(&task, "extra_moves_gap"),
                    invalid_gap: metric(&task, "invalid_moves_gap"),
                    reached_ci: interval(&task, "reached_target"),
                    extra_ci: interval(&task, "extra_moves"),
                    invalid_ci: interval(&task, "invalid_moves"),
                }
            })
            .collect();
        let kind = Kind::of(variant.tuning);
        let result = TuningResult { point: point_name(cell), arm: variant.arm, kind, loss, conditions };
        let key = (result.point.clone(), variant.arm, kind);
        if best.get(&key).is_none_or(|(b, _)| select < *b) {
            best.insert(key, (select, result));
        }
    }
    let tunings: Vec<TuningResult> = best.into_values().map(|(_, t)| t).collect();
    Ok(CondAnalysis { verdicts: verdicts(&tunings), tunings })
}

/// Per point, arm and count: conditional against unconditional prompts.
pub fn verdicts(tunings: &[TuningResult]) -> Vec<Verdict> {
    let mut out = Vec::new();
    for cond in tunings {
        let Kind::Cond(n) = cond.kind else { continue };
        let beside = |kind: Kind| tunings.iter().find(|t| t.point == cond.point && t.arm == cond.arm && t.kind == kind);
        let (Some(soft), Some(c)) = (beside(Kind::Soft(n)), cond.mean_over(true)) else { continue };
        let Some(s) = soft.mean_over(true) else { continue };
        let told = beside(Kind::Conditioned);
        out.push(Verdict {
            told: told.and_then(|t| Some((t.mean_over(true)?, t.extra_slope()))),
            point: cond.point.clone(),
            arm: cond.arm,
            tokens: n,
            soft: s,
            cond: c,
            soft_slope: soft.extra_slope(),
            cond_slope: cond.extra_slope(),
            follows_on_average: c.loss < s.loss && c.error < s.error,
            follows_per_path: c.loss < s.loss && c.error < s.error && c.gap < s.gap,
        });
    }
    out
}

/// One row per point, arm and count: the verdict.
pub fn verdict_table(a: &CondAnalysis) -> Table {
    let header = [
        "point",
        "arm",
        "tokens",
        "held-out loss soft / cond",
        "error of mean moves soft / cond",
        "per-path |gap| soft / cond",
        "extra slope soft / cond",
        "follows held-out conditions",
        "conditioned ft: loss, error, gap, slope",
    ]
    .map(String::from)
    .to_vec();
    let slope = |s: Option<f64>| s.map_or("-".to_string(), |v| format!("{v:.2}"));
    let rows = a
        .verdicts
        .iter()
        .map(|v| {
            vec![
                v.point.clone(),
                v.arm.name().into(),
                v.tokens.to_string(),
                format!("{:.4} / {:.4}", v.soft.loss, v.cond.loss),
                format!("{:.2} / {:.2}", v.soft.error, v.cond.error),
                format!("{:.2} / {:.2}", v.soft.gap, v.cond.gap),
                format!("{} / {}", slope(v.soft_slope), slope(v.cond_slope)),
                match (v.follows_on_average, v.follows_per_path) {
                    (true, true) => "yes, per path too".into(),
                    (true, false) => "on average, not per path".into(),
                    _ => "no".into(),
                },
                v.told.map_or("-".into(), |(m, sl)| {
                    format!("{:.4}, {:.2}, {:.2}, {}", m.loss, m.error, m.gap, slope(sl))
                }),
            ]
        })
        .collect();
    Table {
        caption: "Conditional versus unconditional prompts of the same length on the held-out conditions (means \
                  over them): loss; |mean extra − requested| + |mean invalid − requested|; the per-path |extra \
                  gap| + |invalid gap| of sampled paths; and the slope of mean generated against requested extra \
                  moves over every evaluated condition. A prompt follows on average with the lower loss and the \
                  lower error of its means, per path when its per-path gap is lower too. The last column is the \
                  ceiling: full fine-tuning on boards that state their condition (the same boards, told)"
            .into(),
        header,
        rows,
    }
}

/// The 95% interval of the mean of `metric` over the samples that define it in the
/// per-sample scores file `path` (see [`sample_scores_path`]), or `None` without the file,
/// the column or two defined values.
pub fn sample_interval(path: &Path, metric: &str) -> Option<(f64, f64)> {
    let columns = read_sample_scores(path).ok()?;
    let (_, column) = columns.into_iter().find(|(m, _)| m == metric)?;
    let values: Vec<f64> = column.into_iter().filter(|v| v.is_finite()).collect();
    let config = BootstrapConfig { n_resamples: 2000, level: 0.95, seed: 0 };
    mean_interval(&values, &config).ok().map(|i| (i.lo, i.hi))
}

/// A mean with its interval, or the mean alone.
fn with_interval(mean: f64, ci: Option<(f64, f64)>) -> String {
    match ci {
        Some((lo, hi)) => format!("{mean:.2} [{lo:.2}, {hi:.2}]"),
        None => format!("{mean:.2}"),
    }
}

/// One row per point, arm, tuning and evaluated condition.
pub fn condition_table(a: &CondAnalysis) -> Table {
    let header = [
        "point",
        "arm",
        "tuning",
        "condition (extra, invalid)",
        "set",
        "loss",
        "reached",
        "mean extra",
        "mean invalid",
        "|extra gap|",
        "|invalid gap|",
    ]
    .map(String::from)
    .to_vec();
    let mut rows = Vec::new();
    for t in &a.tunings {
        for c in &t.conditions {
            rows.push(vec![
                t.point.clone(),
                t.arm.name().into(),
                t.kind.name(),
                format!("({}, {})", c.condition[0], c.condition[1]),
                match (c.held_out, c.extrapolated) {
                    (true, true) => "held out, extrapolated".into(),
                    (true, false) => "held out".into(),
                    _ => "seen".into(),
                },
                format!("{:.4}", c.loss),
                with_interval(c.reached, c.reached_ci),
                with_interval(c.extra, c.extra_ci),
                with_interval(c.invalid, c.invalid_ci),
                format!("{:.2}", c.extra_gap),
                format!("{:.2}", c.invalid_gap),
            ]);
        }
    }
    Table {
        caption: "Per evaluated condition: the chosen run of each tuning (by validation loss on the training \
                  conditions), its held-out loss on boards whose path has that condition, the fraction of its \
                  sampled paths that reach the target, and their mean extra (reached paths) and invalid moves, \
                  with 95% intervals over the sampled paths"
            .into(),
        header,
        rows,
    }
}
