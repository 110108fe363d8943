//! Straight-line fits for scaling laws: ordinary least squares `y = intercept + slope·x` with a
//! Student-t confidence interval on the slope, and the same on `ln y` against `ln x` (a power
//! law `y ∝ x^slope`, e.g. half-life against parameter count).

use super::error::{self, AnalysisError};
use super::special::student_t_quantile;
use serde::Serialize;

/// Confidence level of [`LineFit::slope_ci`].
pub const SLOPE_CI_LEVEL: f64 = 0.95;

/// An ordinary least-squares line.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct LineFit {
    /// Fitted slope (the exponent, for [`loglog_fit`]).
    pub slope: f64,
    /// Fitted intercept (`ln` of the prefactor, for [`loglog_fit`]).
    pub intercept: f64,
    /// 95 % confidence interval of the slope: `slope ± t_{0.975, n−2}·SE(slope)`, assuming
    /// independent Gaussian residuals of constant variance.
    pub slope_ci: (f64, f64),
    /// Coefficient of determination; 1 when `y` has no variance (the line fits it exactly).
    pub r2: f64,
    /// Number of points.
    pub n: usize,
}

/// Fits `y = intercept + slope·x` by ordinary least squares; needs n ≥ 3 points (one residual
/// degree of freedom for the CI) and at least two distinct `x`.
pub fn linear_fit(x: &[f64], y: &[f64]) -> Result<LineFit, AnalysisError> {
    error::same_len("x", x, "y", y)?;
    error::all_finite("x", x)?;
    error::all_finite("y", y)?;
    let n = x.len();
    if n < 3 {
        return Err(AnalysisError::TooFewPoints { what: "a line fit with a slope CI".into(), needed: 3, got: n });
    }
    let (x_mean, y_mean, sxx, sxy) = centred_moments(x, y);
    if sxx == 0.0 {
        return Err(AnalysisError::ConstantX { n, x: x[0] });
    }
    let syy: f64 = y.iter().map(|yi| (yi - y_mean).powi(2)).sum();
    let slope = sxy / sxx;
    let intercept = y_mean - slope * x_mean;
    let sse: f64 = x.iter().zip(y).map(|(xi, yi)| (yi - intercept - slope * xi).powi(2)).sum();
    let dof = (n - 2) as f64;
    let half_width = student_t_quantile(0.5 + SLOPE_CI_LEVEL / 2.0, dof) * (sse / dof / sxx).sqrt();
    let r2 = if syy > 0.0 { 1.0 - sse / syy } else { 1.0 };
    Ok(LineFit { slope, intercept, slope_ci: (slope - half_width, slope + half_width), r2, n })
}

/// The least-squares slope of `y` on `x` alone, for fits with too few points for
/// [`linear_fit`]'s interval (`None` when `x` does not vary or there are no points).
pub fn slope_only(x: &[f64], y: &[f64]) -> Option<f64> {
    let (_, _, sxx, sxy) = centred_moments(x, y);
    (sxx > 0.0).then(|| sxy / sxx)
}

/// `(mean x, mean y, Σ(x − x̄)², Σ(x − x̄)(y − ȳ))`.
fn centred_moments(x: &[f64], y: &[f64]) -> (f64, f64, f64, f64) {
    let (x_mean, y_mean) = (mean(x), mean(y));
    let sxx: f64 = x.iter().map(|xi| (xi - x_mean).powi(2)).sum();
    let sxy: f64 = x.iter().zip(y).map(|(xi, yi)| (xi - x_mean) * (yi - y_mean)).sum();
    (x_mean, y_mean, sxx, sxy)
}

/// Fits `ln y = intercept + slope·ln x`; every `x` and `y` must be positive.
pub fn loglog_fit(x: &[f64], y: &[f64]) -> Result<LineFit, AnalysisError> {
    error::same_len("x", x, "y", y)?;
    error::all_finite("x", x)?;
    error::all_finite("y", y)?;
    error::all_positive("x", x)?;
    error::all_positive("y", y)?;
    let ln = |v: &[f64]| v.iter().map(|vi| vi.ln()).collect::<Vec<f64>>();
    linear_fit(&ln(x), &ln(y))
}

/// Arithmetic mean of a non-empty slice.
fn mean(v: &[f64]) -> f64 {
    v.iter().sum::<f64>() / v.len() as f64
}
