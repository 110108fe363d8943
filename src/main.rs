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
    /// Run an experiment: expand its sweep into cells, show the plan, run the cells in
    /// parallel (skipping finished ones, resuming interrupted ones) and write the report.
    Run {
        /// The experiment's TOML file.
        experiment: PathBuf,
        /// Run only cell I (0-based, as listed in the plan), e.g. from a cluster scheduler.
        #[arg(long)]
        cell: Option<usize>,
        /// Print and save the plan without running anything.
        #[arg(long)]
        plan: bool,
        /// Run a budgeted search of the [search] table's axes instead of the whole grid,
        /// e.g. --search maximize=backdoor.half_life or maximize=decay.half_life.
        #[arg(long)]
        search: Option<String>,
        /// With --cell: the cell of this lower rung of a halving search (what a Slurm task of
        /// a searched rung runs).
        #[arg(long, requires = "cell", hide = true)]
        rung: Option<usize>,
        /// With --cell: record into the cell's own store file (what a Slurm task does; the
        /// report merges it).
        #[arg(long, requires = "cell")]
        cell_store: bool,
        /// Where the cells run: here, or as Slurm job arrays (returns once submitted).
        #[arg(long, value_enum, default_value = "local")]
        backend: Backend,
        #[command(flatten)]
        slurm: SlurmArgs,
    },
    /// Show where each cell of an experiment stands: done, running, pending, failed (with
    /// the exit code and the last log line), timed out or not run.
    Status {
        /// The experiment directory (runs/<experiment>).
        dir: PathBuf,
    },
    /// A halving search's selection job under Slurm: choose rung K's configurations from the
    /// last rung's cells and submit them.
    #[command(hide = true)]
    SearchRung {
        /// The experiment directory (runs/<experiment>).
        dir: PathBuf,
        #[arg(long)]
        rung: usize,
        #[arg(long)]
        max_parallel: Option<usize>,
    },
    /// Rewrite an experiment's report from its store.
    Report {
        /// The experiment directory (runs/<experiment>).
        dir: PathBuf,
    },
    /// Run a training config: phases, evals, checkpoints, metrics (SQLite + CSV).
    Train {
        /// The run's TOML config.
        config: PathBuf,
    },
    /// Continue a run from its newest checkpoint (bit-identical to an uninterrupted run).
    Resume {
        /// The run directory (holds config.toml and checkpoints/).
        dir: PathBuf,
    },
    /// Evaluate a run's checkpoint (newest by default) on every task of its config.
    Eval {
        /// The run directory.
        dir: PathBuf,
        /// Checkpoint step (default: the newest).
        #[arg(long)]
        step: Option<u64>,
        /// Held-out samples per task.
        #[arg(long, default_value_t = 256)]
        samples: usize,
    },
    /// Show a run's config, phases, checkpoints and last metrics.
    Inspect {
        /// The run directory.
        dir: PathBuf,
    },
    /// Greedy or sampled generation from a model directory.
    Generate {
        /// A Hugging Face model directory (or a run checkpoint's `model/`).
        #[arg(long)]
        model: PathBuf,
        /// Comma-separated input token ids.
        #[arg(long, value_delimiter = ',', required = true)]
        ids: Vec<u32>,
        /// Tokens to generate.
        #[arg(long, default_value_t = 16)]
        max_new: usize,
        /// Sampling temperature (0: greedy).
        #[arg(long, default_value_t = 0.0)]
        temperature: f32,
        /// Nucleus probability mass.
        #[arg(long, default_value_t = 1.0)]
        top_p: f32,
        /// Sampling seed.
        #[arg(long, default_value_t = 0)]
        seed: u64,
    },
    /// Look at task data.
    Data {
        #[command(subcommand)]
        command: DataCommand,
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

/// Where `vestige run` runs the cells.
#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum Backend {
    Local,
    Slurm,
}

/// `vestige run --backend slurm` options.
#[derive(clap::Args)]
struct SlurmArgs {
    /// Slurm partition (default: the cluster's default).
    #[arg(long, help_heading = "Slurm")]
    partition: Option<String>,
    /// Time limit of each task, e.g. 2:00:00.
    #[arg(long, help_heading = "Slurm")]
    time: Option<String>,
    /// CPUs of each task (default: the experiment's threads_per_cell, which keeps results
    /// bit-identical to a local run).
    #[arg(long, help_heading = "Slurm")]
    cpus_per_task: Option<usize>,
    /// Memory of each task, e.g. 4G.
    #[arg(long, help_heading = "Slurm")]
    mem: Option<String>,
    /// At most K tasks run at once.
    #[arg(long, value_name = "K", help_heading = "Slurm")]
    max_parallel: Option<usize>,
    /// A further sbatch option, e.g. --sbatch-arg=--account=lab (repeatable).
    #[arg(long, allow_hyphen_values = true, help_heading = "Slurm")]
    sbatch_arg: Vec<String>,
    /// Write and print the batch script without submitting it.
    #[arg(long, help_heading = "Slurm")]
    dry_run: bool,
    /// Wait for the jobs with a progress bar, then write the report.
    #[arg(long, help_heading = "Slurm")]
    wait: bool,
    /// Submit only the cells that failed, timed out, or every unfinished one.
    #[arg(long, value_enum, help_heading = "Slurm")]
    resubmit: Option<vestige::lab::slurm::Resubmit>,
}

impl SlurmArgs {
    /// Whether any option was given (they need --backend slurm).
    fn given(&self) -> bool {
        let SlurmArgs { partition, time, cpus_per_task, mem, max_parallel, sbatch_arg, dry_run, wait, resubmit } = self;
        partition.is_some()
            || time.is_some()
            || cpus_per_task.is_some()
            || mem.is_some()
            || max_parallel.is_some()
            || !sbatch_arg.is_empty()
            || *dry_run
            || *wait
            || resubmit.is_some()
    }

    fn options(self) -> Result<vestige::lab::slurm::Options> {
        Ok(vestige::lab::slurm::Options {
            partition: self.partition,
            time: self.time,
            cpus_per_task: self.cpus_per_task,
            mem: self.mem,
            max_parallel: self.max_parallel,
            sbatch_args: self.sbatch_arg,
            dry_run: self.dry_run,
            resubmit: self.resubmit,
            search: None,
            vestige: std::env::current_exe()?,
        })
    }
}

/// Exit codes: 2 for a bad config, 3 for a diverged run, 75 for a run stopped by SIGUSR1
/// after a checkpoint, 1 for anything else.
fn exit_code(e: &anyhow::Error) -> ExitCode {
    use vestige::train::run::RunError;
    match e.downcast_ref::<RunError>() {
        Some(RunError::Config(_)) => ExitCode::from(2),
        Some(RunError::Diverged(_)) => ExitCode::from(3),
        Some(RunError::Interrupted(_)) => ExitCode::from(vestige::lab::slurm::INTERRUPTED_EXIT as u8),
        _ if e.is::<vestige::train::interrupt::Interrupted>() => {
            ExitCode::from(vestige::lab::slurm::INTERRUPTED_EXIT as u8)
        }
        _ if e.is::<vestige::train::config::ConfigError>() => ExitCode::from(2),
        _ => ExitCode::FAILURE,
    }
}

#[derive(Subcommand)]
enum DataCommand {
    /// Print samples of a task as JSON lines (text, tokens, loss weights, prompt length).
    Sample {
        /// A task spec as in run configs, e.g. '{ kind = "copy", length = 8, vocab = 32 }'.
        spec: String,
        /// Number of samples.
        #[arg(long, default_value_t = 4)]
        n: usize,
        /// Seed of the task's streams.
        #[arg(long, default_value_t = 0)]
        seed: u64,
        /// `train` or `eval` stream.
        #[arg(long, default_value = "train", value_parser = ["train", "eval"])]
        split: String,
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
    match run(cli.command, cli.threads) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            exit_code(&e)
        }
    }
}

/// Prints where a finished run's results are and its final metrics.
fn report_run(s: vestige::train::run::RunSummary) -> Result<()> {
    println!("run {} finished: {} steps, {} tokens", s.run, s.steps, s.tokens);
    for (k, v) in &s.final_metrics {
        if !k.contains("/train/") {
            println!("  {k} = {v:.4}");
        }
    }
    println!(
        "results: {} (metrics.csv, checkpoints/); store: {}",
        s.dir.display(),
        s.dir.parent().map(|p| p.join("vestige.db").display().to_string()).unwrap_or_default()
    );
    Ok(())
}

fn run(command: Command, threads: Option<usize>) -> Result<()> {
    match command {
        Command::Run { experiment, backend: Backend::Slurm, cell: None, plan: false, search, slurm, .. } => {
            let wait = slurm.wait;
            let opts = vestige::lab::slurm::Options { search, ..slurm.options()? };
            vestige::commands::slurm::submit(&experiment, &opts, wait)?
        }
        Command::Run { backend: Backend::Slurm, .. } => {
            anyhow::bail!("--backend slurm submits the whole experiment (or its search); --cell and --plan run locally")
        }
        Command::Run { slurm, .. } if slurm.given() => anyhow::bail!("the Slurm options need --backend slurm"),
        Command::Run { experiment, cell, rung, plan, search, cell_store, .. } => {
            vestige::train::interrupt::install()?;
            let opts = vestige::lab::execute::Options { cell, rung, cell_store, plan_only: plan, threads, search };
            vestige::commands::experiment::run(&experiment, &opts)?
        }
        Command::SearchRung { dir, rung, max_parallel } => {
            vestige::commands::slurm::select_rung(&dir, rung, max_parallel)?
        }
        Command::Status { dir } => vestige::commands::slurm::print_status(&dir)?,
        Command::Report { dir } => vestige::commands::experiment::report(&dir)?,
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
        Command::Train { config } => report_run(vestige::train::run::train(&config)?)?,
        Command::Resume { dir } => report_run(vestige::train::run::resume(&dir)?)?,
        Command::Data { command: DataCommand::Sample { spec, n, seed, split } } => {
            let split = if split == "eval" { vestige::data::Split::Eval } else { vestige::data::Split::Train };
            for line in vestige::commands::data_sample::sample_lines(&spec, n, seed, split)? {
                println!("{line}");
            }
        }
        Command::Eval { dir, step, samples } => {
            for (task, metric, value) in vestige::train::run::evaluate_checkpoint(&dir, step, samples)? {
                println!("{task}/{metric} = {value:.5}");
            }
        }
        Command::Inspect { dir } => print!("{}", vestige::commands::inspect::describe(&dir)?),
        Command::Generate { model, ids, max_new, temperature, top_p, seed } => {
            let model = vestige::engine::model::Model::load(&model)?.model;
            let sampling = if temperature > 0.0 {
                vestige::engine::generate::Sampling::TopP { temperature, top_p }
            } else {
                vestige::engine::generate::Sampling::Greedy
            };
            let inputs = vec![ids.iter().map(|&t| vestige::engine::generate::InputSlot::Token(t)).collect()];
            let req = vestige::engine::generate::GenerateRequest {
                inputs: &inputs,
                prompt_vectors: &[],
                steers: &[],
                max_new_tokens: max_new,
                sampling,
                eos: None,
                banned: &[],
                seed,
            };
            let out = model.generate(&req)?;
            println!("{}", out[0].iter().map(u32::to_string).collect::<Vec<_>>().join(","));
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
