//! The decay study's report: `report/index.html` (decay curves by scale with seed bands,
//! half-life against parameters with its log-log fit, a heatmap over the two other swept
//! axes, and the fit tables), `fits.csv` (one row per cell) and `summary.md`.

use super::analysis::{score, CellResult, DecayAnalysis, FloorSource};
use crate::analysis::{HalfLife, Interval, Law};
use crate::fs::write_atomic;
use crate::lab::experiment::Experiment;
use crate::lab::figures::{families, scale_axis, seed_band, value_of};
use crate::lab::knobs::{knob_effects, knob_table};
use crate::lab::pooling::{moved_toward, reached, Condition, Series, NOT_RUN};
use crate::lab::search::{ranking, Score};
use crate::lab::sweep::label_of;
use crate::report::{
    heatmap, line_chart, scatter_fit, Figure, Fit, Frame, Heatmap, LineChart, NumberFormat, Page, Point, ScatterFit,
    Section, Table,
};
use anyhow::Result;
use std::path::PathBuf;

/// Writes the report files under `root/report`; returns the index page's path. After a
/// search (`searched`), the configurations that ran are ranked first.
pub fn write(exp: &Experiment, a: &DecayAnalysis, searched: bool) -> Result<PathBuf> {
    let dir = exp.root.join("report");
    let cells = cells_table(a);
    let mut tables = vec![
        conditions_table(a),
        cells.clone(),
        scaling_table(a),
        knob_table("steps", &knob_effects(&a.cells)),
        baseline_table(a),
        law_table(a),
        forgetting_law_table(a),
    ];
    if searched {
        tables.insert(0, search_table(a));
    }
    let page = Page {
        title: format!("Capability decay: {}", exp.name),
        intro: intro(exp, a, searched),
        sections: vec![
            curves_section(exp, a)?,
            scaling_section(exp, a)?,
            heatmap_section(exp, a)?,
            Section { heading: "Tables".into(), tables: tables.to_vec(), ..Default::default() },
        ],
    };
    let index = page.write(&dir)?;
    write_atomic(&dir.join("fits.csv"), cells.to_csv().as_bytes())?;
    let mut md = format!("# {}\n\n", page.title);
    for p in &page.intro {
        md.push_str(&format!("{p}\n\n"));
    }
    for t in &tables {
        md.push_str(&format!("{}\n", t.to_markdown()));
    }
    write_atomic(&dir.join("summary.md"), md.as_bytes())?;
    Ok(index)
}

/// What was run, what is measured and the headline scaling fits.
fn intro(exp: &Experiment, a: &DecayAnalysis, searched: bool) -> Vec<String> {
    let mut out = vec![
        format!(
            "{} of {} cells finished ({} decay cells and {} floor twins). Phase 1 trains {} and {} together; \
             phase 2 trains {} only. The analysed metric is {} of {} on its fixed held-out set.",
            a.cells.len() + a.floors.len(),
            exp.cells.len(),
            a.cells.len(),
            a.floors.len(),
            a.a,
            a.b,
            a.a,
            a.metric,
            a.b
        ),
        format!(
            "Half-life: phase-2 steps until {}'s {} has moved halfway from its end-of-phase-1 value to its floor \
             ({}), by linear interpolation between evaluations; seeds that never cross are censored (the \
             half-life exceeds the horizon: a lower bound). Per condition, the half-life is the geometric mean over \
             seeds with a 95% Student-t interval on ln half-life; where some seeds are censored, the median of a \
             log-normal survival fit by maximum likelihood, which counts them as the lower bounds they are. The \
             method and n stand beside each interval. Scaling fits count censored seeds as lower bounds too (a Tobit regression, without an R²). Laws (exponential, power law, shifted power law) are fitted by least squares and ranked by AICc (AIC with the small-sample correction: each curve has only a dozen or so points).",
            a.b,
            a.metric,
            floor_phrase(a)
        ),
    ];
    let (beyond, n) = (a.cells.iter().filter(|c| moved_toward(&c.b, c.start, c.floor) > 1.0).count(), a.cells.len());
    if beyond > 0 {
        out.push(format!(
            "{beyond} of {n} cells end phase 2 beyond the floor: B is then displaced by A's answers (interference), \
             not merely forgotten to the never-learned level."
        ));
    }
    for s in a.scaling.iter().filter(|s| s.against == "params") {
        out.push(format!(
            "Half-life ∝ params^{:.2} (95% CI [{:.2}, {:.2}], {}, {} seeds) for {}.",
            s.fit.slope,
            s.fit.slope_ci.0,
            s.fit.slope_ci.1,
            s.quality(2),
            s.fit.n,
            s.family
        ));
    }
    // A search leaves most of the grid unrun by design: count those cells instead of listing them.
    let (unselected, missing): (Vec<_>, Vec<_>) = a.missing.iter().partition(|(_, s)| searched && s == NOT_RUN);
    if !unselected.is_empty() {
        out.push(format!("The search did not select the other {} cells of the grid.", unselected.len()));
    }
    if !missing.is_empty() {
        let list: Vec<String> = missing.iter().map(|(c, s)| format!("{c} ({s})")).collect();
        out.push(format!("Not in this report: {}.", list.join(", ")));
    }
    out
}

/// How the floor was measured, for the intro.
fn floor_phrase(a: &DecayAnalysis) -> String {
    let measured = a.cells.iter().filter(|c| c.floor_source == FloorSource::Measured).count();
    match (measured, a.cells.first()) {
        (_, None) => "n/a".into(),
        (0, Some(c)) => format!("the chance level, {:.3}", c.floor),
        (m, _) => format!(
            "measured for {m} of {} cells as {}'s {} at the end of a twin trained on {} alone for phase 1, same \
             scale, seed and settings; the others use the chance level",
            a.cells.len(),
            a.b,
            a.metric,
            a.a
        ),
    }
}

/// Which decay law wins and by how much: per law, the cells where it has the lowest AICc,
/// and the median and largest AICc gap to the cell's best law (0 where it wins; a gap above
/// about 2 is evidence against the law, above 10 strong evidence).
fn law_table(a: &DecayAnalysis) -> Table {
    let rows = Law::ALL
        .iter()
        .map(|&law| {
            let mut gaps: Vec<f64> = a
                .cells
                .iter()
                .filter_map(|c| {
                    let best = c.fits.first()?;
                    let own = c.fits.iter().find(|f| f.law() == law)?;
                    Some(own.aicc - best.aicc)
                })
                .filter(|g| g.is_finite())
                .collect();
            gaps.sort_by(f64::total_cmp);
            let wins = a.cells.iter().filter(|c| c.fits.first().is_some_and(|f| f.law() == law)).count();
            let median = if gaps.is_empty() { f64::NAN } else { gaps[gaps.len() / 2] };
            vec![
                law.name().to_string(),
                format!("{wins} of {}", a.cells.iter().filter(|c| !c.fits.is_empty()).count()),
                format!("{median:.1}"),
                format!("{:.1}", gaps.last().copied().unwrap_or(f64::NAN)),
            ]
        })
        .collect();
    Table {
        caption: "Decay laws compared: cells each law wins on AICc, and its AICc gap to each cell's best law \
                  (shifted power law and exponential do not depend on the time unit; the unshifted power law \
                  (1+t)^-b does)"
            .into(),
        header: ["law", "cells won", "median ΔAICc", "largest ΔAICc"].map(String::from).to_vec(),
        rows,
    }
}

/// Per condition: how well phase 1 taught A and B, and where B's floor lies.
fn baseline_table(a: &DecayAnalysis) -> Table {
    let rows = a
        .conditions
        .iter()
        .map(|cond| {
            let cells: Vec<&CellResult> = cond.cells.iter().map(|&i| &a.cells[i]).collect();
            let mean = |f: &dyn Fn(&CellResult) -> f64| cells.iter().map(|c| f(c)).sum::<f64>() / cells.len() as f64;
            let twins: Vec<f64> = a.floors.iter().filter(|f| f.condition == cond.name).map(|f| f.b).collect();
            vec![
                cond.name.clone(),
                cells.len().to_string(),
                format!("{:.0}", mean(&|c| c.together_steps as f64)),
                format!("{:.3}", mean(&|c| c.learned.0)),
                format!("{:.3}", mean(&|c| c.learned.1)),
                format!("{:.4}", mean(&|c| c.start)),
                match twins.len() {
                    0 => "—".into(),
                    n => format!("{:.4} (n={n})", twins.iter().sum::<f64>() / n as f64),
                },
                format!("{:.4}", mean(&|c| c.floor)),
            ]
        })
        .collect();
    Table {
        caption: format!(
            "Phase 1 and the floor per condition (means over seeds): phase-1 steps, exact match of {} and {} at its \
             end, {}'s {} there (start), in the floor twins, and the floor used",
            a.a, a.b, a.b, a.metric
        ),
        header: [
            "condition",
            "seeds",
            "phase-1 steps",
            "A exact",
            "B exact",
            "B start",
            "B in floor twin",
            "floor used",
        ]
        .map(String::from)
        .to_vec(),
        rows,
    }
}

/// Decay curves of B (and its KL forgetting, and A) per family, one line per scale.
fn curves_section(exp: &Experiment, a: &DecayAnalysis) -> Result<Section> {
    let mut figures = Vec::new();
    for (family, lines) in families(exp, &a.cells) {
        let label = if family.is_empty() { String::new() } else { format!(" · {family}") };
        for (what, task, pick) in [
            (a.metric.as_str(), a.b.as_str(), (|c: &CellResult| &c.b) as fn(&CellResult) -> &Series),
            ("forgetting KL", a.b.as_str(), |c: &CellResult| &c.b_kl),
            (a.metric.as_str(), a.a.as_str(), |c: &CellResult| &c.a),
        ] {
            let series = lines
                .iter()
                .map(|(line, cells)| seed_band(line, &cells.iter().map(|c| pick(c)).collect::<Vec<_>>(), 1.0))
                .collect();
            let frame = Frame::new(format!("{task}: {what}{label}"), "phase-2 step + 1", what);
            let svg = line_chart(&LineChart { frame, log_x: true, series, ..Default::default() })?;
            let caption = format!("{task}'s {what} during phase 2 (mean over seeds; band: seed range){label}.");
            figures.push(Figure { svg, caption });
        }
    }
    let paragraphs = vec!["B is the task dropped in phase 2; A keeps training.".to_string()];
    Ok(Section { heading: "Decay curves".into(), paragraphs, figures, tables: Vec::new() })
}

/// Half-life against parameters per family, with the log-log fit.
fn scaling_section(exp: &Experiment, a: &DecayAnalysis) -> Result<Section> {
    let mut figures = Vec::new();
    let mut paragraphs = Vec::new();
    if scale_axis(exp).is_none() {
        paragraphs.push("No model-size axis is swept, so there is no scaling fit.".into());
    }
    for s in a.scaling.iter().filter(|s| s.against == "params") {
        let points = s.points.iter().map(|&(x, y)| Point::new(x, y)).collect();
        let fit = Some(Fit { slope: s.fit.slope, intercept: s.fit.intercept });
        let frame = Frame::new(format!("half-life vs parameters · {}", s.family), "parameters", "half-life (steps)");
        let svg = scatter_fit(&ScatterFit { frame, log_log: true, name: "seeds".into(), points, fit })?;
        let caption = format!(
            "Each dot is one seed whose {} crossed halfway; slope {:.2} (95% CI [{:.2}, {:.2}]).",
            a.b, s.fit.slope, s.fit.slope_ci.0, s.fit.slope_ci.1
        );
        figures.push(Figure { svg, caption });
    }
    Ok(Section { heading: "Half-life against scale".into(), paragraphs, figures, tables: Vec::new() })
}

/// Mean half-life over the first two swept axes other than the scale and the seed.
fn heatmap_section(exp: &Experiment, a: &DecayAnalysis) -> Result<Section> {
    let scale = scale_axis(exp);
    let others: Vec<&str> =
        exp.axes.iter().map(|x| x.key.as_str()).filter(|k| *k != "seed" && Some(*k) != scale.as_deref()).collect();
    let mut section = Section { heading: "Half-life heatmap".into(), ..Default::default() };
    let [rows_key, cols_key, ..] = others[..] else {
        section.paragraphs.push("A heatmap needs two swept axes besides scale and seed.".into());
        return Ok(section);
    };
    let labels = |key: &str| -> Vec<String> {
        let mut v: Vec<String> = Vec::new();
        for c in &a.cells {
            let x = value_of(&c.point, key);
            if !v.contains(&x) {
                v.push(x);
            }
        }
        v
    };
    let (rows, columns) = (labels(rows_key), labels(cols_key));
    let values = rows
        .iter()
        .map(|r| {
            columns
                .iter()
                .map(|col| {
                    let hs: Vec<f64> = a
                        .cells
                        .iter()
                        .filter(|c| value_of(&c.point, rows_key) == *r && value_of(&c.point, cols_key) == *col)
                        .filter_map(|c| reached(&c.half_life))
                        .collect();
                    if hs.is_empty() {
                        f64::NAN
                    } else {
                        hs.iter().sum::<f64>() / hs.len() as f64
                    }
                })
                .collect()
        })
        .collect();
    let frame = Frame::new("mean half-life (steps)", label_of(cols_key), label_of(rows_key));
    let svg = heatmap(&Heatmap { frame, rows, columns, values, format: NumberFormat::Fixed(0) })?;
    let caption = "Mean over seeds and scales of the seeds that crossed halfway; grey: none did.".into();
    section.figures.push(Figure { svg, caption });
    Ok(section)
}

/// `12.3 [10.1, 14.0]`, or `—`.
fn interval(c: &Condition) -> String {
    c.half_life.map_or("—".into(), |e| format!("{:.1} [{:.1}, {:.1}]", e.value, e.lo, e.hi))
}

/// `t on ln (n=2)`, or `—` where no estimate exists.
fn method(c: &Condition) -> String {
    c.half_life.map_or("—".into(), |e| e.method_label())
}

/// One row per condition.
/// Kalajdzievski's joint form per family, fitted to B's forgetting KL.
fn forgetting_law_table(a: &DecayAnalysis) -> Table {
    let rows = a
        .forgetting_laws
        .iter()
        .map(|f| {
            let ci = |i: &Interval| format!("{:.3} [{:.3}, {:.3}]", i.value, i.lo, i.hi);
            match &f.law {
                Ok(l) => vec![
                    f.family.clone(),
                    f.cells.to_string(),
                    l.points.to_string(),
                    ci(&l.alpha),
                    ci(&l.beta),
                    format!("{:.1}", l.shift),
                    format!("{:.3}", l.r2),
                    l.alpha.method_label(),
                ],
                Err(e) => {
                    let mut row = vec![f.family.clone(), f.cells.to_string(), "—".into(), format!("no fit: {e}")];
                    row.resize(8, String::new());
                    row
                }
            }
        })
        .collect();
    Table {
        caption: format!(
            "Kalajdzievski (2024)'s joint form for {}'s forgetting (KL to the end-of-phase-1 model): \
             F ≈ A · params^α · (steps + s)^β, one least-squares fit of ln F per family of cells that differ \
             only in size and seed, the shift s profiled; intervals from a percentile bootstrap over whole \
             cells (the points of one curve are not independent)",
            a.b
        ),
        header: ["family", "cells", "points", "α [95% CI]", "β [95% CI]", "shift s (steps)", "R² of ln F", "method"]
            .map(String::from)
            .to_vec(),
        rows,
    }
}

/// The searched configurations, most persistent first (see [`score`]), with the
/// censoring-aware half-life beside the ranking score.
fn search_table(a: &DecayAnalysis) -> Table {
    let scores: Vec<Score> = a
        .conditions
        .iter()
        .map(|c| score(&c.cells.iter().map(|&i| &a.cells[i]).collect::<Vec<_>>(), c.cells.len()))
        .collect();
    let rows = ranking(&scores)
        .into_iter()
        .enumerate()
        .map(|(rank, i)| {
            let c = &a.conditions[i];
            vec![
                (rank + 1).to_string(),
                c.name.clone(),
                c.cells.len().to_string(),
                format!("{:.0}", scores[i].persistence),
                format!("{:.0}%", 100.0 * scores[i].remaining),
                interval(c),
                method(c),
                c.censored.to_string(),
            ]
        })
        .collect();
    Table {
        caption: format!(
            "Search ranking: configurations by the mean over seeds of {}'s half-life in steps, a censored seed \
             counted at its horizon (a lower bound), ties broken by the mean share of {} remaining at the horizon. \
             The ranking selects; confirm its winners on fresh seeds before reporting them",
            a.b, a.b
        ),
        header: [
            "rank",
            "configuration",
            "seeds",
            "score (steps, lower bound)",
            "remaining at horizon",
            "half-life [CI]",
            "method",
            "censored",
        ]
        .map(String::from)
        .to_vec(),
        rows,
    }
}

fn conditions_table(a: &DecayAnalysis) -> Table {
    let rows = a
        .conditions
        .iter()
        .map(|c| {
            let laws: Vec<&str> =
                c.cells.iter().filter_map(|&i| a.cells[i].fits.first()).map(|f| f.law().name()).collect();
            vec![
                c.name.clone(),
                c.params.to_string(),
                c.cells.len().to_string(),
                interval(c),
                method(c),
                c.censored.to_string(),
                c.moved.map_or("—".into(), |e| {
                    format!("{:.0}% [{:.0}, {:.0}]", 100.0 * e.value, 100.0 * e.lo, 100.0 * e.hi)
                }),
                most_common(&laws),
            ]
        })
        .collect();
    Table {
        caption: format!(
            "Half-life of {}'s {} per condition (95% intervals over seeds; method and n beside each)",
            a.b, a.metric
        ),
        header: [
            "condition",
            "params",
            "seeds",
            "half-life [CI]",
            "method",
            "censored",
            "moved to floor by horizon [t-interval]",
            "best law (mode)",
        ]
        .map(String::from)
        .to_vec(),
        rows,
    }
}

/// The most frequent entry (ties: the first), or `—`.
fn most_common(xs: &[&str]) -> String {
    let mut best = ("—", 0);
    for x in xs {
        let n = xs.iter().filter(|y| *y == x).count();
        if n > best.1 {
            best = (x, n);
        }
    }
    best.0.to_string()
}

/// One row per cell: its fits and half-lives (also `fits.csv`).
fn cells_table(a: &DecayAnalysis) -> Table {
    let rows = a
        .cells
        .iter()
        .map(|c| {
            let best = c.fits.first();
            let params = best.map_or(String::new(), |f| {
                f.curve.params().iter().map(|(k, v)| format!("{k}={v:.4}")).collect::<Vec<_>>().join(" ")
            });
            let aic = |law: &str| {
                c.fits.iter().find(|f| f.law().name() == law).map_or(String::new(), |f| format!("{:.2}", f.aicc))
            };
            vec![
                c.id.clone(),
                c.condition.clone(),
                c.seed.to_string(),
                c.params.to_string(),
                format!("{:.4}", c.start),
                format!("{:.4}", c.floor),
                match c.half_life {
                    HalfLife::Reached(t) => format!("{t:.1}"),
                    HalfLife::Censored { horizon } => format!(">{horizon:.0}"),
                },
                c.fit_half_life.map_or(String::new(), |t| format!("{t:.1}")),
                best.map_or(String::new(), |f| f.law().name().to_string()),
                params,
                best.map_or(String::new(), |f| format!("{:.4}", f.r2)),
                aic("exponential"),
                aic("power_law"),
                aic("shifted_power_law"),
            ]
        })
        .collect();
    let header = [
        "cell",
        "condition",
        "seed",
        "params",
        "start",
        "floor",
        "half_life",
        "fit_half_life",
        "best_law",
        "best_params",
        "r2",
        "aicc_exponential",
        "aicc_power_law",
        "aicc_shifted_power_law",
    ];
    Table { caption: "Per-cell fits".into(), header: header.map(String::from).to_vec(), rows }
}

/// One row per scaling fit.
fn scaling_table(a: &DecayAnalysis) -> Table {
    let rows = a
        .scaling
        .iter()
        .map(|s| {
            vec![
                s.against.clone(),
                s.family.clone(),
                format!("{:.3}", s.fit.slope),
                format!("[{:.3}, {:.3}]", s.fit.slope_ci.0, s.fit.slope_ci.1),
                match s.censored {
                    0 => format!("{:.3}", s.fit.r2),
                    c => format!("Tobit ({c} censored)"),
                },
                s.fit.n.to_string(),
            ]
        })
        .collect();
    Table {
        caption: "Scaling fits of half-life (log-log against params, linear against other numeric axes)".into(),
        header: ["against", "family", "slope", "95% CI", "R²", "n"].map(String::from).to_vec(),
        rows,
    }
}
