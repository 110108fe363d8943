//! The report of a distance experiment: loss-versus-token-count curves with their ensemble
//! spread, distance bars against the null baselines, the input-versus-execution table and
//! per-count verdicts, written as `report/index.html`, `distance.csv` and `summary.md`.

use super::analysis::{analyse, ArmResult, CountStats, Distance, DistanceAnalysis};
use super::conditional::{self, CondAnalysis};
use super::{Arm, Conditional, DistanceSpec};
use crate::fs::write_atomic;
use crate::lab::experiment::Experiment;
use crate::report::{
    bar_chart, line_chart, Bar, BarChart, BarSeries, Figure, Frame, LineChart, Page, Point, Reference, Section, Series,
    Table,
};
use anyhow::Result;
use std::path::PathBuf;

/// Analyses the experiment and writes its report; returns the page's path.
pub fn write(spec: &DistanceSpec, exp: &Experiment) -> Result<PathBuf> {
    let a = analyse(spec, exp)?;
    let cond = conditional::analyse(spec, exp)?;
    let dir = exp.root.join("report");
    let page = page(&exp.name, &a, &cond)?;
    let path = page.write(&dir)?;
    write_atomic(&dir.join("distance.csv"), counts_table(&a).to_csv().as_bytes())?;
    let mut summary = format!(
        "# {}\n\n{}\n\n{}\n{}\n",
        page.title,
        page.intro.join("\n\n"),
        comparison_table(&a).to_markdown(),
        counts_table(&a).to_markdown()
    );
    if a.spec.conditional.is_some() {
        let tables = [conditional::verdict_table(&cond), conditional::condition_table(&cond)];
        write_atomic(&dir.join("conditions.csv"), tables[1].to_csv().as_bytes())?;
        summary.push_str(&format!("\n{}\n{}\n", tables[0].to_markdown(), tables[1].to_markdown()));
    }
    write_atomic(&dir.join("summary.md"), summary.as_bytes())?;
    Ok(path)
}

/// The whole page.
pub fn page(name: &str, a: &DistanceAnalysis, cond: &CondAnalysis) -> Result<Page> {
    let s = &a.spec;
    let sat_steps = s.saturation.steps.unwrap_or(s.steps);
    let mut intro = vec![
        format!(
            "Saturation S is the best final held-out loss of execution fine-tuning ({}) over learning rates {:?}, \
             {sat_steps} steps × batch {}. The conditional distance is the smallest soft-prompt token count whose \
             best loss (over {} restart(s) × learning rates {:?}, {} steps × batch {}, {:?} insertion) is within \
             ε = {} × (L0 − S) of S, L0 the frozen model's loss (the criterion does not depend on the loss's \
             scale). Every count, 0 included, and every fine-tuning run is scored on the same {} held-out samples.",
            s.saturation.kinds.join(" and "),
            s.saturation.lrs,
            s.batch_size,
            s.restarts,
            s.lrs,
            s.steps,
            s.batch_size,
            s.insert,
            s.epsilon_rel,
            s.eval_samples
        ),
        "Null baselines: null_target is a random-target behavior of matched entropy (a random string of the same \
         length); null_model is the behavior on a model that never learned it. A distance means something only \
         next to these: enough tokens force arbitrary targets."
            .into(),
    ];
    if !a.missing.is_empty() {
        let list: Vec<String> = a.missing.iter().map(|(c, why)| format!("{c} ({why})")).collect();
        intro.push(format!("Cells without a result: {}.", list.join(", ")));
    }
    let mut curves = Section { heading: "Loss against soft-prompt tokens".into(), ..Default::default() };
    let points: Vec<String> = dedup(a.arms.iter().map(|r| r.point.clone()));
    for point in &points {
        let arms: Vec<&ArmResult> = a.arms.iter().filter(|r| &r.point == point).collect();
        curves.figures.push(Figure {
            svg: line_chart(&curve_chart(point, &arms))?,
            caption: format!(
                "{point}: best final held-out loss per count (band: best to worst over the ensemble), and S per arm. \
                 The x axis is tokens + 1 so that the frozen model (0 tokens) fits a log axis."
            ),
        });
    }
    let mut bars = Section { heading: "Conditional distance against the null baselines".into(), ..Default::default() };
    let largest = s.counts.last().copied().unwrap_or(0) as f64;
    bars.figures.push(Figure {
        svg: bar_chart(&distance_chart(&points, a, largest))?,
        caption: "Smallest token count within ε of S per arm; an arm that never gets there has no bar (see the table)."
            .into(),
    });
    bars.tables.push(comparison_table(a));
    let verdicts = Section {
        heading: "Per-count ensembles and verdicts".into(),
        paragraphs: vec![format!(
            "A count is flagged when its runs spread by more than ε, when its best learning rate is the grid's \
             largest, or when it is worse than a shorter prompt by more than ε: more tuning would then likely lower it."
        )],
        tables: vec![counts_table(a)],
        ..Default::default()
    };
    let mut sections = vec![curves, bars, verdicts];
    if let Some(c) = &s.conditional {
        sections.push(conditions_section(c, cond));
    }
    Ok(Page { title: format!("Conditional distance: {name}"), intro, sections })
}

/// Whether conditional prompts follow pathfinding conditions they never trained on.
fn conditions_section(c: &Conditional, cond: &CondAnalysis) -> Section {
    let pairs = |l: &[[i64; 2]]| l.iter().map(|[e, i]| format!("({e}, {i})")).collect::<Vec<_>>().join(", ");
    Section {
        heading: "Conditioning on pathfinding conditions".into(),
        paragraphs: vec![format!(
            "Conditional prompts map each sample's (extra moves, invalid moves) through an MLP (hidden width {}, \
             conditions × {}) to its prompt; they train on boards whose path has any condition except the held-out \
             {} and are scored on boards with exactly one condition each: seen {} and held out {}. Paths are \
             sampled at temperature {} (greedy decoding gives the optimal path whatever the prompt). An \
             unconditional prompt of the same length sees the same data and cannot know the condition: a \
             conditional prompt follows the held-out conditions on average when it beats it on held-out loss and \
             its mean generated moves are nearer the requested ones, and per path when each sampled path is \
             nearer too.",
            c.hidden,
            c.scale,
            pairs(&c.held_out),
            if c.seen.is_empty() { "none".into() } else { pairs(&c.seen) },
            pairs(&c.held_out),
            c.temperature
        )],
        tables: vec![conditional::verdict_table(cond), conditional::condition_table(cond)],
        ..Default::default()
    }
}

/// Loss against tokens + 1 for each arm of a point, with S as a flat line.
fn curve_chart(point: &str, arms: &[&ArmResult]) -> LineChart {
    let mut series = Vec::new();
    for r in arms {
        let pts = r.counts.iter().map(|c| Point::new(c.tokens as f64 + 1.0, c.best).with_interval(c.best, c.worst));
        series.push(Series { name: format!("{} ({})", r.arm.name(), r.task), points: pts.collect() });
        if !r.cond_counts.is_empty() {
            let pts =
                r.cond_counts.iter().map(|c| Point::new(c.tokens as f64 + 1.0, c.best).with_interval(c.best, c.worst));
            series.push(Series { name: format!("{} conditional", r.arm.name()), points: pts.collect() });
        }
        if let Some(sat) = r.saturation() {
            let flat = r.counts.iter().map(|c| Point::new(c.tokens as f64 + 1.0, sat)).collect();
            series.push(Series { name: format!("S {}", r.arm.name()), points: flat });
        }
    }
    LineChart {
        frame: Frame::new(format!("Held-out loss vs soft-prompt tokens: {point}"), "tokens + 1", "held-out loss"),
        log_x: true,
        series,
        ..Default::default()
    }
}

/// Grouped distance bars: one category per point, one series per arm.
fn distance_chart(points: &[String], a: &DistanceAnalysis, largest: f64) -> BarChart {
    let series = [Arm::Target, Arm::NullTarget, Arm::NullModel]
        .into_iter()
        .filter(|arm| a.arms.iter().any(|r| r.arm == *arm))
        .map(|arm| BarSeries {
            name: arm.name().into(),
            bars: points
                .iter()
                .map(|p| Bar::new(bar_value(a.arms.iter().find(|r| &r.point == p && r.arm == arm))))
                .collect(),
        })
        .collect();
    BarChart {
        frame: Frame::new("Conditional distance", "sweep point", "soft-prompt tokens"),
        categories: points.to_vec(),
        series,
        references: vec![Reference { y: largest, label: "largest count tried".into() }],
    }
}

/// A reached distance, else NaN (no bar).
fn bar_value(r: Option<&ArmResult>) -> f64 {
    match r.map(|r| r.distance) {
        Some(Distance::Reached(n)) => n as f64,
        _ => f64::NAN,
    }
}

/// `12`, `> 64` or `unknown`.
pub fn distance_text(d: Distance) -> String {
    match d {
        Distance::Reached(n) => n.to_string(),
        Distance::Beyond(n) => format!("> {n}"),
        Distance::Unknown => "unknown (no fine-tuning result)".into(),
    }
}

/// Input versus execution: behavior × (fine-tune loss, best prompt loss per count, distance).
pub fn comparison_table(a: &DistanceAnalysis) -> Table {
    let counts: Vec<usize> = a.spec.counts.clone();
    let mut header: Vec<String> = ["point", "arm", "task", "prompt", "S full", "S lora"].map(String::from).to_vec();
    header.extend(counts.iter().map(|n| format!("{n} tok")));
    header.push("distance".into());
    let mut rows = Vec::new();
    for r in &a.arms {
        for (prompt, stats, distance) in curves(r) {
            let mut row =
                vec![r.point.clone(), r.arm.name().into(), r.task.clone(), prompt.into(), num(r.s_full), num(r.s_lora)];
            row.extend(counts.iter().map(|n| num(stats.iter().find(|c| c.tokens == *n).map(|c| c.best))));
            row.push(distance_text(distance));
            rows.push(row);
        }
    }
    Table {
        caption: "Input versus execution: fine-tuning loss (S), best soft-prompt loss per count, distance".into(),
        header,
        rows,
    }
}

/// One row per arm and count: the ensemble and its verdict.
pub fn counts_table(a: &DistanceAnalysis) -> Table {
    let header =
        ["point", "arm", "tokens", "runs", "best", "worst", "best_lr", "verdict", "prompt"].map(String::from).to_vec();
    let mut rows = Vec::new();
    for r in &a.arms {
        for (prompt, stats, _) in curves(r) {
            for c in stats {
                let verdict = if c.concerns.is_empty() { "settled".to_string() } else { c.concerns.join("; ") };
                let lr = if c.tokens == 0 { "-".to_string() } else { format!("{}", c.best_lr) };
                rows.push(vec![
                    r.point.clone(),
                    r.arm.name().into(),
                    c.tokens.to_string(),
                    c.runs.len().to_string(),
                    format!("{:.4}", c.best),
                    format!("{:.4}", c.worst),
                    lr,
                    verdict,
                    prompt.into(),
                ]);
            }
        }
    }
    Table { caption: "Per-count ensembles (final held-out loss)".into(), header, rows }
}

/// An arm's curves: `soft`, and `conditional` when it has conditional prompts.
fn curves(r: &ArmResult) -> Vec<(&'static str, &[CountStats], Distance)> {
    let mut out = vec![("soft", r.counts.as_slice(), r.distance)];
    if let Some(d) = r.cond_distance {
        out.push(("conditional", r.cond_counts.as_slice(), d));
    }
    out
}

/// A loss with 4 decimals, or `-`.
fn num(v: Option<f64>) -> String {
    v.map_or("-".into(), |v| format!("{v:.4}"))
}

/// The distinct values in first-seen order.
fn dedup(items: impl Iterator<Item = String>) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for i in items {
        if !out.contains(&i) {
            out.push(i);
        }
    }
    out
}
