//! Half-lives: steps until a metric has moved halfway from its start value (end of phase 1)
//! towards a floor (chance level), i.e. reached `(start + floor) / 2`.
//!
//! "Halfway" is measured in the direction from `start` to `floor`, so the same functions serve
//! a falling metric (accuracy, floor below start) and a rising one (loss, floor above start).
//! A curve counts as having reached the level once it is at or beyond it in that direction.

use super::error::{self, AnalysisError};
use super::fit::Fit;
use serde::Serialize;

/// An observed half-life, which may be right-censored.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub enum HalfLife {
    /// The curve reached the halfway level at this (interpolated) time.
    Reached(f64),
    /// The curve had not reached the halfway level by `horizon`, its last observed time; the
    /// half-life is longer than `horizon` and unknown.
    Censored { horizon: f64 },
}

/// The observed half-life of the curve `(t_i, y_i)` (`t` strictly increasing, `t >= 0`):
/// linear interpolation at the first crossing of the halfway level. When `t[0] > 0` the curve
/// is taken to start at `(0, start)`, so a first point already past halfway interpolates from
/// there; a point at `t = 0` already past halfway gives `Reached(0)`.
pub fn observed_half_life(t: &[f64], y: &[f64], start: f64, floor: f64) -> Result<HalfLife, AnalysisError> {
    error::decay_series(t, y)?;
    let dir = direction(start, floor)?;
    if let Some(index) = (1..t.len()).find(|&i| t[i] <= t[i - 1]) {
        return Err(AnalysisError::NotIncreasing { index, value: t[index] });
    }
    let Some(&horizon) = t.last() else {
        return Err(AnalysisError::TooFewPoints { what: "an observed half-life".into(), needed: 1, got: 0 });
    };
    let half = (start + floor) / 2.0;
    let progress = |yi: f64| (yi - start) * dir;
    let Some(i) = y.iter().position(|&yi| progress(yi) >= progress(half)) else {
        return Ok(HalfLife::Censored { horizon });
    };
    let (t0, y0) = if i == 0 { (0.0, start) } else { (t[i - 1], y[i - 1]) };
    if t[i] == t0 {
        return Ok(HalfLife::Reached(t0));
    }
    Ok(HalfLife::Reached(t0 + (half - y0) / (y[i] - y0) * (t[i] - t0)))
}

/// The half-life of a fitted law: the first `t >= 0` at which the fitted curve is at or beyond
/// the halfway level between `start` and `floor` (0 if it already is at `t = 0`), or `None`
/// if its asymptote stops short of halfway. The time may lie beyond the fitted data's horizon
/// (an extrapolation).
pub fn fit_half_life(fit: &Fit, start: f64, floor: f64) -> Result<Option<f64>, AnalysisError> {
    let dir = direction(start, floor)?;
    let half = (start + floor) / 2.0;
    if (fit.curve.predict(0.0) - half) * dir >= 0.0 {
        return Ok(Some(0.0));
    }
    Ok(fit.curve.time_to_reach(half))
}

/// `+1` if the metric moves up from `start` to `floor`, `-1` if down; errors if they are equal
/// or not finite.
fn direction(start: f64, floor: f64) -> Result<f64, AnalysisError> {
    error::finite_arg("start", start)?;
    error::finite_arg("floor", floor)?;
    if start == floor {
        return Err(AnalysisError::InvalidArgument {
            name: "floor",
            value: floor,
            reason: "equals start, so there is no distance to move halfway along",
        });
    }
    Ok((floor - start).signum())
}
