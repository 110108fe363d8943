//! vestige: a Rust lab for measuring how accessible and how persistent behaviors are
//! in transformer language models.
//!
//! Layers (lower layers know nothing of higher ones):
//! - [`hf`]: Hugging Face format I/O (model directories, safetensors, tokenizers).
//! - [`engine`]: model math: configs, weights, per-layer forward/backward, optimizers.
//! - [`analysis`]: curve fits (decay laws, AIC), half-lives, bootstrap CIs and scaling fits.
//! - [`commands`]: what each CLI command does, as library functions.
//! - [`report`]: SVG charts and the self-contained HTML report page.

pub mod analysis;
pub mod commands;
pub mod data;
pub mod engine;
pub mod hf;
pub mod lab;
pub mod report;
pub mod store;
pub mod train;
