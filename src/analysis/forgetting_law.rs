//! Kalajdzievski (2024)'s form of forgetting, fitted jointly across model sizes: the
//! forgetting `F` (a divergence from the model before the continued training, which grows
//! from 0) is a shifted power law in steps whose scale depends on the parameter count,
//!
//! `F(N, t) = A · N^α · (t + s)^β`, i.e. `ln F = ln A + α ln N + β ln(t + s)`.
//!
//! For a fixed shift `s` this is linear least squares in `(ln A, α, β)`; `s` is profiled over
//! a grid (0, then log-spaced from 1/1000 to 10 times the longest horizon), keeping the `s` of
//! least squared error. Scaling time by a constant (steps to tokens at fixed tokens per step)
//! scales `s` by it and leaves `α` and `β` unchanged up to the grid's resolution.
//!
//! Points of one curve are not independent, so the intervals come from a bootstrap over whole
//! curves (cells), refitting the shift each time, and only from [`MIN_BOOTSTRAP_N`] curves on.

use super::bootstrap::{bootstrap_over, BootstrapConfig, Estimate};
use super::error::AnalysisError;
use super::interval::{Interval, Method, MIN_BOOTSTRAP_N};
use super::linalg::least_squares;

/// One cell's forgetting curve: its parameter count, and `F` at times `t` (points with
/// `F ≤ 0` or not finite carry no information about a power law and are skipped).
#[derive(Clone, Debug, PartialEq)]
pub struct ForgettingCurve {
    pub params: f64,
    pub t: Vec<f64>,
    pub f: Vec<f64>,
}

/// The fitted law with percentile-bootstrap intervals over curves.
#[derive(Clone, Debug, PartialEq)]
pub struct ForgettingLaw {
    /// Exponent of the parameter count.
    pub alpha: Interval,
    /// Exponent of the shifted time.
    pub beta: Interval,
    /// The shift, in the curves' time unit, and the scale `A`.
    pub shift: f64,
    pub scale: f64,
    /// R² of `ln F` on the full sample, and the points behind it.
    pub r2: f64,
    pub points: usize,
}

/// Grid points of the shift profile above 0.
const SHIFT_GRID: usize = 40;

/// Fits the law to `curves` (at least [`MIN_BOOTSTRAP_N`] of them, with at least two
/// parameter counts) with intervals at `boot.level`.
pub fn fit_forgetting_law(curves: &[ForgettingCurve], boot: &BootstrapConfig) -> Result<ForgettingLaw, AnalysisError> {
    if curves.len() < MIN_BOOTSTRAP_N {
        return Err(AnalysisError::TooFewPoints {
            what: "a joint forgetting law (curves)".into(),
            needed: MIN_BOOTSTRAP_N,
            got: curves.len(),
        });
    }
    let all: Vec<&ForgettingCurve> = curves.iter().collect();
    let best = fit_point(&all).ok_or_else(|| AnalysisError::TooFewPoints {
        what: "a joint forgetting law (two parameter counts and three positive points)".into(),
        needed: 3,
        got: all.iter().map(|c| positive(c).count()).sum(),
    })?;
    let alpha = bootstrap_over(curves, |cs| fit_point(cs).map(|p| p.alpha), boot)?;
    let beta = bootstrap_over(curves, |cs| fit_point(cs).map(|p| p.beta), boot)?;
    let interval = |e: Estimate| Interval {
        value: e.value,
        lo: e.lo,
        hi: e.hi,
        level: boot.level,
        n: e.n,
        censored: 0,
        method: Method::PercentileBootstrap,
    };
    Ok(ForgettingLaw {
        alpha: interval(alpha),
        beta: interval(beta),
        shift: best.shift,
        scale: best.ln_scale.exp(),
        r2: best.r2,
        points: best.points,
    })
}

/// A least-squares fit at its best shift.
#[derive(Clone, Copy, Debug)]
struct PointFit {
    ln_scale: f64,
    alpha: f64,
    beta: f64,
    shift: f64,
    r2: f64,
    points: usize,
}

/// `(t, F)` points of a curve that a logarithm can take.
fn positive(c: &ForgettingCurve) -> impl Iterator<Item = (f64, f64)> + '_ {
    c.t.iter()
        .zip(&c.f)
        .filter(|(t, f)| t.is_finite() && **t >= 0.0 && f.is_finite() && **f > 0.0)
        .map(|(t, f)| (*t, *f))
}

/// The best fit over the shift grid, or `None` when the design is singular (one parameter
/// count, or too few points).
fn fit_point(curves: &[&ForgettingCurve]) -> Option<PointFit> {
    let horizon = curves.iter().flat_map(|c| c.t.iter().copied()).fold(0.0f64, f64::max);
    if horizon <= 0.0 {
        return None;
    }
    let (lo, hi) = ((horizon / 1000.0).ln(), (10.0 * horizon).ln());
    let shifts = std::iter::once(0.0)
        .chain((0..SHIFT_GRID).map(|i| (lo + (hi - lo) * i as f64 / (SHIFT_GRID - 1) as f64).exp()));
    shifts.filter_map(|s| fit_at(curves, s)).min_by(|a, b| a.1.total_cmp(&b.1)).map(|(fit, _)| fit)
}

/// Least squares of `ln F` on `(1, ln N, ln(t + s))`; the fit and its residual sum of squares.
fn fit_at(curves: &[&ForgettingCurve], shift: f64) -> Option<(PointFit, f64)> {
    let rows: Vec<([f64; 3], f64)> = curves
        .iter()
        .flat_map(|c| positive(c).map(move |(t, f)| (c.params, t, f)))
        .filter(|(_, t, _)| t + shift > 0.0)
        .map(|(n, t, f)| ([1.0, n.ln(), (t + shift).ln()], f.ln()))
        .collect();
    if rows.len() < 4 {
        return None;
    }
    let (x, y): (Vec<[f64; 3]>, Vec<f64>) = rows.iter().copied().unzip();
    let beta = least_squares(&x, &y, 1e-10)?;
    let mean = rows.iter().map(|r| r.1).sum::<f64>() / rows.len() as f64;
    let predict = |x: &[f64; 3]| x.iter().zip(&beta).map(|(a, b)| a * b).sum::<f64>();
    let rss: f64 = rows.iter().map(|(x, y)| (y - predict(x)).powi(2)).sum();
    let tss: f64 = rows.iter().map(|(_, y)| (y - mean).powi(2)).sum();
    let fit = PointFit {
        ln_scale: beta[0],
        alpha: beta[1],
        beta: beta[2],
        shift,
        r2: if tss > 0.0 { 1.0 - rss / tss } else { f64::NAN },
        points: rows.len(),
    };
    Some((fit, rss))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::analysis::special::normal_quantile;
    use rand::{Rng, SeedableRng};
    use rand_chacha::ChaCha8Rng;

    fn normal(rng: &mut ChaCha8Rng, sd: f64) -> f64 {
        sd * normal_quantile(rng.random_range(1e-12..1.0))
    }

    /// Curves from the law with `ln F` noise `sd`: 4 sizes × `seeds`, 14 log-spaced times,
    /// each curve with its own random level (a cell effect), as real seeds have.
    fn simulate(rng: &mut ChaCha8Rng, seeds: usize, time_unit: f64, sd: f64) -> Vec<ForgettingCurve> {
        let (alpha, beta, shift) = (-0.5, 0.7, 20.0);
        let times: Vec<f64> = (0..14).map(|i| (1600f64.ln() * i as f64 / 13.0).exp().round()).collect();
        let mut out = Vec::new();
        for &n in &[1e5, 4e5, 9e5, 1.2e6] {
            for _ in 0..seeds {
                let level = normal(rng, 0.1);
                let f = times
                    .iter()
                    .map(|t| {
                        (0.3f64.ln() + alpha * f64::ln(n) + beta * f64::ln(t + shift) + level + normal(rng, sd)).exp()
                    })
                    .collect();
                out.push(ForgettingCurve { params: n, t: times.iter().map(|t| t * time_unit).collect(), f });
            }
        }
        out
    }

    #[test]
    fn the_fit_recovers_the_exponents_and_the_unit_of_time_only_rescales_the_shift() {
        let mut rng = ChaCha8Rng::seed_from_u64(1);
        let curves = simulate(&mut rng, 5, 1.0, 0.05);
        let boot = BootstrapConfig { n_resamples: 200, ..Default::default() };
        let law = fit_forgetting_law(&curves, &boot).unwrap();
        assert!((law.alpha.value + 0.5).abs() < 0.05 && (law.beta.value - 0.7).abs() < 0.05, "{law:?}");
        assert!(law.alpha.contains(-0.5) && law.beta.contains(0.7), "{law:?}");
        let tokens: Vec<ForgettingCurve> = curves
            .iter()
            .map(|c| ForgettingCurve { t: c.t.iter().map(|t| t * 1024.0).collect(), ..c.clone() })
            .collect();
        let in_tokens = fit_forgetting_law(&tokens, &boot).unwrap();
        assert!((in_tokens.shift / law.shift - 1024.0).abs() < 1e-6 * 1024.0, "{} vs {}", in_tokens.shift, law.shift);
        assert!((in_tokens.alpha.value - law.alpha.value).abs() < 1e-9);
        assert!((in_tokens.beta.value - law.beta.value).abs() < 1e-9);
    }

    #[test]
    fn the_curve_bootstrap_covers_the_true_exponents_despite_a_shared_cell_level() {
        let mut rng = ChaCha8Rng::seed_from_u64(7);
        let boot = BootstrapConfig { n_resamples: 200, ..Default::default() };
        let (sims, mut alpha_in, mut beta_in) = (60, 0, 0);
        for k in 0..sims {
            let curves = simulate(&mut rng, 3, 1.0, 0.1);
            let law = fit_forgetting_law(&curves, &BootstrapConfig { seed: k, ..boot }).unwrap();
            alpha_in += law.alpha.contains(-0.5) as usize;
            beta_in += law.beta.contains(0.7) as usize;
        }
        // The percentile bootstrap over 12 curves runs a little narrow, hence the lower bound.
        for (what, inside) in [("alpha", alpha_in), ("beta", beta_in)] {
            let rate = inside as f64 / sims as f64;
            assert!((0.8..=1.0).contains(&rate), "{what}: {inside} of {sims}");
        }
    }

    #[test]
    fn one_parameter_count_or_too_few_curves_is_refused() {
        let mut rng = ChaCha8Rng::seed_from_u64(3);
        let mut curves = simulate(&mut rng, 5, 1.0, 0.05);
        let boot = BootstrapConfig { n_resamples: 50, ..Default::default() };
        assert!(fit_forgetting_law(&curves[..5], &boot).is_err(), "5 curves are below the bootstrap's minimum");
        curves.iter_mut().for_each(|c| c.params = 1e5);
        assert!(fit_forgetting_law(&curves, &boot).is_err(), "α is not identified at one size");
    }
}
