//! Training runs: the run configuration, the step loop over phases, evaluation, and
//! checkpoints that resume bit-exactly.

pub mod batching;
pub mod canonical;
pub mod checkpoint;
pub mod config;
pub mod forgetting;
pub mod interrupt;
pub mod locate;
pub mod run;
pub mod schedule;
