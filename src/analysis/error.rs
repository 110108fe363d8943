//! The analysis error type, and the input checks shared by every analysis function.

/// Everything that can be wrong with the input to an analysis function.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum AnalysisError {
    /// Two slices that pair up element by element have different lengths.
    #[error("{left_name} has {left} values but {right_name} has {right}; they must pair up one to one")]
    LengthMismatch { left_name: &'static str, left: usize, right_name: &'static str, right: usize },
    /// Fewer data points than the computation needs (a fit with k parameters needs n > k).
    #[error("{what} needs at least {needed} points, got {got}")]
    TooFewPoints { what: String, needed: usize, got: usize },
    /// A NaN or infinite input value.
    #[error("{what}[{index}] is {value}; every value must be finite")]
    NonFinite { what: &'static str, index: usize, value: f64 },
    /// A value that must be positive is not (both axes of a log-log fit, fit weights).
    #[error("{what}[{index}] is {value}; it must be > 0")]
    NonPositive { what: &'static str, index: usize, value: f64 },
    /// A time before the start of the decay phase.
    #[error("t[{index}] is {value}; decay laws are defined on t >= 0 (steps since the phase started)")]
    NegativeTime { index: usize, value: f64 },
    /// Times that do not strictly increase where an order is needed (half-life interpolation).
    #[error("t[{index}] = {value} does not come after the previous time; sort the curve by t")]
    NotIncreasing { index: usize, value: f64 },
    /// A scalar argument outside its domain (confidence level, resample count, start == floor…).
    #[error("invalid argument {name} = {value}: {reason}")]
    InvalidArgument { name: &'static str, value: f64, reason: &'static str },
    /// Every x is the same, so a line's slope is undefined.
    #[error("all {n} x values are equal ({x}); a slope needs at least two distinct x")]
    ConstantX { n: usize, x: f64 },
    /// The statistic returned `None` on the full sample (nothing to put an interval around).
    #[error("the statistic is undefined on the full sample of {n} items")]
    StatisticUndefined { n: usize },
    /// The least-squares solver found no finite fit from any starting point.
    #[error("no finite {law} fit was found from any starting point")]
    FitFailed { law: &'static str },
    /// A maximum-likelihood fit whose likelihood has no finite maximum, or whose search did not
    /// converge (every seed of a factor level censored, collinear covariates…).
    #[error("the {model} fit has no finite maximum: {reason}")]
    NoFiniteMaximum { model: &'static str, reason: String },
}

/// Checks that `a` (named `an`) and `b` (named `bn`) have the same length.
pub(crate) fn same_len(an: &'static str, a: &[f64], bn: &'static str, b: &[f64]) -> Result<(), AnalysisError> {
    if a.len() == b.len() {
        return Ok(());
    }
    Err(AnalysisError::LengthMismatch { left_name: an, left: a.len(), right_name: bn, right: b.len() })
}

/// Checks that every value of `xs` (named `what`) is finite.
pub(crate) fn all_finite(what: &'static str, xs: &[f64]) -> Result<(), AnalysisError> {
    match xs.iter().position(|x| !x.is_finite()) {
        Some(index) => Err(AnalysisError::NonFinite { what, index, value: xs[index] }),
        None => Ok(()),
    }
}

/// Checks that every value of `xs` (named `what`) is strictly positive; `xs` is already finite.
pub(crate) fn all_positive(what: &'static str, xs: &[f64]) -> Result<(), AnalysisError> {
    match xs.iter().position(|&x| x <= 0.0) {
        Some(index) => Err(AnalysisError::NonPositive { what, index, value: xs[index] }),
        None => Ok(()),
    }
}

/// Checks a decay curve: `t` and `y` pair up, are finite, and every `t >= 0`.
pub(crate) fn decay_series(t: &[f64], y: &[f64]) -> Result<(), AnalysisError> {
    same_len("t", t, "y", y)?;
    all_finite("t", t)?;
    all_finite("y", y)?;
    match t.iter().position(|&ti| ti < 0.0) {
        Some(index) => Err(AnalysisError::NegativeTime { index, value: t[index] }),
        None => Ok(()),
    }
}

/// Checks that `value` (named `name`) is finite.
pub(crate) fn finite_arg(name: &'static str, value: f64) -> Result<(), AnalysisError> {
    if value.is_finite() {
        return Ok(());
    }
    Err(AnalysisError::InvalidArgument { name, value, reason: "must be finite" })
}
