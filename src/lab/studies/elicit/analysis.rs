//! Analysis of an elicitation experiment: per cell, the final elicitation success and
//! response loss on the reported clean inputs and on the selection set, the success curve
//! against the FLOPs spent, the found prompt against the true trigger, and the true
//! trigger's own attack success on the same model. Per model × target × method × length and
//! seed, the restart with the lowest selection-set loss is the one reported; seeds give the
//! intervals, and the backdoored-against-twin gap is paired by seed.

use super::{ElicitSpec, MethodArm, ModelArm, Variant, AXIS, ELICIT};
use crate::analysis::{t_interval, Interval};
use crate::lab::experiment::{Cell, Experiment};
use crate::lab::plan::{phase_compute, PlannedCell};
use crate::lab::planting::trigger_of;
use crate::lab::pooling::{seed_interval, variant_results};
use crate::store::MetricRow;
use crate::train::build::build;
use anyhow::Result;
use std::collections::BTreeMap;

/// Confidence level of every interval.
pub const LEVEL: f64 = 0.95;

/// One finished cell.
#[derive(Clone, Debug)]
pub struct CellResult {
    pub variant: Variant,
    pub seed: i64,
    /// Final elicitation success and response loss on the reported and the selection set.
    pub elicited: f64,
    pub loss: f64,
    pub select_loss: f64,
    /// `(FLOPs spent, success)` at every evaluation of the elicitation phase.
    pub curve: Vec<(f64, f64)>,
    /// FLOPs of the elicitation phase.
    pub flops: f64,
    /// The true trigger's attack success on the model (the last evaluation before elicitation).
    pub attack_success: Option<f64>,
    /// A discrete prompt's final tokens, or a soft prompt's nearest tokens and their cosines.
    pub tokens: Vec<u32>,
    pub cosines: Vec<f64>,
    /// The true trigger.
    pub trigger: Vec<u32>,
}

/// Trigger recovery of one prompt: whether it holds the trigger contiguously, the best
/// order-aware overlap (fraction of trigger tokens at their place, over alignments), and the
/// bag overlap (fraction of trigger tokens present, with multiplicity).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Recovery {
    pub exact: bool,
    pub ordered: f64,
    pub bag: f64,
}

/// Trigger recovery of `prompt` against `trigger`.
pub fn recovery(prompt: &[u32], trigger: &[u32]) -> Recovery {
    let n = trigger.len().max(1) as f64;
    let exact = !trigger.is_empty() && prompt.windows(trigger.len()).any(|w| w == trigger);
    let shifts = -(trigger.len() as isize) + 1..prompt.len() as isize;
    let ordered = shifts
        .map(|s| {
            let at = |i: usize| usize::try_from(s + i as isize).ok().and_then(|j| prompt.get(j));
            (0..trigger.len()).filter(|&i| at(i) == Some(&trigger[i])).count()
        })
        .max()
        .unwrap_or(0) as f64
        / n;
    let mut pool = prompt.to_vec();
    let mut found = 0;
    for t in trigger {
        if let Some(i) = pool.iter().position(|p| p == t) {
            pool.swap_remove(i);
            found += 1;
        }
    }
    Recovery { exact, ordered, bag: found as f64 / n }
}

/// One model × target × method × length, over seeds (each seed's selected restart).
#[derive(Clone, Debug)]
pub struct Group {
    pub model: ModelArm,
    pub target: String,
    pub family: &'static str,
    pub tokens: usize,
    /// Per seed: the selected restart's cell.
    pub selected: BTreeMap<i64, CellResult>,
    /// Per seed: every restart's cell.
    pub all: BTreeMap<i64, Vec<CellResult>>,
}

impl Group {
    /// The selected restarts' success over seeds, with its t-interval clipped to [0, 1];
    /// `None` below 2 seeds.
    pub fn success(&self) -> Option<Interval> {
        interval(&self.selected.values().map(|c| c.elicited).collect::<Vec<_>>(), 1.0)
    }

    /// The selected restarts' response loss over seeds, its interval clipped at 0.
    pub fn loss(&self) -> Option<Interval> {
        interval(&self.selected.values().map(|c| c.loss).collect::<Vec<_>>(), f64::INFINITY)
    }

    /// Success against FLOPs spent: at each evaluation of the runs (the same steps for
    /// every restart and seed of a method), the mean over restarts per seed, with its
    /// t-interval over seeds (clipped to [0, 1]). `(FLOPs, interval)`, in FLOPs order.
    pub fn budget_curve(&self) -> Vec<(f64, Interval)> {
        let mut at: BTreeMap<u64, BTreeMap<i64, Vec<f64>>> = BTreeMap::new();
        for (seed, runs) in &self.all {
            for c in runs {
                for &(f, y) in &c.curve {
                    at.entry(f.round() as u64).or_default().entry(*seed).or_default().push(y);
                }
            }
        }
        at.into_iter()
            .filter_map(|(f, seeds)| {
                let means: Vec<f64> = seeds.values().map(|v| v.iter().sum::<f64>() / v.len() as f64).collect();
                interval(&means, 1.0).map(|i| (f as f64, i))
            })
            .collect()
    }

    /// Mean FLOPs of one run.
    pub fn flops(&self) -> f64 {
        let cells: Vec<&CellResult> = self.all.values().flatten().collect();
        cells.iter().map(|c| c.flops).sum::<f64>() / cells.len().max(1) as f64
    }

    /// Mean trigger recovery over every restart and seed (discrete prompts: the prompt;
    /// soft prompts: the nearest tokens).
    pub fn recovery(&self) -> Option<Recovery> {
        let cells: Vec<&CellResult> = self.all.values().flatten().filter(|c| !c.tokens.is_empty()).collect();
        if cells.is_empty() {
            return None;
        }
        let rs: Vec<Recovery> = cells.iter().map(|c| recovery(&c.tokens, &c.trigger)).collect();
        let n = rs.len() as f64;
        Some(Recovery {
            exact: rs.iter().all(|r| r.exact),
            ordered: rs.iter().map(|r| r.ordered).sum::<f64>() / n,
            bag: rs.iter().map(|r| r.bag).sum::<f64>() / n,
        })
    }

    /// Fraction of runs whose prompt holds the trigger.
    pub fn exact_rate(&self) -> f64 {
        let cells: Vec<&CellResult> = self.all.values().flatten().filter(|c| !c.tokens.is_empty()).collect();
        cells.iter().filter(|c| recovery(&c.tokens, &c.trigger).exact).count() as f64 / cells.len().max(1) as f64
    }
}

/// A t-interval over seeds, its ends clipped to `[0, max]` (the range of the quantity).
pub fn interval(values: &[f64], max: f64) -> Option<Interval> {
    seed_interval(values, LEVEL, 0.0, max)
}

/// The backdoored-minus-twin difference of one target × method × length after `continued`
/// steps, paired by seed.
#[derive(Clone, Debug)]
pub struct Gap {
    pub continued: u64,
    pub target: String,
    pub family: &'static str,
    pub tokens: usize,
    /// Success difference (backdoored − twin) and response-loss difference (twin −
    /// backdoored: positive when the backdoored model is closer), t-intervals over seeds.
    pub success: Option<Interval>,
    pub loss: Option<Interval>,
}

/// Everything the report shows.
#[derive(Clone, Debug)]
pub struct ElicitAnalysis {
    pub spec: ElicitSpec,
    pub groups: Vec<Group>,
    pub gaps: Vec<Gap>,
    /// Per model arm: the true trigger's attack success, per seed.
    pub attack: BTreeMap<ModelArm, Vec<f64>>,
    pub trigger: Vec<u32>,
    pub missing: Vec<(String, String)>,
}

/// Reads every cell from the experiment's store and analyses them.
pub fn analyse(spec: &ElicitSpec, exp: &Experiment, planned: &[PlannedCell]) -> Result<ElicitAnalysis> {
    let (cells, missing) =
        variant_results(exp, AXIS, Variant::parse, |cell, v, rows| cell_result(spec, cell, v, rows, planned))?;
    let trigger = cells.first().map(|c| c.trigger.clone()).unwrap_or_default();
    let mut attack: BTreeMap<ModelArm, BTreeMap<i64, f64>> = BTreeMap::new();
    for c in &cells {
        if let Some(a) = c.attack_success {
            attack.entry(c.variant.model).or_default().insert(c.seed, a);
        }
    }
    let attack = attack.into_iter().map(|(m, s)| (m, s.into_values().collect())).collect();
    let groups = group(cells);
    let gaps = gaps(&groups);
    Ok(ElicitAnalysis { spec: spec.clone(), groups, gaps, attack, trigger, missing })
}

/// The last value of `task`/`metric` in phase `phase`.
fn last(rows: &[MetricRow], phase: u32, task: &str, metric: &str) -> Option<f64> {
    rows.iter()
        .filter(|r| r.phase == phase && r.task == task && r.metric == metric)
        .max_by_key(|r| r.step)
        .map(|r| r.value)
}

/// A finished cell's results; `None` when its final elicitation metrics are missing.
fn cell_result(
    spec: &ElicitSpec,
    cell: &Cell,
    variant: Variant,
    rows: &[MetricRow],
    planned: &[PlannedCell],
) -> Result<Option<CellResult>> {
    let phase = cell.config.phases.len() - 1;
    let p = &cell.config.phases[phase];
    debug_assert_eq!(p.name, ELICIT);
    let task = spec.target_task(&variant.target);
    let ph = phase as u32;
    let (Some(elicited), Some(loss), Some(select_loss)) = (
        last(rows, ph, &task, "elicited"),
        last(rows, ph, &task, "response_loss"),
        last(rows, ph, &task, "select_response_loss"),
    ) else {
        return Ok(None);
    };
    let built = build(&cell.config)?;
    let params = planned.get(cell.index).map_or(0, |c| c.params);
    let flops = phase_compute(p, &built.tasks, params).1;
    let start = rows.iter().filter(|r| r.phase == ph).map(|r| r.step).min().unwrap_or(0);
    let mut curve: Vec<(f64, f64)> = rows
        .iter()
        .filter(|r| r.phase == ph && r.task == task && r.metric == "elicited")
        .map(|r| (flops * (r.step - start) as f64 / p.steps.max(1) as f64, r.value))
        .collect();
    curve.sort_by(|a, b| a.0.total_cmp(&b.0));
    let attack_success = ph.checked_sub(1).and_then(|q| last(rows, q, &spec.task, "attack_success"));
    let final_prompt = |prefix: &str| -> Vec<f64> {
        (0..variant.method.tokens()).map_while(|i| last(rows, ph, "prompt", &format!("{prefix}_{i}"))).collect()
    };
    let (tokens, cosines) = match variant.method {
        MethodArm::Soft { .. } => (final_prompt("nearest_token"), final_prompt("nearest_cos")),
        m if m.discrete() => (final_prompt("prompt_token"), Vec::new()),
        _ => (Vec::new(), Vec::new()),
    };
    let task = cell.config.tasks.iter().find(|t| t.name == spec.task);
    let trigger = task.and_then(|t| trigger_of(t).ok()).unwrap_or_default();
    let seed = cell.config.seed as i64;
    Ok(Some(CellResult {
        variant,
        seed,
        elicited,
        loss,
        select_loss,
        curve,
        flops,
        attack_success,
        tokens: tokens.into_iter().map(|t| t as u32).collect(),
        cosines,
        trigger,
    }))
}

/// Groups cells by model × target × method family × length; per seed the restart with the
/// lowest selection-set loss is selected.
pub fn group(cells: Vec<CellResult>) -> Vec<Group> {
    let mut groups: BTreeMap<(ModelArm, String, &'static str, usize), Group> = BTreeMap::new();
    for c in cells {
        let v = &c.variant;
        let key = (v.model, v.target.clone(), v.method.family(), v.method.tokens());
        let g = groups.entry(key).or_insert_with(|| Group {
            model: v.model,
            target: v.target.clone(),
            family: v.method.family(),
            tokens: v.method.tokens(),
            selected: BTreeMap::new(),
            all: BTreeMap::new(),
        });
        g.all.entry(c.seed).or_default().push(c);
    }
    let mut out: Vec<Group> = groups.into_values().collect();
    for g in &mut out {
        for (seed, runs) in &g.all {
            if let Some(best) = runs.iter().min_by(|a, b| a.select_loss.total_cmp(&b.select_loss)) {
                g.selected.insert(*seed, best.clone());
            }
        }
    }
    out
}

/// The backdoored-minus-twin gaps of every group that both models ran, paired by seed.
fn gaps(groups: &[Group]) -> Vec<Gap> {
    let mut out = Vec::new();
    for b in groups.iter().filter(|g| g.model.backdoored) {
        let twin = groups.iter().find(|g| {
            !g.model.backdoored
                && g.model.continued == b.model.continued
                && g.target == b.target
                && g.family == b.family
                && g.tokens == b.tokens
        });
        let Some(t) = twin else { continue };
        let paired = |f: fn(&CellResult, &CellResult) -> f64| -> Vec<f64> {
            b.selected.iter().filter_map(|(s, x)| t.selected.get(s).map(|y| f(x, y))).collect()
        };
        out.push(Gap {
            continued: b.model.continued,
            target: b.target.clone(),
            family: b.family,
            tokens: b.tokens,
            success: t_interval(&paired(|x, y| x.elicited - y.elicited), LEVEL).ok(),
            loss: t_interval(&paired(|x, y| y.loss - x.loss), LEVEL).ok(),
        });
    }
    out
}
