//! Hugging Face format I/O: resolving model directories (plain or HF cache layout),
//! reading and writing `*.safetensors` (single or sharded), and `tokenizer.json`.
//!
//! This module knows nothing about architectures: it moves named f32 tensors.

pub mod io;
pub mod tokenizer;
