//! Analysis of a removal experiment: per cell, the backdoor's probes and the clean loss at the
//! start and the end of the intervention and after the re-elicitation; per intervention the
//! removal (attack success, log-prob margin, clean-loss cost, FLOPs) over seeds; the steering
//! configuration chosen on the selection set; and per re-elicitation the backdoored-minus-twin
//! gap, paired by seed, that tells removed from hidden.

use super::{Intervention, Reelicit, RemoveSpec, Variant, AXIS, REELICIT, REMOVE, SEARCH};
use crate::analysis::Interval;
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
    /// After the intervention (reported set): attack success, margin
    /// (`clean_response_loss − triggered_loss`), and the change of the loss of clean answers
    /// on clean inputs since the end of planting (the clean-loss cost).
    pub attack: f64,
    pub margin: f64,
    pub clean_cost: f64,
    /// The same on the selection set (attack success; clean-loss change on clean inputs).
    pub select_attack: f64,
    pub select_cost: f64,
    /// Under a steering vector: the fraction of triggered inputs whose response the vector
    /// makes more likely (the wrong way).
    pub wrong_way: Option<f64>,
    /// `anti_gcg`: whether the searched prompt is the true trigger.
    pub recovered: Option<bool>,
    /// FLOPs of the intervention (with `anti_gcg`'s search) and of the re-elicitation.
    pub flops: f64,
    pub reelicit_flops: f64,
    /// After the re-elicitation: the true trigger's attack success, and for a soft prompt the
    /// response's elicitation on clean inputs.
    pub after_attack: Option<f64>,
    pub after_elicited: Option<f64>,
}

impl CellResult {
    /// What the re-elicitation achieved: elicitation for a soft prompt, else the true
    /// trigger's attack success (after the intervention alone, for `-`).
    pub fn reelicited(&self) -> Option<f64> {
        match self.variant.reelicit {
            Reelicit::Trigger => Some(self.attack),
            Reelicit::Finetune(_) => self.after_attack,
            Reelicit::Soft(_) => self.after_elicited,
        }
    }
}

/// The value of `task`/`metric` at the first or the last evaluation of phase `phase`.
fn at(rows: &[MetricRow], phase: u32, task: &str, metric: &str, last: bool) -> Option<f64> {
    let mine = rows.iter().filter(|r| r.phase == phase && r.task == task && r.metric == metric);
    if last {
        mine.max_by_key(|r| r.step).map(|r| r.value)
    } else {
        mine.min_by_key(|r| r.step).map(|r| r.value)
    }
}

/// A t-interval over seeds clipped to `[lo, hi]`; `None` below 2 values.
pub fn interval(values: &[f64], lo: f64, hi: f64) -> Option<Interval> {
    seed_interval(values, LEVEL, lo, hi)
}

/// Everything the report shows.
#[derive(Clone, Debug)]
pub struct RemoveAnalysis {
    pub spec: RemoveSpec,
    pub cells: Vec<CellResult>,
    pub missing: Vec<(String, String)>,
}

/// One intervention's cells (re-elicitation `-`) on one model, by seed.
pub type BySeed<'a> = BTreeMap<i64, &'a CellResult>;

impl RemoveAnalysis {
    /// The cells of `intervention` followed by `reelicit` on the backdoored model or the twin.
    pub fn of(&self, backdoored: bool, intervention: &Intervention, reelicit: Reelicit) -> BySeed<'_> {
        self.cells
            .iter()
            .filter(|c| {
                c.variant.backdoored == backdoored
                    && c.variant.intervention == *intervention
                    && c.variant.reelicit == reelicit
            })
            .map(|c| (c.seed, c))
            .collect()
    }

    /// The distinct interventions, in the spec's order.
    pub fn interventions(&self) -> Vec<Intervention> {
        let mut out: Vec<Intervention> = Vec::new();
        for v in self.spec.variants() {
            if !out.contains(&v.intervention) {
                out.push(v.intervention);
            }
        }
        out
    }

    /// Per steering family, the configuration chosen on the selection set: the lowest mean
    /// selection-set attack success on the backdoored model among those whose mean
    /// selection-set clean cost is at most `max_clean_cost` (ties: the lower cost).
    pub fn chosen(&self, family: &str) -> Option<Intervention> {
        let mut best: Option<(f64, f64, Intervention)> = None;
        for i in self.interventions().into_iter().filter(|i| i.family() == family) {
            let cells = self.of(true, &i, Reelicit::Trigger);
            if cells.is_empty() {
                continue;
            }
            let mean = |f: fn(&CellResult) -> f64| cells.values().map(|c| f(c)).sum::<f64>() / cells.len() as f64;
            let (attack, cost) = (mean(|c| c.select_attack), mean(|c| c.select_cost));
            if cost > self.spec.max_clean_cost {
                continue;
            }
            if best.is_none_or(|(a, k, _)| (attack, cost) < (a, k)) {
                best = Some((attack, cost, i));
            }
        }
        best.map(|(_, _, i)| i)
    }

    /// The backdoored-minus-twin difference of what `reelicit` achieved after
    /// `intervention`, paired by seed.
    pub fn gap(&self, intervention: &Intervention, reelicit: Reelicit) -> Option<Interval> {
        let (b, t) = (self.of(true, intervention, reelicit), self.of(false, intervention, reelicit));
        let diffs: Vec<f64> = b.iter().filter_map(|(s, x)| Some(x.reelicited()? - t.get(s)?.reelicited()?)).collect();
        interval(&diffs, -1.0, 1.0)
    }
}

/// Reads every cell from the experiment's store.
pub fn analyse(spec: &RemoveSpec, exp: &Experiment, planned: &[PlannedCell]) -> Result<RemoveAnalysis> {
    let (cells, missing) =
        variant_results(exp, AXIS, Variant::parse, |cell, v, rows| cell_result(spec, cell, v, rows, planned))?;
    Ok(RemoveAnalysis { spec: spec.clone(), cells, missing })
}

fn cell_result(
    spec: &RemoveSpec,
    cell: &Cell,
    variant: Variant,
    rows: &[MetricRow],
    planned: &[PlannedCell],
) -> Result<Option<CellResult>> {
    let phases = &cell.config.phases;
    let Some(remove) = phases.iter().position(|p| p.name == REMOVE) else { return Ok(None) };
    let reelicit = phases.iter().position(|p| p.name == REELICIT);
    let search = phases.iter().position(|p| p.name == SEARCH);
    let task = cell.config.tasks.iter().find(|t| t.name == spec.task);
    let trigger = task.and_then(|t| trigger_of(t).ok()).unwrap_or_default();
    let (r, bd) = (remove as u32, spec.task.as_str());
    let get = |task: &str, metric: &str, last: bool| at(rows, r, task, metric, last);
    // The planted model is the one the plant phase ends with (an evaluation-time steering
    // vector already acts at the intervention phase's first evaluation).
    let planted = |metric: &str| at(rows, 0, bd, metric, true);
    let (Some(attack), Some(triggered), Some(response), Some(clean_end), Some(clean_start)) = (
        get(bd, "attack_success", true),
        get(bd, "triggered_loss", true),
        get(bd, "clean_response_loss", true),
        get(bd, "clean_loss", true),
        planted("clean_loss"),
    ) else {
        return Ok(None);
    };
    let select_cost = get(bd, "select_clean_loss", true).zip(planted("select_clean_loss")).map(|(e, s)| e - s);
    let built = build(&cell.config)?;
    let params = planned.get(cell.index).map_or(0, |c| c.params);
    let flops_of = |i: usize| phase_compute(&phases[i], &built.tasks, params).1;
    let after = |task: &str, metric: &str| reelicit.and_then(|i| at(rows, i as u32, task, metric, true));
    Ok(Some(CellResult {
        variant,
        seed: cell.config.seed as i64,
        attack,
        margin: response - triggered,
        clean_cost: clean_end - clean_start,
        select_attack: get(bd, "select_attack_success", true).unwrap_or(f64::NAN),
        select_cost: select_cost.unwrap_or(f64::NAN),
        wrong_way: get(bd, "triggered_loss_wrong_way", true),
        recovered: search.map(|i| {
            let found: Vec<f64> = (0..trigger.len())
                .map_while(|k| at(rows, i as u32, "prompt", &format!("prompt_token_{k}"), true))
                .collect();
            found.iter().map(|&t| t as u32).eq(trigger.iter().copied())
        }),
        flops: flops_of(remove) + search.map_or(0.0, flops_of),
        reelicit_flops: reelicit.map_or(0.0, flops_of),
        after_attack: after(bd, "attack_success"),
        after_elicited: after(&spec.target(), "elicited"),
    }))
}
