//! The backdoor report: `runs/<exp>/report/index.html` (margin, attack success and
//! false-trigger curves by scale, half-lives against parameters with their power-law fits,
//! configurations ranked by margin and by attack-success persistence, planting rates, the
//! knob-effect table, the rungs of a successive-halving search and every cell's numbers),
//! plus `fits.csv` (one row per cell) and `summary.md` (the tables in Markdown).

use super::analysis::{BackdoorAnalysis, BackdoorCell, HalvingResult, Rung, PLANTED};
use crate::fs::write_atomic;
use crate::lab::experiment::Experiment;
use crate::lab::figures::{families, seed_band};
use crate::lab::knobs::knob_table;
use crate::lab::pooling::{reached, Condition, ScalingFit, Series};
use crate::report::{self, line_chart, scatter_fit, Figure, Frame, LineChart, Page, Point, ScatterFit, Section, Table};
use anyhow::Result;
use std::path::PathBuf;

/// Writes the report files; `search` describes the search that chose the cells, if any.
/// Returns the HTML page's path.
pub fn write(exp: &Experiment, a: &BackdoorAnalysis, search: Option<&str>) -> Result<PathBuf> {
    let dir = exp.root.join("report");
    let cells = cell_table(a);
    let tables = [
        ranked(&a.margin_conditions, "margin"),
        ranked(&a.conditions, "attack success"),
        planting_table(a),
        knobs(&a.knobs, "margin half-life, planted cells"),
        knobs(&a.attack_knobs, "attack-success half-life, planted cells"),
        cells.clone(),
    ];
    let mut intro = vec![format!(
        "{} cells planted a backdoor (attack success ≥ {} when continued training began), {} did not, {} have no finished run. \
         The primary metric is the response's log-prob margin: its mean loss per token on clean inputs minus on triggered \
         inputs (nats). Its half-life is the continued-training tokens until it falls halfway from its value when continued \
         training began to the margin the base had before planting (measured per cell). The attack-success half-life \
         (greedy decode starts with the whole response) falls halfway to its floor instead. Both are over planted cells; \
         the planting rate is reported apart. A censored cell outlasted the horizon, so its half-life is only a lower bound.",
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
        paragraphs: [scaling_text(&a.margin_scaling, "margin"), scaling_text(&a.scaling, "attack-success")].concat(),
        figures: vec![
            half_life_figure(a, &a.margin_scaling, "margin", |c| &c.margin_half_life)?,
            half_life_figure(a, &a.scaling, "attack-success", |c| &c.attack_half_life)?,
        ],
        tables: Vec::new(),
    };
    let numbers =
        Section { heading: "Tables".into(), paragraphs: Vec::new(), figures: Vec::new(), tables: tables.to_vec() };
    let mut sections = vec![curves, scaling, numbers];
    sections.extend(a.halving.as_ref().map(halving_section));
    let page = Page { title: format!("Backdoor persistence: {}", exp.name), intro, sections };
    let path = page.write(&dir)?;
    write_atomic(&dir.join("fits.csv"), cells.to_csv().as_bytes())?;
    let search_tables = page.sections.get(3).map(|s| s.tables.clone()).unwrap_or_default();
    let summary: Vec<String> = std::iter::once(format!("# {}\n\n{}\n", page.title, page.intro.join("\n\n")))
        .chain(tables.iter().take(5).chain(&search_tables).map(Table::to_markdown))
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
                "Log-prob margin by scale",
                "margin (nats per response token)",
                (|c: &BackdoorCell| &c.margin) as fn(&BackdoorCell) -> &Series,
            ),
            ("Attack success by scale", "attack success", |c| &c.attack),
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

/// The `metric` half-life (picked by `pick`) against parameters per planted seed, with the
/// first log-log fit of `scaling`.
fn half_life_figure(
    a: &BackdoorAnalysis,
    scaling: &[ScalingFit],
    metric: &str,
    pick: fn(&BackdoorCell) -> &crate::analysis::HalfLife,
) -> Result<Figure> {
    let points: Vec<Point> =
        a.cells.iter().filter_map(|c| reached(pick(c)).map(|h| Point::new(c.params as f64, h))).collect();
    let fit = scaling
        .iter()
        .find(|s| s.against == "params")
        .map(|s| report::Fit { slope: s.fit.slope, intercept: s.fit.intercept });
    let chart = ScatterFit {
        frame: Frame::new(format!("{metric} half-life against parameters"), "parameters", "half-life (tokens)"),
        log_log: true,
        name: format!("cells whose {metric} fell halfway"),
        points,
        fit,
    };
    let caption = format!(
        "{metric} half-life: one point per planted seed; censored cells are left out of the figure (the fit of the \
         first family is drawn; the text gives every family's)."
    );
    Ok(Figure { svg: scatter_fit(&chart)?, caption })
}

/// One sentence per scaling fit of the `metric` half-life against parameters.
fn scaling_text(scaling: &[ScalingFit], metric: &str) -> Vec<String> {
    let fits: Vec<String> = scaling
        .iter()
        .filter(|s| s.against == "params")
        .map(|s| {
            format!(
                "{}: {metric} half-life ∝ params^{:.2} (95% CI {:.2} to {:.2}, {}, n = {}).",
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
        vec![format!(
            "No {metric} scaling fit: it needs a swept model scale and at least 3 cells whose half-life was reached."
        )]
    } else {
        fits
    }
}

/// Conditions ranked by their `metric` half-life, longest first (the top configurations).
fn ranked(conditions: &[Condition], metric: &str) -> Table {
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
        caption: format!(
            "Configurations ranked by {metric} half-life over planted seeds (censored seeds outlasted the horizon and rank first)"
        ),
        header: ["configuration", "params", "half-life tokens [95% CI] method", "censored seeds"]
            .map(String::from)
            .to_vec(),
        rows,
    }
}

/// The knob-effect table of `effects`, its caption ending in `(what)`.
fn knobs(effects: &[crate::lab::knobs::KnobEffect], what: &str) -> Table {
    let mut table = knob_table("tokens", effects);
    table.caption = format!("{} ({what})", table.caption);
    table
}

/// Each configuration's planting rate over its finished seeds.
fn planting_table(a: &BackdoorAnalysis) -> Table {
    let rows = a
        .planting
        .iter()
        .map(|(name, i)| {
            vec![
                name.clone(),
                format!("{}/{}", (i.value * i.n as f64).round(), i.n),
                format!("{:.2} [{:.2}, {:.2}]", i.value, i.lo, i.hi),
            ]
        })
        .collect();
    Table {
        caption: format!("Planting rate: seeds whose attack success reached {PLANTED} when continued training began (95% Clopper–Pearson)"),
        header: ["configuration", "planted/seeds", "rate [95% CI]"].map(String::from).to_vec(),
        rows,
    }
}

/// The rungs of a halving search, shortest first, and the knob effects at the first rung.
fn halving_section(h: &HalvingResult) -> Section {
    let rule = "Each rung ranks its configurations by the mean over their planted seeds of the censored lower bound \
        of the margin half-life (the half-life where the margin fell halfway to the base's within the rung's horizon, \
        else the horizon; a configuration that planted no seed scores 0), ties broken by the mean fraction of the \
        margin remaining at the horizon, then by the sampled order; the best 1/eta go on to the next, longer rung. \
        The planting rate is the planted/seeds column. The last rung's configurations are the top configurations \
        found; they are selected on the search's seeds, so report them from a confirmation run on fresh seeds.";
    let mut tables: Vec<Table> = h.rungs.iter().enumerate().map(|(k, r)| rung_table(k, r)).collect();
    tables.push(knobs(&h.knobs, "margin half-life, at the first rung: every sampled configuration, planted cells"));
    tables.push(knobs(
        &h.attack_knobs,
        "attack-success half-life, at the first rung: every sampled configuration, planted cells",
    ));
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
        "margin persistence tokens (mean lower bound over planted seeds)",
        "margin remaining at horizon",
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
            let half = match reached(&c.attack_half_life) {
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
                format!("{:.3}", c.margin_floor),
                format!("{:.3}", c.margin_start),
                last(&c.margin),
                match reached(&c.margin_half_life) {
                    Some(h) => format!("{h:.0}"),
                    None => format!(">{:.0}", c.margin_persistence()),
                },
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
        "margin_before_planting",
        "margin_start",
        "margin_end",
        "margin_half_life_tokens",
        "half_life_tokens",
        "best_law",
        "fit_half_life_tokens",
    ];
    Table { caption: "Every cell".into(), header: header.map(String::from).to_vec(), rows }
}
