//! The lab: experiment files that expand into cells (one per sweep point), the model
//! ladder, the studies that turn a compact description into run phases and analyse what
//! the cells recorded, and the local scheduler that runs cells in parallel, skips finished
//! ones and resumes the rest.
//!
//! Study-neutral modules ([`experiment`], [`sweep`], [`scales`], [`plan`], [`execute`],
//! [`search`], [`pooling`]) know studies only through the [`study::Study`] trait; each study
//! lives in its own folder under [`studies`]. What runs inside a cell lives in
//! [`crate::train`]; curve fitting and intervals in [`crate::analysis`].

pub mod execute;
pub mod experiment;
pub mod figures;
pub mod knobs;
pub mod lock;
pub mod plan;
pub mod planting;
pub mod pooling;
pub mod scales;
pub mod search;
pub mod slurm;
pub mod studies;
pub mod study;
pub mod sweep;
