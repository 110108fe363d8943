//! The report of a distance experiment: loss-versus-token-count curves with their ensemble
//! spread, distance bars against the null baselines, the input-versus-execution table and
//! per-count verdicts, written as `report/index.html`, `distance.csv` and `summary.md`.

use super::analysis::{analyse, ArmResult, CountStats, Distance, DistanceAnalysis};
use super::conditional::{self, CondAnalysis};
use super::lengths::{self, LengthRow};
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
    if let Some(section) = length_section(&a)? {
        summary.push_str(&format!("\n{}\n", section.paragraphs.join("\n\n")));
        for table in &section.tables {
            summary.push_str(&format!("\n{}\n", table.to_markdown()));
        }
    }
    // The page's own conditional section: its tables, and the per-condition one (its last) as CSV.
    if let Some(section) = page.sections.iter().find(|s| s.heading == CONDITIONS_HEADING) {
        for table in &section.tables {
            summary.push_str(&format!("\n{}\n", table.to_markdown()));
        }
        let per_condition = section.tables.last().expect("the section ends with the per-condition table");
        write_atomic(&dir.join("conditions.csv"), per_condition.to_csv().as_bytes())?;
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
            "Saturation S is the reported loss of execution fine-tuning ({}; learning rates {:?}; at most \
             {sat_steps} steps × batch {}, evaluated {} times and stopped after {} evaluations without a lower \
             validation loss) at its lowest validation loss. The conditional distance is the smallest soft-prompt \
             token count whose chosen run (the lowest validation loss over {} restart(s) × learning rates {:?}, \
             {} steps × batch {}, {:?} insertion) has a reported loss within ε = {} × (L0 − S) of S, L0 the frozen \
             model's loss (the criterion does not depend on the loss's scale). Every choice is made on {} \
             validation samples; every figure is the loss on {} other held-out samples, the same for every count \
             (0 included) and fine-tuning run. A distance is refused when a count it rules out had its chosen \
             learning rate at an end of the grid, a validation loss falling towards that end across the grid, and a \
             fall steep enough that a grid twice as wide, repeating the last step's gain, might bring it within ε of \
             S (it may only be under-tuned).",
            s.saturation.kinds.join(" and "),
            s.saturation.lrs,
            s.batch_size,
            s.saturation.evals,
            s.saturation.patience,
            s.restarts,
            s.lrs,
            s.steps,
            s.batch_size,
            s.insert,
            s.epsilon_rel,
            s.validation_samples.unwrap_or(s.eval_samples),
            s.eval_samples
        ),
        format!(
            "Null baselines: null_target is a random-target behavior of matched entropy ({}); null_model is the \
             behavior on a model that never learned it ({}). A distance means something only next to these: enough \
             tokens force arbitrary targets.",
            match &s.null_task {
                Some(t) => format!("task {t:?}"),
                None => "a random string of the same length".into(),
            },
            match (&s.null_model, &s.null_mixture) {
                (Some(dir), _) => format!("the model in {}", dir.display()),
                (None, Some(m)) => format!("the same pre-training on {:?}", m.keys().collect::<Vec<_>>()),
                (None, None) => "the untrained initialisation".into(),
            }
        ),
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
                "{point}: held-out loss per count of the run chosen on validation loss (band: lowest to highest over \
                 the ensemble of restarts × learning rates), and S per arm. \
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
            "A count is flagged when its runs spread by more than ε, when its chosen learning rate is an end of \
             the grid, when its chosen run was still improving at its last evaluation, or when it is worse than a \
             shorter prompt by more than ε: more tuning would then likely lower it."
        )],
        tables: vec![counts_table(a)],
        ..Default::default()
    };
    let mut sections = vec![curves, bars, verdicts];
    sections.extend(length_section(a)?);
    if let Some(c) = &s.conditional {
        sections.push(conditions_section(c, cond));
    }
    Ok(Page { title: format!("Conditional distance: {name}"), intro, sections })
}

/// The heading of [`conditions_section`].
const CONDITIONS_HEADING: &str = "Conditioning on pathfinding conditions";

/// Whether conditional prompts follow pathfinding conditions they never trained on.
fn conditions_section(c: &Conditional, cond: &CondAnalysis) -> Section {
    let pairs = |l: &[[i64; 2]]| l.iter().map(|[e, i]| format!("({e}, {i})")).collect::<Vec<_>>().join(", ");
    Section {
        heading: CONDITIONS_HEADING.into(),
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
        tables: vec![
            conditional::verdict_table(cond),
            conditional::over_seeds_table(&conditional::over_seeds(&cond.tunings)),
            conditional::condition_table(cond),
        ],
        ..Default::default()
    }
}

/// Distance against the repeated string's length, when the points sweep at least two
/// lengths: every seed's distance, the geometric mean, and the censored fit.
fn length_section(a: &DistanceAnalysis) -> Result<Option<Section>> {
    let rows = lengths::rows(&a.arms);
    if dedup(rows.iter().map(|r| r.length.to_string())).len() < 2 {
        return Ok(None);
    }
    let mut paragraphs = vec![format!(
        "Distance against string length, over base seeds. A distance beyond the largest count ({}) enters the fit \
         of ln(1 + distance) = a + b · ln(length) as a right-censored observation (Tobit regression); refused and \
         unknown distances stay out. Intervals are {}%: the geometric mean's is a t-interval on ln(1 + distance) \
         over seeds (only where every seed reached a distance), the slope's a t-interval from the fit.",
        a.spec.counts.last().copied().unwrap_or(0),
        lengths::LEVEL * 100.0
    )];
    for f in lengths::fits(&rows) {
        paragraphs.push(match f {
            Ok(f) => format!(
                "{}: slope b = {:.2} [{:.2}, {:.2}] over {} distances ({} censored).",
                f.arm.name(),
                f.slope.value,
                f.slope.lo,
                f.slope.hi,
                f.n,
                f.censored
            ),
            Err((arm, why)) => format!("{}: no fit ({why}).", arm.name()),
        });
    }
    let series = dedup(rows.iter().map(|r| r.arm.name().to_string()))
        .into_iter()
        .map(|arm| Series {
            name: arm.clone(),
            points: rows
                .iter()
                .filter(|r| r.arm.name() == arm)
                .flat_map(|r| r.seeds.iter().map(move |(_, d)| (r.length, *d)))
                .filter_map(|(len, d)| match d {
                    Distance::Reached(n) => Some(Point::new(len as f64, n as f64 + 1.0)),
                    _ => None,
                })
                .collect(),
        })
        .collect();
    let chart = LineChart {
        frame: Frame::new("Distance against string length", "string length", "distance + 1 (tokens)"),
        log_x: true,
        series,
        ..Default::default()
    };
    Ok(Some(Section {
        heading: "Distance against string length".into(),
        paragraphs,
        figures: vec![Figure {
            svg: line_chart(&chart)?,
            caption: "Every seed's reached distance (+1, so that 0 fits the axis); censored and refused ones are in \
                      the table."
                .into(),
        }],
        tables: vec![length_table(&rows)],
    }))
}

/// One row per arm and length: every seed's distance and the geometric mean.
fn length_table(rows: &[LengthRow]) -> Table {
    let header = ["arm", "length", "distance per seed", "geometric mean [95% CI]"].map(String::from).to_vec();
    let rows = rows
        .iter()
        .map(|r| {
            let seeds: Vec<String> = r.seeds.iter().map(|(s, d)| format!("s{s}: {}", distance_text(*d))).collect();
            let mean = r.mean.map_or("-".into(), |m| format!("{:.1} [{:.1}, {:.1}]", m.value, m.lo, m.hi));
            vec![r.arm.name().into(), r.length.to_string(), seeds.join(", "), mean]
        })
        .collect();
    Table { caption: "Distance per string length and base seed".into(), header, rows }
}

/// Loss against tokens + 1 for each arm of a point, with S as a flat line.
fn curve_chart(point: &str, arms: &[&ArmResult]) -> LineChart {
    let mut series = Vec::new();
    for r in arms {
        let pts = r.counts.iter().map(|c| Point::new(c.tokens as f64 + 1.0, c.best).with_interval(c.lowest, c.worst));
        series.push(Series { name: format!("{} ({})", r.arm.name(), r.task), points: pts.collect() });
        if !r.cond_counts.is_empty() {
            let pts = r
                .cond_counts
                .iter()
                .map(|c| Point::new(c.tokens as f64 + 1.0, c.best).with_interval(c.lowest, c.worst));
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
        Distance::Refused(n) => format!("refused ({n} tok: a wider learning-rate grid might reach S)"),
        Distance::Unknown => "unknown (no fine-tuning result)".into(),
    }
}

/// Input versus execution: behavior × (fine-tune loss, best prompt loss per count, distance).
pub fn comparison_table(a: &DistanceAnalysis) -> Table {
    let counts: Vec<usize> = a.spec.counts.clone();
    let mut header: Vec<String> = ["point", "arm", "task", "prompt", "S full", "S lora"].map(String::from).to_vec();
    let told = a.spec.conditional.is_some();
    if told {
        header.push("S conditioned".into());
    }
    header.extend(counts.iter().map(|n| format!("{n} tok")));
    header.extend(["distance", "S verdict"].map(String::from));
    let mut rows = Vec::new();
    for r in &a.arms {
        for (prompt, stats, distance) in curves(r) {
            let mut row =
                vec![r.point.clone(), r.arm.name().into(), r.task.clone(), prompt.into(), num(r.s_full), num(r.s_lora)];
            if told {
                row.push(num(r.s_conditioned));
            }
            row.extend(counts.iter().map(|n| num(stats.iter().find(|c| c.tokens == *n).map(|c| c.best))));
            row.push(distance_text(distance));
            row.push(match (r.saturation(), r.s_concerns.is_empty()) {
                (None, _) => "-".into(),
                (Some(_), true) => "stopped early".into(),
                (Some(_), false) => r.s_concerns.join("; "),
            });
            rows.push(row);
        }
    }
    Table {
        caption: "Input versus execution: fine-tuning loss (S), the chosen soft prompt's loss per count, distance"
            .into(),
        header,
        rows,
    }
}

/// One row per arm and count: the ensemble and its verdict.
pub fn counts_table(a: &DistanceAnalysis) -> Table {
    let header =
        ["point", "arm", "tokens", "runs", "chosen", "lowest", "mean", "worst", "chosen_lr", "verdict", "prompt"]
            .map(String::from)
            .to_vec();
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
                    format!("{:.4}", c.lowest),
                    format!("{:.4}", c.mean),
                    format!("{:.4}", c.worst),
                    lr,
                    verdict,
                    prompt.into(),
                ]);
            }
        }
    }
    Table {
        caption: "Per-count ensembles (reported loss; chosen: the run with the lowest validation loss)".into(),
        header,
        rows,
    }
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
