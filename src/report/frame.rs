//! What every chart shares: the canvas with its title and note line, the "no data" placeholder,
//! the plot region with its mesh, the palette, the legend box, labelled guide lines and error
//! bars. Axis ranges and ticks live in `axis`; each chart kind lives in its own module.

use plotters::coord::Shift;
use plotters::element::{Drawable, PointCollection};
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};
use plotters_backend::{BackendCoord, DrawingErrorKind};

use super::axis::Axis;
use super::ReportError;

/// Canvas size in pixels.
const SIZE: (u32, u32) = (760, 460);
/// Height of the note line under a chart, in pixels.
const NOTE_HEIGHT: u32 = 22;
/// The only font family named; viewers substitute their own sans-serif font.
pub(crate) const FONT: &str = "sans-serif";
/// Font size of chart titles (plotters' SVG backend writes sizes divided by 1.24).
const TITLE_SIZE: f64 = 24.0;
/// Font size of tick labels, legends and cell values.
pub(crate) const TEXT_SIZE: f64 = 16.0;
/// Font size of notes and guide-line labels.
pub(crate) const SMALL_SIZE: f64 = 15.0;
/// Share of each axis that a legend is assumed to cover in its corner.
const LEGEND_SHARE: f64 = 0.4;
/// Half the width of an error bar's caps, in pixels.
const CAP: i32 = 4;

/// Colour of error bars, used for nothing else.
pub(crate) const ERROR_BAR: RGBColor = RGBColor(40, 40, 40);
/// Colour of marker and reference lines and their labels.
const GUIDE: RGBColor = RGBColor(90, 90, 90);
/// Ten distinguishable series colours (the Tableau 10 palette).
const PALETTE: [RGBColor; 10] = [
    RGBColor(31, 119, 180),
    RGBColor(255, 127, 14),
    RGBColor(44, 160, 44),
    RGBColor(214, 39, 40),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
    RGBColor(227, 119, 194),
    RGBColor(127, 127, 127),
    RGBColor(188, 189, 34),
    RGBColor(23, 190, 207),
];

/// A drawing region of a chart's SVG canvas.
pub(crate) type Area<'a> = DrawingArea<SVGBackend<'a>, Shift>;
/// What drawing on the SVG canvas returns.
pub(crate) type DrawResult<T = ()> = Result<T, DrawingAreaErrorKind<std::io::Error>>;
/// A plot region whose axes are [`Axis`]es.
pub(crate) type Chart<'a, 'b> = ChartContext<'a, SVGBackend<'b>, Cartesian2d<Axis, Axis>>;

/// The title and axis names of a chart.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Frame {
    /// Drawn above the chart.
    pub title: String,
    /// Names the horizontal axis.
    pub x_label: String,
    /// Names the vertical axis.
    pub y_label: String,
}

impl Frame {
    /// A frame from its title and axis names.
    pub fn new(title: impl Into<String>, x_label: impl Into<String>, y_label: impl Into<String>) -> Self {
        Self { title: title.into(), x_label: x_label.into(), y_label: y_label.into() }
    }
}

/// Draws one chart as SVG text: a white canvas with `title` on top, `note` (if any) in small
/// print at the bottom, and `draw` filling the rest.
pub(crate) fn render(
    title: &str,
    note: Option<&str>,
    draw: impl FnOnce(&Area) -> DrawResult,
) -> Result<String, ReportError> {
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, SIZE).into_drawing_area();
        root.fill(&WHITE)?;
        let body = root.titled(title, (FONT, TITLE_SIZE))?;
        let body = match note {
            Some(note) => {
                let (body, foot) = body.split_vertically(body.dim_in_pixel().1.saturating_sub(NOTE_HEIGHT));
                foot.draw(&Text::new(note.to_string(), (12, 2), (FONT, SMALL_SIZE).into_font().color(&GUIDE)))?;
                body
            }
            None => body,
        };
        draw(&body)?;
        root.present()?;
    }
    Ok(svg)
}

/// Writes "no data" in the middle of `area`.
pub(crate) fn no_data(area: &Area) -> DrawResult {
    let (w, h) = area.dim_in_pixel();
    let style = (FONT, TEXT_SIZE + 4.0).into_font().color(&GUIDE).pos(Pos::new(HPos::Center, VPos::Center));
    area.draw(&Text::new("no data", (w as i32 / 2, h as i32 / 2), style))
}

/// The note saying that `n` non-plottable values were skipped, if any were; `log` says
/// whether the chart has a log axis (where non-positive values are not plottable either).
pub(crate) fn skipped_note(n: usize, log: bool) -> Option<String> {
    let s = if n == 1 { "" } else { "s" };
    let why = if log { "non-finite, or not positive on a log axis" } else { "non-finite" };
    (n > 0).then(|| format!("{n} non-plottable value{s} skipped ({why})"))
}

/// The colour of series `i`.
pub(crate) fn series_color(i: usize) -> RGBColor {
    PALETTE[i % PALETTE.len()]
}

/// Builds the plot region of `area` on axes `x` and `y`, and draws its ticks, axis names and
/// (if `grid`) grid lines.
pub(crate) fn chart<'a, 'b>(
    area: &'a Area<'b>,
    frame: &Frame,
    x: &Axis,
    y: &Axis,
    grid: bool,
) -> DrawResult<Chart<'a, 'b>> {
    let mut chart = ChartBuilder::on(area)
        .margin(12)
        .margin_right(32)
        .x_label_area_size(44)
        .y_label_area_size(label_area(y))
        .build_cartesian_2d(x.clone(), y.clone())?;
    let mut mesh = chart.configure_mesh();
    mesh.x_desc(frame.x_label.as_str())
        .y_desc(frame.y_label.as_str())
        .label_style((FONT, TEXT_SIZE))
        .axis_desc_style((FONT, TEXT_SIZE + 2.0))
        .bold_line_style(BLACK.mix(0.12));
    if !grid {
        mesh.disable_mesh();
    }
    mesh.draw()?;
    Ok(chart)
}

/// Width of the vertical axis's label area: room for its longest tick label and its name.
fn label_area(y: &Axis) -> u32 {
    let longest = y.labels().map(str::len).max().unwrap_or(0) as u32;
    (longest * 8 + 34).clamp(50, 220)
}

/// Draws the legend of every labelled series in the plot corner holding the fewest of
/// `points` (axis space), so that it hides as little data as possible.
pub(crate) fn legend<'a, 'b: 'a>(chart: &mut Chart<'a, 'b>, x: &Axis, y: &Axis, points: &[(f64, f64)]) -> DrawResult {
    let crowding = |right: bool, top: bool| {
        let near = |f: f64, high: bool| if high { f >= 1.0 - LEGEND_SHARE } else { f <= LEGEND_SHARE };
        points.iter().filter(|&&(px, py)| near(x.fraction(px), right) && near(y.fraction(py), top)).count()
    };
    let corners = [
        (SeriesLabelPosition::UpperRight, true, true),
        (SeriesLabelPosition::UpperLeft, false, true),
        (SeriesLabelPosition::LowerRight, true, false),
        (SeriesLabelPosition::LowerLeft, false, false),
    ];
    let corner = corners.into_iter().min_by_key(|&(_, right, top)| crowding(right, top)).map(|(c, _, _)| c);
    chart
        .configure_series_labels()
        .position(corner.unwrap_or(SeriesLabelPosition::UpperRight))
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK.mix(0.4))
        .label_font((FONT, TEXT_SIZE))
        .draw()
}

/// The legend mark of a line series: a short stroke in its colour.
pub(crate) fn line_swatch(color: RGBColor) -> impl Fn(BackendCoord) -> PathElement<BackendCoord> {
    move |(x, y)| PathElement::new(vec![(x, y), (x + 18, y)], color.stroke_width(2))
}

/// Draws a guide line from `from` to `to` (axis space) with `label` at `to`, placed by `anchor`.
pub(crate) fn guide(chart: &mut Chart, from: (f64, f64), to: (f64, f64), label: &str, anchor: Pos) -> DrawResult {
    let line = PathElement::new(vec![from, to], GUIDE.stroke_width(1));
    let text = Text::new(label.to_string(), to, (FONT, SMALL_SIZE).into_font().color(&GUIDE).pos(anchor));
    chart.draw_series([line])?;
    chart.draw_series([text])?;
    Ok(())
}

/// A vertical error bar from `lo` to `hi` at `x` (axis space), drawn as one polyline with caps.
pub(crate) struct Whisker {
    /// The bar's two ends.
    ends: [(f64, f64); 2],
}

impl Whisker {
    /// The error bar from `lo` to `hi` at `x`, in axis space.
    pub(crate) fn new(x: f64, lo: f64, hi: f64) -> Self {
        Self { ends: [(x, lo), (x, hi)] }
    }
}

impl<'a> PointCollection<'a, (f64, f64)> for &'a Whisker {
    type Point = &'a (f64, f64);
    type IntoIter = &'a [(f64, f64); 2];

    /// The bar's two ends, to be mapped to pixels.
    fn point_iter(self) -> Self::IntoIter {
        &self.ends
    }
}

impl<DB: DrawingBackend> Drawable<DB> for Whisker {
    /// Draws cap, stem and cap as one path in [`ERROR_BAR`] colour.
    fn draw<I: Iterator<Item = BackendCoord>>(
        &self,
        mut ends: I,
        backend: &mut DB,
        _: (u32, u32),
    ) -> Result<(), DrawingErrorKind<DB::ErrorType>> {
        let (Some((x, lo)), Some((_, hi))) = (ends.next(), ends.next()) else { return Ok(()) };
        let path = [(x - CAP, lo), (x + CAP, lo), (x, lo), (x, hi), (x - CAP, hi), (x + CAP, hi)];
        backend.draw_path(path, &ERROR_BAR.stroke_width(1))
    }
}
