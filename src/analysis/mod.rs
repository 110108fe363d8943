//! Analysis: turning metric curves into numbers with uncertainty.
//!
//! - [`laws`]: the three decay laws (exponential, power law, shifted power law) as [`Curve`]s
//!   that evaluate and invert themselves.
//! - [`fit`]: weighted least-squares fits of those laws ([`fit_law`], [`fit_all`] ranked by
//!   AIC, [`best`]), solved by the Levenberg–Marquardt loop in `levenberg_marquardt.rs`.
//! - [`half_life`]: steps until a metric has moved halfway from its start to a floor, observed
//!   (interpolated, with right-censoring) or from a fitted law.
//! - [`bootstrap`]: deterministic percentile bootstrap CIs over seeds.
//! - [`scaling`]: ordinary least squares lines and log-log scaling fits with Student-t CIs
//!   (the t quantile lives in `special.rs`).
//!
//! What does not live here: reading metric rows from the store, and drawing anything (the
//! report does both). Every function takes plain slices and returns [`AnalysisError`] on bad
//! input instead of a NaN.

pub mod bootstrap;
mod error;
pub mod fit;
pub mod half_life;
pub mod laws;
mod levenberg_marquardt;
pub mod scaling;
mod special;

pub use bootstrap::{bootstrap, bootstrap_mean, bootstrap_over, BootstrapConfig, Estimate};
pub use error::AnalysisError;
pub use fit::{best, fit_all, fit_all_weighted, fit_law, fit_law_weighted, Fit};
pub use half_life::{fit_half_life, observed_half_life, HalfLife};
pub use laws::{Curve, Decay, Law};
pub use scaling::{linear_fit, loglog_fit, LineFit};
pub use special::student_t_quantile;
