//! `vestige forward`: one forward (and, with a soft prompt, backward) pass on a batch of
//! token ids, writing logits, loss and the soft-prompt gradient to a safetensors file.
//!
//! Contract: `loss` is the mean over sequences `b` and positions `t < T−1` of
//! cross-entropy(logits at token `t`'s slot, token `t+1`); soft-prompt slots are prepended
//! and are never targets.

use crate::engine::activations::Activations;
use crate::engine::backward::GradSinks;
use crate::engine::batch::Batch;
use crate::engine::kernels::loss::default_norm;
use crate::engine::model::Model;
use crate::hf::io::{read_int_tensor, read_safetensors, write_safetensors, HfTensor, TensorMap};
use anyhow::{bail, Context, Result};
use std::path::Path;

/// What `forward` computed.
pub struct ForwardResult {
    pub loss: f32,
    pub batch: usize,
    pub seq: usize,
    pub prompt_tokens: usize,
}

/// Reads `input_ids: [B, T]`, checking every id against the vocabulary.
fn read_ids(input: &Path, vocab: usize) -> Result<(Vec<u32>, usize, usize)> {
    let (shape, ids) = read_int_tensor(input, "input_ids")?;
    let [b, t] = shape[..] else { bail!("{}: `input_ids` must be 2-D [B, T], found shape {shape:?}", input.display()) };
    if t < 2 {
        bail!("{}: `input_ids` needs at least 2 tokens per sequence to have a loss", input.display());
    }
    if let Some(bad) = ids.iter().find(|&&i| i < 0 || i as usize >= vocab) {
        bail!("{}: token id {bad} is outside the vocabulary (size {vocab})", input.display());
    }
    Ok((ids.iter().map(|&i| i as u32).collect(), b, t))
}

/// Reads `soft_prompt: [n, d]`.
fn read_soft_prompt(path: &Path, d: usize) -> Result<(Vec<f32>, usize)> {
    let mut tensors = read_safetensors(path)?;
    let sp =
        tensors.remove("soft_prompt").with_context(|| format!("{}: no tensor named `soft_prompt`", path.display()))?;
    match sp.shape[..] {
        [n, width] if width == d => Ok((sp.data, n)),
        _ => bail!("{}: `soft_prompt` must be [n, {d}] for this model, found {:?}", path.display(), sp.shape),
    }
}

/// Runs the pass and writes `logits`, `loss` and (with a soft prompt) `soft_prompt_grad`.
pub fn run(model_dir: &Path, input: &Path, out: &Path, soft_prompt: Option<&Path>) -> Result<ForwardResult> {
    let model = Model::load(model_dir)?.model;
    let (ids, b, t) = read_ids(input, model.cfg.vocab_size)?;
    let (prompt, n) = match soft_prompt {
        Some(p) => read_soft_prompt(p, model.cfg.d_model)?,
        None => (Vec::new(), 0),
    };
    if n + t > model.cfg.max_positions {
        bail!("{n} prompt + {t} tokens exceed the model's {} positions", model.cfg.max_positions);
    }
    let batch = Batch::with_prompt(&ids, b, t, n, &vec![0; b]);
    let norm = default_norm(&batch.targets, &batch.weights);
    let mut acts = Activations::default();
    let loss = model.forward(&mut acts, &batch, &prompt, &[], norm);
    let mut outputs = TensorMap::new();
    outputs
        .insert("logits".into(), HfTensor { shape: vec![b, n + t, model.cfg.vocab_size], data: acts.logits.clone() });
    outputs.insert("loss".into(), HfTensor { shape: vec![], data: vec![loss] });
    if n > 0 {
        let mut grad = vec![0.0; prompt.len()];
        model.backward(&mut acts, &batch, &[], norm, GradSinks { prompts: Some(&mut grad), ..Default::default() });
        outputs.insert("soft_prompt_grad".into(), HfTensor { shape: vec![n, model.cfg.d_model], data: grad });
    }
    write_safetensors(out, &outputs, None)?;
    Ok(ForwardResult { loss, batch: b, seq: t, prompt_tokens: n })
}
