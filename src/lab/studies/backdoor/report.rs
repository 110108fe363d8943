//! The backdoor report: `runs/<exp>/report/index.html` (attack success and false-trigger
//! curves by scale, half-life against parameters with its power-law fit, the knob-effect
//! table, configurations ranked by persistence, the rungs of a successive-halving search and
//! every cell's numbers), plus `fits.csv` (one row per cell) and `summary.md` (the tables in
//! Markdown).

use super::analysis::{BackdoorAnalysis, BackdoorCell, HalvingResult, Rung, PLANTED};
use crate::fs::write_atomic;
use crate::lab::experiment::Experiment;
use crate::lab::figures::{families, seed_band};
use crate::lab::knobs::knob_table;
use crate::lab::pooling::{reached, Condition, Series};
use crate::report::{self, line_chart, scatter_fit, Figure, Frame, LineChart, Page, Point, ScatterFit, Section, Table};
use anyhow::Result;
use std::path::PathBuf;

/// Writes the report files; `search` describes the search that chose the cells, if any.
/// Returns the HTML page's path.
pub fn write(exp: &Experiment, a: &BackdoorAnalysis, search: Option<&str>) -> Result<PathBuf> {
    let dir = exp.root.join("report");
    let tables = [ranked(&a.conditions), knob_table("tokens", &a.knobs), cell_table(a)];
    let mut intro = vec![format!(
        "{} cells planted a backdoor (attack success ≥ {} when continued training began), {} did not, {} have no finished run. \
         Persistence half-life: continued-training tokens until attack success falls halfway to its floor; \
         a censored cell outlasted the horizon, so its half-life is only a lower bound.",
        a.cells.len(),
        PLANTED,
        a.unplanted.len(),
        a.missing.len()
    )];
    intro.extend(search.map(str::to_string));
    let curves = Section {
        heading: "Attack success and false triggers during continued training".into(),
        paragraphs: vec![
            "One chart per combination of the swept knobs other than the scale; one line per scale, the mean over \
             seeds, banded by the seeds' range. The log axis omits t = 0."
                .into(),
        ],
        figures: curve_figures(exp, a)?,
        tables: Vec::new(),
    };
    let scaling = Section {
        heading: "Half-life against parameters".into(),
        paragraphs: scaling_text(a),
        figures: vec![half_life_figure(a)?],
        tables: Vec::new(),
    };
    let numbers =
        Section { heading: "Tables".into(), paragraphs: Vec::new(), figures: Vec::new(), tables: tables.to_vec() };
    let mut sections = vec![curves, scaling, numbers];
    sections.extend(a.halving.as_ref().map(halving_section));
    let page = Page { title: format!("Backdoor persistence: {}", exp.name), intro, sections };
    let path = page.write(&dir)?;
    write_atomic(&dir.join("fits.csv"), tables[2].to_csv().as_bytes())?;
    let search_tables = page.sections.get(3).map(|s| s.tables.clone()).unwrap_or_default();
    let summary: Vec<String> = std::iter::once(format!("# {}\n\n{}\n", page.title, page.intro.join("\n\n")))
        .chain(tables.iter().take(2).chain(&search_tables).map(Table::to_markdown))
        .collect();
    write_atomic(&dir.join("summary.md"), summary.join("\n").as_bytes())?;
    Ok(path)
}

/// Attack success, near-miss false triggers and clean loss over continued training: a chart
/// per family of swept knobs (every axis but the scale and the seed), a line per scale.
fn curve_figures(exp: &Experiment, a: &BackdoorAnalysis) -> Result<Vec<Figure>> {
    let mut figures = Vec::new();
    for (family, lines) in families(exp, &a.cells) {
        let label = if family.is_empty() { String::new() } else { format!(" · {family}") };
        for (title, y, pick) in [
            (
                "Attack success by scale",
                "attack success",
                (|c: &BackdoorCell| &c.attack) as fn(&BackdoorCell) -> &Series,
            ),
            ("False triggers on near misses by scale", "near-miss false-trigger rate", |c| &c.false_near_miss),
            ("Clean loss by scale", "clean loss", |c| &c.clean_loss),
        ] {
            let series = lines
                .iter()
                .map(|(line, cells)| seed_band(line, &cells.iter().map(|c| pick(c)).collect::<Vec<_>>(), 0.0))
                .collect();
            let title = format!("{title}{label}");
            let frame = Frame::new(&title, "continued-training tokens", y);
            let svg = line_chart(&LineChart { frame, log_x: true, series, ..Default::default() })?;
            figures.push(Figure { svg, caption: format!("{title}: mean over seeds, band = range over seeds.") });
        }
    }
    Ok(figures)
}

/// Half-life against parameters per seed, with the log-log fit over all planted cells.
fn half_life_figure(a: &BackdoorAnalysis) -> Result<Figure> {
    let points: Vec<Point> =
        a.cells.iter().filter_map(|c| reached(&c.half_life).map(|h| Point::new(c.params as f64, h))).collect();
    let fit = a
        .scaling
        .iter()
        .find(|s| s.against == "params")
        .map(|s| report::Fit { slope: s.fit.slope, intercept: s.fit.intercept });
    let chart = ScatterFit {
        frame: Frame::new("Persistence half-life against parameters", "parameters", "half-life (tokens)"),
        log_log: true,
        name: "cells whose attack success fell halfway".into(),
        points,
        fit,
    };
    Ok(Figure { svg: scatter_fit(&chart)?, caption: "One point per seed; censored cells are left out.".into() })
}

/// One sentence per scaling fit against parameters.
fn scaling_text(a: &BackdoorAnalysis) -> Vec<String> {
    let fits: Vec<String> = a
        .scaling
        .iter()
        .filter(|s| s.against == "params")
        .map(|s| {
            format!(
                "{}: half-life ∝ params^{:.2} (95% CI {:.2} to {:.2}, {}, n = {}).",
                s.family,
                s.fit.slope,
                s.fit.slope_ci.0,
                s.fit.slope_ci.1,
                s.quality(2),
                s.fit.n
            )
        })
        .collect();
    if fits.is_empty() {
        vec!["No scaling fit: it needs a swept model scale and at least 3 cells whose half-life was reached.".into()]
    } else {
        fits
    }
}

/// Conditions ranked by mean half-life, longest first (the top configurations).
fn ranked(conditions: &[Condition]) -> Table {
    let mut sorted: Vec<&Condition> = conditions.iter().collect();
    let mean = |c: &Condition| c.half_life.map_or(f64::INFINITY, |e| e.value);
    sorted
        .sort_by(|x, y| (y.censored, mean(y)).partial_cmp(&(x.censored, mean(x))).unwrap_or(std::cmp::Ordering::Equal));
    let rows = sorted
        .iter()
        .map(|c| {
            let h = c
                .half_life
                .map_or("—".into(), |e| format!("{:.0} [{:.0}, {:.0}] {}", e.value, e.lo, e.hi, e.method_label()));
            vec![c.name.clone(), c.params.to_string(), h, c.censored.to_string()]
        })
        .collect();
    Table {
        caption: "Configurations ranked by persistence (censored seeds outlasted the horizon and rank first)".into(),
        header: ["configuration", "params", "half-life tokens [95% CI] method", "censored seeds"]
            .map(String::from)
            .to_vec(),
        rows,
    }
}

/// The rungs of a halving search, shortest first, and the knob effects at the first rung.
fn halving_section(h: &HalvingResult) -> Section {
    let rule = "Each rung ranks its configurations by the mean over seeds of the censored lower bound of the \
        half-life (the half-life where attack success fell halfway to its floor within the rung's horizon, else \
        the horizon; 0 where the backdoor was not planted), ties broken by the mean fraction of attack success \
        remaining at the horizon, then by the sampled order; the best 1/eta go on to the next, longer rung. The \
        last rung's configurations are the top configurations found.";
    let mut tables: Vec<Table> = h.rungs.iter().enumerate().map(|(k, r)| rung_table(k, r)).collect();
    let mut knobs = knob_table("tokens", &h.knobs);
    knobs.caption = format!("{}, at the first rung (every sampled configuration, planted cells)", knobs.caption);
    tables.push(knobs);
    Section { heading: "Successive-halving search".into(), paragraphs: vec![rule.into()], figures: Vec::new(), tables }
}

/// One rung's configurations, best first.
fn rung_table(k: usize, r: &Rung) -> Table {
    let rows = r
        .configs
        .iter()
        .enumerate()
        .map(|(rank, c)| {
            vec![
                (rank + 1).to_string(),
                c.name.clone(),
                c.params.to_string(),
                format!("{:.0}", c.score.persistence),
                format!("{:.3}", c.score.remaining),
                format!("{}/{}", c.planted, c.seeds),
                c.censored.to_string(),
                if c.promoted { "yes" } else { "no" }.into(),
            ]
        })
        .collect();
    let header = [
        "rank",
        "configuration",
        "params",
        "persistence tokens (mean lower bound)",
        "attack success remaining at horizon",
        "planted/seeds",
        "censored seeds",
        "went on",
    ];
    Table {
        caption: format!(
            "Rung {k}: continue phase 1/{} of full, horizon ≈ {:.0} tokens, {} configurations",
            r.divisor,
            r.horizon,
            r.configs.len()
        ),
        header: header.map(String::from).to_vec(),
        rows,
    }
}

/// Every analysed cell: planting settings, curve ends, half-lives and the best law.
fn cell_table(a: &BackdoorAnalysis) -> Table {
    let last = |s: &Series| s.y.last().map_or("".into(), |v| format!("{v:.3}"));
    let rows = a
        .cells
        .iter()
        .chain(&a.unplanted)
        .map(|c| {
            let planting: Vec<String> = c.planting.iter().map(|(k, v)| format!("{k}={v}")).collect();
            let half = match reached(&c.half_life) {
                Some(h) => format!("{h:.0}"),
                None => format!(">{:.0}", c.persistence()),
            };
            let law = c.fits.first().map_or("".into(), |f| format!("{:?} (R² {:.2})", f.law(), f.r2));
            vec![
                c.id.clone(),
                c.seed.to_string(),
                c.params.to_string(),
                planting.join(" "),
                c.planted().to_string(),
                format!("{:.3}", c.start),
                last(&c.attack),
                last(&c.false_clean),
                last(&c.false_near_miss),
                last(&c.clean_loss),
                half,
                law,
                c.fit_half_life.map_or("".into(), |h| format!("{h:.0}")),
            ]
        })
        .collect();
    let header = [
        "cell",
        "seed",
        "params",
        "planting",
        "planted",
        "attack_start",
        "attack_end",
        "false_clean_end",
        "false_near_miss_end",
        "clean_loss_end",
        "half_life_tokens",
        "best_law",
        "fit_half_life_tokens",
    ];
    Table { caption: "Every cell".into(), header: header.map(String::from).to_vec(), rows }
}
