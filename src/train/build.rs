//! Building what a run needs from its config, once: the tasks, the model's architecture
//! ([`ModelConfig`], straight from the run's `[model]` table or the loaded model's
//! `config.json`), the starting model and the tokenizer saved with it.
//!
//! Training, evaluation and checkpoints are elsewhere; this module only constructs.

use super::checkpoint::{self, CheckpointError, WeightsRef};
use super::config::{ModelSpec, RunConfig, TaskSpec, Trainable};
use crate::data::corpus::CorpusError;
use crate::data::vocab::{tokenizer_for, VocabError};
use crate::data::Task;
use crate::engine::config::{Activation, Arch, ModelConfig, ModelConfigError, Norm};
use crate::engine::hf_model::LoadError;
use crate::engine::model::Model;
use crate::hf::io::HfError;
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};

/// A run's tasks by name.
pub type Tasks = BTreeMap<String, Arc<dyn Task>>;

/// Why a run's tasks or model could not be built.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    #[error(transparent)]
    Corpus(#[from] CorpusError),
    #[error(transparent)]
    Hf(#[from] HfError),
    #[error(transparent)]
    Config(#[from] ModelConfigError),
    #[error(transparent)]
    Load(#[from] LoadError),
    #[error(transparent)]
    Checkpoint(#[from] CheckpointError),
    #[error("phases[{phase}].trainable = \"all_but_head\" freezes the output head, but this model ties it to the input embedding; use trainable = \"all\" or an untied model")]
    TiedHead { phase: usize },
}

/// What a run is built from: its tasks and its model's architecture. Build it once per run
/// with [`build`]; the plan reads it and the run starts from it.
#[derive(Clone)]
pub struct Built {
    pub tasks: Tasks,
    pub model: ModelConfig,
}

/// The tasks and model architecture of `cfg`.
pub fn build(cfg: &RunConfig) -> Result<Built, BuildError> {
    let tasks = build_tasks(cfg)?;
    let model = model_config(&cfg.model, &tasks)?;
    if let Some(phase) = cfg.phases.iter().position(|p| p.trainable == Trainable::AllButHead) {
        if model.tied_embeddings {
            return Err(BuildError::TiedHead { phase });
        }
    }
    Ok(Built { tasks, model })
}

/// Builds the task objects a config defines.
pub fn build_tasks(cfg: &RunConfig) -> Result<Tasks, CorpusError> {
    cfg.tasks.iter().map(|t| Ok((t.name.clone(), build_task(t)?))).collect()
}

/// The task `spec` defines, built once per process: a task is a pure function of its spec,
/// so the config check, the plan and the run of every cell that defines the same task
/// share one object (a corpus is read and its tokenizer trained once, not once per use).
pub fn build_task(spec: &TaskSpec) -> Result<Arc<dyn Task>, CorpusError> {
    static BUILT: OnceLock<Mutex<HashMap<String, Arc<dyn Task>>>> = OnceLock::new();
    let key = serde_json::to_string(spec).expect("a task spec serialises");
    let built = BUILT.get_or_init(Default::default);
    if let Some(task) = built.lock().expect("the task cache is never poisoned").get(&key) {
        return Ok(task.clone());
    }
    let task = spec.build()?;
    built.lock().expect("the task cache is never poisoned").insert(key, task.clone());
    Ok(task)
}

/// The architecture `spec` describes: read from `config.json` for a loaded model, else built
/// from the spec's keys, with the largest task vocabulary when it names none.
fn model_config(spec: &ModelSpec, tasks: &Tasks) -> Result<ModelConfig, BuildError> {
    if let Some(dir) = &spec.load {
        let dir = crate::hf::io::resolve_model_dir(dir)?;
        return Ok(ModelConfig::from_file(&dir.config)?);
    }
    let vocab = spec.vocab_size.unwrap_or_else(|| tasks.values().map(|t| t.vocab_size()).max().unwrap_or(2));
    let cfg = fresh_config(spec, vocab);
    cfg.check("<run config>")?;
    Ok(cfg)
}

/// The configuration of a new model of `spec`'s architecture (`gpt_neox` unless `gpt2` or
/// `llama`), with the `config.json` saved with it, which reads back as the same configuration.
fn fresh_config(m: &ModelSpec, vocab: usize) -> ModelConfig {
    let (d, ff) = (m.d_model, m.d_ff.unwrap_or(4 * m.d_model));
    let head_dim = d / m.n_heads.max(1);
    let shared = ModelConfig {
        arch: Arch::GptNeox,
        vocab_size: vocab,
        d_model: d,
        n_layers: m.n_layers,
        n_heads: m.n_heads,
        n_kv_heads: m.n_heads,
        head_dim,
        d_ff: ff,
        max_positions: m.max_positions,
        norm: Norm::LayerNorm,
        norm_eps: 1e-5_f64 as f32,
        activation: Activation::GeluExact,
        rotary_dims: 0,
        rope_base: 10000.0,
        parallel_residual: false,
        attn_bias: true,
        mlp_bias: true,
        tied_embeddings: false,
        learned_positions: false,
        hf: serde_json::Value::Null,
    };
    match m.arch.as_str() {
        "gpt2" => ModelConfig {
            arch: Arch::Gpt2,
            activation: Activation::GeluTanh,
            rope_base: 0.0,
            tied_embeddings: true,
            learned_positions: true,
            hf: serde_json::json!({"model_type": "gpt2", "architectures": ["GPT2LMHeadModel"], "vocab_size": vocab,
                "n_embd": d, "n_layer": m.n_layers, "n_head": m.n_heads, "n_inner": ff, "n_positions": m.max_positions,
                "activation_function": "gelu_new", "resid_pdrop": 0.0, "embd_pdrop": 0.0, "attn_pdrop": 0.0}),
            ..shared
        },
        "llama" => ModelConfig {
            arch: Arch::Llama,
            norm: Norm::RmsNorm,
            norm_eps: 1e-6_f64 as f32,
            activation: Activation::SwiGlu,
            rotary_dims: head_dim,
            attn_bias: false,
            mlp_bias: false,
            hf: serde_json::json!({"model_type": "llama", "architectures": ["LlamaForCausalLM"], "vocab_size": vocab,
                "hidden_size": d, "num_hidden_layers": m.n_layers, "num_attention_heads": m.n_heads,
                "num_key_value_heads": m.n_heads, "intermediate_size": ff, "max_position_embeddings": m.max_positions,
                "rms_norm_eps": 1e-6, "rope_theta": 10000.0, "tie_word_embeddings": false}),
            ..shared
        },
        _ => ModelConfig {
            rotary_dims: (head_dim as f64 * 0.25) as usize,
            parallel_residual: true,
            hf: serde_json::json!({"model_type": "gpt_neox", "architectures": ["GPTNeoXForCausalLM"],
                "vocab_size": vocab, "hidden_size": d, "num_hidden_layers": m.n_layers,
                "num_attention_heads": m.n_heads, "intermediate_size": ff, "max_position_embeddings": m.max_positions,
                "rotary_pct": 0.25, "rotary_emb_base": 10000, "hidden_act": "gelu", "use_parallel_residual": true,
                "tie_word_embeddings": false}),
            ..shared
        },
    }
}

/// The model a fresh run starts from, and the stored weights it equals: `spec.load`'s
/// (with their reference), or new ones of `config` drawn from `seed` (stored by the first
/// checkpoint, so no reference).
pub fn build_model(
    spec: &ModelSpec,
    config: ModelConfig,
    seed: u64,
) -> Result<(Model, Option<WeightsRef>), BuildError> {
    match &spec.load {
        Some(dir) => {
            let loaded = Model::load(dir)?;
            let base = checkpoint::reference_to(&loaded.dir)?;
            Ok((loaded.model, Some(base)))
        }
        None => Ok((Model::init(config, spec.init_std, seed), None)),
    }
}

/// The `tokenizer.json` for a model trained on `tasks` (see [`tokenizer_for`]; a built one is
/// written into `dir`), or `None`, logged, when they share no vocabulary or it cannot be written.
pub fn model_tokenizer(dir: &Path, tasks: &[Arc<dyn Task>]) -> Option<PathBuf> {
    match tokenizer_for(dir, tasks) {
        Ok(path) => Some(path),
        Err(e @ VocabError::Write(_)) => {
            tracing::warn!("models are saved without a tokenizer: {e}");
            None
        }
        Err(e) => {
            tracing::info!("models are saved without a tokenizer: {e}");
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_fresh_config_reads_back_from_the_config_json_saved_with_it() {
        for arch in ["gpt_neox", "gpt2", "llama"] {
            for (d_model, n_heads, d_ff) in [(32, 4, None), (48, 3, Some(100)), (64, 2, Some(7))] {
                let spec = ModelSpec { arch: arch.into(), d_model, n_heads, d_ff, ..ModelSpec::default() };
                let built = fresh_config(&spec, 37);
                let read = ModelConfig::from_json(built.hf.clone(), "saved").unwrap();
                assert_eq!(format!("{built:?}"), format!("{read:?}"), "{arch} d {d_model} heads {n_heads}");
            }
        }
    }
}
