//! Line charts: named series over a shared x axis, each with an optional translucent band
//! (e.g. the range over seeds), optional log axes, and labelled vertical markers (e.g. phase
//! boundaries). Used for decay curves, backdoor success rates and loss against prompt length.

use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};

use super::axis::Axis;
use super::frame::{self, Area, Chart, DrawResult, Frame};
use super::point::{Plottable, Point};
use super::ReportError;

/// Opacity of a series' band.
const BAND_OPACITY: f64 = 0.2;

/// A named series of points in x order; points with an interval form its band.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Series {
    /// Shown in the legend.
    pub name: String,
    /// The points, in x order.
    pub points: Vec<Point>,
}

/// A labelled vertical line at `x`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Marker {
    /// Where the line stands, in data units.
    pub x: f64,
    /// Written at the top of the line.
    pub label: String,
}

/// A line chart: several series, optional log axes, optional markers.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct LineChart {
    /// Title and axis names.
    pub frame: Frame,
    /// Log-scale x axis (ticks at whole decades).
    pub log_x: bool,
    /// Log-scale y axis (ticks at whole decades).
    pub log_y: bool,
    /// The series, drawn in palette order.
    pub series: Vec<Series>,
    /// Vertical markers.
    pub markers: Vec<Marker>,
}

/// Draws `chart` as SVG: bands first, then one polyline (with dots) per series, markers and a
/// legend. Non-plottable values are skipped and counted in a note.
pub fn line_chart(chart: &LineChart) -> Result<String, ReportError> {
    let series: Vec<Plottable> =
        chart.series.iter().map(|s| Plottable::split(&s.points, chart.log_x, chart.log_y)).collect();
    let markers: Vec<&Marker> = chart.markers.iter().filter(|m| Axis::plottable(chart.log_x, m.x)).collect();
    let skipped = series.iter().map(|s| s.skipped).sum::<usize>() + chart.markers.len() - markers.len();
    let x = Axis::numeric(chart.log_x, series.iter().flat_map(Plottable::xs).chain(markers.iter().map(|m| m.x)));
    let y = Axis::numeric(chart.log_y, series.iter().flat_map(Plottable::ys));
    frame::render(
        &chart.frame.title,
        frame::skipped_note(skipped, chart.log_x || chart.log_y).as_deref(),
        |area| match (x, y) {
            (Some(x), Some(y)) => draw(area, chart, &series, &markers, &x, &y),
            _ => frame::no_data(area),
        },
    )
}

/// Draws the plottable series and markers on axes `x` and `y`.
fn draw(area: &Area, chart: &LineChart, series: &[Plottable], markers: &[&Marker], x: &Axis, y: &Axis) -> DrawResult {
    let mut plot = frame::chart(area, &chart.frame, x, y, true)?;
    for (i, s) in series.iter().enumerate().filter(|(_, s)| !s.intervals.is_empty()) {
        let upper = s.intervals.iter().map(|&(px, _, hi)| (x.pos(px), y.pos(hi)));
        let lower = s.intervals.iter().rev().map(|&(px, lo, _)| (x.pos(px), y.pos(lo)));
        plot.draw_series([Polygon::new(
            upper.chain(lower).collect::<Vec<_>>(),
            frame::series_color(i).mix(BAND_OPACITY),
        )])?;
    }
    for (i, (s, named)) in series.iter().zip(&chart.series).enumerate().filter(|(_, (s, _))| !s.xy.is_empty()) {
        let color = frame::series_color(i);
        let points = s.xy.iter().map(|&(px, py)| (x.pos(px), y.pos(py)));
        plot.draw_series(LineSeries::new(points, color.stroke_width(2)).point_size(3))?
            .label(named.name.as_str())
            .legend(frame::line_swatch(color));
    }
    draw_markers(&mut plot, markers, x, y)?;
    frame::legend(&mut plot, x, y, &series.iter().flat_map(|s| s.axis_points(x, y)).collect::<Vec<_>>())
}

/// Draws each marker as a vertical guide line labelled at its top.
fn draw_markers(plot: &mut Chart, markers: &[&Marker], x: &Axis, y: &Axis) -> DrawResult {
    let (bottom, top) = (y.range().start, y.range().end);
    let anchor = Pos::new(HPos::Left, VPos::Top);
    markers.iter().try_for_each(|m| frame::guide(plot, (x.pos(m.x), bottom), (x.pos(m.x), top), &m.label, anchor))
}
