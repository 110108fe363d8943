//! `vestige bench`: training throughput on the reference workloads, to compare side by
//! side with `bench/pytorch_baseline.py` (same models, same token counting).
//!
//! - `main`: GPT-NeoX shape, vocab 512, d 256, 4 layers, 4 heads, d_ff 1024, seq 128, batch 16.
//! - `tiny`: vocab 512, d 64, 2 layers, 4 heads, d_ff 256, seq 64, batch 32.
//! - `train`: forward, backward and AdamW over all weights.
//! - `soft`: a 16-vector soft prompt on the frozen model (tokens/s counts real tokens).

use crate::engine::backward::GradSinks;
use crate::engine::batch::Batch;
use crate::engine::config::ModelConfig;
use crate::engine::kernels::dropout::Dropout;
use crate::engine::kernels::loss::default_norm;
use crate::engine::model::Model;
use crate::engine::optim::AdamW;
use crate::engine::shards::{zero_grads, ShardedPass};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use std::time::Instant;

/// Which workload.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Workload {
    Main,
    Tiny,
}

/// What is trained.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    Train,
    Soft,
}

/// One benchmark's measurements.
#[derive(Debug, serde::Serialize)]
pub struct BenchReport {
    pub config: Workload,
    pub mode: Mode,
    pub threads: usize,
    pub steps: usize,
    /// `batch · seq / step_ms`, from the median step (as the PyTorch baseline reports).
    pub tokens_per_s: f64,
    /// Median, mean and fastest timed step. On a shared machine contention only ever slows
    /// a step, so the fastest is the least disturbed estimate of the engine's own speed.
    pub step_ms: f64,
    pub step_ms_mean: f64,
    pub step_ms_min: f64,
    pub peak_rss_mb: f64,
}

const SOFT_TOKENS: usize = 16;
const LR: f32 = 1e-3;

/// `(d_model, layers, d_ff, seq, batch)`.
fn dims(w: Workload) -> (usize, usize, usize, usize, usize) {
    match w {
        Workload::Main => (256, 4, 1024, 128, 16),
        Workload::Tiny => (64, 2, 256, 64, 32),
    }
}

/// The benchmark model's `config.json`.
pub fn bench_config(w: Workload) -> ModelConfig {
    let (d, layers, ff, _, _) = dims(w);
    let json = serde_json::json!({
        "model_type": "gpt_neox", "vocab_size": 512, "hidden_size": d, "num_hidden_layers": layers,
        "num_attention_heads": 4, "intermediate_size": ff, "max_position_embeddings": 256,
        "rotary_pct": 0.25, "rotary_emb_base": 10000, "use_parallel_residual": true, "hidden_act": "gelu",
    });
    ModelConfig::from_json(json, "<bench>").expect("the bench config is valid")
}

/// Peak resident memory of this process in MiB (Linux `VmHWM`; 0 elsewhere).
pub fn peak_rss_mb() -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        .map_or(0.0, |kb| kb / 1024.0)
}

/// Runs `warmup + steps` steps and reports the median (and mean) of the timed ones.
pub fn run(workload: Workload, mode: Mode, steps: usize, warmup: usize) -> BenchReport {
    let (d, _, _, seq, b) = dims(workload);
    let mut model = Model::init(bench_config(workload), 0.02, 0);
    let mut rng = ChaCha8Rng::seed_from_u64(1);
    let batches: Vec<Batch> = (0..4)
        .map(|_| {
            let ids: Vec<u32> = (0..b * seq).map(|_| rng.random_range(0..512)).collect();
            let n = if mode == Mode::Soft { SOFT_TOKENS } else { 0 };
            Batch::with_prompt(&ids, b, seq, n, &vec![0; b])
        })
        .collect();
    let mut pass = ShardedPass::default();
    let mut prompt = vec![0.0f32; if mode == Mode::Soft { SOFT_TOKENS * d } else { 0 }];
    let n_trained = if mode == Mode::Soft { prompt.len() } else { model.n_params() };
    let (mut grads, mut opt) = (vec![0.0f32; n_trained], AdamW::new(n_trained));
    let mut timed = Vec::with_capacity(steps);
    for step in 0..warmup + steps {
        let batch = &batches[step % batches.len()];
        let norm = default_norm(&batch.targets, &batch.weights);
        let start = Instant::now();
        zero_grads(&mut grads);
        let sinks = match mode {
            Mode::Train => GradSinks { weights: Some(&mut grads), ..Default::default() },
            Mode::Soft => GradSinks { prompts: Some(&mut grads), ..Default::default() },
        };
        pass.run(&model, batch, &prompt, &[], norm, Dropout::default(), sinks);
        match mode {
            Mode::Train => opt.update(&mut model.weights, &grads, LR),
            Mode::Soft => opt.update(&mut prompt, &grads, LR),
        }
        if step >= warmup {
            timed.push(start.elapsed().as_secs_f64());
        }
    }
    timed.sort_by(f64::total_cmp);
    let step_s = timed.get(timed.len() / 2).copied().unwrap_or(f64::NAN);
    let mean_s = timed.iter().sum::<f64>() / timed.len().max(1) as f64;
    BenchReport {
        config: workload,
        mode,
        threads: rayon::current_num_threads(),
        steps,
        tokens_per_s: (b * seq) as f64 / step_s,
        step_ms: step_s * 1e3,
        step_ms_mean: mean_s * 1e3,
        step_ms_min: timed.first().copied().unwrap_or(f64::NAN) * 1e3,
        peak_rss_mb: peak_rss_mb(),
    }
}
