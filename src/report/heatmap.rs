//! Heatmaps: a grid of values under row and column labels, coloured on a sequential scale with
//! its min and max beside the grid, each cell annotated with its value; missing (non-finite)
//! cells are grey. Used for regularisation strength × task overlap.

use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};

use super::axis::Axis;
use super::frame::{self, Area, DrawResult, Frame, FONT, SMALL_SIZE, TEXT_SIZE};
use super::ReportError;

/// Fill of a missing cell; no point of the colour scale is grey.
pub(crate) const MISSING: RGBColor = RGBColor(200, 200, 200);
/// Stops of the colour scale (viridis), from the minimum to the maximum.
const SCALE: [(u8, u8, u8); 5] = [(68, 1, 84), (59, 82, 139), (33, 145, 140), (94, 201, 98), (253, 231, 37)];
/// Width of the colour scale's column, in pixels.
const SCALE_WIDTH: u32 = 110;
/// Number of steps drawn in the colour scale's strip.
const SCALE_STEPS: usize = 24;

/// How cell values (and the scale's min and max) are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NumberFormat {
    /// Fixed-point with this many decimals: `0.25`.
    Fixed(usize),
    /// Times 100 with a percent sign, this many decimals: `25.0%`.
    Percent(usize),
    /// Scientific with this many decimals: `2.50e-1`.
    Scientific(usize),
}

impl Default for NumberFormat {
    /// Two decimals.
    fn default() -> Self {
        Self::Fixed(2)
    }
}

impl NumberFormat {
    /// `v` written in this format.
    pub fn format(self, v: f64) -> String {
        match self {
            Self::Fixed(d) => format!("{v:.d$}"),
            Self::Percent(d) => format!("{:.d$}%", v * 100.0),
            Self::Scientific(d) => format!("{v:.d$e}"),
        }
    }
}

/// A heatmap: `values[row][column]`, non-finite meaning missing.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Heatmap {
    /// Title; `x_label` names the columns, `y_label` the rows.
    pub frame: Frame,
    /// Row labels, top to bottom.
    pub rows: Vec<String>,
    /// Column labels, left to right.
    pub columns: Vec<String>,
    /// One row of values per row label, one value per column label.
    pub values: Vec<Vec<f64>>,
    /// How cell values are written.
    pub format: NumberFormat,
}

/// Draws `map` as SVG: one rectangle per cell with its value written in it, and the colour
/// scale's strip with min and max. Errors if `values` does not match the labels.
pub fn heatmap(map: &Heatmap) -> Result<String, ReportError> {
    check_shape(map)?;
    let finite = map.values.iter().flatten().copied().filter(|v| v.is_finite());
    let range =
        finite.fold(None, |acc: Option<(f64, f64)>, v| Some(acc.map_or((v, v), |(lo, hi)| (lo.min(v), hi.max(v)))));
    let missing = map.values.iter().flatten().filter(|v| !v.is_finite()).count();
    let note = (missing > 0).then(|| format!("{missing} missing cell{} (grey)", if missing == 1 { "" } else { "s" }));
    frame::render(&map.frame.title, note.as_deref(), |area| {
        if map.rows.is_empty() || map.columns.is_empty() {
            return frame::no_data(area);
        }
        let (grid, scale) = area.split_horizontally(area.dim_in_pixel().0.saturating_sub(SCALE_WIDTH));
        draw_grid(&grid, map, range)?;
        range.map_or(Ok(()), |range| draw_scale(&scale, range, map.format))
    })
}

/// Checks that there is one row of values per row label and one value per column label.
fn check_shape(map: &Heatmap) -> Result<(), ReportError> {
    let bad_row = map.values.iter().position(|row| row.len() != map.columns.len());
    let problem = if map.values.len() != map.rows.len() {
        format!("{} rows of values for {} row labels", map.values.len(), map.rows.len())
    } else if let Some(r) = bad_row {
        format!("row {r} has {} values for {} column labels", map.values[r].len(), map.columns.len())
    } else {
        return Ok(());
    };
    Err(ReportError::Shape { chart: "heatmap", problem })
}

/// Draws the cells, coloured within `range`, each with its value.
fn draw_grid(area: &Area, map: &Heatmap, range: Option<(f64, f64)>) -> DrawResult {
    let top_down: Vec<&String> = map.rows.iter().rev().collect();
    let (x, y) = (Axis::categories(&map.columns), Axis::categories(&top_down));
    let mut plot = frame::chart(area, &map.frame, &x, &y, false)?;
    let n = map.rows.len();
    let cells = map.values.iter().enumerate().flat_map(|(r, row)| row.iter().enumerate().map(move |(c, &v)| (r, c, v)));
    for (r, c, v) in cells {
        let (x0, y0) = (c as f64, (n - 1 - r) as f64);
        let fill = range.filter(|_| v.is_finite()).map_or(MISSING, |range| color_at(scale_position(v, range)));
        let text = if v.is_finite() { map.format.format(v) } else { "n/a".to_string() };
        let style = (FONT, TEXT_SIZE).into_font().color(&contrast(fill)).pos(Pos::new(HPos::Center, VPos::Center));
        plot.draw_series([Rectangle::new([(x0, y0), (x0 + 1.0, y0 + 1.0)], fill.filled())])?;
        plot.draw_series([Text::new(text, (x0 + 0.5, y0 + 0.5), style)])?;
    }
    Ok(())
}

/// Draws the colour scale as a vertical strip, max on top and min at the bottom, labelled.
fn draw_scale(area: &Area, (lo, hi): (f64, f64), format: NumberFormat) -> DrawResult {
    let (_, h) = area.dim_in_pixel();
    let (top, bottom, left) = (40, h as i32 - 56, 16);
    let step = f64::from(bottom - top) / SCALE_STEPS as f64;
    for i in 0..SCALE_STEPS {
        let (y0, y1) = (bottom - ((i + 1) as f64 * step).round() as i32, bottom - (i as f64 * step).round() as i32);
        let color = color_at((i as f64 + 0.5) / SCALE_STEPS as f64);
        area.draw(&Rectangle::new([(left, y0), (left + 18, y1)], color.filled()))?;
    }
    let label = |text: String, y: i32, v: VPos| {
        Text::new(text, (left, y), (FONT, SMALL_SIZE).into_font().color(&BLACK).pos(Pos::new(HPos::Left, v)))
    };
    area.draw(&label(format!("max {}", format.format(hi)), top - 4, VPos::Bottom))?;
    area.draw(&label(format!("min {}", format.format(lo)), bottom + 4, VPos::Top))
}

/// Where `v` sits in `(lo, hi)`, from 0 to 1; the middle when the range is a single value.
fn scale_position(v: f64, (lo, hi): (f64, f64)) -> f64 {
    if hi > lo {
        ((v - lo) / (hi - lo)).clamp(0.0, 1.0)
    } else {
        0.5
    }
}

/// The colour at position `t` (0 to 1) of the scale, interpolated between its stops.
fn color_at(t: f64) -> RGBColor {
    let scaled = t.clamp(0.0, 1.0) * (SCALE.len() - 1) as f64;
    let i = (scaled.floor() as usize).min(SCALE.len() - 2);
    let f = scaled - i as f64;
    let mix = |a: u8, b: u8| (f64::from(a) + f * (f64::from(b) - f64::from(a))).round() as u8;
    let ((r0, g0, b0), (r1, g1, b1)) = (SCALE[i], SCALE[i + 1]);
    RGBColor(mix(r0, r1), mix(g0, g1), mix(b0, b1))
}

/// Black or white, whichever reads better on `fill`.
fn contrast(fill: RGBColor) -> RGBColor {
    let RGBColor(r, g, b) = fill;
    let luma = 0.299 * f64::from(r) + 0.587 * f64::from(g) + 0.114 * f64::from(b);
    if luma > 140.0 {
        BLACK
    } else {
        WHITE
    }
}
