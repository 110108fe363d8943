//! Chart axes: which values an axis can show, its range and its ticks.
//!
//! Every chart plots in "axis space": a log axis holds `log10` of the data, so one coordinate
//! type serves linear, logarithmic and categorical axes. An [`Axis`] is itself a plotters
//! coordinate, so ticks and their labels are chosen here rather than by plotters: whole decades
//! on a log axis, 1-2-5 steps on a linear one, the names on a categorical one.

use std::ops::Range;

use plotters::coord::ranged1d::{KeyPointHint, NoDefaultFormatting, Ranged, ValueFormatter};
use plotters::coord::types::RangedCoordf64;

/// Share of a log axis's span (in decades, at least one) added beyond the data on each side.
const LOG_PADDING: f64 = 0.04;
/// How many ticks a linear axis aims for.
const TARGET_TICKS: f64 = 6.0;

/// One chart axis: its range and tick labels, in axis space.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Axis {
    /// Whether positions are `log10` of the data.
    log: bool,
    /// The visible range.
    range: Range<f64>,
    /// Tick positions with their labels.
    ticks: Vec<(f64, String)>,
}

impl Axis {
    /// Whether `v` can be drawn on a (log or linear) axis.
    pub(crate) fn plottable(log: bool, v: f64) -> bool {
        v.is_finite() && (!log || v > 0.0)
    }

    /// A numeric axis covering `values` (each plottable), or `None` if there are none.
    pub(crate) fn numeric(log: bool, values: impl IntoIterator<Item = f64>) -> Option<Self> {
        let (lo, hi) = values
            .into_iter()
            .map(|v| if log { v.log10() } else { v })
            .fold(None, |acc: Option<(f64, f64)>, v| Some(acc.map_or((v, v), |(lo, hi)| (lo.min(v), hi.max(v)))))?;
        Some(if log { Self::decades(lo, hi) } else { Self::linear(lo, hi) })
    }

    /// A categorical axis: category `i` is centred at `i + 0.5`.
    pub(crate) fn categories<S: AsRef<str>>(names: &[S]) -> Self {
        let ticks = names.iter().enumerate().map(|(i, n)| (i as f64 + 0.5, n.as_ref().to_string())).collect();
        Self { log: false, range: 0.0..names.len().max(1) as f64, ticks }
    }

    /// A log axis over the data, padded by [`LOG_PADDING`] of its span, with a tick at each
    /// whole decade inside; widened to the enclosing decades when fewer than two are inside.
    fn decades(lo: f64, hi: f64) -> Self {
        let pad = LOG_PADDING * (hi - lo).max(1.0);
        let (start, end) = (lo - pad, hi + pad);
        let (first, last) = (start.ceil() as i32, end.floor() as i32);
        let (range, first, last) = if last > first {
            (start..end, first, last)
        } else {
            let (first, last) = (lo.floor() as i32, (hi.ceil() as i32).max(lo.floor() as i32 + 1));
            (f64::from(first)..f64::from(last), first, last)
        };
        Self { log: true, range, ticks: (first..=last).map(|k| (f64::from(k), power_of_ten(k))).collect() }
    }

    /// A linear axis widened to multiples of a 1-2-5 step, with a tick per step.
    fn linear(lo: f64, hi: f64) -> Self {
        let (lo, hi) = if hi > lo { (lo, hi) } else { (lo - 0.5 * lo.abs().max(1.0), hi + 0.5 * hi.abs().max(1.0)) };
        let step = nice_step((hi - lo) / TARGET_TICKS);
        let (first, last) = ((lo / step).floor() as i64, (hi / step).ceil() as i64);
        let decimals = (-step.log10().floor()).max(0.0) as usize;
        let ticks = (first..=last).map(|k| k as f64 * step).map(|t| (t, format!("{:.decimals$}", t + 0.0))).collect();
        Self { log: false, range: first as f64 * step..last as f64 * step, ticks }
    }

    /// Where axis-space position `pos` sits along the axis, from 0 (start) to 1 (end).
    pub(crate) fn fraction(&self, pos: f64) -> f64 {
        (pos - self.range.start) / (self.range.end - self.range.start)
    }

    /// The axis-space position of data value `v`.
    pub(crate) fn pos(&self, v: f64) -> f64 {
        if self.log {
            v.log10()
        } else {
            v
        }
    }

    /// The tick labels, in axis order.
    pub(crate) fn labels(&self) -> impl Iterator<Item = &str> {
        self.ticks.iter().map(|(_, label)| label.as_str())
    }

    /// The label of the tick at axis-space position `v`.
    fn label(&self, v: f64) -> String {
        let tolerance = 1e-9 * (self.range.end - self.range.start).abs().max(1.0);
        self.ticks.iter().find(|(t, _)| (t - v).abs() <= tolerance).map(|(_, l)| l.clone()).unwrap_or_default()
    }
}

impl Ranged for Axis {
    type FormatOption = NoDefaultFormatting;
    type ValueType = f64;

    /// Maps an axis-space position to a pixel, linearly within `limit`.
    fn map(&self, value: &f64, limit: (i32, i32)) -> i32 {
        RangedCoordf64::from(self.range()).map(value, limit)
    }

    /// Exactly this axis's ticks as the bold points, and no light points.
    fn key_points<Hint: KeyPointHint>(&self, hint: Hint) -> Vec<f64> {
        if hint.weight().allow_light_points() {
            Vec::new()
        } else {
            self.ticks.iter().map(|(t, _)| *t).collect()
        }
    }

    /// The visible range, in axis space.
    fn range(&self) -> Range<f64> {
        self.range.clone()
    }
}

impl ValueFormatter<f64> for Axis {
    /// The label of the tick at `value`.
    fn format_ext(&self, value: &f64) -> String {
        self.label(*value)
    }
}

/// The smallest 1, 2 or 5 times a power of ten that is at least `raw`.
fn nice_step(raw: f64) -> f64 {
    let magnitude = 10f64.powf(raw.log10().floor());
    [1.0, 2.0, 5.0, 10.0].into_iter().map(|m| m * magnitude).find(|s| *s >= raw * (1.0 - 1e-9)).unwrap_or(magnitude)
}

/// `10^k` written out for small `k` (0.01, 100) and as `1e{k}` otherwise.
fn power_of_ten(k: i32) -> String {
    match k {
        0..=4 => format!("{}", 10u32.pow(k.unsigned_abs())),
        -3..=-1 => format!("{:.*}", k.unsigned_abs() as usize, 10f64.powi(k)),
        _ => format!("1e{k}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_axis_ticks_are_the_whole_decades_inside_the_padded_data_range() {
        let axis = Axis::numeric(true, [3.0, 4500.0]).unwrap();
        assert_eq!(axis.labels().collect::<Vec<_>>(), ["10", "100", "1000"]);
        assert!(axis.range().start < 3f64.log10() && axis.range().end > 4500f64.log10());
        let narrow = Axis::numeric(true, [2.0, 5.0]).unwrap();
        assert_eq!(narrow.labels().collect::<Vec<_>>(), ["1", "10"]);
    }

    #[test]
    fn linear_axis_ticks_are_one_two_five_steps_enclosing_the_data() {
        let axis = Axis::numeric(false, [0.03, 0.97]).unwrap();
        assert_eq!(axis.labels().collect::<Vec<_>>(), ["0.0", "0.2", "0.4", "0.6", "0.8", "1.0"]);
    }

    #[test]
    fn a_single_value_still_gets_a_non_empty_range() {
        for log in [false, true] {
            let range = Axis::numeric(log, [5.0]).unwrap().range();
            assert!(range.end > range.start, "log={log}: {range:?}");
        }
    }

    #[test]
    fn category_labels_sit_at_cell_centres() {
        let axis = Axis::categories(&["a", "b"]);
        assert_eq!(axis.label(1.5), "b");
        assert_eq!(axis.range(), 0.0..2.0);
    }
}
