//! vestige: a Rust lab for measuring how accessible and how persistent behaviors are
//! in transformer language models.
//!
//! Layers (lower layers know nothing of higher ones; see `docs/architecture.md`):
//! 1. Ground:
//!    - [`hf`]: Hugging Face format I/O (model directories, safetensors, tokenizers);
//!    - [`store`]: the run store (SQLite, plus one CSV per run);
//!    - [`analysis`]: study-neutral statistics: decay-law fits, half-lives, bootstrap
//!      intervals and scaling fits;
//!    - [`fs`]: atomic file writes.
//! 2. Independent of each other:
//!    - [`engine`]: model math: configs, weights, per-layer forward/backward, optimizers;
//!    - [`data`]: tasks, corpora and mixtures as deterministic sample streams;
//!    - [`report`]: SVG charts and the self-contained HTML report page.
//! 3. [`train`]: one run: phases of a step loop over a trainable set, evaluation and
//!    checkpoints that resume bit-exactly.
//! 4. [`lab`]: experiments: a study (one folder each under `lab/studies/`) expanded into
//!    cells, scheduled, and analysed into its report.
//! 5. [`commands`]: what each CLI command does, as library functions (`main.rs` is the
//!    thin `clap` layer over them).

pub mod analysis;
pub mod commands;
pub mod data;
pub mod engine;
pub mod fs;
pub mod hf;
pub mod lab;
pub mod report;
pub mod store;
pub mod train;
