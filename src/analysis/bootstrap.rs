//! Deterministic percentile bootstrap confidence intervals over seeds.
//!
//! Each resample draws `n` items with replacement from the `n` given (one per seed), using a
//! ChaCha8 stream seeded by [`BootstrapConfig::seed`], so the same inputs and config always
//! give the same interval. The interval is the pair of empirical quantiles (linear
//! interpolation between order statistics) at `(1 − level)/2` and `(1 + level)/2` of the
//! resampled statistic. With few seeds the percentile interval is narrower than the truth
//! (it cannot see beyond the observed spread); report `n` alongside it.

use super::error::{self, AnalysisError};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::Serialize;

/// How to resample: number of resamples, confidence level in (0, 1), RNG seed.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct BootstrapConfig {
    /// Number of resamples (≥ 1).
    pub n_resamples: usize,
    /// Confidence level, e.g. 0.95.
    pub level: f64,
    /// Seed of the resampling stream.
    pub seed: u64,
}

impl Default for BootstrapConfig {
    /// 10 000 resamples, 95 % level, seed 0.
    fn default() -> Self {
        BootstrapConfig { n_resamples: 10_000, level: 0.95, seed: 0 }
    }
}

/// A statistic with its bootstrap confidence interval.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Estimate {
    /// The statistic on the full sample.
    pub value: f64,
    /// Lower end of the interval.
    pub lo: f64,
    /// Upper end of the interval.
    pub hi: f64,
    /// Number of items (seeds) in the sample.
    pub n: usize,
    /// Number of resamples on which the statistic was defined (the interval's basis).
    pub resamples: usize,
}

/// Bootstrap CI of the mean of `values` (one per seed).
pub fn bootstrap_mean(values: &[f64], config: &BootstrapConfig) -> Result<Estimate, AnalysisError> {
    bootstrap(values, |xs| xs.iter().sum::<f64>() / xs.len() as f64, config)
}

/// Bootstrap CI of `stat` over `values` (one per seed); `values` must be finite, `stat` sees a
/// non-empty resample, and a non-finite result counts as undefined (see [`bootstrap_over`]).
pub fn bootstrap(
    values: &[f64],
    stat: impl Fn(&[f64]) -> f64,
    config: &BootstrapConfig,
) -> Result<Estimate, AnalysisError> {
    error::all_finite("values", values)?;
    let by_ref = |xs: &[&f64]| Some(stat(&xs.iter().map(|&&x| x).collect::<Vec<f64>>())).filter(|v| v.is_finite());
    bootstrap_over(values, by_ref, config)
}

/// Bootstrap CI of a statistic of a set of items (e.g. one fitted curve per seed): each
/// resample is a multiset of references into `items`. `stat` returns `None` where it is
/// undefined (a fit that fails on a resample); such resamples are skipped and not counted
/// in [`Estimate::resamples`]. Errors if `items` is empty, `stat` is undefined on the full
/// sample or on every resample, or the config is invalid.
pub fn bootstrap_over<T>(
    items: &[T],
    stat: impl Fn(&[&T]) -> Option<f64>,
    config: &BootstrapConfig,
) -> Result<Estimate, AnalysisError> {
    check_config(config)?;
    let n = items.len();
    if n == 0 {
        return Err(AnalysisError::TooFewPoints { what: "a bootstrap".into(), needed: 1, got: 0 });
    }
    let all: Vec<&T> = items.iter().collect();
    let value = stat(&all).ok_or(AnalysisError::StatisticUndefined { n })?;
    let mut rng = ChaCha8Rng::seed_from_u64(config.seed);
    let mut resample = Vec::with_capacity(n);
    let mut stats = Vec::with_capacity(config.n_resamples);
    for _ in 0..config.n_resamples {
        resample.clear();
        resample.extend((0..n).map(|_| &items[rng.random_range(0..n)]));
        stats.extend(stat(&resample));
    }
    if stats.is_empty() {
        return Err(AnalysisError::StatisticUndefined { n });
    }
    stats.sort_by(f64::total_cmp);
    let tail = (1.0 - config.level) / 2.0;
    Ok(Estimate { value, lo: quantile(&stats, tail), hi: quantile(&stats, 1.0 - tail), n, resamples: stats.len() })
}

/// Checks `n_resamples >= 1` and `0 < level < 1`.
fn check_config(config: &BootstrapConfig) -> Result<(), AnalysisError> {
    if config.n_resamples == 0 {
        return Err(AnalysisError::InvalidArgument { name: "n_resamples", value: 0.0, reason: "must be at least 1" });
    }
    if !(config.level > 0.0 && config.level < 1.0) {
        return Err(AnalysisError::InvalidArgument { name: "level", value: config.level, reason: "must be in (0, 1)" });
    }
    Ok(())
}

/// The `p`-quantile of non-empty ascending `sorted`, interpolating linearly between order
/// statistics (position `p·(m − 1)`).
fn quantile(sorted: &[f64], p: f64) -> f64 {
    let pos = p * (sorted.len() - 1) as f64;
    let (i, frac) = (pos.floor() as usize, pos.fract());
    match sorted.get(i + 1) {
        Some(next) if frac > 0.0 => sorted[i] + frac * (next - sorted[i]),
        _ => sorted[i],
    }
}

#[cfg(test)]
mod tests {
    use super::quantile;

    #[test]
    fn quantile_interpolates_between_order_statistics() {
        let xs = [1.0, 2.0, 3.0, 4.0, 5.0];
        assert_eq!(quantile(&xs, 0.0), 1.0);
        assert_eq!(quantile(&xs, 1.0), 5.0);
        assert_eq!(quantile(&xs, 0.5), 3.0);
        assert!((quantile(&xs, 0.1) - 1.4).abs() < 1e-12);
    }
}
