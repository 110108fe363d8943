//! The logic behind each CLI command, as library functions returning structured results;
//! `main.rs` only parses arguments and prints.

pub mod bench;
pub mod data_sample;
pub mod demo;
pub mod experiment;
pub mod forward;
pub mod inspect;
pub mod slurm;
