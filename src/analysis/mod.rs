//! Analysis: turning metric curves into numbers with uncertainty.
//!
//! - [`laws`]: the three decay laws (exponential, power law, shifted power law) as [`Curve`]s
//!   that evaluate and invert themselves.
//! - [`fit`]: weighted least-squares fits of those laws ([`fit_law`], [`fit_all`] ranked by
//!   AICc, [`best`]), solved by the Levenberg–Marquardt loop in `levenberg_marquardt.rs`.
//! - [`half_life`]: steps until a metric has moved halfway from its start to a floor, observed
//!   (interpolated, with right-censoring) or from a fitted law.
//! - [`bootstrap`]: deterministic percentile bootstrap CIs over seeds.
//! - [`interval`]: [`Interval`]s that carry n and their [`Method`]; t-intervals (on log
//!   half-life: the geometric mean), and the percentile bootstrap only from 8 items.
//! - [`censoring`]: right-censored [`Observation`]s (a half-life not reached by the horizon).
//! - [`kaplan_meier`]: the Kaplan–Meier curve and its median with a log-log Greenwood interval.
//! - [`lognormal`]: the log-normal survival fit by maximum likelihood, censoring included (the
//!   per-condition half-life with an interval that holds at 5 seeds).
//! - [`tobit`]: censored normal (Tobit) regression of log half-life on numeric covariates and
//!   categorical factors, with t-intervals on its coefficients.
//! - [`forgetting_law`]: Kalajdzievski's joint form, forgetting as a shifted power law in
//!   steps scaled by a power of the parameter count, with a bootstrap over whole curves.
//! - [`scaling`]: ordinary least squares lines and log-log scaling fits with Student-t CIs.
//! - Distribution functions (t and normal quantiles) come from `statrs`, wrapped in
//!   `special.rs`; `linalg.rs` holds the Cholesky solves the censored fits need.
//!
//! What does not live here: reading metric rows from the store, and drawing anything (the
//! report does both). Every function takes plain slices and returns [`AnalysisError`] on bad
//! input instead of a NaN.

pub mod bootstrap;
pub mod censoring;
pub mod diversity;
mod error;
pub mod fit;
pub mod forgetting_law;
pub mod half_life;
pub mod interval;
pub mod kaplan_meier;
pub mod laws;
mod levenberg_marquardt;
mod linalg;
pub mod lognormal;
pub mod scaling;
pub(crate) mod special;
pub mod tobit;

pub use bootstrap::{bootstrap, bootstrap_mean, bootstrap_over, BootstrapConfig, Estimate};
pub use censoring::{log_observations, Observation};
pub use error::AnalysisError;
pub use fit::{best, fit_all, fit_all_weighted, fit_law, fit_law_weighted, Fit};
pub use forgetting_law::{fit_forgetting_law, ForgettingCurve, ForgettingLaw};
pub use half_life::{fit_half_life, observed_half_life, HalfLife};
pub use interval::{
    log_t_interval, mean_interval, percentile_bootstrap, proportion_interval, t_interval, Interval, Method,
    MIN_BOOTSTRAP_N,
};
pub use kaplan_meier::{kaplan_meier, KaplanMeier};
pub use laws::{Curve, Decay, Law};
pub use lognormal::{lognormal_fit, LogNormalFit};
pub use scaling::{linear_fit, loglog_fit, LineFit};
pub use special::{normal_quantile, student_t_quantile};
pub use tobit::{tobit, Coefficient, Design, TobitFit};
