//! Censored normal (Tobit) regression by maximum likelihood: `y = x·β + σ·ε`, `ε ~ N(0, 1)`,
//! where a right-censored observation only says `y > c`. On `y = ln half-life` this is the
//! log-normal accelerated-failure-time model (`lifelines`' `LogNormalAFTFitter`), which the
//! fixtures check.
//!
//! - [`Design`]: the covariate matrix: an intercept, numeric columns (`ln params`, numeric
//!   axes) and categorical factors as 0/1 dummies against a reference level.
//! - [`tobit`]: the fit. Newton's method on `(β, ln σ)` with analytic gradient and Hessian,
//!   Levenberg damping where the Hessian is not negative definite, and a backtracking line
//!   search; it starts from least squares on every value (censored ones at their bound).
//! - Uncertainty: the observed information `−H⁻¹` at the maximum, its `β` block scaled by
//!   `n/(n − p)`, with Student-t intervals on `n − p` degrees of freedom (p coefficients).
//!   Without censoring the MLE of `β` is least squares and this is exactly the OLS t-interval
//!   (the scaling undoes the ML variance's `1/n`); with censoring it is a small-sample
//!   calibration that `tests/censored_stats.rs` checks by simulation (coverage at n = 5 with
//!   20 % censoring) rather than a theorem.
//!
//! The maximum is finite only when the uncensored observations alone determine every
//! coefficient (their rows of the design have full column rank) and there are more of them
//! than coefficients. A factor level whose every seed is censored fails this: its effect is
//! only bounded from below, and the fit says so with [`AnalysisError::NoFiniteMaximum`].

use super::censoring::{check_finite, count_censored, Observation};
use super::error::{self, AnalysisError};
use super::interval::{check_level, Interval, Method};
use super::linalg::{cholesky, cholesky_inverse, cholesky_solve, least_squares};
use super::special::{normal_hazard, normal_ln_pdf, normal_ln_sf, student_t_quantile};
use serde::Serialize;

/// Newton iterations before the fit gives up.
const MAX_ITERATIONS: usize = 200;
/// Converged when the Newton decrement `gᵀ(−H)⁻¹g` (the predicted log-likelihood gain, times 2)
/// falls below this: parameters are then within ~1e-8 standard errors of the maximum.
const DECREMENT_TOL: f64 = 1e-16;
/// A Newton decrement below which a failed line search means the rounding floor was reached.
const ROUNDING_DECREMENT: f64 = 1e-10;
/// Relative pivot tolerance for rank checks and factorisations.
const RANK_TOL: f64 = 1e-10;

/// The covariates of a regression: an intercept column, then numeric and dummy columns.
#[derive(Debug, Clone, PartialEq)]
pub struct Design {
    n: usize,
    names: Vec<String>,
    /// One vector of length `n` per column.
    columns: Vec<Vec<f64>>,
}

impl Design {
    /// An intercept-only design for `n` observations (the column is named `"intercept"`).
    pub fn new(n: usize) -> Design {
        Design { n, names: vec!["intercept".into()], columns: vec![vec![1.0; n]] }
    }

    /// Adds a numeric covariate (e.g. `ln params`) named `name`.
    pub fn numeric(mut self, name: impl Into<String>, values: &[f64]) -> Result<Design, AnalysisError> {
        self.check_len(values.len())?;
        error::all_finite("covariate", values)?;
        self.names.push(name.into());
        self.columns.push(values.to_vec());
        Ok(self)
    }

    /// Adds a categorical factor named `name` with one level per observation: a 0/1 column
    /// `"name=level"` for each level except the reference, the first level to appear.
    pub fn factor<S: AsRef<str>>(self, name: &str, levels: &[S]) -> Result<Design, AnalysisError> {
        match levels.first() {
            Some(first) => {
                let reference = first.as_ref().to_string();
                self.factor_with_reference(name, levels, &reference)
            }
            None => self.factor_with_reference(name, levels, ""),
        }
    }

    /// [`Design::factor`] with an explicit reference level. It should be one of the levels:
    /// otherwise every level gets a column, collinear with the intercept, and [`tobit`] refuses
    /// the design.
    pub fn factor_with_reference<S: AsRef<str>>(
        mut self,
        name: &str,
        levels: &[S],
        reference: &str,
    ) -> Result<Design, AnalysisError> {
        self.check_len(levels.len())?;
        let mut seen: Vec<&str> = Vec::new();
        for l in levels {
            if !seen.contains(&l.as_ref()) {
                seen.push(l.as_ref());
            }
        }
        for level in seen.iter().filter(|l| **l != reference) {
            self.names.push(format!("{name}={level}"));
            self.columns.push(levels.iter().map(|l| f64::from(u8::from(l.as_ref() == *level))).collect());
        }
        Ok(self)
    }

    /// Column names, intercept first.
    pub fn names(&self) -> &[String] {
        &self.names
    }

    /// Number of observations (rows).
    pub fn n(&self) -> usize {
        self.n
    }

    /// Number of columns (coefficients).
    pub fn p(&self) -> usize {
        self.columns.len()
    }

    /// Row `i` of the design.
    fn row(&self, i: usize) -> Vec<f64> {
        self.columns.iter().map(|c| c[i]).collect()
    }

    fn check_len(&self, len: usize) -> Result<(), AnalysisError> {
        if len == self.n {
            return Ok(());
        }
        Err(AnalysisError::LengthMismatch {
            left_name: "design rows",
            left: self.n,
            right_name: "covariate",
            right: len,
        })
    }
}

/// One regression coefficient with its standard error.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Coefficient {
    /// The design column's name (`"intercept"`, `"ln_params"`, `"regulariser=l2"`…).
    pub name: String,
    /// Maximum-likelihood estimate.
    pub estimate: f64,
    /// Standard error from the observed information alone (what `lifelines` reports).
    pub observed_se: f64,
    /// `observed_se · √(n/(n − p))`, the one the interval uses.
    pub se: f64,
    /// Degrees of freedom of the t critical value, `n − p`.
    pub dof: usize,
    /// Observations in the fit, censored ones included.
    pub n: usize,
    /// Censored observations in the fit.
    pub censored: usize,
}

impl Coefficient {
    /// `estimate ± t_{(1+level)/2, dof}·se` ([`Method::Tobit`]).
    pub fn interval(&self, level: f64) -> Result<Interval, AnalysisError> {
        check_level(level)?;
        let half = student_t_quantile(0.5 + level / 2.0, self.dof as f64) * self.se;
        Ok(Interval {
            value: self.estimate,
            lo: self.estimate - half,
            hi: self.estimate + half,
            level,
            n: self.n,
            censored: self.censored,
            method: Method::Tobit,
        })
    }
}

/// A fitted censored normal regression.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TobitFit {
    /// One per design column, in the design's order.
    pub coefficients: Vec<Coefficient>,
    /// Maximum-likelihood residual standard deviation `σ`.
    pub sigma: f64,
    /// Standard error of `ln σ` from the observed information.
    pub observed_se_ln_sigma: f64,
    /// Covariance of the coefficients on the `se` scale (observed information's `β` block
    /// times `n/(n − p)`), for contrasts.
    pub covariance: Vec<Vec<f64>>,
    /// Log-likelihood at the maximum (on the scale of `y`, with the `−½ ln 2π` terms).
    pub log_likelihood: f64,
    /// Observations, censored ones included.
    pub n: usize,
    /// Censored observations.
    pub censored: usize,
    /// Newton iterations taken.
    pub iterations: usize,
}

impl TobitFit {
    /// The coefficient of the column named `name`.
    pub fn coefficient(&self, name: &str) -> Option<&Coefficient> {
        self.coefficients.iter().find(|c| c.name == name)
    }

    /// The linear combination `Σ wᵢ·βᵢ` (one weight per coefficient) with its standard
    /// error, e.g. the difference between two non-reference levels of a factor.
    pub fn contrast(&self, name: impl Into<String>, weights: &[f64]) -> Result<Coefficient, AnalysisError> {
        let p = self.coefficients.len();
        if weights.len() != p {
            return Err(AnalysisError::LengthMismatch {
                left_name: "weights",
                left: weights.len(),
                right_name: "coefficients",
                right: p,
            });
        }
        let estimate = weights.iter().zip(&self.coefficients).map(|(w, c)| w * c.estimate).sum();
        let var: f64 =
            (0..p).map(|i| (0..p).map(|j| weights[i] * self.covariance[i][j] * weights[j]).sum::<f64>()).sum();
        let first = &self.coefficients[0];
        let se = var.max(0.0).sqrt();
        let observed_se = se / ((self.n as f64) / (first.dof as f64)).sqrt();
        Ok(Coefficient { name: name.into(), estimate, observed_se, se, ..first.clone() })
    }
}

/// Fits `y = x·β + σ·ε` to right-censored `y` (one [`Observation`] per design row) by maximum
/// likelihood. Needs more uncensored observations than coefficients, uncensored rows that
/// determine every coefficient, and n > p.
pub fn tobit(design: &Design, y: &[Observation]) -> Result<TobitFit, AnalysisError> {
    check_finite(y)?;
    let (n, p) = (design.n(), design.p());
    if y.len() != n {
        return Err(AnalysisError::LengthMismatch {
            left_name: "design rows",
            left: n,
            right_name: "y",
            right: y.len(),
        });
    }
    let events = n - count_censored(y);
    if events < p + 1 {
        return Err(AnalysisError::TooFewPoints {
            what: format!("a censored regression with {p} coefficient(s) (uncensored observations)"),
            needed: p + 1,
            got: events,
        });
    }
    let rows: Vec<Vec<f64>> = (0..n).map(|i| design.row(i)).collect();
    let uncensored: Vec<&Vec<f64>> = rows.iter().zip(y).filter(|(_, o)| !o.censored).map(|(r, _)| r).collect();
    if cholesky(&scaled_gram(&uncensored), RANK_TOL).is_none() {
        return Err(AnalysisError::NoFiniteMaximum {
            model: "censored regression",
            reason: "the uncensored observations do not determine every coefficient (collinear covariates, \
                     or a factor level whose every observation is censored)"
                .into(),
        });
    }
    let problem = Problem { rows: &rows, y };
    let (theta, iterations) = problem.maximise(problem.start())?;
    let (log_likelihood, _, hessian) = problem.evaluate(&theta);
    let info: Vec<Vec<f64>> = hessian.iter().map(|r| r.iter().map(|h| -h).collect()).collect();
    let Some(l) = cholesky(&info, RANK_TOL) else {
        return Err(AnalysisError::NoFiniteMaximum {
            model: "censored regression",
            reason: "the observed information is singular at the maximum".into(),
        });
    };
    let cov = cholesky_inverse(&l);
    let scale = n as f64 / (n - p) as f64;
    let censored = n - events;
    let coefficients = design
        .names()
        .iter()
        .enumerate()
        .map(|(j, name)| Coefficient {
            name: name.clone(),
            estimate: theta[j],
            observed_se: cov[j][j].sqrt(),
            se: (cov[j][j] * scale).sqrt(),
            dof: n - p,
            n,
            censored,
        })
        .collect();
    Ok(TobitFit {
        coefficients,
        sigma: theta[p].exp(),
        observed_se_ln_sigma: cov[p][p].sqrt(),
        covariance: (0..p).map(|i| (0..p).map(|j| cov[i][j] * scale).collect()).collect(),
        log_likelihood,
        n,
        censored,
        iterations,
    })
}

/// `XᵀX` of `rows`, scaled to unit diagonal (where the diagonal is nonzero) for a rank check.
fn scaled_gram(rows: &[&Vec<f64>]) -> Vec<Vec<f64>> {
    let p = rows.first().map_or(0, |r| r.len());
    let gram: Vec<Vec<f64>> =
        (0..p).map(|i| (0..p).map(|j| rows.iter().map(|r| r[i] * r[j]).sum()).collect()).collect();
    let d: Vec<f64> = (0..p).map(|i| if gram[i][i] > 0.0 { gram[i][i].sqrt() } else { 1.0 }).collect();
    (0..p).map(|i| (0..p).map(|j| gram[i][j] / (d[i] * d[j])).collect()).collect()
}

/// The likelihood of one data set, in the parameters `θ = (β, ln σ)`.
struct Problem<'a> {
    rows: &'a [Vec<f64>],
    y: &'a [Observation],
}

impl Problem<'_> {
    /// Least squares on every value (censored ones at their bound), σ from its residuals.
    fn start(&self) -> Vec<f64> {
        let p = self.rows[0].len();
        let values: Vec<f64> = self.y.iter().map(|o| o.value).collect();
        // The uncensored rows have full rank, so all rows do.
        let beta = least_squares(self.rows, &values, 0.0).unwrap_or_else(|| vec![0.0; p]);
        let n = self.y.len() as f64;
        let sse: f64 = self.rows.iter().zip(self.y).map(|(r, o)| (o.value - dot(r, &beta)).powi(2)).sum();
        let mean = self.y.iter().map(|o| o.value).sum::<f64>() / n;
        let spread = (self.y.iter().map(|o| (o.value - mean).powi(2)).sum::<f64>() / n).sqrt();
        let sigma = (sse / n).sqrt().max(1e-3 * spread).max(1e-12);
        beta.into_iter().chain([sigma.ln()]).collect()
    }

    /// Log-likelihood, gradient and Hessian at `theta`.
    fn evaluate(&self, theta: &[f64]) -> (f64, Vec<f64>, Vec<Vec<f64>>) {
        let p = theta.len() - 1;
        let (beta, s) = (&theta[..p], theta[p]);
        let sigma = s.exp();
        let (mut ll, mut g, mut h) = (0.0, vec![0.0; p + 1], vec![vec![0.0; p + 1]; p + 1]);
        for (x, o) in self.rows.iter().zip(self.y) {
            let z = (o.value - dot(x, beta)) / sigma;
            // (∂ℓ/∂z-derived terms): gradient coefficients and Hessian weights for this point.
            let (li, gb, gs, hbb, hbs, hss) = if o.censored {
                let lam = normal_hazard(z);
                let w = lam * (lam - z);
                (normal_ln_sf(z), lam, lam * z, -w, -(w * z + lam), -z * (w * z + lam))
            } else {
                (normal_ln_pdf(z) - s, z, z * z - 1.0, -1.0, -2.0 * z, -2.0 * z * z)
            };
            ll += li;
            for i in 0..p {
                g[i] += gb * x[i] / sigma;
                for j in 0..p {
                    h[i][j] += hbb * x[i] * x[j] / (sigma * sigma);
                }
                h[i][p] += hbs * x[i] / sigma;
            }
            g[p] += gs;
            h[p][p] += hss;
        }
        let last_column: Vec<f64> = h.iter().take(p).map(|row| row[p]).collect();
        h[p][..p].copy_from_slice(&last_column);
        (ll, g, h)
    }

    /// Damped Newton ascent from `theta`; the maximiser and the iterations taken.
    fn maximise(&self, mut theta: Vec<f64>) -> Result<(Vec<f64>, usize), AnalysisError> {
        let q = theta.len();
        let fail = |reason: String| AnalysisError::NoFiniteMaximum { model: "censored regression", reason };
        for iteration in 1..=MAX_ITERATIONS {
            let (ll, g, h) = self.evaluate(&theta);
            if !ll.is_finite() {
                return Err(fail(format!("the log-likelihood became {ll}")));
            }
            let mut damping = 0.0;
            let mut accepted = None;
            for _ in 0..60 {
                let scale = (0..q).map(|i| h[i][i].abs()).fold(1e-12, f64::max);
                let a: Vec<Vec<f64>> = (0..q)
                    .map(|i| (0..q).map(|j| -h[i][j] + if i == j { damping * scale } else { 0.0 }).collect())
                    .collect();
                let Some(l) = cholesky(&a, 1e-14) else {
                    damping = if damping == 0.0 { 1e-8 } else { damping * 10.0 };
                    continue;
                };
                let step = cholesky_solve(&l, &g);
                let decrement = dot(&g, &step);
                if damping == 0.0 && decrement < DECREMENT_TOL {
                    return Ok((theta, iteration));
                }
                if let Some(next) = self.line_search(&theta, ll, &step, decrement) {
                    accepted = Some(next);
                    break;
                }
                // No ascent along the Newton direction. With a tiny decrement this is the rounding
                // floor (statrs's erfc is good to ~1e-10, which limits how flat the computed
                // likelihood can be resolved): converged, within ~1e-5 SE at worst. Otherwise try
                // a steeper, more damped direction.
                if damping == 0.0 && decrement < ROUNDING_DECREMENT {
                    return Ok((theta, iteration));
                }
                damping = if damping == 0.0 { 1e-8 } else { damping * 10.0 };
            }
            theta = accepted.ok_or_else(|| fail("no ascent direction was found".into()))?;
            let ln_sigma = theta[q - 1];
            if ln_sigma <= -30.0 || theta.iter().any(|t| !t.is_finite() || t.abs() > 1e12) {
                return Err(fail(format!("the parameters diverged (ln σ = {ln_sigma})")));
            }
        }
        Err(fail(format!("Newton's method did not converge in {MAX_ITERATIONS} iterations")))
    }

    /// Backtracking along `step` from `theta` (log-likelihood `ll`) until the Armijo
    /// condition holds and the log-likelihood strictly increases; `None` if 40 halvings do not
    /// find such a point.
    fn line_search(&self, theta: &[f64], ll: f64, step: &[f64], decrement: f64) -> Option<Vec<f64>> {
        let mut alpha = 1.0;
        for _ in 0..40 {
            let next: Vec<f64> = theta.iter().zip(step).map(|(t, d)| t + alpha * d).collect();
            let (ll_next, _, _) = self.evaluate(&next);
            // Strictly better: at the rounding floor a step that changes nothing must not count.
            if ll_next.is_finite() && ll_next > ll && ll_next >= ll + 1e-4 * alpha * decrement {
                return Some(next);
            }
            alpha *= 0.5;
        }
        None
    }
}

fn dot(a: &[f64], b: &[f64]) -> f64 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uncensored_fit_is_least_squares_with_the_ols_t_interval() {
        let x = [0.0, 1.0, 2.0, 3.0, 4.0, 5.0];
        let y = [0.1, 1.2, 1.9, 3.2, 3.9, 5.1];
        let design = Design::new(6).numeric("x", &x).unwrap();
        let obs: Vec<Observation> = y.iter().map(|&v| Observation::reached(v)).collect();
        let fit = tobit(&design, &obs).unwrap();
        let ols = crate::analysis::linear_fit(&x, &y).unwrap();
        let slope = fit.coefficient("x").unwrap();
        assert!((slope.estimate - ols.slope).abs() < 1e-9, "{fit:?}");
        let ci = slope.interval(0.95).unwrap();
        assert!((ci.lo - ols.slope_ci.0).abs() < 1e-7 && (ci.hi - ols.slope_ci.1).abs() < 1e-7, "{ci:?} vs {ols:?}");
        assert_eq!(ci.method_label(), "Tobit (n=6)");
    }

    #[test]
    fn a_contrast_equals_the_coefficient_of_a_refit_with_another_reference_level() {
        let x = [0.0, 0.0, 1.0, 1.0, 2.0, 2.0, 0.0, 1.0, 2.0, 0.0, 1.0, 2.0];
        let ov = ["0", "0.25", "0.5", "0", "0.25", "0.5", "0.5", "0", "0.25", "0.25", "0.5", "0"];
        let y = [0.1, 0.5, 1.6, 0.6, 1.2, 1.9, 0.9, 0.4, 1.0, 0.2, 1.5, 0.7];
        let obs: Vec<Observation> = y
            .iter()
            .map(|&v| if v > 1.45 { Observation::censored_at(1.45) } else { Observation::reached(v) })
            .collect();
        let base = Design::new(12).numeric("x", &x).unwrap();
        let a = tobit(&base.clone().factor("overlap", &ov).unwrap(), &obs).unwrap();
        let b = tobit(&base.factor_with_reference("overlap", &ov, "0.25").unwrap(), &obs).unwrap();
        assert_eq!(
            a.coefficients.iter().map(|c| c.name.as_str()).collect::<Vec<_>>(),
            ["intercept", "x", "overlap=0.25", "overlap=0.5"]
        );
        let diff = a.contrast("0.5 - 0.25", &[0.0, 0.0, -1.0, 1.0]).unwrap();
        let direct = b.coefficient("overlap=0.5").unwrap();
        assert!((diff.estimate - direct.estimate).abs() < 1e-7, "{diff:?} vs {direct:?}");
        assert!((diff.se - direct.se).abs() < 1e-6 * direct.se, "{diff:?} vs {direct:?}");
        assert!((diff.observed_se - direct.observed_se).abs() < 1e-6 * direct.observed_se);
        assert!((a.log_likelihood - b.log_likelihood).abs() < 1e-9);
    }

    #[test]
    fn a_factor_level_with_every_observation_censored_has_no_maximum() {
        let levels = ["none", "none", "none", "l2", "l2", "l2"];
        let design = Design::new(6).factor("reg", &levels).unwrap();
        assert_eq!(design.names(), ["intercept", "reg=l2"]);
        let obs = [1.0, 1.5, 2.0].map(Observation::reached).into_iter().chain([Observation::censored_at(3.0); 3]);
        let err = tobit(&design, &obs.collect::<Vec<_>>()).unwrap_err();
        assert!(matches!(err, AnalysisError::NoFiniteMaximum { .. }), "{err}");
    }
}
