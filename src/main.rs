//! The `vestige` command line: a thin layer over the library.

use anyhow::Result;
use clap::{Parser, Subcommand};
use std::path::PathBuf;
use std::process::ExitCode;
use vestige::commands::{bench, demo, forward};

#[derive(Parser)]
#[command(
    name = "vestige",
    version,
    about = "Measure how accessible and how persistent behaviors are in transformer language models"
)]
struct Cli {
    /// Worker threads (default: all cores). Results are bit-identical for a fixed count.
    #[arg(long, global = true)]
    threads: Option<usize>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Train, evaluate, soft-prompt and save a small model on an embedded task (no downloads).
    Demo {
        /// Where results go.
        #[arg(long, default_value = "runs/demo")]
        out: PathBuf,
        /// Full-weight training steps on the copy task.
        #[arg(long, default_value_t = 600)]
        steps: usize,
        /// Soft-prompt training steps on the frozen model.
        #[arg(long, default_value_t = 300)]
        prompt_steps: usize,
    },
    /// Run one forward pass (and soft-prompt backward) on input ids; write logits, loss and gradient.
    Forward {
        /// A Hugging Face model directory (plain, or HF cache `models--ORG--NAME`).
        #[arg(long)]
        model: PathBuf,
        /// safetensors file with `input_ids` (i64 [B, T]).
        #[arg(long)]
        input: PathBuf,
        /// Output safetensors file: `logits`, `loss`, and `soft_prompt_grad` with --soft-prompt.
        #[arg(long)]
        out: PathBuf,
        /// safetensors file with `soft_prompt` (f32 [n, d]), prepended to every sequence.
        #[arg(long)]
        soft_prompt: Option<PathBuf>,
    },
    /// Load a model (plain dir, sharded, HF cache, f16/bf16) and save it as an f32 HF model dir.
    Convert {
        /// The model to read.
        #[arg(long)]
        model: PathBuf,
        /// The directory to write (config.json, model.safetensors, tokenizer.json if present).
        #[arg(long)]
        out: PathBuf,
    },
    /// Measure training throughput on the reference workloads (compare with bench/pytorch_baseline.py).
    Bench {
        /// `train` (all weights) or `soft` (16-vector soft prompt on the frozen model).
        #[arg(value_enum)]
        mode: bench::Mode,
        /// Workload: `main` (d 256, 4 layers) or `tiny` (d 64, 2 layers).
        #[arg(long, value_enum, default_value = "main")]
        config: bench::Workload,
        /// Timed steps.
        #[arg(long, default_value_t = 20)]
        steps: usize,
        /// Untimed warm-up steps.
        #[arg(long, default_value_t = 3)]
        warmup: usize,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_writer(std::io::stderr)
        .init();
    if let Some(n) = cli.threads {
        if let Err(e) = rayon::ThreadPoolBuilder::new().num_threads(n).build_global() {
            eprintln!("error: cannot start {n} threads: {e}");
            return ExitCode::from(2);
        }
    }
    match run(cli.command) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(command: Command) -> Result<()> {
    match command {
        Command::Forward { model, input, out, soft_prompt } => {
            let r = forward::run(&model, &input, &out, soft_prompt.as_deref())?;
            println!(
                "loss {:.6} (batch {}, {} tokens, {} soft-prompt vectors) -> {}",
                r.loss,
                r.batch,
                r.seq,
                r.prompt_tokens,
                out.display()
            );
        }
        Command::Demo { out, steps, prompt_steps } => {
            let s = demo::run(&out, steps, prompt_steps)?;
            println!(
                "copy task: exact match {:.1}% after {} steps (final train loss {:.3})",
                100.0 * s.copy_exact_match,
                s.train_steps,
                s.final_train_loss
            );
            println!(
                "reversal, frozen model: loss {:.3} -> {:.3}, token accuracy {:.1}% -> {:.1}% with a {}-vector soft prompt",
                s.reverse_loss_without_prompt,
                s.reverse_loss_with_prompt,
                100.0 * s.reverse_token_accuracy_without_prompt,
                100.0 * s.reverse_token_accuracy_with_prompt,
                s.prompt_vectors
            );
            println!("model: {}  summary: {}", s.model_dir.display(), out.join("summary.json").display());
        }
        Command::Convert { model, out } => {
            let loaded = vestige::engine::model::Model::load(&model)?;
            loaded.model.save(&out, loaded.dir.tokenizer.as_deref())?;
            println!("{} parameters -> {}", loaded.model.n_params(), out.display());
        }
        Command::Bench { mode, config, steps, warmup } => {
            let report = bench::run(config, mode, steps, warmup);
            println!("{}", serde_json::to_string(&report)?);
        }
    }
    Ok(())
}
