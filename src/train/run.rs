//! The entry points of a run: start one from a config file ([`train`]), continue one from
//! its newest checkpoint ([`resume`]), either as fits ([`run_or_resume`]), and evaluate a
//! checkpoint ([`evaluate_checkpoint`]); where a run writes and what it reports.
//!
//! The step loop itself is in `step_loop`, building the tasks and model in `build`, the
//! evaluations in `eval`, checkpoints in `checkpoint`.

use super::build::{build, build_tasks, BuildError, Built};
use super::checkpoint::{self, CheckpointError};
use super::config::{ConfigError, RunConfig};
use super::eval::{eval_probes, eval_task, Adaptation, EvalSet};
use super::step_loop::{Diverged, Runner};
use crate::data::corpus::CorpusError;
use crate::engine::generate::{GenerateError, Sampling};
use crate::hf::io::HfError;
use crate::store::StoreError;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// Why a run (or the evaluation of its checkpoint) stopped.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Build(#[from] BuildError),
    #[error(transparent)]
    Corpus(#[from] CorpusError),
    #[error(transparent)]
    Checkpoint(#[from] CheckpointError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Generate(#[from] GenerateError),
    #[error(transparent)]
    Hf(#[from] HfError),
    #[error(transparent)]
    Write(#[from] crate::fs::FsError),
    #[error(transparent)]
    Diverged(#[from] Diverged),
    #[error(transparent)]
    Interrupted(#[from] super::interrupt::Interrupted),
    /// Reading the config or creating the run directory failed.
    #[error("{}: {source}", path.display())]
    Io { path: PathBuf, source: std::io::Error },
    /// `train` on a run that has checkpoints.
    #[error("{} already has checkpoints; continue it with `vestige resume {}`", dir.display(), dir.display())]
    Started { dir: PathBuf },
    /// `resume` on a run without a complete checkpoint.
    #[error("{} has no complete checkpoint to resume from; start it with `vestige train`", checkpoints.display())]
    NothingToResume { checkpoints: PathBuf },
    /// The checkpoint a config key (`l2_to`, `eval.kl_to`) names is not there.
    #[error("no pinned checkpoint {name:?} for {key}")]
    NoPinned { name: String, key: &'static str },
    /// `evaluate_checkpoint` at a step without a checkpoint.
    #[error("no checkpoint at step {0}")]
    NoCheckpointAt(u64),
    /// `evaluate_checkpoint` on a run without checkpoints.
    #[error("the run has no checkpoint yet")]
    NoCheckpoint,
}

/// Where a run writes.
pub struct RunPaths {
    pub dir: PathBuf,
    pub checkpoints: PathBuf,
    pub db: PathBuf,
    pub csv: PathBuf,
    pub config: PathBuf,
    /// Where first phases shared between runs are kept (see [`super::shared_base`]);
    /// `None` trains every run's first phase itself.
    pub bases: Option<PathBuf>,
}

impl RunPaths {
    /// `out_dir/name/`, with the store shared by every run in `out_dir`.
    fn new(cfg: &RunConfig) -> Self {
        Self::in_dir(cfg.out_dir.join(&cfg.name), cfg.out_dir.join("vestige.db"))
    }

    /// A run writing into `dir`, logging to the store at `db`.
    pub fn in_dir(dir: PathBuf, db: PathBuf) -> Self {
        RunPaths {
            checkpoints: dir.join("checkpoints"),
            db,
            csv: dir.join("metrics.csv"),
            config: dir.join("config.toml"),
            dir,
            bases: None,
        }
    }
}

/// What a finished run reports.
#[derive(Debug, serde::Serialize)]
pub struct RunSummary {
    pub run: String,
    pub dir: PathBuf,
    pub steps: u64,
    pub tokens: u64,
    /// The last evaluation of each `(task, metric)`.
    pub final_metrics: BTreeMap<String, f64>,
}

/// Starts a run from a config file (refusing to overwrite a run that has checkpoints).
pub fn train(config_path: &Path) -> Result<RunSummary, RunError> {
    let cfg = RunConfig::from_file(config_path)?;
    let paths = RunPaths::new(&cfg);
    if !checkpoint::list(&paths.checkpoints).is_empty() {
        return Err(RunError::Started { dir: paths.dir });
    }
    let built = build(&cfg)?;
    run_or_resume(cfg, built, read(config_path)?, paths)
}

/// Runs `cfg` (whose TOML source is `text`, and whose tasks and model are `built`) into
/// `paths`: continues from the newest checkpoint when there is one, starts fresh otherwise.
pub fn run_or_resume(cfg: RunConfig, built: Built, text: String, paths: RunPaths) -> Result<RunSummary, RunError> {
    std::fs::create_dir_all(&paths.dir).map_err(|source| RunError::Io { path: paths.dir.clone(), source })?;
    crate::fs::write_atomic(&paths.config, text.as_bytes())?;
    let resumed = match checkpoint::list(&paths.checkpoints).pop() {
        Some((_, latest)) => Some(checkpoint::load(&latest, &cfg.hash(), &cfg.legacy_hash())?),
        None => None,
    };
    Runner::start(cfg, built, text, paths, resumed)?.run()
}

/// Continues a run from its newest checkpoint (bit-identical to an uninterrupted run with
/// the same thread count).
pub fn resume(run_dir: &Path) -> Result<RunSummary, RunError> {
    let config_path = run_dir.join("config.toml");
    let cfg = RunConfig::from_file(&config_path)?;
    let paths = RunPaths::new(&cfg);
    if checkpoint::list(&paths.checkpoints).is_empty() {
        return Err(RunError::NothingToResume { checkpoints: paths.checkpoints });
    }
    let built = build(&cfg)?;
    run_or_resume(cfg, built, read(&config_path)?, paths)
}

fn read(path: &Path) -> Result<String, RunError> {
    std::fs::read_to_string(path).map_err(|source| RunError::Io { path: path.to_path_buf(), source })
}

/// Evaluates a run's checkpoint (`step`, or the newest) on every task of its config, without
/// the phase's adaptation; returns `(task, metric, value)` rows. A checkpoint that refers to
/// weights it does not store is refused if they changed.
pub fn evaluate_checkpoint(
    run_dir: &Path,
    step: Option<u64>,
    samples: usize,
) -> Result<Vec<(String, String, f64)>, RunError> {
    let cfg = RunConfig::from_file(&run_dir.join("config.toml"))?;
    let all = checkpoint::list(&run_dir.join("checkpoints"));
    let dir = match step {
        Some(s) => all.into_iter().find(|(k, _)| *k == s).map(|(_, p)| p).ok_or(RunError::NoCheckpointAt(s))?,
        None => all.into_iter().last().map(|(_, p)| p).ok_or(RunError::NoCheckpoint)?,
    };
    let model = checkpoint::load_model(&dir)?;
    let mut rows = Vec::new();
    for (name, task) in build_tasks(&cfg)? {
        let adapt = Adaptation::default();
        let metrics =
            eval_task(&model, task.as_ref(), cfg.seed, EvalSet::reported(samples), &adapt, Some(Sampling::Greedy))?
                .metrics;
        for (metric, value) in metrics.into_iter().chain(eval_probes(&model, task.as_ref(), cfg.seed, samples, &adapt)?)
        {
            rows.push((name.clone(), metric.to_string(), value));
        }
    }
    Ok(rows)
}
