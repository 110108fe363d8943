//! Study-neutral pooling of cell results: a metric's series over a phase, the decay laws
//! and half-life fitted to it, pooling over seeds into conditions (a sweep point without
//! the seed) with intervals, scaling fits against parameters and other numeric axes, and
//! (the effect of each swept knob is in [`super::knobs`]). Any study whose cells yield a [`SeedResult`] uses these;
//! nothing here knows a particular study.

use super::experiment::{Cell, Experiment};
use super::sweep::{label_of, slug};
use crate::analysis::scaling::SLOPE_CI_LEVEL;
use crate::analysis::{
    fit_all, fit_half_life, linear_fit, log_t_interval, loglog_fit, lognormal_fit, mean_interval, observed_half_life,
    t_interval, tobit, AnalysisError, BootstrapConfig, Design, Fit, HalfLife, Interval, LineFit, Observation,
};
use crate::store::{MetricRow, Store};
use anyhow::Result;
use std::collections::BTreeMap;

/// A metric over one phase: `t` (steps or tokens since the phase's first evaluation, from 0)
/// and values.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Series {
    pub t: Vec<f64>,
    pub y: Vec<f64>,
}

/// The cells of one condition, pooled over seeds.
#[derive(Clone, Debug)]
pub struct Condition {
    pub name: String,
    /// `(axis key, value)` without the seed.
    pub point: Vec<(String, toml::Value)>,
    pub params: usize,
    /// The typical half-life over seeds (see [`half_life_estimate`]), censored seeds counted
    /// as the lower bounds they are, with its interval, n and method; none where it cannot
    /// be estimated (a single seed, or every seed censored).
    pub half_life: Option<Interval>,
    /// Seeds still above halfway at the horizon (their half-life is only a lower bound).
    pub censored: usize,
    /// Mean over seeds of the fraction of the way to the floor covered by the horizon, with a
    /// t-interval below 8 seeds and a percentile bootstrap from 8 on.
    pub moved: Option<Interval>,
    pub cells: Vec<usize>,
}

/// A scaling fit of half-life against one variable, within one family of conditions.
#[derive(Clone, Debug)]
pub struct ScalingFit {
    /// `params` (log-log), or the swept key for linear fits.
    pub against: String,
    /// The conditions' shared other axes.
    pub family: String,
    /// Least squares when every seed crossed halfway; with censored seeds, a censored
    /// (Tobit) regression that counts them as lower bounds, whose `r2` is NaN.
    pub fit: LineFit,
    /// Seeds in the fit that never crossed halfway (their half-life is a lower bound).
    pub censored: usize,
    /// `(x, half-life)` per seed that crossed halfway.
    pub points: Vec<(f64, f64)>,
}

impl ScalingFit {
    /// `R² 0.76` for a least-squares fit, `Tobit, 2 of 6 censored` for a censored one.
    pub fn quality(&self, decimals: usize) -> String {
        match self.censored {
            0 => format!("R² {:.*}", decimals, self.fit.r2),
            c => format!("Tobit, {c} of {} censored", self.fit.n),
        }
    }
}

/// Why a cell without a store row has no results.
pub const NOT_RUN: &str = "not run";

/// A finished cell's metric rows, or why there are none (`not run`, or the cell's status).
pub fn finished_rows(store: &Store, cell: &Cell) -> Result<Result<Vec<MetricRow>, String>> {
    Ok(match store.run_info(&cell.id)? {
        Some(info) if info.status == "done" => Ok(store.metrics(&cell.id)?),
        Some(info) => Err(info.status),
        None => Err(NOT_RUN.into()),
    })
}

/// The t-interval at `level` of per-seed `values` (n ≥ 2) with its ends clipped to the
/// quantity's range `[lo, hi]` (a rate to [0, 1], a loss to [0, ∞)).
pub fn seed_interval(values: &[f64], level: f64, lo: f64, hi: f64) -> Option<Interval> {
    let t = t_interval(values, level).ok()?;
    Some(Interval { lo: t.lo.max(lo), hi: t.hi.min(hi), ..t })
}

/// Cells without a result, and why.
pub type Missing = Vec<(String, String)>;

/// The results `read` makes of every finished cell of a study with a generated variant axis
/// `axis` (its values parsed by `parse`), and the cells without one, with why (not run, their
/// status, or `read` found no result: `no result`).
pub fn variant_results<V, R>(
    exp: &Experiment,
    axis: &str,
    parse: fn(&str) -> Option<V>,
    mut read: impl FnMut(&Cell, V, &[MetricRow]) -> Result<Option<R>>,
) -> Result<(Vec<R>, Missing)> {
    let store = Store::open(&exp.db())?;
    let (mut results, mut missing) = (Vec::new(), Vec::new());
    for cell in &exp.cells {
        let value = cell.point.iter().find(|(k, _)| k == axis).and_then(|(_, v)| v.as_str());
        let Some(variant) = value.and_then(parse) else { continue };
        match finished_rows(&store, cell)? {
            Ok(rows) => match read(cell, variant, &rows)? {
                Some(r) => results.push(r),
                None => missing.push((cell.id.clone(), "no result".into())),
            },
            Err(status) => missing.push((cell.id.clone(), status)),
        }
    }
    Ok((results, missing))
}

/// One metric of one task over phase `phase`, timed by `clock` (a row's step or tokens)
/// from the phase's first evaluation.
pub fn series(rows: &[MetricRow], phase: u32, task: &str, metric: &str, clock: fn(&MetricRow) -> u64) -> Series {
    let rows: Vec<&MetricRow> =
        rows.iter().filter(|r| r.phase == phase && r.task == task && r.metric == metric).collect();
    let origin = rows.iter().map(|r| clock(r)).min().unwrap_or(0);
    let mut points: Vec<(f64, f64)> =
        rows.iter().filter(|r| r.value.is_finite()).map(|r| ((clock(r) - origin) as f64, r.value)).collect();
    points.sort_by(|x, y| x.0.total_cmp(&y.0));
    points.dedup_by(|x, y| x.0 == y.0);
    Series { t: points.iter().map(|p| p.0).collect(), y: points.iter().map(|p| p.1).collect() }
}

/// The decay laws fitted to `s` (best first), its observed half-life from `start` towards
/// `floor` (censored at the horizon when not reached or undefined) and the best law's half-life.
pub fn decay_of(s: &Series, start: f64, floor: f64) -> (Vec<Fit>, HalfLife, Option<f64>) {
    let fits = fit_all(&s.t, &s.y).unwrap_or_default();
    let horizon = s.t.last().copied().unwrap_or(0.0);
    let half_life = (start != floor)
        .then(|| observed_half_life(&s.t, &s.y, start, floor).ok())
        .flatten()
        .unwrap_or(HalfLife::Censored { horizon });
    let fit_half_life = fits.first().and_then(|f| fit_half_life(f, start, floor).ok().flatten());
    (fits, half_life, fit_half_life)
}

/// `axis=value, …` of a cell's sweep point without the seed.
pub fn condition_name(point: &[(String, toml::Value)]) -> String {
    let parts: Vec<String> =
        point.iter().filter(|(k, _)| k != "seed").map(|(k, v)| format!("{}={}", label_of(k), slug(v))).collect();
    if parts.is_empty() {
        "all".into()
    } else {
        parts.join(", ")
    }
}

/// What pooling over seeds and scaling fits need of one cell's result.
pub trait SeedResult {
    /// The cell's sweep point.
    fn point(&self) -> &[(String, toml::Value)];
    fn params(&self) -> usize;
    fn half_life(&self) -> &HalfLife;
    /// How far the metric moved from its start toward the floor by the last evaluation, as a
    /// fraction of the way (0: unchanged, 1: at the floor); informative where every seed is
    /// censored.
    fn moved(&self) -> f64;
}

/// The fraction of the way from `start` to `floor` that the last value of `s` has covered.
pub fn moved_toward(s: &Series, start: f64, floor: f64) -> f64 {
    s.y.last().map_or(f64::NAN, |y| (y - start) / (floor - start))
}

/// Cells grouped by condition, with the mean half-life over seeds and its CI.
pub fn conditions<C: SeedResult>(cells: &[C], boot: &BootstrapConfig) -> Vec<Condition> {
    let mut groups: BTreeMap<String, Vec<usize>> = BTreeMap::new();
    for (i, c) in cells.iter().enumerate() {
        groups.entry(condition_name(c.point())).or_default().push(i);
    }
    groups
        .into_iter()
        .map(|(name, members)| {
            let half_lives: Vec<HalfLife> = members.iter().map(|&i| *cells[i].half_life()).collect();
            Condition {
                name,
                point: cells[members[0]].point().iter().filter(|(k, _)| k != "seed").cloned().collect(),
                params: cells[members[0]].params(),
                half_life: half_life_estimate(&half_lives, boot.level),
                censored: half_lives.iter().filter(|h| reached(h).is_none()).count(),
                moved: mean_interval(&members.iter().map(|&i| cells[i].moved()).collect::<Vec<_>>(), boot).ok(),
                cells: members,
            }
        })
        .collect()
}

/// The typical half-life of one condition's seeds at confidence `level`: without censoring
/// the geometric mean with a Student-t interval on ln half-life (valid at small n, unlike a
/// percentile bootstrap); with censored seeds the median of a log-normal survival fit by
/// maximum likelihood, which uses a censored seed as the lower bound it is instead of
/// dropping it. None for fewer than two seeds, or where every seed is censored (the
/// likelihood has no finite maximum).
pub fn half_life_estimate(half_lives: &[HalfLife], level: f64) -> Option<Interval> {
    let reached: Vec<f64> = half_lives.iter().filter_map(reached).collect();
    if reached.len() == half_lives.len() {
        return log_t_interval(&reached, level).ok();
    }
    let observations: Vec<Observation> = half_lives.iter().cloned().map(Observation::from).collect();
    lognormal_fit(&observations).and_then(|fit| fit.median(level)).ok()
}

/// The half-life when reached, else the horizon it outlasted (a lower bound).
pub fn persistence(h: &HalfLife) -> f64 {
    match h {
        HalfLife::Reached(t) => *t,
        HalfLife::Censored { horizon } => *horizon,
    }
}

/// The half-life when reached.
pub fn reached(h: &HalfLife) -> Option<f64> {
    match h {
        HalfLife::Reached(t) => Some(*t),
        HalfLife::Censored { .. } => None,
    }
}

/// Scaling fits: half-life against parameters (log-log) within each family of cells that
/// share every other axis, and against each other numeric axis (linear) likewise. A seed
/// that never crossed halfway enters as the lower bound it is (see [`line_fit`]).
pub fn scaling_fits<C: SeedResult>(exp: &Experiment, cells: &[C]) -> Vec<ScalingFit> {
    let mut out = Vec::new();
    for axis in exp.axes.iter().filter(|a| a.key != "seed") {
        let by_params = axis.key.starts_with("model.");
        let mut families: BTreeMap<String, Vec<(f64, HalfLife)>> = BTreeMap::new();
        for c in cells {
            let h = *c.half_life();
            let value = c.point().iter().find(|(k, _)| *k == axis.key).map(|(_, v)| v);
            let x = if by_params { Some(c.params() as f64) } else { value.and_then(number) };
            let family: Vec<String> = c
                .point()
                .iter()
                .filter(|(k, _)| *k != axis.key && k != "seed")
                .map(|(k, v)| format!("{}={}", label_of(k), slug(v)))
                .collect();
            if let Some(x) = x {
                families.entry(family.join(", ")).or_default().push((x, h));
            }
        }
        for (family, seeds) in families {
            let points: Vec<(f64, f64)> = seeds.iter().filter_map(|(x, h)| reached(h).map(|h| (*x, h))).collect();
            if let Ok(fit) = line_fit(&seeds, by_params) {
                let against = if by_params { "params".to_string() } else { axis.key.clone() };
                out.push(ScalingFit {
                    against,
                    family: if family.is_empty() { "all".into() } else { family },
                    fit,
                    censored: seeds.len() - points.len(),
                    points,
                });
            }
        }
    }
    out
}

/// Half-life against `x` (`ln` of both when `log`): least squares when every seed crossed
/// halfway, else a Tobit regression with the censored seeds as lower bounds at their
/// horizons (dropping them would bias the slope toward 0 where the long-lived cells are
/// the censored ones; `tests/censored_stats.rs` measures it).
fn line_fit(seeds: &[(f64, HalfLife)], log: bool) -> Result<LineFit, AnalysisError> {
    let scale = |v: f64| if log { v.ln() } else { v };
    let reached: Vec<(f64, f64)> = seeds.iter().filter_map(|(x, h)| reached(h).map(|h| (*x, h))).collect();
    if reached.len() == seeds.len() {
        let (x, y): (Vec<f64>, Vec<f64>) = reached.into_iter().unzip();
        return if log { loglog_fit(&x, &y) } else { linear_fit(&x, &y) };
    }
    let x: Vec<f64> = seeds.iter().map(|(x, _)| scale(*x)).collect();
    let y: Vec<Observation> = seeds
        .iter()
        .map(|(_, h)| match *h {
            HalfLife::Reached(t) => Observation::reached(scale(t)),
            HalfLife::Censored { horizon } => Observation::censored_at(scale(horizon)),
        })
        .collect();
    let fit = tobit(&Design::new(x.len()).numeric("x", &x)?, &y)?;
    let coefficient = |name: &str| fit.coefficient(name).expect("the design's columns");
    let slope = coefficient("x").interval(SLOPE_CI_LEVEL)?;
    let intercept = coefficient("intercept").estimate;
    Ok(LineFit { slope: slope.value, intercept, slope_ci: (slope.lo, slope.hi), r2: f64::NAN, n: fit.n })
}

/// A numeric sweep value as f64 (strings and other kinds: `None`).
pub fn number(v: &toml::Value) -> Option<f64> {
    v.as_float().or_else(|| v.as_integer().map(|i| i as f64))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::analysis::Method;

    #[test]
    fn a_condition_counts_censored_seeds_as_lower_bounds_and_states_its_method() {
        let reached = [HalfLife::Reached(10.0), HalfLife::Reached(40.0)];
        let all = half_life_estimate(&reached, 0.95).unwrap();
        assert_eq!((all.method, all.n, all.censored), (Method::LogT, 2, 0));
        assert!((all.value - 20.0).abs() < 1e-9, "the geometric mean: {all}");
        assert!(all.lo < 10.0 && all.hi > 40.0, "at n = 2 the t-interval is wider than the seeds' range: {all}");

        let with_censored = [HalfLife::Reached(10.0), HalfLife::Reached(40.0), HalfLife::Censored { horizon: 300.0 }];
        let e = half_life_estimate(&with_censored, 0.95).unwrap();
        assert_eq!((e.method, e.n, e.censored), (Method::LogNormalMle, 3, 1));
        assert!(e.value > all.value, "a seed that outlasted 300 raises the estimate: {e} vs {all}");

        let censored = [HalfLife::Censored { horizon: 300.0 }, HalfLife::Censored { horizon: 300.0 }];
        assert_eq!(half_life_estimate(&censored, 0.95), None, "no finite estimate when every seed is censored");
        assert_eq!(half_life_estimate(&reached[..1], 0.95), None, "one seed gives no interval");
    }

    #[test]
    fn a_scaling_fit_counts_censored_seeds_instead_of_dropping_them() {
        // Half-life ∝ params^0.5 with a ±10% spread; the longer-lived seed of the third scale
        // and both seeds of the largest outlast the horizon.
        let horizon = 1200.0;
        let seeds: Vec<(f64, HalfLife)> = [1e5, 1e5, 4e5, 4e5, 1.6e6, 1.6e6, 6.4e6, 6.4e6]
            .iter()
            .enumerate()
            .map(|(i, &x)| {
                let h = f64::sqrt(x) * if i % 2 == 0 { 0.9 } else { 1.1 };
                (x, if h < horizon { HalfLife::Reached(h) } else { HalfLife::Censored { horizon } })
            })
            .collect();
        let censored = seeds.iter().filter(|(_, h)| reached(h).is_none()).count();
        assert_eq!(censored, 3, "the design censors one seed of the third scale and both of the largest");
        let with = line_fit(&seeds, true).unwrap();
        let kept: Vec<(f64, HalfLife)> = seeds.iter().filter(|(_, h)| reached(h).is_some()).cloned().collect();
        let dropped = line_fit(&kept, true).unwrap();
        assert!(with.r2.is_nan() && dropped.r2.is_finite(), "Tobit with censoring, least squares without");
        assert_eq!((with.n, dropped.n), (8, 8 - censored));
        assert!(with.slope_ci.0 < 0.5 && 0.5 < with.slope_ci.1, "the censored fit covers the true exponent: {with:?}");
        assert!(
            with.slope > dropped.slope,
            "dropping the long-lived seeds flattens the slope: {with:?} vs {dropped:?}"
        );
    }
}
