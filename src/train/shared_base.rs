//! A first phase that several runs would train identically, trained once and shared.
//!
//! A study's cells often start from the same base: the same model, seed and pretraining,
//! followed by different plantings, regimes or arms. Such a first phase is a pure function
//! of its [`key`]: the model section and the architecture it resolves to, the run seed, the
//! thread count, the phase itself, the specs of the tasks it trains and evaluates on, and
//! whether the next phase carries its optimizer state. Runs given a folder of bases
//! ([`super::run::RunPaths::bases`]) look their key up there: the first run to take the
//! key's lock trains the phase and publishes its end checkpoint and metric rows; every
//! later one adopts them, which leaves it in the state it would have reached by training
//! the phase itself (the same bits: training is deterministic in the key). A base is
//! published atomically (written aside, then renamed), so a crash leaves none or all of it.

use super::checkpoint::{self, CheckpointError, Restored, TrainerState, Weights};
use super::config::{OptimizerStart, RunConfig};
use crate::engine::config::ModelConfig;
use crate::engine::model::Model;
use crate::store::{read_csv, rewrite_csv, MetricRow};
use std::fs::{File, OpenOptions};
use std::path::{Path, PathBuf};

/// The metric rows of the shared phase, next to its checkpoint.
const ROWS: &str = "metrics.csv";
/// The checkpoints folder inside a base.
const CHECKPOINTS: &str = "checkpoints";

/// The key of `cfg`'s first phase on a model of `arch`, or `None` when the run has no second
/// phase to share it with (sharing would save nothing).
pub fn key(cfg: &RunConfig, arch: &ModelConfig) -> Option<String> {
    let (first, next) = (cfg.phases.first()?, cfg.phases.get(1)?);
    let stop = first.stop.as_ref().map_or(&[][..], |s| s.task.names());
    let names: Vec<&String> =
        first.mixture.keys().chain(&first.eval.tasks).chain(&first.ewc_tasks).chain(stop).collect();
    let tasks: Vec<serde_json::Value> = cfg
        .tasks
        .iter()
        .filter(|t| names.contains(&&t.name))
        .map(|t| serde_json::to_value(t).expect("a task spec serialises"))
        .collect();
    let mut parts = serde_json::json!({
        "model": cfg.model,
        "architecture": format!("{arch:?}"),
        "seed": cfg.seed,
        "threads": rayon::current_num_threads(),
        "phase": first,
        "tasks": tasks,
        "carry": next.optimizer_state == OptimizerStart::Carry,
    });
    parts.sort_all_objects();
    Some(super::config::short_sha256(&parts.to_string()))
}

/// Whether base `key` under `bases` was published (without taking its lock).
pub fn is_published(bases: &Path, key: &str) -> bool {
    bases.join(key).join(ROWS).is_file()
}

/// A base under its lock, held until this drops: published, or adopted.
pub struct SharedBase {
    key: String,
    dir: PathBuf,
    _lock: File,
}

impl SharedBase {
    /// Takes the lock of base `key` under `bases`, waiting while another run trains it.
    pub fn lock(bases: &Path, key: String) -> Result<SharedBase, CheckpointError> {
        let io = |path: &Path| {
            let path = path.to_path_buf();
            move |source| CheckpointError::Io { path, source }
        };
        std::fs::create_dir_all(bases).map_err(io(bases))?;
        let path = bases.join(format!("{key}.lock"));
        let file = OpenOptions::new().write(true).create(true).truncate(false).open(&path).map_err(io(&path))?;
        file.lock().map_err(io(&path))?;
        Ok(SharedBase { dir: bases.join(&key), key, _lock: file })
    }

    /// Whether the base was published.
    pub fn published(&self) -> bool {
        self.dir.join(ROWS).is_file()
    }

    /// The published base: the model and state at the end of `phase` (with `config_hash`
    /// set to the adopting run's) and the phase's metric rows under run name `run`.
    pub fn adopt(
        &self,
        phase: &str,
        config_hash: &str,
        run: &str,
    ) -> Result<(Restored, Vec<MetricRow>), CheckpointError> {
        let root = self.dir.join(CHECKPOINTS);
        let dir = checkpoint::find_pinned(&root, phase).ok_or_else(|| CheckpointError::Invalid {
            path: root.clone(),
            message: format!("shared base {} has no checkpoint pinned {phase:?}", self.key),
        })?;
        let mut restored = checkpoint::load(&dir, &self.key, &self.key)?;
        restored.state.config_hash = config_hash.to_string();
        let rows = read_csv(&self.dir.join(ROWS))
            .map_err(|e| CheckpointError::Invalid { path: self.dir.join(ROWS), message: e.to_string() })?;
        Ok((restored, rows.into_iter().map(|r| MetricRow { run: run.to_string(), ..r }).collect()))
    }

    /// Publishes `model` and `state` at the end of the shared phase `phase`, with its rows.
    pub fn publish(
        &self,
        phase: &str,
        model: &Model,
        tokenizer: Option<&Path>,
        state: &TrainerState,
        rows: &[MetricRow],
    ) -> Result<(), CheckpointError> {
        let tmp = self.dir.with_extension(format!("tmp-{}", std::process::id()));
        let io = |source| CheckpointError::Io { path: tmp.clone(), source };
        if tmp.exists() {
            std::fs::remove_dir_all(&tmp).map_err(io)?;
        }
        let state = TrainerState { config_hash: self.key.clone(), ..state.clone() };
        checkpoint::save(&tmp.join(CHECKPOINTS), Weights::Stored { model, tokenizer }, &state, Some(phase))?;
        rewrite_csv(&tmp.join(ROWS), rows)
            .map_err(|e| CheckpointError::Invalid { path: tmp.join(ROWS), message: e.to_string() })?;
        if self.dir.exists() {
            std::fs::remove_dir_all(&self.dir).map_err(io)?;
        }
        std::fs::rename(&tmp, &self.dir).map_err(io)
    }
}
