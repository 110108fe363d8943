//! Right-censored observations: a value that was reached, or a lower bound on it (a seed whose
//! half-life was not reached by the horizon only says "longer than the horizon").

use super::error::AnalysisError;
use super::half_life::HalfLife;
use serde::Serialize;

/// One possibly right-censored observation.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Observation {
    /// The observed value, or the censoring point (the horizon) when `censored`.
    pub value: f64,
    /// The true value is only known to exceed `value`.
    pub censored: bool,
}

impl Observation {
    /// An observed (uncensored) value.
    pub fn reached(value: f64) -> Observation {
        Observation { value, censored: false }
    }

    /// A value known only to exceed `horizon`.
    pub fn censored_at(horizon: f64) -> Observation {
        Observation { value: horizon, censored: true }
    }

    /// The same observation of `ln value` (censoring survives a monotone map); `value` must be > 0.
    pub fn ln(self, index: usize) -> Result<Observation, AnalysisError> {
        if !self.value.is_finite() || self.value <= 0.0 {
            return Err(AnalysisError::NonPositive { what: "observation", index, value: self.value });
        }
        Ok(Observation { value: self.value.ln(), ..self })
    }
}

impl From<HalfLife> for Observation {
    fn from(h: HalfLife) -> Observation {
        match h {
            HalfLife::Reached(t) => Observation::reached(t),
            HalfLife::Censored { horizon } => Observation::censored_at(horizon),
        }
    }
}

/// `ln` of every observation (each value finite and > 0).
pub fn log_observations(obs: &[Observation]) -> Result<Vec<Observation>, AnalysisError> {
    obs.iter().enumerate().map(|(i, o)| o.ln(i)).collect()
}

/// Checks every value is finite.
pub(crate) fn check_finite(obs: &[Observation]) -> Result<(), AnalysisError> {
    match obs.iter().position(|o| !o.value.is_finite()) {
        Some(index) => Err(AnalysisError::NonFinite { what: "observation", index, value: obs[index].value }),
        None => Ok(()),
    }
}

/// How many observations are censored.
pub(crate) fn count_censored(obs: &[Observation]) -> usize {
    obs.iter().filter(|o| o.censored).count()
}
