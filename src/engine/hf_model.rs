//! Loading and saving whole models as Hugging Face model directories.

use super::config::{Arch, ModelConfig, ModelConfigError};
use super::hf_names::{export_all, is_ignorable, tensor_specs};
use super::model::Model;
use crate::hf::io::{load_tensors, resolve_model_dir, save_model_dir, HfError, ModelDir, TensorMap};
use std::path::{Path, PathBuf};

/// Why a model directory could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error(transparent)]
    Io(#[from] HfError),
    #[error(transparent)]
    Config(#[from] ModelConfigError),
    #[error(
        "{files}: tensor `{name}` is missing (expected shape {shape:?}); the checkpoint does not match its config.json"
    )]
    Missing { files: String, name: String, shape: Vec<usize> },
    #[error("{files}: tensor `{name}` has shape {found:?}, but config.json implies {expected:?}")]
    Shape { files: String, name: String, expected: Vec<usize>, found: Vec<usize> },
    #[error(
        "{files}: unexpected tensor `{name}`; the checkpoint does not match its config.json (model_type {arch:?})"
    )]
    Unexpected { files: String, name: String, arch: Arch },
}

/// A loaded model and where it came from.
pub struct Loaded {
    pub model: Model,
    pub dir: ModelDir,
}

/// GPT-2 checkpoints are saved with or without the `transformer.` prefix.
fn canonical_name(arch: Arch, name: &str) -> String {
    let bare = ["wte.", "wpe.", "h.", "ln_f."];
    if arch == Arch::Gpt2 && bare.iter().any(|p| name.starts_with(p)) {
        format!("transformer.{name}")
    } else {
        name.to_string()
    }
}

impl Model {
    /// Loads a local HF model directory (plain or HF-cache layout).
    pub fn load(path: &Path) -> Result<Loaded, LoadError> {
        let dir = resolve_model_dir(path)?;
        let cfg = ModelConfig::from_file(&dir.config)?;
        let tensors = load_tensors(&dir)?;
        let files = dir.weights.iter().map(|p| p.display().to_string()).collect::<Vec<_>>().join(", ");
        let model = Self::from_tensors(cfg, tensors, &files)?;
        Ok(Loaded { model, dir })
    }

    /// Builds a model from HF-named tensors; `files` names their source in errors.
    pub fn from_tensors(cfg: ModelConfig, tensors: TensorMap, files: &str) -> Result<Model, LoadError> {
        let mut tensors: TensorMap = tensors.into_iter().map(|(k, v)| (canonical_name(cfg.arch, &k), v)).collect();
        let layout = super::layout::Layout::new(&cfg);
        let mut flat = vec![0.0f32; layout.total];
        for spec in tensor_specs(&cfg, &layout) {
            let t = tensors.remove(&spec.name).ok_or_else(|| LoadError::Missing {
                files: files.into(),
                name: spec.name.clone(),
                shape: spec.hf_shape.clone(),
            })?;
            if t.shape != spec.hf_shape {
                return Err(LoadError::Shape {
                    files: files.into(),
                    name: spec.name,
                    expected: spec.hf_shape,
                    found: t.shape,
                });
            }
            spec.import(&t.data, &mut flat);
        }
        if let Some(name) = tensors.keys().find(|n| !is_ignorable(&cfg, n)) {
            return Err(LoadError::Unexpected { files: files.into(), name: name.clone(), arch: cfg.arch });
        }
        Ok(Model::from_weights(cfg, flat))
    }

    /// Every parameter in HF naming and layout.
    pub fn hf_tensors(&self) -> TensorMap {
        export_all(&self.cfg, &self.layout, &self.weights)
    }

    /// Saves as an HF model directory that `transformers` loads unchanged.
    pub fn save(&self, out: &Path, tokenizer: Option<&Path>) -> Result<PathBuf, HfError> {
        save_model_dir(out, &self.cfg.hf, &self.hf_tensors(), tokenizer)?;
        Ok(out.to_path_buf())
    }
}
