//! `vestige demo`: the engine end to end on an embedded default, with no downloads.
//!
//! 1. Train a small Pythia-shaped model from scratch on a copy task
//!    (`x₁…x₁₂ SEP x₁…x₁₂`, loss on the copy only) with AdamW.
//! 2. Measure exact-match copy accuracy by greedy KV-cached generation on held-out inputs.
//! 3. Freeze the model and train a 4-vector soft prompt towards an unseen behaviour
//!    (reversal), reporting held-out loss and token accuracy before and after: a first
//!    look at "conditional distance".
//! 4. Save the model as a Hugging Face directory (with the tasks' `tokenizer.json`) and a
//!    JSON summary.

use crate::data::sequence::{SequenceTask, Transform};
use crate::data::{Split, Task};
use crate::engine::activations::Activations;
use crate::engine::backward::GradSinks;
use crate::engine::batch::Batch;
use crate::engine::config::ModelConfig;
use crate::engine::generate::Sampling;
use crate::engine::kernels::dropout::Dropout;
use crate::engine::kernels::loss::default_norm;
use crate::engine::model::Model;
use crate::engine::optim::AdamW;
use crate::engine::shards::ShardedPass;
use crate::fs::write_atomic;
use crate::train::batching::batch_of;
use crate::train::build::model_tokenizer;
use crate::train::eval::{eval_task, teacher_forced_accuracy, Adaptation, EvalSet};
use anyhow::Result;
use indicatif::{ProgressBar, ProgressStyle};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use std::path::{Path, PathBuf};
use std::sync::Arc;

const LEN: usize = 12;
const VOCAB: usize = 64;
/// Seed of the task streams.
const SEED: u64 = 0;
/// Held-out samples per evaluation.
const EVAL: usize = 128;
const BATCH: usize = 32;
const PROMPT: usize = 4;

/// What the demo measured.
#[derive(Debug, serde::Serialize)]
pub struct DemoSummary {
    pub parameters: usize,
    pub prompt_vectors: usize,
    pub train_steps: usize,
    pub final_train_loss: f32,
    pub copy_exact_match: f64,
    pub reverse_loss_without_prompt: f32,
    pub reverse_loss_with_prompt: f32,
    pub reverse_token_accuracy_without_prompt: f64,
    pub reverse_token_accuracy_with_prompt: f64,
    pub model_dir: PathBuf,
}

/// The demo's copy or reversal task (train and eval are disjoint streams of it).
fn task(reverse: bool) -> SequenceTask {
    let transform = if reverse { Transform::Reverse } else { Transform::Copy };
    SequenceTask { name: format!("{transform:?}").to_lowercase(), transform, length: LEN, vocab: VOCAB, marker: None }
}

/// `count` samples of `split` from `first` on, batched with `n_prompt` prompt slots in front
/// (only the answer is scored).
fn batch(task: &SequenceTask, split: Split, first: u64, count: usize, n_prompt: usize) -> Batch {
    let samples: Vec<_> = (first..first + count as u64).map(|i| task.sample(SEED, split, i)).collect();
    batch_of(&samples, n_prompt)
}

fn model_config() -> ModelConfig {
    let json = serde_json::json!({
        "model_type": "gpt_neox", "architectures": ["GPTNeoXForCausalLM"], "vocab_size": VOCAB,
        "hidden_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4, "intermediate_size": 256,
        "max_position_embeddings": 64, "rotary_pct": 0.25, "rotary_emb_base": 10000, "hidden_act": "gelu",
        "use_parallel_residual": true, "tie_word_embeddings": false, "layer_norm_eps": 1e-5,
    });
    ModelConfig::from_json(json, "<demo>").expect("the demo config is valid")
}

fn progress(len: usize, what: &str) -> ProgressBar {
    let bar = ProgressBar::new(len as u64);
    bar.set_style(ProgressStyle::with_template("{msg:>18} [{bar:30}] {pos}/{len} {per_sec} ETA {eta}").unwrap());
    bar.set_message(what.to_string());
    bar
}

/// Phase 1: full-weight training on the copy task; returns the last loss.
fn train_copy(model: &mut Model, steps: usize) -> f32 {
    let copy = task(false);
    let mut pass = ShardedPass::default();
    let (mut grads, mut opt) = (vec![0.0; model.n_params()], AdamW::new(model.n_params()));
    let bar = progress(steps, "train copy");
    let mut loss = f32::NAN;
    for step in 0..steps {
        let batch = batch(&copy, Split::Train, (step * BATCH) as u64, BATCH, 0);
        let norm = default_norm(&batch.targets, &batch.weights);
        grads.fill(0.0);
        let sinks = GradSinks { weights: Some(&mut grads), ..Default::default() };
        loss = pass.run(model, &batch, &[], &[], norm, Dropout::default(), sinks);
        opt.update(&mut model.weights, &grads, 3e-3);
        bar.inc(1);
        bar.set_message(format!("loss {loss:.3}"));
    }
    bar.finish();
    loss
}

/// Fraction of held-out inputs whose greedy continuation is the exact copy.
fn copy_accuracy(model: &Model) -> Result<f64> {
    let metrics =
        eval_task(model, &task(false), SEED, EvalSet::reported(EVAL), &Adaptation::default(), Some(Sampling::Greedy))?
            .metrics;
    Ok(metrics.iter().find(|(m, _)| *m == "exact_match").map_or(0.0, |(_, v)| *v))
}

/// Held-out reversal loss and teacher-forced token accuracy with `prompt` prepended.
fn reverse_eval(model: &Model, prompt: &[f32], n: usize) -> (f32, f64) {
    let batch = batch(&task(true), Split::Eval, 0, EVAL, n);
    let norm = default_norm(&batch.targets, &batch.weights);
    let mut acts = Activations::default();
    let loss = model.forward(&mut acts, &batch, prompt, &[], norm);
    (loss, teacher_forced_accuracy(&acts.logits, &batch))
}

/// Phase 3: a soft prompt on the frozen model, trained towards reversal.
fn train_reverse_prompt(model: &Model, steps: usize) -> Vec<f32> {
    let reverse = task(true);
    let d = model.cfg.d_model;
    let mut rng = ChaCha8Rng::seed_from_u64(7);
    let mut prompt: Vec<f32> = (0..PROMPT * d).map(|_| 0.1 * crate::engine::model::standard_normal(&mut rng)).collect();
    let (mut grad, mut opt) = (vec![0.0; prompt.len()], AdamW { weight_decay: 1e-4, ..AdamW::new(prompt.len()) });
    let mut pass = ShardedPass::default();
    let bar = progress(steps, "soft prompt");
    for step in 0..steps {
        let batch = batch(&reverse, Split::Train, (step * BATCH) as u64, BATCH, PROMPT);
        let norm = default_norm(&batch.targets, &batch.weights);
        grad.fill(0.0);
        let sinks = GradSinks { prompts: Some(&mut grad), ..Default::default() };
        let loss = pass.run(model, &batch, &prompt, &[], norm, Dropout::default(), sinks);
        opt.update(&mut prompt, &grad, 1e-2);
        bar.inc(1);
        bar.set_message(format!("loss {loss:.3}"));
    }
    bar.finish();
    prompt
}

/// Runs the demo, writing into `out_dir`.
pub fn run(out_dir: &Path, train_steps: usize, prompt_steps: usize) -> Result<DemoSummary> {
    let mut model = Model::init(model_config(), 0.02, 0);
    let final_train_loss = train_copy(&mut model, train_steps);
    let copy_exact_match = copy_accuracy(&model)?;
    let (loss0, acc0) = reverse_eval(&model, &[], 0);
    let prompt = train_reverse_prompt(&model, prompt_steps);
    let (loss1, acc1) = reverse_eval(&model, &prompt, PROMPT);
    let tokenizer = model_tokenizer(out_dir, &[Arc::new(task(false)), Arc::new(task(true))]);
    let model_dir = model.save(&out_dir.join("model"), tokenizer.as_deref())?;
    let summary = DemoSummary {
        parameters: model.n_params(),
        prompt_vectors: PROMPT,
        train_steps,
        final_train_loss,
        copy_exact_match,
        reverse_loss_without_prompt: loss0,
        reverse_loss_with_prompt: loss1,
        reverse_token_accuracy_without_prompt: acc0,
        reverse_token_accuracy_with_prompt: acc1,
        model_dir,
    };
    write_atomic(&out_dir.join("summary.json"), serde_json::to_string_pretty(&summary)?.as_bytes())?;
    Ok(summary)
}
