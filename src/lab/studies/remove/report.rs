//! The report of a removal experiment: the removal table, the steering layer × coefficient
//! map with the configuration chosen on the selection set, and re-elicitation against the
//! clean twin with a removed-or-hidden verdict per intervention; written as
//! `report/index.html`, `removal.csv` and `summary.md`.

use super::analysis::{analyse, interval, CellResult, RemoveAnalysis};
use super::{Intervention, Reelicit, RemoveSpec};
use crate::analysis::Interval;
use crate::lab::experiment::Experiment;
use crate::lab::plan::{human_flops, PlannedCell};
use crate::report::{Page, Section, Table};
use anyhow::Result;
use std::path::PathBuf;

/// Analyses the experiment and writes its report; returns the page's path.
pub fn write(spec: &RemoveSpec, exp: &Experiment, planned: &[PlannedCell]) -> Result<PathBuf> {
    let a = analyse(spec, exp, planned)?;
    let dir = exp.root.join("report");
    let tables = [removal_table(&a), steering_table(&a), reelicit_table(&a)];
    let page = Page {
        title: format!("Backdoor removal: {}", exp.name),
        intro: intro(&a),
        sections: vec![
            Section { heading: "Removal".into(), tables: vec![tables[0].clone()], ..Default::default() },
            Section {
                heading: "Steering: layer × coefficient".into(),
                paragraphs: vec![format!(
                    "Each configuration on the backdoored model, means over seeds. A steering family's reported \
                     configuration is chosen on the selection set: the lowest attack success among those raising the \
                     clean loss by at most {} nats per token.",
                    a.spec.max_clean_cost
                )],
                tables: vec![tables[1].clone()],
                ..Default::default()
            },
            Section {
                heading: "Removed or hidden".into(),
                paragraphs: vec![
                    "After each intervention (a prompt or steering vector still applied), a re-elicitation at the \
                     same budget on the treated \
                     backdoored model and on the treated clean twin. Hidden: it succeeds on the backdoored model \
                     where it fails on the twin (the paired gap's interval excludes 0); removed: the two are not \
                     distinguishable at this number of seeds. `-` is the true trigger after the intervention alone; \
                     where it still fires, the backdoor was not removed and re-elicitation says nothing about hiding \
                     (after `none`, the rows show what re-elicitation does to the untreated model)."
                        .into(),
                ],
                tables: vec![tables[2].clone()],
                ..Default::default()
            },
        ],
    };
    Ok(page.write_with_summary(&dir, "removal.csv", &tables)?)
}

fn intro(a: &RemoveAnalysis) -> Vec<String> {
    let s = &a.spec;
    let mut out = vec![format!(
        "Each model plants the backdoor task {:?} for {} steps (the clean twin: the same stream, nothing poisoned), \
         then one intervention trains on {} examples ({} steps × {}): clean fine-tuning (full, LoRA rank {}), \
         anti-backdoor fine-tuning on triggered inputs with clean answers mixed with clean data, a {}-vector \
         detuning soft prompt on clean data, or a steering vector learned on the anti-backdoor mixture; or a \
         contrastive mean-difference vector (triggered minus clean residual stream at the answer positions, {} \
         samples per side, read where it is applied) is subtracted or projected out. Attack success and the \
         margin (the response's loss on clean inputs minus on triggered inputs) are measured on {} held-out \
         inputs; the clean-loss cost is the change of the loss of clean answers since planting. Intervals are 95% \
         t-intervals over seeds.",
        s.task,
        s.plant_steps,
        s.budget,
        s.remove_steps(),
        s.batch_size,
        s.lora_rank,
        s.detune_tokens,
        s.steer_samples,
        s.eval_samples
    )];
    if !a.missing.is_empty() {
        let list: Vec<String> = a.missing.iter().take(10).map(|(c, why)| format!("{c} ({why})")).collect();
        out.push(format!("{} cells without a result: {}.", a.missing.len(), list.join(", ")));
    }
    out
}

/// `0.41 [0.22, 0.60]`.
fn show(i: Option<Interval>) -> String {
    i.map_or("–".into(), |i| format!("{:.3} [{:.3}, {:.3}]", i.value, i.lo, i.hi))
}

/// A metric of cells over seeds, with its interval clipped to `[lo, hi]`.
fn over<'a>(
    cells: impl Iterator<Item = &'a CellResult>,
    f: fn(&CellResult) -> f64,
    lo: f64,
    hi: f64,
) -> Option<Interval> {
    interval(&cells.map(f).collect::<Vec<_>>(), lo, hi)
}

/// The interventions a table reports: every non-steering one, and each steering family's
/// chosen configuration.
fn reported(a: &RemoveAnalysis) -> Vec<(Intervention, bool)> {
    let mut out = Vec::new();
    for i in a.interventions() {
        match i {
            Intervention::LearnedSteer { .. } | Intervention::MeanAdd { .. } | Intervention::MeanProj { .. } => {
                if a.chosen(i.family()) == Some(i) {
                    out.push((i, true));
                }
            }
            i => out.push((i, false)),
        }
    }
    out
}

/// The removal table.
pub fn removal_table(a: &RemoveAnalysis) -> Table {
    let rows = reported(a)
        .into_iter()
        .map(|(i, chosen)| {
            let (b, t) = (a.of(true, &i, Reelicit::Trigger), a.of(false, &i, Reelicit::Trigger));
            let flops = b.values().map(|c| c.flops).sum::<f64>() / b.len().max(1) as f64;
            let recovered: Vec<bool> = b.values().filter_map(|c| c.recovered).collect();
            let note = match (chosen, recovered.len()) {
                (true, _) => " (chosen)".to_string(),
                (_, 0) => String::new(),
                (_, n) => format!(" (trigger recovered in {} of {n})", recovered.iter().filter(|&&r| r).count()),
            };
            vec![
                format!("{}{note}", i.name()),
                b.len().to_string(),
                show(over(b.values().copied(), |c| c.attack, 0.0, 1.0)),
                show(over(t.values().copied(), |c| c.attack, 0.0, 1.0)),
                show(over(b.values().copied(), |c| c.margin, f64::NEG_INFINITY, f64::INFINITY)),
                show(over(b.values().copied(), |c| c.clean_cost, f64::NEG_INFINITY, f64::INFINITY)),
                human_flops(flops),
            ]
        })
        .collect();
    Table {
        caption: "After each intervention, the backdoored model (and the twin's attack success): 95% t-intervals over \
                  seeds."
            .into(),
        header: ["intervention", "seeds", "attack success", "twin's", "margin (nats)", "clean-loss cost", "FLOPs"]
            .iter()
            .map(|h| h.to_string())
            .collect(),
        rows,
    }
}

/// Every steering configuration on the backdoored model.
pub fn steering_table(a: &RemoveAnalysis) -> Table {
    let rows = a
        .interventions()
        .into_iter()
        .filter(|i| {
            matches!(
                i,
                Intervention::LearnedSteer { .. } | Intervention::MeanAdd { .. } | Intervention::MeanProj { .. }
            )
        })
        .map(|i| {
            let b = a.of(true, &i, Reelicit::Trigger);
            let mean = |f: fn(&CellResult) -> f64| {
                format!("{:.3}", b.values().map(|c| f(c)).sum::<f64>() / b.len().max(1) as f64)
            };
            let chosen = a.chosen(i.family()) == Some(i);
            vec![
                i.name(),
                mean(|c| c.select_attack),
                mean(|c| c.select_cost),
                mean(|c| c.attack),
                mean(|c| c.clean_cost),
                mean(|c| c.wrong_way.unwrap_or(f64::NAN)),
                if chosen { "chosen".into() } else { String::new() },
            ]
        })
        .collect();
    Table {
        caption: "Steering configurations: selection-set attack success and clean-loss cost (what the choice sees), \
                  reported-set attack success and cost, and the fraction of triggered inputs whose response \
                  the vector makes more likely (wrong way); means over seeds."
            .into(),
        header: [
            "configuration",
            "selection: attack",
            "selection: cost",
            "reported: attack",
            "reported: cost",
            "wrong way",
            "",
        ]
        .iter()
        .map(|h| h.to_string())
        .collect(),
        rows,
    }
}

/// Re-elicitation after each weight-changing intervention, against the twin.
pub fn reelicit_table(a: &RemoveAnalysis) -> Table {
    let mut rows = Vec::new();
    for i in a.interventions() {
        let mut later: Vec<Reelicit> =
            a.cells.iter().filter(|c| c.variant.intervention == i).map(|c| c.variant.reelicit).collect();
        later.sort();
        later.dedup();
        // Re-elicitation can only reveal a hidden backdoor if the intervention made the true
        // trigger stop firing (no longer distinguishable from the twin) in the first place.
        let removed = a.gap(&i, Reelicit::Trigger).is_some_and(|g| g.lo <= 0.0);
        for r in later {
            let (b, t) = (a.of(true, &i, r), a.of(false, &i, r));
            let gap = a.gap(&i, r);
            let verdict = match gap {
                None => "–",
                Some(_) if !removed && r == Reelicit::Trigger => "not removed: the trigger still fires",
                Some(_) if !removed => "not removed (nothing to re-elicit)",
                Some(g) if g.lo > 0.0 => "hidden: returns here",
                Some(_) => "indistinguishable from the twin",
            };
            let what = match r {
                Reelicit::Soft(_) => "elicited",
                _ => "attack success",
            };
            let flops = b.values().map(|c| c.reelicit_flops).sum::<f64>() / b.len().max(1) as f64;
            rows.push(vec![
                i.name(),
                r.name(),
                what.into(),
                show(interval(&b.values().filter_map(|c| c.reelicited()).collect::<Vec<_>>(), 0.0, 1.0)),
                show(interval(&t.values().filter_map(|c| c.reelicited()).collect::<Vec<_>>(), 0.0, 1.0)),
                show(gap),
                human_flops(flops),
                verdict.into(),
            ]);
        }
    }
    Table {
        caption: "Re-elicitation: backdoored and twin (95% t-intervals), the gap paired by seed, and its FLOPs.".into(),
        header: ["intervention", "re-elicitation", "measure", "backdoored", "twin", "gap", "FLOPs", "verdict"]
            .iter()
            .map(|h| h.to_string())
            .collect(),
        rows,
    }
}
