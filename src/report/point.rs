//! Data points with an optional interval around `y`, and the split of a point list into what
//! an axis pair can plot and what it must skip. Shared by line and scatter charts.

use super::axis::Axis;

/// One data point, with an optional interval around `y`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Point {
    /// Horizontal position.
    pub x: f64,
    /// Vertical position.
    pub y: f64,
    /// `(lo, hi)` around `y`: a seed band in a line chart, a confidence interval in a scatter.
    pub interval: Option<(f64, f64)>,
}

impl Point {
    /// A point without an interval.
    pub fn new(x: f64, y: f64) -> Self {
        Self { x, y, interval: None }
    }

    /// This point with the interval `(lo, hi)`.
    pub fn with_interval(self, lo: f64, hi: f64) -> Self {
        Self { interval: Some((lo, hi)), ..self }
    }
}

/// The plottable part of a point list, in data units.
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct Plottable {
    /// Points whose `x` and `y` are both plottable, in input order.
    pub(crate) xy: Vec<(f64, f64)>,
    /// `(x, lo, hi)` of plotted points whose interval is plottable.
    pub(crate) intervals: Vec<(f64, f64, f64)>,
    /// Points skipped plus intervals skipped on points that were kept.
    pub(crate) skipped: usize,
}

impl Plottable {
    /// Splits `points` into what a `log_x` × `log_y` axis pair can draw and a skip count.
    pub(crate) fn split(points: &[Point], log_x: bool, log_y: bool) -> Self {
        let mut out = Self::default();
        for p in points {
            if !(Axis::plottable(log_x, p.x) && Axis::plottable(log_y, p.y)) {
                out.skipped += 1;
                continue;
            }
            out.xy.push((p.x, p.y));
            match p.interval {
                Some((lo, hi)) if Axis::plottable(log_y, lo) && Axis::plottable(log_y, hi) => {
                    out.intervals.push((p.x, lo, hi))
                }
                Some(_) => out.skipped += 1,
                None => {}
            }
        }
        out
    }

    /// Every plotted x value.
    pub(crate) fn xs(&self) -> impl Iterator<Item = f64> + '_ {
        self.xy.iter().map(|&(x, _)| x)
    }

    /// Every plotted point and interval end, in the axis space of `x` and `y`.
    pub(crate) fn axis_points(&self, x: &Axis, y: &Axis) -> Vec<(f64, f64)> {
        let ends = self.intervals.iter().flat_map(|&(px, lo, hi)| [(px, lo), (px, hi)]);
        self.xy.iter().copied().chain(ends).map(|(px, py)| (x.pos(px), y.pos(py))).collect()
    }

    /// Every plotted y value, interval ends included.
    pub(crate) fn ys(&self) -> impl Iterator<Item = f64> + '_ {
        self.xy.iter().map(|&(_, y)| y).chain(self.intervals.iter().flat_map(|&(_, lo, hi)| [lo, hi]))
    }
}
