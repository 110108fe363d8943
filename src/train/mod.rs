//! Training runs: the run configuration, building a run's tasks and model, the trainable
//! sets, the step loop over phases with its optimizer and regularisers, evaluation, and
//! checkpoints that resume bit-exactly.
//!
//! - `run`: the entry points (`train`, `resume`, `run_or_resume`, `evaluate_checkpoint`);
//! - `build`: tasks, model architecture and starting model, built once per run;
//! - `trainable`: what a phase trains, with its parameters;
//! - `step_loop`: phases, steps, evaluations when due, logging and checkpointing;
//! - `optimizer`, `regularizers`, `schedule`: the parts of a step;
//! - `eval`, `forgetting`: evaluation of a model on held-out samples;
//! - `checkpoint`: what a checkpoint stores, and loading it back;
//! - `config`, `canonical`, `locate`: the run config, its hash and its error locations;
//! - `batching`: task samples into engine batches.

pub mod batching;
pub mod build;
pub mod canonical;
pub mod checkpoint;
pub mod config;
pub mod eval;
pub mod forgetting;
pub mod interrupt;
pub mod locate;
pub mod optimizer;
pub mod regularizers;
pub mod reinforce;
pub mod run;
pub mod schedule;
pub mod shared_base;
pub mod steering;
pub mod step_loop;
pub mod token_search;
pub mod trainable;
