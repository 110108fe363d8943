//! The model math: architecture configs, weights, per-layer forward and backward over
//! preallocated buffers, generation and optimizers. Knows nothing about tasks or runs.

pub mod activations;
pub mod backward;
pub mod batch;
pub mod cond_prompt;
pub mod config;
pub mod forward;
pub mod generate;
pub mod hf_model;
pub mod hf_names;
pub mod kernels;
pub mod layout;
pub mod lora;
pub mod model;
pub mod optim;
pub mod shards;
