//! Least-squares fits of the decay laws in [`laws`](super::laws), and AICc ranking between them.
//!
//! Each fit minimizes the weighted SSE `Σ w_i (y_i − y(t_i))²` (unit weights unless given;
//! pass `w_i = 1/σ_i²` for known per-point noise) by Levenberg–Marquardt from several
//! deterministic starting points: a fixed grid over the shape parameters (τ, b, s spread over
//! the sampled time range), each completed by the exact linear least-squares `c` and `a` for
//! that shape. Shape parameters are optimized as logarithms, so they stay positive.
//!
//! The fit reports AIC = n·ln(SSE/n) + 2k, the Gaussian-likelihood AIC up to a constant shared
//! by all laws fitted to the same data (k counts the curve parameters only; the noise variance
//! every law has in common cancels in comparisons). A perfect fit would give ln 0, so SSE is
//! floored at `Σw·(ε·max|y|)²`, the size of rounding error; laws that fit exactly then tie on
//! SSE and the one with fewer parameters wins. Lower AIC is better.
//!
//! Laws are ranked by AICc = AIC + 2K(K+1)/(n − K − 1), the small-sample correction, with
//! `K = k + 1` counting the noise variance too: a decay curve has only a dozen or so points,
//! where plain AIC favours the four-parameter shifted power law too often. With `n ≤ K + 1`
//! AICc is infinite (the law cannot be compared).

use super::error::{self, AnalysisError};
use super::laws::{Curve, Decay, Law};
use super::levenberg_marquardt;
use serde::Serialize;

/// One law fitted to one curve.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Fit {
    /// The fitted curve; `curve.params()` names the parameters.
    pub curve: Curve,
    /// Weighted sum of squared residuals.
    pub sse: f64,
    /// Coefficient of determination `1 − SSE/SST` (weighted); 1 when the data has no variance
    /// (within rounding), since every law then reproduces it with `a = 0`.
    pub r2: f64,
    /// Akaike information criterion `n·ln(SSE/n) + 2k` (see the module doc); lower is better.
    pub aic: f64,
    /// Its small-sample correction (see the module doc), which ranks the laws.
    pub aicc: f64,
    /// Number of data points.
    pub n: usize,
}

impl Fit {
    /// The fitted law.
    pub fn law(&self) -> Law {
        self.curve.law()
    }
}

/// Fits `law` to the points `(t_i, y_i)`, `t_i >= 0`, with unit weights.
pub fn fit_law(law: Law, t: &[f64], y: &[f64]) -> Result<Fit, AnalysisError> {
    fit_law_weighted(law, t, y, &vec![1.0; t.len()])
}

/// Fits `law` to the points `(t_i, y_i)` with positive weights `w_i`; needs n > k points.
pub fn fit_law_weighted(law: Law, t: &[f64], y: &[f64], w: &[f64]) -> Result<Fit, AnalysisError> {
    check_series(t, y, w)?;
    if t.len() <= law.n_params() {
        let what = format!("a {} fit ({} parameters)", law.name(), law.n_params());
        return Err(AnalysisError::TooFewPoints { what, needed: law.n_params() + 1, got: t.len() });
    }
    fit_checked(law, t, y, w)
}

/// Fits every law that has fewer parameters than there are points, with unit weights; the
/// result is sorted by AICc, best first.
pub fn fit_all(t: &[f64], y: &[f64]) -> Result<Vec<Fit>, AnalysisError> {
    fit_all_weighted(t, y, &vec![1.0; t.len()])
}

/// [`fit_all`] with positive weights `w_i`.
pub fn fit_all_weighted(t: &[f64], y: &[f64], w: &[f64]) -> Result<Vec<Fit>, AnalysisError> {
    check_series(t, y, w)?;
    let fittable = Law::ALL.into_iter().filter(|law| t.len() > law.n_params());
    let mut fits = fittable.map(|law| fit_checked(law, t, y, w)).collect::<Result<Vec<_>, _>>()?;
    if fits.is_empty() {
        let needed = Law::ALL.iter().map(|l| l.n_params()).min().unwrap_or(0) + 1;
        return Err(AnalysisError::TooFewPoints { what: "a decay fit".into(), needed, got: t.len() });
    }
    fits.sort_by(|a, b| a.aicc.total_cmp(&b.aicc));
    Ok(fits)
}

/// The fit with the lowest AICc, or `None` for no fits.
pub fn best(fits: &[Fit]) -> Option<&Fit> {
    fits.iter().min_by(|a, b| a.aicc.total_cmp(&b.aicc))
}

/// Checks a weighted decay series: equal lengths, finite values, `t >= 0`, weights > 0.
fn check_series(t: &[f64], y: &[f64], w: &[f64]) -> Result<(), AnalysisError> {
    error::decay_series(t, y)?;
    error::same_len("t", t, "w", w)?;
    error::all_finite("w", w)?;
    error::all_positive("w", w)
}

/// Fits `law` to an already checked series with n > k; keeps the best of all starts.
fn fit_checked(law: Law, t: &[f64], y: &[f64], w: &[f64]) -> Result<Fit, AnalysisError> {
    let sqrt_w: Vec<f64> = w.iter().map(|wi| wi.sqrt()).collect();
    let model = |theta: &[f64], r: &mut [f64], jac: &mut [f64]| residuals(law, theta, t, y, &sqrt_w, r, jac);
    let best = shape_starts(law, t)
        .into_iter()
        .filter_map(|q| linear_start(Decay::from_log_params(law, &q), t, y, w).map(|ca| [&ca[..], &q].concat()))
        .filter_map(|theta0| levenberg_marquardt::minimize(&model, theta0, t.len()))
        .min_by(|a, b| a.1.total_cmp(&b.1));
    let (theta, sse) = best.ok_or(AnalysisError::FitFailed { law: law.name() })?;
    Ok(summarize(curve_from(law, &theta), sse, y, w))
}

/// The curve for the parameter vector `θ = [c, a, ln(shape params)…]`.
fn curve_from(law: Law, theta: &[f64]) -> Curve {
    Curve { c: theta[0], a: theta[1], decay: Decay::from_log_params(law, &theta[2..]) }
}

/// Fills `r_i = √w_i·(y(t_i) − y_i)` and its Jacobian rows `∂r_i/∂θ` (θ as in [`curve_from`]);
/// false if anything is non-finite.
fn residuals(law: Law, theta: &[f64], t: &[f64], y: &[f64], sqrt_w: &[f64], r: &mut [f64], jac: &mut [f64]) -> bool {
    let curve = curve_from(law, theta);
    let k = theta.len();
    for (i, row) in jac.chunks_exact_mut(k).enumerate() {
        let (g, dg) = (curve.decay.g(t[i]), curve.decay.log_gradient(t[i]));
        r[i] = sqrt_w[i] * (curve.c + curve.a * g - y[i]);
        row[0] = sqrt_w[i];
        row[1] = sqrt_w[i] * g;
        for (j, dgj) in row[2..].iter_mut().zip(dg) {
            *j = sqrt_w[i] * curve.a * dgj;
        }
    }
    r.iter().all(|ri| ri.is_finite())
}

/// Logs of the starting shape parameters for `law`: a grid spread over the sampled times.
fn shape_starts(law: Law, t: &[f64]) -> Vec<Vec<f64>> {
    let lo = t.iter().copied().filter(|&ti| ti > 0.0).fold(f64::INFINITY, f64::min);
    let lo = if lo.is_finite() { lo } else { 1.0 };
    let hi = t.iter().copied().fold(lo, f64::max);
    let times = |m: usize| (0..m).map(move |i| lo.ln() + (hi / lo).ln() * i as f64 / (m - 1) as f64);
    let exponents = |bs: &'static [f64]| bs.iter().map(|b: &f64| b.ln());
    match law {
        Law::Exponential => times(7).map(|ln_tau| vec![ln_tau]).collect(),
        Law::PowerLaw => exponents(&[0.1, 0.3, 1.0, 3.0]).map(|ln_b| vec![ln_b]).collect(),
        Law::ShiftedPowerLaw => {
            exponents(&[0.3, 1.0, 3.0]).flat_map(|ln_b| times(5).map(move |ln_s| vec![ln_b, ln_s])).collect()
        }
    }
}

/// The weighted least-squares `[c, a]` for a fixed shape; `None` if `g` is not finite.
fn linear_start(decay: Decay, t: &[f64], y: &[f64], w: &[f64]) -> Option<[f64; 2]> {
    let g: Vec<f64> = t.iter().map(|&ti| decay.g(ti)).collect();
    let w_sum: f64 = w.iter().sum();
    let g_mean = g.iter().zip(w).map(|(gi, wi)| wi * gi).sum::<f64>() / w_sum;
    let y_mean = weighted_mean(y, w);
    let (mut sgg, mut sgy) = (0.0, 0.0);
    for ((gi, yi), wi) in g.iter().zip(y).zip(w) {
        sgg += wi * (gi - g_mean).powi(2);
        sgy += wi * (gi - g_mean) * (yi - y_mean);
    }
    let a = if sgg > 0.0 { sgy / sgg } else { 0.0 };
    let ca = [y_mean - a * g_mean, a];
    ca.iter().all(|v| v.is_finite()).then_some(ca)
}

/// `Σ w_i y_i / Σ w_i`.
fn weighted_mean(y: &[f64], w: &[f64]) -> f64 {
    y.iter().zip(w).map(|(yi, wi)| wi * yi).sum::<f64>() / w.iter().sum::<f64>()
}

/// Builds the [`Fit`] (R², AIC with the SSE floor) for `curve` with weighted SSE `sse`.
fn summarize(curve: Curve, sse: f64, y: &[f64], w: &[f64]) -> Fit {
    let n = y.len();
    let scale = y.iter().fold(0.0, |m: f64, yi| m.max(yi.abs()));
    let floor = ((f64::EPSILON * scale).powi(2) * w.iter().sum::<f64>()).max(f64::MIN_POSITIVE);
    let y_mean = weighted_mean(y, w);
    let sst: f64 = y.iter().zip(w).map(|(yi, wi)| wi * (yi - y_mean).powi(2)).sum();
    let r2 = if sst <= floor { 1.0 } else { 1.0 - sse / sst };
    let k = curve.law().n_params() as f64;
    let aic = n as f64 * (sse.max(floor) / n as f64).ln() + 2.0 * k;
    let big_k = k + 1.0;
    let aicc = if n as f64 > big_k + 1.0 {
        aic + 2.0 * big_k * (big_k + 1.0) / (n as f64 - big_k - 1.0)
    } else {
        f64::INFINITY
    };
    Fit { curve, sse, r2, aic, aicc, n }
}
