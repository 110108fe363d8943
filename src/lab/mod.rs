//! The lab: experiment files that expand into cells (one per sweep point), the model
//! ladder, the study templates that turn a compact description into run phases, and the
//! local scheduler that runs cells in parallel, skips finished ones and resumes the rest.
//!
//! What runs inside a cell lives in [`crate::train`]; curve fitting in [`crate::analysis`].

pub mod backdoor;
pub mod backdoor_analysis;
pub mod backdoor_report;
pub mod decay;
pub mod decay_analysis;
pub mod decay_report;
pub mod distance;
pub mod distance_analysis;
pub mod distance_cond;
pub mod distance_report;
pub mod execute;
pub mod experiment;
pub mod plan;
pub mod scales;
pub mod search;
pub mod sweep;
