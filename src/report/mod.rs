//! The report: SVG charts and a self-contained HTML page.
//!
//! Each chart kind is a pure function from a plain data struct to SVG text, with identical
//! bytes for identical input:
//! - [`line_chart`]: named series with optional bands, log axes and labelled vertical markers;
//! - [`scatter_fit`]: points with optional error bars and a fitted line (power law or linear);
//! - [`heatmap`]: a labelled grid of values with a colour scale, missing cells in grey;
//! - [`bar_chart`]: grouped bars with optional error bars and labelled reference lines.
//!
//! Non-plottable values (non-finite, or non-positive on a log axis) are skipped and counted in a
//! note under the chart; a chart with nothing to plot says "no data". [`Page`] assembles charts,
//! prose and [`Table`]s into one HTML file with no external resources. Fitting the laws that the
//! charts show lives in the analysis layer, not here.

mod axis;
mod bar;
mod frame;
mod heatmap;
mod html;
mod line;
mod point;
mod scatter;
mod table;

pub use bar::{bar_chart, Bar, BarChart, BarSeries, Reference};
pub use frame::Frame;
pub use heatmap::{heatmap, Heatmap, NumberFormat};
pub use html::{Figure, Page, Section};
pub use line::{line_chart, LineChart, Marker, Series};
pub use point::Point;
pub use scatter::{scatter_fit, Fit, ScatterFit};
pub use table::Table;

use std::path::PathBuf;

use plotters::drawing::DrawingAreaErrorKind;

/// Errors from drawing charts or writing the report.
#[derive(Debug, thiserror::Error)]
pub enum ReportError {
    /// The SVG backend refused to draw (a bug in this module, not in the data).
    #[error("drawing a chart failed: {0}")]
    Draw(#[from] DrawingAreaErrorKind<std::io::Error>),
    /// The chart's data do not line up with its labels.
    #[error("{chart}: {problem}; give one value per label")]
    Shape {
        /// The chart kind.
        chart: &'static str,
        /// What does not line up.
        problem: String,
    },
    /// The report directory could not be created.
    #[error("could not create the report directory {}: {source}", path.display())]
    CreateDir {
        /// The directory.
        path: PathBuf,
        /// The underlying I/O error.
        #[source]
        source: std::io::Error,
    },
    /// A report file could not be written.
    #[error(transparent)]
    Write(#[from] crate::fs::FsError),
}
