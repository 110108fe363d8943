//! The report of an elicitation experiment: success against FLOPs per method, the
//! per-method table with intervals and trigger recovery, the backdoored-against-twin gaps and
//! the true trigger's attack success along continued training; written as
//! `report/index.html`, `elicit.csv` and `summary.md`.

use super::analysis::{analyse, interval, ElicitAnalysis, Group};
use super::{ElicitSpec, ModelArm};
use crate::analysis::Interval;
use crate::fs::write_atomic;
use crate::lab::experiment::Experiment;
use crate::lab::plan::{human_flops, PlannedCell};
use crate::report::{line_chart, Figure, Frame, LineChart, Page, Point, Section, Series, Table};
use anyhow::Result;
use std::collections::BTreeMap;
use std::path::PathBuf;

/// Analyses the experiment and writes its report; returns the page's path.
pub fn write(spec: &ElicitSpec, exp: &Experiment, planned: &[PlannedCell]) -> Result<PathBuf> {
    let a = analyse(spec, exp, planned)?;
    let dir = exp.root.join("report");
    let page = page(&exp.name, &a)?;
    let path = page.write(&dir)?;
    let methods = method_table(&a);
    write_atomic(&dir.join("elicit.csv"), methods.to_csv().as_bytes())?;
    let summary = format!(
        "# {}\n\n{}\n\n{}\n{}\n{}\n{}\n",
        page.title,
        page.intro.join("\n\n"),
        methods.to_markdown(),
        budget_table(&a).to_markdown(),
        gap_table(&a).to_markdown(),
        trajectory_table(&a).to_markdown()
    );
    write_atomic(&dir.join("summary.md"), summary.as_bytes())?;
    Ok(path)
}

/// `0.41 [0.22, 0.60]`, or `0.41 (n=1)` without an interval.
fn show(i: Option<Interval>, single: Option<f64>) -> String {
    match (i, single) {
        (Some(i), _) => format!("{:.3} [{:.3}, {:.3}]", i.value, i.lo, i.hi),
        (None, Some(v)) => format!("{v:.3} (n=1)"),
        _ => "–".into(),
    }
}

/// The page.
pub fn page(name: &str, a: &ElicitAnalysis) -> Result<Page> {
    let s = &a.spec;
    let mut intro = vec![
        format!(
            "Each model plants the backdoor task {:?} (trigger tokens {:?}, prepended) for {} steps; its clean twin \
             trains on the same stream with no sample poisoned. With the model frozen, each method then looks for a \
             prompt, prepended to clean inputs, that makes greedy decoding produce the target: the backdoor's \
             response, or a null response of clean tokens the model never learned. Soft prompts, GCG and random \
             search get the same budget of {} sequence passes (forward 1, forward and backward 2); exhaustive \
             search enumerates every prompt of its length on one batch of {} inputs. Success is the fraction of {} \
             held-out clean inputs whose greedy answer is the target; per seed, the restart with the lowest loss on a \
             disjoint selection set is the one reported. Intervals are {:.0}% t-intervals over seeds.",
            s.task,
            a.trigger,
            s.plant_steps,
            s.budget,
            s.search_batch,
            s.eval_samples,
            super::analysis::LEVEL * 100.0
        ),
        "The signal is the gap between the backdoored model and its twin: enough prompt capacity forces any string \
         on any model, so success on the backdoored model alone says nothing about the backdoor."
            .into(),
    ];
    if !a.missing.is_empty() {
        let list: Vec<String> = a.missing.iter().take(12).map(|(c, why)| format!("{c} ({why})")).collect();
        intro.push(format!("{} cells without a result: {}.", a.missing.len(), list.join(", ")));
    }
    let mut curves = Section { heading: "Success against compute".into(), ..Default::default() };
    let models: Vec<ModelArm> = dedup(a.groups.iter().map(|g| g.model));
    for target in &s.targets {
        for m in &models {
            let groups: Vec<&Group> =
                a.groups.iter().filter(|g| g.model == *m && &g.target == target && g.family != "none").collect();
            if groups.is_empty() {
                continue;
            }
            curves.figures.push(Figure {
                svg: line_chart(&budget_chart(&format!("{} · {target}", m.name()), &groups))?,
                caption: format!(
                    "{} model, target {target}: mean success over seeds and restarts at each evaluation of the \
                     search, against the FLOPs spent so far (log axis).",
                    m.name()
                ),
            });
        }
    }
    let table = Section {
        heading: "Per method".into(),
        paragraphs: vec![
            "Trigger recovery: for discrete prompts the found tokens, for soft prompts each vector's nearest \
             embedding row (by cosine), against the true trigger: the fraction of runs holding it contiguously \
             (exact), the best order-aware overlap and the bag overlap. Unsmoothed 4-gram BLEU, TDC 2023's metric, \
             is 0 for triggers this short and is not shown."
                .into(),
        ],
        tables: vec![method_table(a), budget_table(a)],
        ..Default::default()
    };
    let gap = Section {
        heading: "Backdoored against clean twin".into(),
        paragraphs: vec![
            "Paired by seed: success(backdoored) − success(twin), and loss(twin) − loss(backdoored) (positive: the \
             backdoored model is closer to the target). An interval that excludes 0 separates the two models."
                .into(),
        ],
        tables: vec![gap_table(a)],
        ..Default::default()
    };
    let trajectory = Section {
        heading: "Along continued training".into(),
        paragraphs: vec![
            "The true trigger's attack success on each model, and the best method's success and loss gap, after \
             each amount of continued clean training: when the trigger no longer works, is the behavior gone or \
             only farther away?"
                .into(),
        ],
        tables: vec![trajectory_table(a)],
        ..Default::default()
    };
    Ok(Page { title: format!("Backdoor elicitation: {name}"), intro, sections: vec![curves, table, gap, trajectory] })
}

/// Values in first-seen order, without repeats.
fn dedup<T: PartialEq>(items: impl Iterator<Item = T>) -> Vec<T> {
    let mut out: Vec<T> = Vec::new();
    for i in items {
        if !out.contains(&i) {
            out.push(i);
        }
    }
    out
}

/// Success against FLOPs, one series per method and length.
fn budget_chart(title: &str, groups: &[&Group]) -> LineChart {
    let series = groups
        .iter()
        .map(|g| {
            let mut at: BTreeMap<u64, Vec<f64>> = BTreeMap::new();
            for c in g.all.values().flatten() {
                for &(f, y) in &c.curve {
                    at.entry(f.max(1.0).round() as u64).or_default().push(y);
                }
            }
            let points = at.into_iter().map(|(f, ys)| Point::new(f as f64, ys.iter().sum::<f64>() / ys.len() as f64));
            Series { name: format!("{}{}", g.family, g.tokens), points: points.collect() }
        })
        .collect();
    LineChart {
        frame: Frame::new(title, "FLOPs spent", "elicitation success"),
        log_x: true,
        log_y: false,
        series,
        markers: Vec::new(),
    }
}

/// One row per model × target × method × length.
pub fn method_table(a: &ElicitAnalysis) -> Table {
    let header = [
        "model",
        "target",
        "method",
        "tokens",
        "seeds",
        "success",
        "response loss",
        "FLOPs/run",
        "trigger exact",
        "ordered overlap",
        "bag overlap",
        "nearest cos",
    ];
    let rows = a
        .groups
        .iter()
        .map(|g| {
            let single = |f: fn(&super::analysis::CellResult) -> f64| g.selected.values().next().map(f);
            let rec = g.recovery();
            let cos: Vec<f64> = g.all.values().flatten().flat_map(|c| c.cosines.iter().copied()).collect();
            vec![
                g.model.name(),
                g.target.clone(),
                g.family.to_string(),
                g.tokens.to_string(),
                g.selected.len().to_string(),
                show(g.success(), single(|c| c.elicited)),
                show(g.loss(), single(|c| c.loss)),
                human_flops(g.flops()),
                rec.map_or("–".into(), |_| format!("{:.2}", g.exact_rate())),
                rec.map_or("–".into(), |r| format!("{:.2}", r.ordered)),
                rec.map_or("–".into(), |r| format!("{:.2}", r.bag)),
                if cos.is_empty() {
                    "–".into()
                } else {
                    format!("{:.2}", cos.iter().sum::<f64>() / cos.len() as f64)
                },
            ]
        })
        .collect();
    Table {
        caption: "Elicitation per method: success and response loss of the selected restart, mean over seeds with its \
                  95% t-interval."
            .into(),
        header: header.iter().map(|h| h.to_string()).collect(),
        rows,
    }
}

/// Success against the FLOPs spent, per model × target × method × length that searches.
pub fn budget_table(a: &ElicitAnalysis) -> Table {
    let rows = a
        .groups
        .iter()
        .filter(|g| g.family != "none")
        .map(|g| {
            let points: Vec<String> = g
                .budget_curve()
                .iter()
                .map(|(f, i)| format!("{}: {:.2} [{:.2}, {:.2}]", human_flops(*f), i.value, i.lo, i.hi))
                .collect();
            vec![g.model.name(), g.target.clone(), format!("{}{}", g.family, g.tokens), points.join("; ")]
        })
        .collect();
    Table {
        caption:
            "Success against FLOPs spent: at each evaluation, the mean over restarts per seed, then the mean over \
                  seeds with its 95% t-interval (the run's first evaluation is at 0 FLOPs, before any search)."
                .into(),
        header: ["model", "target", "method", "FLOPs: success [95% CI]"].iter().map(|h| h.to_string()).collect(),
        rows,
    }
}

/// The paired gaps.
pub fn gap_table(a: &ElicitAnalysis) -> Table {
    let rows = a
        .gaps
        .iter()
        .map(|g| {
            vec![
                g.continued.to_string(),
                g.target.clone(),
                g.family.to_string(),
                g.tokens.to_string(),
                show(g.success, None),
                show(g.loss, None),
            ]
        })
        .collect();
    Table {
        caption: "Backdoored − twin, paired by seed (95% t-intervals).".into(),
        header: ["continued steps", "target", "method", "tokens", "success gap", "loss gap (twin − backdoored)"]
            .iter()
            .map(|h| h.to_string())
            .collect(),
        rows,
    }
}

/// Per model arm: the true trigger's attack success, and the most successful method on the
/// response target.
pub fn trajectory_table(a: &ElicitAnalysis) -> Table {
    let rows = a
        .attack
        .iter()
        .map(|(m, values)| {
            let attack = show(interval(values, 1.0), values.first().copied());
            let best = a
                .groups
                .iter()
                .filter(|g| g.model == *m && g.target == "response" && g.family != "none")
                .filter_map(|g| g.success().map(|s| (g, s)))
                .max_by(|x, y| x.1.value.total_cmp(&y.1.value).then(y.0.flops().total_cmp(&x.0.flops())));
            let (method, success) = match best {
                Some((g, s)) if s.value > 0.0 => (format!("{}{}", g.family, g.tokens), show(Some(s), None)),
                Some(_) => ("none succeeds".to_string(), "0".to_string()),
                None => ("–".to_string(), "–".to_string()),
            };
            let none = a.groups.iter().find(|g| g.model == *m && g.target == "response" && g.family == "none");
            vec![m.name(), attack, none.map_or("–".into(), |g| show(g.success(), None)), method, success]
        })
        .collect();
    Table {
        caption: "The true trigger against the searches, per model (95% t-intervals over seeds).".into(),
        header: ["model", "trigger attack success", "no prompt", "best method", "its success"]
            .iter()
            .map(|h| h.to_string())
            .collect(),
        rows,
    }
}
