//! Bar charts: one group of bars per category, one bar per series, with optional error bars
//! and labelled horizontal reference lines (e.g. a null baseline). Used for conditional
//! distances against their null baselines.

use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};

use super::axis::Axis;
use super::frame::{self, Area, Chart, DrawResult, Frame, Whisker};
use super::ReportError;

/// Share of a category's width taken by its bars.
const GROUP_WIDTH: f64 = 0.8;

/// One bar: a value with an optional `(lo, hi)` error bar.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Bar {
    /// Height of the bar.
    pub value: f64,
    /// `(lo, hi)`, drawn as an error bar.
    pub interval: Option<(f64, f64)>,
}

impl Bar {
    /// A bar without an error bar.
    pub fn new(value: f64) -> Self {
        Self { value, interval: None }
    }

    /// This bar with the error bar `(lo, hi)`.
    pub fn with_interval(self, lo: f64, hi: f64) -> Self {
        Self { interval: Some((lo, hi)), ..self }
    }
}

/// A named series: one bar per category, in category order.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct BarSeries {
    /// Shown in the legend.
    pub name: String,
    /// One bar per category.
    pub bars: Vec<Bar>,
}

/// A labelled horizontal line at `y`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Reference {
    /// Where the line stands.
    pub y: f64,
    /// Written above the line's right end.
    pub label: String,
}

/// A grouped bar chart.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct BarChart {
    /// Title and axis names.
    pub frame: Frame,
    /// Category labels, left to right.
    pub categories: Vec<String>,
    /// The series; each category shows one bar per series, side by side.
    pub series: Vec<BarSeries>,
    /// Horizontal reference lines.
    pub references: Vec<Reference>,
}

/// A bar ready to draw: its series, its category and its (finite) value and interval.
struct Placed {
    /// Series index.
    series: usize,
    /// Category index.
    category: usize,
    /// The bar's height.
    value: f64,
    /// The error bar, if finite.
    interval: Option<(f64, f64)>,
}

/// Draws `chart` as SVG: bars from zero, error bars, reference lines and a legend. Non-finite
/// values are skipped and counted in a note; errors if a series has the wrong number of bars.
pub fn bar_chart(chart: &BarChart) -> Result<String, ReportError> {
    check_shape(chart)?;
    let (placed, mut skipped) = place(chart);
    let references: Vec<&Reference> = chart.references.iter().filter(|r| r.y.is_finite()).collect();
    skipped += chart.references.len() - references.len();
    let ys =
        placed.iter().flat_map(|b| [b.value].into_iter().chain(b.interval.into_iter().flat_map(|(lo, hi)| [lo, hi])));
    let y = (!placed.is_empty()).then(|| Axis::numeric(false, ys.chain(references.iter().map(|r| r.y)).chain([0.0])));
    frame::render(&chart.frame.title, frame::skipped_note(skipped, false).as_deref(), |area| match y.flatten() {
        Some(y) => draw(area, chart, &placed, &references, &y),
        None => frame::no_data(area),
    })
}

/// Checks that every series has one bar per category.
fn check_shape(chart: &BarChart) -> Result<(), ReportError> {
    match chart.series.iter().find(|s| s.bars.len() != chart.categories.len()) {
        Some(s) => Err(ReportError::Shape {
            chart: "bar chart",
            problem: format!("series {:?} has {} bars for {} categories", s.name, s.bars.len(), chart.categories.len()),
        }),
        None => Ok(()),
    }
}

/// The bars with finite values (and their intervals, where finite), and how many values were skipped.
fn place(chart: &BarChart) -> (Vec<Placed>, usize) {
    let mut skipped = 0;
    let mut placed = Vec::new();
    for (series, s) in chart.series.iter().enumerate() {
        for (category, bar) in s.bars.iter().enumerate() {
            if !bar.value.is_finite() {
                skipped += 1;
                continue;
            }
            let interval = bar.interval.filter(|(lo, hi)| lo.is_finite() && hi.is_finite());
            skipped += usize::from(bar.interval.is_some() && interval.is_none());
            placed.push(Placed { series, category, value: bar.value, interval });
        }
    }
    (placed, skipped)
}

/// Draws bars, error bars, reference lines and the legend on the category axis and `y`.
fn draw(area: &Area, chart: &BarChart, placed: &[Placed], references: &[&Reference], y: &Axis) -> DrawResult {
    let x = Axis::categories(&chart.categories);
    let mut plot = frame::chart(area, &chart.frame, &x, y, true)?;
    let width = GROUP_WIDTH / chart.series.len() as f64;
    let left = |b: &Placed| b.category as f64 + (1.0 - GROUP_WIDTH) / 2.0 + b.series as f64 * width;
    for (i, s) in chart.series.iter().enumerate() {
        let color = frame::series_color(i);
        let bars = placed.iter().filter(|b| b.series == i);
        plot.draw_series(bars.map(|b| Rectangle::new([(left(b), 0.0), (left(b) + width, b.value)], color.filled())))?
            .label(s.name.as_str())
            .legend(move |(px, py)| Rectangle::new([(px, py - 5), (px + 14, py + 5)], color.filled()));
    }
    let whiskers = placed.iter().filter_map(|b| b.interval.map(|(lo, hi)| Whisker::new(left(b) + width / 2.0, lo, hi)));
    plot.draw_series(whiskers)?;
    draw_references(&mut plot, references, &x)?;
    let tops =
        placed.iter().map(|b| (left(b) + width / 2.0, b.interval.map_or(b.value, |(lo, hi)| b.value.max(lo).max(hi))));
    let labels = references.iter().map(|r| (x.range().end, r.y));
    frame::legend(&mut plot, &x, y, &tops.chain(labels).collect::<Vec<_>>())
}

/// Draws each reference line across the plot, labelled above its right end.
fn draw_references(plot: &mut Chart, references: &[&Reference], x: &Axis) -> DrawResult {
    let (left, right) = (x.range().start, x.range().end);
    let anchor = Pos::new(HPos::Right, VPos::Bottom);
    references.iter().try_for_each(|r| frame::guide(plot, (left, r.y), (right, r.y), &r.label, anchor))
}
