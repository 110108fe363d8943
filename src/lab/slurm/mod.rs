//! Running an experiment on a Slurm cluster: its cells go out as job arrays of
//! `vestige run EXP --cell I --cell-store` tasks (see [`script`]), chunked below the
//! cluster's `MaxArraySize`; [`status`] says where each cell stands; a resubmission sends
//! only the cells that failed, timed out or never finished, and refuses an experiment that
//! changed since the first submission. Each cell records into its own store file, which
//! [`merge`] copies into the experiment's store for the report.
//!
//! A search goes out whole: a random search's sample as one array; a successive-halving
//! search's first rung as an array and each later rung's selection as a small job that runs
//! after the last rung's arrays ([`search`]).
//!
//! Files, under `runs/<exp>/slurm/`: `array.sbatch` (the script), `select.sbatch` (a halving
//! search's selection), `submissions.json` (the experiment's hash and each submitted job with
//! the cells it runs), `rung-<k>.json` (a halving rung's configurations), `logs/` and `exits/`.

mod cluster;
mod merge;
mod script;
mod search;
mod status;

pub use merge::merge;
pub use script::INTERRUPTED_EXIT;
pub use search::{select_rung, RungSelection};
pub use status::{status, CellState, CellStatus};

use super::experiment::Experiment;
use super::plan::plan;
use crate::fs::write_atomic;
use script::Script;
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};

/// Everything that can stop a submission or a status query.
#[derive(Debug, thiserror::Error)]
pub enum SlurmError {
    #[error("`{program}` is not on PATH: run this on a Slurm login node (or start a local cluster with scripts/slurm/start-local-cluster.sh)")]
    NotInstalled { program: String },
    #[error("`{command}` failed: {message}")]
    Refused { command: String, message: String },
    #[error("unknown partition {given:?}; this cluster has: {}", known.join(", "))]
    UnknownPartition { given: String, known: Vec<String> },
    #[error(
        "the experiment changed since it was submitted (hash {submitted}, now {now}); a resubmission \
         would mix results of two experiments — give the changed experiment a new name"
    )]
    Changed { submitted: String, now: String },
    #[error("nothing to resubmit: {0}")]
    Nothing(String),
    #[error("{0}")]
    Unsupported(String),
    #[error("{what}: {source}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
    #[error(transparent)]
    Write(#[from] crate::fs::FsError),
    #[error(transparent)]
    Config(#[from] crate::train::config::ConfigError),
    /// A search that cannot be planned or scored.
    #[error(transparent)]
    Search(#[from] anyhow::Error),
}

/// Which cells a resubmission sends.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Resubmit {
    /// Cells that failed (including cancelled ones).
    Failed,
    /// Cells that ran out of time.
    TimedOut,
    /// Every cell that is neither done nor queued.
    AllUnfinished,
}

/// How to submit.
#[derive(Clone, Debug, Default)]
pub struct Options {
    pub partition: Option<String>,
    /// `--time`, e.g. `2:00:00`.
    pub time: Option<String>,
    /// Threads of each task (default: the experiment's `threads_per_cell`, which keeps a
    /// cell's bits equal to a local run's).
    pub cpus_per_task: Option<usize>,
    /// `--mem`, e.g. `4G`.
    pub mem: Option<String>,
    /// At most this many tasks run at once (`--array=...%K`).
    pub max_parallel: Option<usize>,
    /// Further `sbatch` options, e.g. `--account=lab`.
    pub sbatch_args: Vec<String>,
    /// Write and return the script without submitting.
    pub dry_run: bool,
    /// Send only these cells again.
    pub resubmit: Option<Resubmit>,
    /// `maximize=OBJECTIVE`: submit the `[search]` table's search instead of the whole grid.
    pub search: Option<String>,
    /// The vestige binary the tasks run (the running one, for the CLI).
    pub vestige: PathBuf,
}

/// One `sbatch` call: its job id and the cells its array runs (cell = offset + task index).
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub struct Job {
    pub id: String,
    pub offset: usize,
    pub cells: Vec<usize>,
    /// The lower halving rung whose cells the array runs ([`Experiment::rungs`]); none for
    /// the grid's cells.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rung: Option<usize>,
    /// A halving search's selection job (no array): the rung it selects and submits.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub selects: Option<usize>,
}

/// What `runs/<exp>/slurm/submissions.json` holds.
#[derive(Debug, Default, serde::Serialize, serde::Deserialize)]
pub struct Submissions {
    /// [`experiment_hash`] at the first submission.
    pub experiment_hash: String,
    pub jobs: Vec<Job>,
    /// How a search chose the cells, when the experiment went out as one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub search: Option<String>,
}

impl Submissions {
    fn path(exp: &Experiment) -> PathBuf {
        exp.root.join("slurm").join("submissions.json")
    }

    /// The experiment's submissions so far (none for an experiment never submitted).
    pub fn load(exp: &Experiment) -> Result<Submissions, SlurmError> {
        match std::fs::read_to_string(Self::path(exp)) {
            Ok(text) => serde_json::from_str(&text).map_err(|e| SlurmError::Io {
                what: format!("reading {}", Self::path(exp).display()),
                source: e.into(),
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Submissions::default()),
            Err(source) => Err(SlurmError::Io { what: format!("reading {}", Self::path(exp).display()), source }),
        }
    }

    fn save(&self, exp: &Experiment) -> Result<(), SlurmError> {
        let text = serde_json::to_string_pretty(self).expect("serializable");
        Ok(write_atomic(&Self::path(exp), text.as_bytes())?)
    }
}

/// What a submission did.
#[derive(Debug)]
pub struct Submitted {
    /// The script, as written to `slurm/array.sbatch`.
    pub script: String,
    pub script_path: PathBuf,
    /// The jobs submitted (none for a dry run).
    pub jobs: Vec<Job>,
    /// The `sbatch` options of each chunk's array (`--array=...`, `--export=...`).
    pub arrays: Vec<Vec<String>>,
    /// How a search chose the cells, when one did (for the report).
    pub search: Option<String>,
}

/// A hash of every cell's config: what a resubmission must find unchanged.
pub fn experiment_hash(exp: &Experiment) -> String {
    let mut h = Sha256::new();
    for c in &exp.cells {
        h.update(c.id.as_bytes());
        h.update(c.config.hash().as_bytes());
    }
    h.finalize().iter().take(8).map(|b| format!("{b:02x}")).collect()
}

/// Writes the experiment's batch script and submits its cells (all of them, those a
/// resubmission asks for, or a search's) as job arrays; returns at once.
pub fn submit(exp: &Experiment, opts: &Options) -> Result<Submitted, SlurmError> {
    let io = |what: String| move |source| SlurmError::Io { what, source };
    let slurm = exp.root.join("slurm");
    // Slurm fails a task whose --output directory does not exist.
    let logs = slurm.join("logs");
    std::fs::create_dir_all(&logs).map_err(io(format!("creating {}", logs.display())))?;
    let root = exp.root.canonicalize().map_err(io(format!("resolving {}", exp.root.display())))?;
    let workdir = std::env::current_dir().map_err(io("reading the working directory".into()))?;
    let cpus = opts.cpus_per_task.unwrap_or(exp.settings.threads_per_cell).max(1);
    let script = Script {
        name: &exp.name,
        root: &root,
        workdir: &workdir,
        vestige: &opts.vestige,
        cpus_per_task: cpus,
        partition: opts.partition.as_deref(),
        time: opts.time.as_deref(),
        mem: opts.mem.as_deref(),
        extra: &opts.sbatch_args,
    };
    let script_path = slurm.join("array.sbatch");
    write_atomic(&script_path, script.render().as_bytes())?;

    if !opts.dry_run {
        cluster::require_sbatch()?;
    }
    let mut record = Submissions::load(exp)?;
    let hash = experiment_hash(exp);
    let mut cells: Vec<usize> = (0..exp.cells.len()).collect();
    // A search's: the rung of its first cells, how it chose them, and for a halving search,
    // how many configurations its first rung runs.
    let (mut rung, mut search, mut halving) = (None, None, None);
    if opts.resubmit.is_some() && (opts.search.is_some() || record.search.is_some()) {
        return Err(SlurmError::Unsupported(
            "--resubmit of a search is not supported yet; rerun the search with `vestige run EXP --search ...` \
             (locally, which skips the finished cells)"
                .into(),
        ));
    }
    match (&opts.search, opts.resubmit) {
        (Some(arg), _) => {
            let start = search::start(exp, arg, &plan(exp)?)?;
            (cells, rung, search, halving) = (start.cells, start.rung, Some(start.description), start.configurations);
        }
        (None, None) => {}
        (None, Some(which)) => {
            if !record.experiment_hash.is_empty() && record.experiment_hash != hash {
                return Err(SlurmError::Changed { submitted: record.experiment_hash.clone(), now: hash });
            }
            let states = status(exp)?;
            cells = states
                .iter()
                .filter(|s| match which {
                    Resubmit::Failed => matches!(s.state, CellState::Failed { .. }),
                    Resubmit::TimedOut => s.state == CellState::TimedOut,
                    Resubmit::AllUnfinished => {
                        !matches!(s.state, CellState::Done | CellState::Running | CellState::Pending)
                    }
                })
                .map(|s| s.index)
                .collect();
            if cells.is_empty() {
                let which = match which {
                    Resubmit::Failed => "failed",
                    Resubmit::TimedOut => "timed out",
                    Resubmit::AllUnfinished => "unfinished (each is done, running or pending)",
                };
                return Err(SlurmError::Nothing(format!("no cell is {which}")));
            }
        }
    }
    if halving.is_some() && !exp.rungs.is_empty() {
        write_atomic(&slurm.join("select.sbatch"), script.render_select(opts.max_parallel).as_bytes())?;
    }
    let max = if opts.dry_run { 1001 } else { cluster::max_array_size()? };
    let arrays = chunks(&cells, max, opts.max_parallel)
        .into_iter()
        .map(|(offset, array)| array_args(offset, &array, rung))
        .collect();
    let mut submitted = Submitted { script: script.render(), script_path, jobs: Vec::new(), arrays, search };
    if opts.dry_run {
        return Ok(submitted);
    }
    if let Some(p) = &opts.partition {
        let known = cluster::partitions()?;
        if !known.iter().any(|k| k.trim_end_matches('*') == p) {
            return Err(SlurmError::UnknownPartition { given: p.clone(), known });
        }
    }
    submitted.jobs = submit_arrays(&submitted.script_path, &cells, rung, max, opts.max_parallel)?;
    if let Some(n) = halving.filter(|_| !exp.rungs.is_empty()) {
        search::save_rung(exp, 0, &RungSelection { configurations: (0..n).collect(), cells: cells.clone() })?;
        submitted.jobs.push(search::submit_selection(exp, 1, &submitted.jobs)?);
    }
    if record.experiment_hash.is_empty() {
        record.experiment_hash = hash;
    }
    record.search = record.search.or(submitted.search.clone());
    record.jobs.extend(submitted.jobs.iter().cloned());
    record.save(exp)?;
    Ok(submitted)
}

/// The `sbatch` options of the array of chunk `array` at `offset`, of cells of `rung`.
fn array_args(offset: usize, array: &str, rung: Option<usize>) -> Vec<String> {
    // Always set: a selection job's own VESTIGE_RUNG would otherwise pass on to the grid's array.
    let rung = rung.map(|k| k.to_string()).unwrap_or_default();
    vec![format!("--array={array}"), format!("--export=ALL,VESTIGE_CELL_OFFSET={offset},VESTIGE_RUNG={rung}")]
}

/// Submits `cells` (of the lower halving `rung`, or the grid's) as arrays of the batch script
/// at `script`, chunked below `max_array_size`, each chunk after the last; returns the jobs.
fn submit_arrays(
    script: &Path,
    cells: &[usize],
    rung: Option<usize>,
    max_array_size: usize,
    max_parallel: Option<usize>,
) -> Result<Vec<Job>, SlurmError> {
    let mut jobs: Vec<Job> = Vec::new();
    let width = max_array_size.saturating_sub(1).max(1);
    for (offset, array) in chunks(cells, max_array_size, max_parallel) {
        let mut args = array_args(offset, &array, rung);
        // Chunks run one after another, so that --max-parallel holds across them.
        if let Some(last) = jobs.last() {
            args.push(format!("--dependency=afterany:{}", last.id));
        }
        let id = cluster::sbatch(&args, &script.display().to_string())?;
        let in_chunk = cells.iter().copied().filter(|&c| c >= offset && c - offset < width).collect();
        jobs.push(Job { id, offset, cells: in_chunk, rung, selects: None });
    }
    Ok(jobs)
}

/// The cells in `cells` (in any order: a search lists them by configuration) as `(offset,
/// --array spec)` chunks in ascending order whose task indices stay below `max_array_size`,
/// each capped at `max_parallel` running tasks.
fn chunks(cells: &[usize], max_array_size: usize, max_parallel: Option<usize>) -> Vec<(usize, String)> {
    let width = max_array_size.saturating_sub(1).max(1);
    let mut sorted = cells.to_vec();
    sorted.sort_unstable();
    let mut out: Vec<(usize, Vec<usize>)> = Vec::new();
    for c in sorted {
        let offset = c / width * width;
        match out.last_mut() {
            Some((o, tasks)) if *o == offset => tasks.push(c - offset),
            _ => out.push((offset, vec![c - offset])),
        }
    }
    let limit = max_parallel.map(|k| format!("%{k}")).unwrap_or_default();
    out.into_iter().map(|(offset, tasks)| (offset, format!("{}{limit}", ranges(&tasks)))).collect()
}

/// `0-3,7,9-10` for `[0, 1, 2, 3, 7, 9, 10]`.
fn ranges(tasks: &[usize]) -> String {
    let mut parts: Vec<(usize, usize)> = Vec::new();
    for &t in tasks {
        match parts.last_mut() {
            Some((_, end)) if *end + 1 == t => *end = t,
            _ => parts.push((t, t)),
        }
    }
    let part = |&(a, b): &(usize, usize)| if a == b { a.to_string() } else { format!("{a}-{b}") };
    parts.iter().map(part).collect::<Vec<_>>().join(",")
}

/// Whether any of `jobs` still has tasks queued or running.
pub fn active(jobs: &[Job]) -> Result<usize, SlurmError> {
    Ok(cluster::queued(&jobs.iter().map(|j| j.id.clone()).collect::<Vec<_>>())?.len())
}

/// The name of a cell's log (`.log`) and exit files: `cell-<i>`, or `cell-<i>_rung<k>` for
/// the cell of a lower halving rung.
pub fn task_name(cell: usize, rung: Option<usize>) -> String {
    format!("cell-{cell}{}", rung.map(|k| format!("_rung{k}")).unwrap_or_default())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cells_go_out_in_chunks_below_max_array_size_as_compact_ranges() {
        let cells: Vec<usize> = (0..1296).collect();
        let c = chunks(&cells, 1001, Some(8));
        assert_eq!(c, [(0, "0-999%8".to_string()), (1000, "0-295%8".to_string())]);
        assert_eq!(chunks(&[1, 2, 3, 7, 9, 10], 1001, None), [(0, "1-3,7,9-10".to_string())]);
        assert_eq!(chunks(&[4, 5], 3, None), [(4, "0-1".to_string())]);
        assert_eq!(chunks(&[5, 0, 4, 1], 3, None), [(0, "0-1".to_string()), (4, "0-1".to_string())]);
    }
}
