//! Report rendering: every chart is well-formed, deterministic SVG that draws what its data
//! say (lines, bands, ticks, fits, cells, bars, error bars, notes); the page is self-contained
//! and escaped; tables render as Markdown and CSV.

use std::collections::BTreeMap;

use roxmltree::{Document, Node};
use vestige::report::*;

/// Stroke of error bars, which nothing else uses.
const ERROR_BAR_STROKE: &str = "#282828";
/// Fill of missing heatmap cells.
const MISSING_FILL: &str = "#C8C8C8";

/// Parses `svg`, failing the test if it is not well-formed XML.
fn parse(svg: &str) -> Document<'_> {
    Document::parse(svg).unwrap_or_else(|e| panic!("not well-formed XML: {e}\n{svg}"))
}

/// Every element named `tag`.
fn elements<'a, 'i>(doc: &'a Document<'i>, tag: &str) -> Vec<Node<'a, 'i>> {
    doc.descendants().filter(|n| n.has_tag_name(tag)).collect()
}

/// The trimmed text of every `<text>` element.
fn texts(doc: &Document) -> Vec<String> {
    elements(doc, "text").iter().map(|n| n.text().unwrap_or("").trim().to_string()).collect()
}

/// The points of a `<polyline>`.
fn polyline_points(node: &Node) -> Vec<(f64, f64)> {
    let pair = |p: &str| p.split_once(',').map(|(x, y)| (x.parse().unwrap(), y.parse().unwrap()));
    node.attribute("points").unwrap_or("").split_whitespace().filter_map(pair).collect()
}

/// How many polylines are error bars.
fn error_bars(doc: &Document) -> usize {
    elements(doc, "polyline").iter().filter(|n| n.attribute("stroke") == Some(ERROR_BAR_STROKE)).count()
}

/// An exponential decay sampled at log-spaced steps, with a ±10% band if `band`.
fn decay(name: &str, rate: f64, band: bool) -> Series {
    let point = |i: i32| {
        let x = 10f64.powf(f64::from(i) / 3.0);
        let y = (-rate * x / 100.0).exp();
        if band {
            Point::new(x, y).with_interval(0.9 * y, 1.1 * y)
        } else {
            Point::new(x, y)
        }
    };
    Series { name: name.into(), points: (0..12).map(point).collect() }
}

/// Three decay curves on a log-x axis, two with bands, and one phase marker.
fn decay_chart() -> LineChart {
    LineChart {
        frame: Frame::new("Decay by scale", "step", "accuracy"),
        log_x: true,
        log_y: false,
        series: vec![decay("14M", 1.0, true), decay("70M", 0.3, true), decay("160M", 0.1, false)],
        markers: vec![Marker { x: 100.0, label: "phase 2".into() }],
    }
}

/// Four points on y = 8e5·x^-0.5 with CIs, and that law as the fit.
fn half_life_scatter() -> ScatterFit {
    let point = |x: f64| {
        let y = 8e5 * x.powf(-0.5);
        Point::new(x, y).with_interval(0.8 * y, 1.25 * y)
    };
    ScatterFit {
        frame: Frame::new("Half-life vs parameters", "parameters", "half-life"),
        log_log: true,
        name: "models".into(),
        points: [1e6, 1e7, 1e8, 1e9].map(point).to_vec(),
        fit: Some(Fit { slope: -0.5, intercept: 8e5f64.ln() }),
    }
}

/// A `rows` × `columns` heatmap of distinct values, with the cells in `missing` set to NaN.
fn grid(rows: usize, columns: usize, missing: &[(usize, usize)]) -> Heatmap {
    let value =
        |r: usize, c: usize| if missing.contains(&(r, c)) { f64::NAN } else { (r * columns + c) as f64 / 100.0 };
    Heatmap {
        frame: Frame::new("Retention", "overlap", "regularisation"),
        rows: (0..rows).map(|r| format!("reg {r}")).collect(),
        columns: (0..columns).map(|c| format!("overlap {c}")).collect(),
        values: (0..rows).map(|r| (0..columns).map(|c| value(r, c)).collect()).collect(),
        format: NumberFormat::Fixed(2),
    }
}

/// Two series over three categories: one infinite bar, one NaN interval, three finite intervals.
fn distance_bars() -> BarChart {
    BarChart {
        frame: Frame::new("Conditional distance", "condition", "distance"),
        categories: vec!["short".into(), "optimal".into(), "long".into()],
        series: vec![
            BarSeries {
                name: "soft prompt".into(),
                bars: vec![Bar::new(0.5).with_interval(0.4, 0.6), Bar::new(1.2), Bar::new(2.0).with_interval(1.7, 2.4)],
            },
            BarSeries {
                name: "random prompt".into(),
                bars: vec![
                    Bar::new(0.3).with_interval(f64::NAN, 0.4),
                    Bar::new(f64::INFINITY),
                    Bar::new(0.4).with_interval(0.3, 0.5),
                ],
            },
        ],
        references: vec![Reference { y: 0.8, label: "null baseline".into() }],
    }
}

/// Renders one chart to SVG.
type Render = fn() -> String;

/// One of each chart kind, named, with its renderer.
fn every_chart() -> Vec<(&'static str, Render)> {
    vec![
        ("line", || line_chart(&decay_chart()).unwrap()),
        ("empty line", || line_chart(&LineChart::default()).unwrap()),
        ("scatter", || scatter_fit(&half_life_scatter()).unwrap()),
        ("heatmap", || heatmap(&grid(3, 4, &[(1, 1)])).unwrap()),
        ("bar", || bar_chart(&distance_bars()).unwrap()),
    ]
}

#[test]
fn every_chart_is_well_formed_xml_and_byte_identical_across_calls() {
    for (name, render) in every_chart() {
        let (first, second) = (render(), render());
        let doc = parse(&first);
        assert_eq!(doc.root_element().tag_name().name(), "svg", "{name}");
        assert_eq!(first, second, "{name}: two renders differ");
    }
}

#[test]
fn line_chart_draws_one_line_and_swatch_per_series_and_one_band_per_banded_series() {
    let chart = decay_chart();
    let svg = line_chart(&chart).unwrap();
    let doc = parse(&svg);
    let texts = texts(&doc);
    for s in &chart.series {
        assert!(texts.contains(&s.name), "legend lacks {}", s.name);
    }
    // Data lines and legend swatches are the only 2-px polylines: one of each per series.
    let thick = elements(&doc, "polyline").iter().filter(|n| n.attribute("stroke-width") == Some("2")).count();
    assert_eq!(thick, 2 * chart.series.len());
    let banded = chart.series.iter().filter(|s| s.points.iter().any(|p| p.interval.is_some())).count();
    assert_eq!(elements(&doc, "polygon").len(), banded);
    assert!(texts.contains(&"phase 2".to_string()));
}

#[test]
fn log_x_axis_ticks_are_powers_of_ten() {
    let doc_text = line_chart(&LineChart { markers: vec![], ..decay_chart() }).unwrap();
    let doc = parse(&doc_text);
    // The x tick labels are the centred texts sharing one baseline: the largest such group.
    let mut rows: BTreeMap<&str, Vec<String>> = BTreeMap::new();
    for n in elements(&doc, "text").iter().filter(|n| n.attribute("text-anchor") == Some("middle")) {
        rows.entry(n.attribute("y").unwrap()).or_default().push(n.text().unwrap().trim().to_string());
    }
    let ticks = rows.into_values().max_by_key(Vec::len).unwrap();
    assert!(ticks.len() >= 3, "{ticks:?}");
    for t in &ticks {
        let exponent = t.parse::<f64>().unwrap_or_else(|_| panic!("tick {t:?} is not a number")).log10();
        assert!((exponent - exponent.round()).abs() < 1e-9, "tick {t} is not a power of ten");
    }
}

#[test]
fn non_finite_and_non_positive_log_points_are_skipped_and_counted() {
    let mut chart = decay_chart();
    chart.series[2].points[3].y = f64::NAN;
    chart.series[2].points[4].x = f64::INFINITY;
    chart.series[2].points[5].x = 0.0; // not plottable on the log x axis
    chart.series[0].points[6].interval = Some((f64::NEG_INFINITY, 1.0));
    let doc_text = line_chart(&chart).unwrap();
    let doc = parse(&doc_text);
    assert!(texts(&doc).iter().any(|t| t.starts_with("4 non-plottable values skipped")), "{:?}", texts(&doc));
    let longest = elements(&doc, "polyline").iter().map(polyline_points).map(|p| p.len()).max().unwrap();
    assert_eq!(longest, 12, "complete series keep all 12 points");
    let lengths: Vec<usize> = elements(&doc, "polyline")
        .iter()
        .filter(|n| n.attribute("stroke-width") == Some("2"))
        .map(|n| polyline_points(n).len())
        .collect();
    assert!(lengths.contains(&9), "the damaged series keeps 9 of 12 points: {lengths:?}");
}

#[test]
fn a_clean_chart_has_no_skipped_note() {
    let doc_text = line_chart(&decay_chart()).unwrap();
    assert!(!parse(&doc_text).descendants().any(|n| n.text().is_some_and(|t| t.contains("skipped"))));
}

#[test]
fn empty_or_unplottable_input_gives_a_no_data_chart() {
    let nan_only = LineChart {
        series: vec![Series { name: "nan".into(), points: vec![Point::new(f64::NAN, 1.0)] }],
        ..decay_chart()
    };
    let svgs = [
        line_chart(&LineChart::default()).unwrap(),
        line_chart(&nan_only).unwrap(),
        scatter_fit(&ScatterFit::default()).unwrap(),
        heatmap(&Heatmap::default()).unwrap(),
        bar_chart(&BarChart::default()).unwrap(),
    ];
    for svg in &svgs {
        assert!(texts(&parse(svg)).contains(&"no data".to_string()), "{svg}");
    }
    assert!(texts(&parse(&svgs[1])).iter().any(|t| t.starts_with("1 non-plottable value skipped")));
    assert!(!texts(&parse(&line_chart(&decay_chart()).unwrap())).contains(&"no data".to_string()));
}

#[test]
fn fit_evaluates_the_power_law_and_the_straight_line() {
    let fit = Fit { slope: -0.5, intercept: 8f64.ln() };
    assert!((fit.at(4.0, true) - 4.0).abs() < 1e-12);
    assert!((fit.at(4.0, false) - (8f64.ln() - 2.0)).abs() < 1e-12);
}

#[test]
fn scatter_fit_legend_gives_the_slope_and_the_line_passes_through_points_on_the_law() {
    let chart = half_life_scatter();
    let svg = scatter_fit(&chart).unwrap();
    let doc = parse(&svg);
    let legend = texts(&doc).into_iter().find(|t| t.starts_with("fit:")).expect("fit legend");
    assert!(legend.contains("a = -0.50") && legend.contains(&format!("b = {:.2}", 8e5f64.ln())), "{legend}");
    // The longest 2-px polyline is the fit; every point lies on the law, so on the line.
    let fit = elements(&doc, "polyline")
        .iter()
        .filter(|n| n.attribute("stroke-width") == Some("2"))
        .map(polyline_points)
        .max_by(|a, b| (a[1].0 - a[0].0).total_cmp(&(b[1].0 - b[0].0)))
        .unwrap();
    let (p, q) = (fit[0], fit[1]);
    let distance =
        |(x, y): (f64, f64)| ((q.0 - p.0) * (p.1 - y) - (p.0 - x) * (q.1 - p.1)).abs() / (q.0 - p.0).hypot(q.1 - p.1);
    let circles = elements(&doc, "circle");
    let centres = circles
        .iter()
        .map(|c| (c.attribute("cx").unwrap().parse().unwrap(), c.attribute("cy").unwrap().parse().unwrap()));
    let on_line = centres.filter(|&c| distance(c) <= 1.5).count();
    assert!(on_line >= chart.points.len(), "{on_line} of {} points on the fitted line", chart.points.len());
}

#[test]
fn scatter_draws_one_error_bar_per_point_with_a_finite_ci() {
    let mut chart = half_life_scatter();
    chart.points[0].interval = None;
    chart.points[1].interval = Some((f64::NAN, 3.0));
    let with_ci =
        chart.points.iter().filter(|p| p.interval.is_some_and(|(lo, hi)| lo.is_finite() && hi.is_finite())).count();
    let doc_text = scatter_fit(&chart).unwrap();
    let doc = parse(&doc_text);
    assert_eq!(error_bars(&doc), with_ci);
    assert!(texts(&doc).iter().any(|t| t.starts_with("1 non-plottable value skipped")));
}

#[test]
fn linear_scatter_describes_a_straight_line_fit() {
    let chart = ScatterFit { log_log: false, fit: Some(Fit { slope: 1.5, intercept: -0.25 }), ..half_life_scatter() };
    let doc_text = scatter_fit(&chart).unwrap();
    assert!(texts(&parse(&doc_text)).contains(&"fit: y = a·x + b, a = 1.50, b = -0.25".to_string()));
}

#[test]
fn heatmap_draws_one_rect_per_cell_grey_when_missing_and_annotates_values() {
    let map = grid(3, 4, &[(1, 1), (2, 3)]);
    let doc_text = heatmap(&map).unwrap();
    let doc = parse(&doc_text);
    let baseline_text = heatmap(&grid(1, 1, &[])).unwrap();
    let baseline = parse(&baseline_text);
    assert_eq!(elements(&doc, "rect").len() - elements(&baseline, "rect").len(), 3 * 4 - 1);
    let grey = elements(&doc, "rect").iter().filter(|n| n.attribute("fill") == Some(MISSING_FILL)).count();
    assert_eq!(grey, 2);
    let texts = texts(&doc);
    for v in map.values.iter().flatten().filter(|v| v.is_finite()) {
        assert!(texts.contains(&format!("{v:.2}")), "no annotation {v:.2}");
    }
    assert_eq!(texts.iter().filter(|t| *t == "n/a").count(), 2);
    assert!(texts.contains(&"max 0.10".to_string()) && texts.contains(&"min 0.00".to_string()), "{texts:?}");
    assert!(texts.contains(&"2 missing cells (grey)".to_string()));
}

#[test]
fn heatmap_formats_values_as_asked() {
    let map = Heatmap { format: NumberFormat::Percent(1), ..grid(1, 2, &[]) };
    let doc_text = heatmap(&map).unwrap();
    assert!(texts(&parse(&doc_text)).contains(&"1.0%".to_string()));
    assert_eq!(NumberFormat::Scientific(1).format(1234.0), "1.2e3");
}

#[test]
fn heatmap_and_bar_chart_reject_values_that_do_not_match_their_labels() {
    let mut map = grid(2, 2, &[]);
    map.values[1].pop();
    assert!(matches!(heatmap(&map), Err(ReportError::Shape { .. })));
    let mut bars = distance_bars();
    bars.series[0].bars.pop();
    assert!(matches!(bar_chart(&bars), Err(ReportError::Shape { .. })));
}

#[test]
fn bar_chart_draws_finite_bars_error_bars_and_labelled_reference_lines() {
    let chart = distance_bars();
    let doc_text = bar_chart(&chart).unwrap();
    let doc = parse(&doc_text);
    let bars = chart.series.iter().flat_map(|s| &s.bars);
    let finite = bars.clone().filter(|b| b.value.is_finite()).count();
    let with_ci = bars.clone().filter(|b| b.interval.is_some_and(|(lo, hi)| lo.is_finite() && hi.is_finite())).count();
    // Every bar is one opaque coloured rect, and so is each series' legend swatch.
    let coloured = elements(&doc, "rect")
        .iter()
        .filter(|n| n.attribute("opacity") == Some("1") && !matches!(n.attribute("fill"), Some("#FFFFFF" | "none")))
        .count();
    assert_eq!(coloured, finite + chart.series.len());
    assert_eq!(error_bars(&doc), with_ci);
    let texts = texts(&doc);
    assert!(texts.contains(&"null baseline".to_string()));
    assert!(texts.contains(&"2 non-plottable values skipped (non-finite)".to_string()), "{texts:?}");
}

/// A page with one section holding a figure and a table, with markup in every text.
fn page() -> Page {
    let table = Table {
        caption: "Fits <b>".into(),
        header: vec!["model".into(), "half-life".into()],
        rows: vec![vec!["pythia-14m".into(), "1,234 & <script>".into()], vec!["pythia-70m".into(), "\"5678\"".into()]],
    };
    Page {
        title: "Decay <script>&\"".into(),
        intro: vec!["Intro <i>one</i>".into()],
        sections: vec![Section {
            heading: "Decay & scale".into(),
            paragraphs: vec!["a < b".into()],
            figures: vec![Figure {
                svg: line_chart(&decay_chart()).unwrap(),
                caption: "Figure 1: decay 'by' scale".into(),
            }],
            tables: vec![table],
        }],
    }
}

#[test]
fn page_escapes_markup_in_every_text() {
    let html = page().to_html();
    assert!(html.contains("<title>Decay &lt;script&gt;&amp;&quot;</title>"));
    assert!(html.contains("<h1>Decay &lt;script&gt;&amp;&quot;</h1>"));
    assert!(html.contains("<td>1,234 &amp; &lt;script&gt;</td>") && html.contains("<td>&quot;5678&quot;</td>"));
    assert!(html.contains("<p>Intro &lt;i&gt;one&lt;/i&gt;</p>") && html.contains("<p>a &lt; b</p>"));
    assert!(html.contains("Fits &lt;b&gt;") && html.contains("Decay &amp; scale"));
    assert!(!html.contains("<script") && !html.contains("<i>") && !html.contains("<b>"));
}

#[test]
fn page_refers_to_nothing_outside_itself_but_the_svg_namespace() {
    let html = page().to_html();
    let namespace = "http://www.w3.org/2000/svg";
    for (at, _) in html.match_indices("http") {
        assert!(html[at..].starts_with(namespace), "external reference at {}", &html[at..(at + 60).min(html.len())]);
    }
    assert!(html.contains(namespace));
    for tag in ["<script", "<link", "<img", "<iframe", "src=", "href=", "@import", "url("] {
        assert!(!html.contains(tag), "page contains {tag}");
    }
}

#[test]
fn page_contains_every_figure_caption_and_table_cell() {
    let page = page();
    let html = page.to_html();
    assert!(html.contains("<figcaption>Figure 1: decay &#39;by&#39; scale</figcaption>"));
    assert!(html.contains(&page.sections[0].figures[0].svg), "figure SVG not inlined verbatim");
    for cell in ["model", "half-life", "pythia-14m", "pythia-70m"] {
        assert!(html.contains(&format!(">{cell}</")), "missing cell {cell}");
    }
}

#[test]
fn write_creates_index_html_atomically_and_leaves_no_temp_file() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("runs").join("report");
    let page = page();
    let path = page.write(&dir).unwrap();
    assert_eq!(path, dir.join("index.html"));
    assert_eq!(std::fs::read_to_string(&path).unwrap(), page.to_html());
    let names: Vec<_> = std::fs::read_dir(&dir).unwrap().map(|e| e.unwrap().file_name()).collect();
    assert_eq!(names, ["index.html"]);
    page.write(&dir).unwrap();
    assert_eq!(std::fs::read_dir(&dir).unwrap().count(), 1, "rewriting leaves no temp file either");
}

#[test]
fn table_renders_as_markdown_with_pipes_escaped() {
    let table = Table {
        caption: "Half-lives".into(),
        header: vec!["model".into(), "note".into()],
        rows: vec![vec!["a|b".into(), "two\nlines".into()]],
    };
    assert_eq!(table.to_markdown(), "Half-lives\n\n| model | note |\n| --- | --- |\n| a\\|b | two lines |\n");
}

#[test]
fn table_renders_as_csv_quoting_commas_quotes_and_line_breaks() {
    let table = Table {
        caption: "ignored".into(),
        header: vec!["model".into(), "slope".into()],
        rows: vec![vec!["a,b".into(), "say \"hi\"".into()], vec!["two\nlines".into(), "-0.50".into()]],
    };
    assert_eq!(table.to_csv(), "model,slope\n\"a,b\",\"say \"\"hi\"\"\"\n\"two\nlines\",-0.50\n");
}
