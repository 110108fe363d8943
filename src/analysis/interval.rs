//! Confidence intervals that carry their sample size and method, and the ones that hold at a
//! handful of seeds.
//!
//! - [`t_interval`]: `mean ± t_{n−1}·s/√n`, exact for Gaussian values at any n ≥ 2.
//! - [`log_t_interval`]: the same on `ln` of positive values, back-transformed: the geometric
//!   mean (the median of a log-normal) with its interval. The interval for half-lives over seeds.
//! - [`percentile_bootstrap`]: only from [`MIN_BOOTSTRAP_N`] = 8 items. Below that the resampled
//!   statistic takes few distinct values and the interval collapses towards `[min, max]`
//!   (with 2 seeds it *is* `[min, max]`, about 50 % coverage; with 3, about 75 %).
//! - [`mean_interval`]: picks t below 8 items and the bootstrap from 8.
//! - [`proportion_interval`]: Clopper–Pearson for k successes in n trials (a planting rate
//!   over seeds), exact: its coverage is at least the level at every n and p.
//!
//! Every [`Interval`] renders its method and n (`"t (n=5)"`), so a table can say what it shows.

use super::bootstrap::{bootstrap, BootstrapConfig};
use super::error::{self, AnalysisError};
use super::special::student_t_quantile;
use serde::Serialize;
use std::fmt;

/// Fewest items for which [`percentile_bootstrap`] gives an interval.
pub const MIN_BOOTSTRAP_N: usize = 8;

/// How an [`Interval`] was computed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum Method {
    /// Student-t interval on the mean.
    T,
    /// Student-t interval on the mean of `ln` values, back-transformed (geometric mean).
    LogT,
    /// Percentile bootstrap over items (n ≥ [`MIN_BOOTSTRAP_N`]).
    PercentileBootstrap,
    /// Kaplan–Meier median, interval from the log-log Greenwood band (see `kaplan_meier`).
    KaplanMeier,
    /// Log-normal maximum likelihood with right-censoring, Wald interval with a t critical
    /// value (see `lognormal`).
    LogNormalMle,
    /// Censored normal (Tobit) regression coefficient, Wald interval with a t critical value.
    Tobit,
    /// Clopper–Pearson interval of a binomial proportion (Beta quantiles).
    ClopperPearson,
}

impl fmt::Display for Method {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Method::T => "t",
            Method::LogT => "t on ln",
            Method::PercentileBootstrap => "percentile bootstrap",
            Method::KaplanMeier => "Kaplan–Meier",
            Method::LogNormalMle => "log-normal MLE",
            Method::Tobit => "Tobit",
            Method::ClopperPearson => "Clopper–Pearson",
        })
    }
}

/// An estimate with its confidence interval, sample size and method.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Interval {
    /// The point estimate. `f64::INFINITY` where it is not reached (a Kaplan–Meier median of a
    /// condition whose survival never falls to one half); it is then only known to exceed the
    /// largest censoring time.
    pub value: f64,
    /// Lower end.
    pub lo: f64,
    /// Upper end; `f64::INFINITY` when the data bound it only from below.
    pub hi: f64,
    /// Confidence level, e.g. 0.95.
    pub level: f64,
    /// Number of items (seeds, cells) behind the estimate, censored ones included.
    pub n: usize,
    /// How many of the `n` were right-censored.
    pub censored: usize,
    /// How the interval was computed.
    pub method: Method,
}

impl Interval {
    /// The method with its sample size, for a table: `"t (n=5)"`,
    /// `"Kaplan–Meier (n=5, 2 censored)"`, `"percentile bootstrap (n=8)"`.
    pub fn method_label(&self) -> String {
        match self.censored {
            0 => format!("{} (n={})", self.method, self.n),
            c => format!("{} (n={}, {c} censored)", self.method, self.n),
        }
    }

    /// Whether `x` lies in `[lo, hi]`.
    pub fn contains(&self, x: f64) -> bool {
        self.lo <= x && x <= self.hi
    }
}

impl fmt::Display for Interval {
    /// `"17.3 [15.1, 19.8] t (n=5)"`, with "∞" for an unbounded end or an unreached value.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let show = |v: f64| if v.is_infinite() { "∞".to_string() } else { format!("{v:.4}") };
        write!(f, "{} [{}, {}] {}", show(self.value), show(self.lo), show(self.hi), self.method_label())
    }
}

/// `mean ± t_{(1+level)/2, n−1}·s/√n` over `values` (n ≥ 2, finite; `0 < level < 1`).
pub fn t_interval(values: &[f64], level: f64) -> Result<Interval, AnalysisError> {
    error::all_finite("values", values)?;
    check_level(level)?;
    let n = values.len();
    if n < 2 {
        return Err(AnalysisError::TooFewPoints { what: "a t-interval".into(), needed: 2, got: n });
    }
    let mean = values.iter().sum::<f64>() / n as f64;
    let var = values.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / (n - 1) as f64;
    let half = student_t_quantile(0.5 + level / 2.0, (n - 1) as f64) * (var / n as f64).sqrt();
    Ok(Interval { value: mean, lo: mean - half, hi: mean + half, level, n, censored: 0, method: Method::T })
}

/// [`t_interval`] on `ln values`, mapped back by `exp`: the geometric mean of positive
/// `values` (n ≥ 2) with its interval ([`Method::LogT`]).
pub fn log_t_interval(values: &[f64], level: f64) -> Result<Interval, AnalysisError> {
    error::all_finite("values", values)?;
    error::all_positive("values", values)?;
    let logs: Vec<f64> = values.iter().map(|v| v.ln()).collect();
    let t = t_interval(&logs, level)?;
    Ok(Interval { value: t.value.exp(), lo: t.lo.exp(), hi: t.hi.exp(), method: Method::LogT, ..t })
}

/// The proportion `k / n` (n ≥ 1, k ≤ n) with its Clopper–Pearson interval at `level`: the
/// `(1 − level)/2` quantile of Beta(k, n − k + 1) and the `(1 + level)/2` quantile of
/// Beta(k + 1, n − k), with the ends at 0 and 1 where k = 0 or k = n.
pub fn proportion_interval(k: usize, n: usize, level: f64) -> Result<Interval, AnalysisError> {
    use statrs::distribution::{Beta, ContinuousCDF};
    check_level(level)?;
    if n == 0 || k > n {
        return Err(AnalysisError::TooFewPoints {
            what: format!("a proportion of {k} in {n}"),
            needed: k.max(1),
            got: n,
        });
    }
    let (kf, nf, alpha) = (k as f64, n as f64, 1.0 - level);
    let beta = |a: f64, b: f64, q: f64| Beta::new(a, b).expect("positive shapes").inverse_cdf(q);
    let lo = if k == 0 { 0.0 } else { beta(kf, nf - kf + 1.0, alpha / 2.0) };
    let hi = if k == n { 1.0 } else { beta(kf + 1.0, nf - kf, 1.0 - alpha / 2.0) };
    Ok(Interval { value: kf / nf, lo, hi, level, n, censored: 0, method: Method::ClopperPearson })
}

/// Percentile bootstrap interval of `stat` over `values`; errors below [`MIN_BOOTSTRAP_N`]
/// values, where the percentile interval is too short (see the module docs).
pub fn percentile_bootstrap(
    values: &[f64],
    stat: impl Fn(&[f64]) -> f64,
    config: &BootstrapConfig,
) -> Result<Interval, AnalysisError> {
    if values.len() < MIN_BOOTSTRAP_N {
        return Err(AnalysisError::TooFewPoints {
            what: "a percentile bootstrap".into(),
            needed: MIN_BOOTSTRAP_N,
            got: values.len(),
        });
    }
    let e = bootstrap(values, stat, config)?;
    Ok(Interval {
        value: e.value,
        lo: e.lo,
        hi: e.hi,
        level: config.level,
        n: e.n,
        censored: 0,
        method: Method::PercentileBootstrap,
    })
}

/// The mean of `values` with an interval at `config.level`: [`t_interval`] below
/// [`MIN_BOOTSTRAP_N`] values, [`percentile_bootstrap`] of the mean from there on.
pub fn mean_interval(values: &[f64], config: &BootstrapConfig) -> Result<Interval, AnalysisError> {
    if values.len() < MIN_BOOTSTRAP_N {
        return t_interval(values, config.level);
    }
    percentile_bootstrap(values, |xs| xs.iter().sum::<f64>() / xs.len() as f64, config)
}

/// Checks `0 < level < 1`.
pub(crate) fn check_level(level: f64) -> Result<(), AnalysisError> {
    if level > 0.0 && level < 1.0 {
        return Ok(());
    }
    Err(AnalysisError::InvalidArgument { name: "level", value: level, reason: "must be in (0, 1)" })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn t_interval_matches_a_hand_computation() {
        // mean 3, s² = 2.5, t_{0.975,4} = 2.776445105: half-width 2.776445105·√0.5.
        let i = t_interval(&[1.0, 2.0, 3.0, 4.0, 5.0], 0.95).unwrap();
        let half = 2.776_445_105_197_798_6 * 0.5f64.sqrt();
        assert!((i.value - 3.0).abs() < 1e-15 && (i.hi - 3.0 - half).abs() < 1e-9 && (3.0 - i.lo - half).abs() < 1e-9);
        assert_eq!(i.method_label(), "t (n=5)");
    }

    #[test]
    fn two_seeds_give_a_t_interval_far_wider_than_their_range() {
        // At n = 2 the 95 % t-interval is mean ± 12.7·|a − b|/2: the seed range is not an interval.
        let i = t_interval(&[17.0, 17.6], 0.95).unwrap();
        assert!(i.lo < 17.0 - 3.0 && i.hi > 17.6 + 3.0, "{i}");
    }

    #[test]
    fn bootstrap_is_refused_below_eight_and_chosen_from_eight() {
        let config = BootstrapConfig { n_resamples: 2000, level: 0.95, seed: 1 };
        let seven: Vec<f64> = (0..7).map(f64::from).collect();
        assert!(matches!(
            percentile_bootstrap(&seven, |x| x[0], &config),
            Err(AnalysisError::TooFewPoints { needed: 8, got: 7, .. })
        ));
        assert_eq!(mean_interval(&seven, &config).unwrap().method, Method::T);
        let eight: Vec<f64> = (0..8).map(f64::from).collect();
        let b = mean_interval(&eight, &config).unwrap();
        assert_eq!(b.method_label(), "percentile bootstrap (n=8)");
        assert!(b.contains(3.5));
    }

    #[test]
    fn log_t_interval_is_the_geometric_mean() {
        let i = log_t_interval(&[10.0, 1000.0], 0.95).unwrap();
        assert!((i.value - 100.0).abs() < 1e-9 && i.lo < 10.0 && i.hi > 1000.0);
        assert!(matches!(log_t_interval(&[1.0, 0.0], 0.95), Err(AnalysisError::NonPositive { index: 1, .. })));
    }
}
