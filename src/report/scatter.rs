//! Scatter plots with error bars and a fitted line: a power law on log-log axes or a straight
//! line on linear ones, its parameters written in the legend. Used for half-life against
//! parameter count. The fit itself comes from the analysis layer.

use plotters::prelude::*;

use super::axis::Axis;
use super::frame::{self, Area, DrawResult, Frame, Whisker};
use super::point::{Plottable, Point};
use super::ReportError;

/// A fitted law: `y = exp(intercept)·x^slope` on log-log axes, `y = intercept + slope·x` otherwise.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Fit {
    /// The exponent (log-log) or the slope (linear).
    pub slope: f64,
    /// `ln` of the prefactor (log-log) or the value at `x = 0` (linear).
    pub intercept: f64,
}

impl Fit {
    /// The fitted value at `x`.
    pub fn at(&self, x: f64, log_log: bool) -> f64 {
        if log_log {
            (self.intercept + self.slope * x.ln()).exp()
        } else {
            self.intercept + self.slope * x
        }
    }

    /// The legend text: the law's form and its parameters to two decimals.
    pub fn describe(&self, log_log: bool) -> String {
        let form = if log_log { "y = exp(b)·x^a" } else { "y = a·x + b" };
        format!("fit: {form}, a = {:.2}, b = {:.2}", self.slope, self.intercept)
    }
}

/// A scatter plot of points with optional confidence intervals and an optional fit.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ScatterFit {
    /// Title and axis names.
    pub frame: Frame,
    /// Log scale on both axes (and a power-law fit) instead of linear.
    pub log_log: bool,
    /// Legend label of the points.
    pub name: String,
    /// The points; an interval is drawn as a vertical error bar.
    pub points: Vec<Point>,
    /// Drawn across the points' x range.
    pub fit: Option<Fit>,
}

/// Draws `chart` as SVG: error bars, dots, the fitted line and a legend. Non-plottable values
/// are skipped and counted in a note.
pub fn scatter_fit(chart: &ScatterFit) -> Result<String, ReportError> {
    let points = Plottable::split(&chart.points, chart.log_log, chart.log_log);
    let fit_line = chart.fit.and_then(|fit| fit_ends(&fit, &points, chart.log_log));
    let skipped = points.skipped + usize::from(chart.fit.is_some() && !points.xy.is_empty() && fit_line.is_none());
    let x = Axis::numeric(chart.log_log, points.xs());
    let y = Axis::numeric(chart.log_log, points.ys().chain(fit_line.iter().flat_map(|ends| ends.map(|(_, fy)| fy))));
    frame::render(&chart.frame.title, frame::skipped_note(skipped, chart.log_log).as_deref(), |area| match (x, y) {
        (Some(x), Some(y)) => draw(area, chart, &points, fit_line, &x, &y),
        _ => frame::no_data(area),
    })
}

/// The fitted line's ends over the points' x range, if both are plottable.
fn fit_ends(fit: &Fit, points: &Plottable, log_log: bool) -> Option<[(f64, f64); 2]> {
    let lo = points.xs().reduce(f64::min)?;
    let hi = points.xs().reduce(f64::max)?;
    let ends = [lo, hi].map(|fx| (fx, fit.at(fx, log_log)));
    ends.iter().all(|&(_, fy)| Axis::plottable(log_log, fy)).then_some(ends)
}

/// Draws error bars, points and the fitted line on axes `x` and `y`.
fn draw(
    area: &Area,
    chart: &ScatterFit,
    points: &Plottable,
    fit_line: Option<[(f64, f64); 2]>,
    x: &Axis,
    y: &Axis,
) -> DrawResult {
    let mut plot = frame::chart(area, &chart.frame, x, y, true)?;
    plot.draw_series(points.intervals.iter().map(|&(px, lo, hi)| Whisker::new(x.pos(px), y.pos(lo), y.pos(hi))))?;
    let color = frame::series_color(0);
    plot.draw_series(points.xy.iter().map(|&(px, py)| Circle::new((x.pos(px), y.pos(py)), 4, color.filled())))?
        .label(chart.name.as_str())
        .legend(move |c| Circle::new(c, 4, color.filled()));
    let mut crowd = points.axis_points(x, y);
    if let (Some(ends), Some(fit)) = (fit_line, chart.fit) {
        let color = frame::series_color(1);
        let ends = ends.map(|(fx, fy)| (x.pos(fx), y.pos(fy)));
        crowd.extend(ends);
        plot.draw_series([PathElement::new(ends.to_vec(), color.stroke_width(2))])?
            .label(fit.describe(chart.log_log))
            .legend(frame::line_swatch(color));
    }
    frame::legend(&mut plot, x, y, &crowd)
}
