//! The Kaplan–Meier survival curve of right-censored times, and its median with a confidence
//! interval.
//!
//! - Survival `S(t) = Π_{t_i ≤ t} (1 − d_i/n_i)` over distinct times `t_i` with `d_i` events
//!   and `n_i` at risk. A censoring at the same time as an event counts as still at risk then.
//! - Pointwise band: the "exponential Greenwood" (log-log) interval,
//!   `exp(−exp(ln(−ln S) ∓ z·√G / ln S))` with `G = Σ d_i / (n_i (n_i − d_i))` (terms with
//!   `n_i = d_i` are 0), `z` the normal quantile. Where `S = 1` the band is `[1, 1]`; where
//!   `S = 0` it is `[0, 0]` (the formula's limit), so a curve that falls to 0 bounds the
//!   median's upper end by its last event time. For 5 uncensored seeds that end is the
//!   largest seed, exceeded by the true median with probability 1/32: conservative enough.
//! - Median: the first time with `S(t) ≤ ½`, `∞` if `S` never gets there.
//! - Median interval (Brookmeyer–Crowley style, by inverting the band): lower end the first
//!   time the band's lower edge is `≤ ½`, upper end the first time its upper edge is `≤ ½`
//!   (`∞` if never).
//!
//! These conventions are `lifelines`' (`KaplanMeierFitter`, `median_survival_times` of its
//! `confidence_interval_`), which the fixtures in `tests/fixtures/survival` check. The band is
//! asymptotic; at 5 seeds the median's upper end is often `∞`. Prefer the log-normal fit
//! (`lognormal`) for an interval at small n, and use this as its distribution-free companion.

use super::censoring::{check_finite, count_censored, Observation};
use super::error::AnalysisError;
use super::interval::{check_level, Interval, Method};
use super::special::normal_quantile;
use serde::Serialize;

/// Slack in comparisons with ½, so that a survival of exactly ½ (rounded) counts as reached.
const HALF: f64 = 0.5 * (1.0 + 1e-12);

/// The curve just after one distinct observed time.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Step {
    /// The time.
    pub time: f64,
    /// Observations still at risk just before `time`.
    pub at_risk: usize,
    /// Events (uncensored observations) at `time`.
    pub events: usize,
    /// Observations censored at `time`.
    pub censored: usize,
    /// `S(time)`.
    pub survival: f64,
    /// Lower edge of the pointwise band at `time`.
    pub lo: f64,
    /// Upper edge of the pointwise band at `time`.
    pub hi: f64,
}

/// A Kaplan–Meier curve: one [`Step`] per distinct time, ascending; `S = 1` before the first.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct KaplanMeier {
    pub steps: Vec<Step>,
    /// Number of observations.
    pub n: usize,
    /// How many were censored.
    pub censored: usize,
    /// Confidence level of the band.
    pub level: f64,
}

/// The Kaplan–Meier curve of `obs` (finite values, n ≥ 1) with its band at `level`.
pub fn kaplan_meier(obs: &[Observation], level: f64) -> Result<KaplanMeier, AnalysisError> {
    check_finite(obs)?;
    check_level(level)?;
    if obs.is_empty() {
        return Err(AnalysisError::TooFewPoints { what: "a Kaplan–Meier curve".into(), needed: 1, got: 0 });
    }
    let z = normal_quantile(0.5 + level / 2.0);
    let mut sorted = obs.to_vec();
    sorted.sort_by(|a, b| a.value.total_cmp(&b.value));
    let (mut survival, mut greenwood, mut at_risk) = (1.0f64, 0.0f64, obs.len());
    let mut steps: Vec<Step> = Vec::new();
    for group in sorted.chunk_by(|a, b| a.value == b.value) {
        let censored = count_censored(group);
        let events = group.len() - censored;
        if events > 0 {
            let (n, d) = (at_risk as f64, events as f64);
            survival *= 1.0 - d / n;
            if at_risk > events {
                greenwood += d / (n * (n - d));
            }
        }
        let (lo, hi) = band(survival, greenwood, z);
        steps.push(Step { time: group[0].value, at_risk, events, censored, survival, lo, hi });
        at_risk -= group.len();
    }
    Ok(KaplanMeier { steps, n: obs.len(), censored: count_censored(obs), level })
}

/// The log-log band around `s` with Greenwood sum `g` (see the module docs).
fn band(s: f64, g: f64, z: f64) -> (f64, f64) {
    if s >= 1.0 {
        return (1.0, 1.0);
    }
    if s <= 0.0 {
        return (0.0, 0.0);
    }
    let v = s.ln();
    let edge = |sign: f64| (-((-v).ln() + sign * z * g.sqrt() / v).exp()).exp();
    (edge(-1.0), edge(1.0))
}

impl KaplanMeier {
    /// `S(t)`: 1 before the first time, constant between times.
    pub fn survival_at(&self, t: f64) -> f64 {
        self.steps.iter().take_while(|s| s.time <= t).last().map_or(1.0, |s| s.survival)
    }

    /// The first time at which `edge` of a step is at most one half, or `∞`.
    fn first_at_most_half(&self, edge: impl Fn(&Step) -> f64) -> f64 {
        self.steps.iter().find(|s| edge(s) <= HALF).map_or(f64::INFINITY, |s| s.time)
    }

    /// The median (first time with `S ≤ ½`) with the interval inverted from the band
    /// ([`Method::KaplanMeier`]); `value` and `hi` are `∞` where not reached.
    pub fn median(&self) -> Interval {
        Interval {
            value: self.first_at_most_half(|s| s.survival),
            lo: self.first_at_most_half(|s| s.lo),
            hi: self.first_at_most_half(|s| s.hi),
            level: self.level,
            n: self.n,
            censored: self.censored,
            method: Method::KaplanMeier,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uncensored_curve_steps_down_by_one_over_n() {
        let obs: Vec<Observation> = [3.0, 1.0, 2.0, 5.0, 4.0].map(Observation::reached).to_vec();
        let km = kaplan_meier(&obs, 0.95).unwrap();
        let s: Vec<f64> = km.steps.iter().map(|s| s.survival).collect();
        for (got, want) in s.iter().zip([0.8, 0.6, 0.4, 0.2, 0.0]) {
            assert!((got - want).abs() < 1e-12);
        }
        assert_eq!(km.median().value, 3.0);
        assert_eq!(km.survival_at(0.5), 1.0);
        assert!((km.survival_at(2.5) - 0.6).abs() < 1e-12);
    }

    #[test]
    fn censoring_at_an_event_time_stays_at_risk_and_unreached_median_is_infinite() {
        let obs = [Observation::reached(1.0), Observation::censored_at(1.0), Observation::censored_at(2.0)];
        let km = kaplan_meier(&obs, 0.95).unwrap();
        assert_eq!(km.steps[0].at_risk, 3);
        assert!((km.steps[0].survival - 2.0 / 3.0).abs() < 1e-12);
        let m = km.median();
        assert!(m.value.is_infinite() && m.hi.is_infinite());
        assert_eq!(m.method_label(), "Kaplan–Meier (n=3, 2 censored)");
    }
}
