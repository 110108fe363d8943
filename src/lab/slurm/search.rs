//! A search on Slurm, submitted whole. A random search's sample goes out as one array. A
//! successive-halving search's first rung goes out as an array, followed by a small selection
//! job (`select.sbatch`, `--dependency=afterany` on that array) which runs
//! `vestige search-rung EXP_DIR --rung 1`: it merges the finished cells' store files, scores
//! the configurations exactly as a local search does ([`Ladder::promote`]), writes its choice
//! to `slurm/rung-1.json` and submits rung 1's array of only those cells, and the selection of
//! rung 2 after it, and so on up to the grid's own cells.

use super::{cluster, merge, submit_arrays, Job, SlurmError, Submissions};
use crate::fs::write_atomic;
use crate::lab::experiment::Experiment;
use crate::lab::plan::{plan, PlannedCell};
use crate::lab::search::{self, Ladder};
use crate::store::Store;
use anyhow::Context;
use std::path::{Path, PathBuf};

/// A search's first cells.
pub(super) struct Start {
    /// Cell indices of `rung` (ascending within each configuration).
    pub cells: Vec<usize>,
    /// The lower halving rung of the cells; none for the grid's cells.
    pub rung: Option<usize>,
    /// How the search chooses its cells, for the report.
    pub description: String,
    /// For a halving search: its configurations (all run at the first rung).
    pub configurations: Option<usize>,
}

/// What the search `arg` (`maximize=OBJECTIVE`) of `exp`, whose grid's cells are `planned`,
/// runs first.
pub(super) fn start(exp: &Experiment, arg: &str, planned: &[PlannedCell]) -> anyhow::Result<Start> {
    search::objective(arg, exp.study.as_deref()).map_err(anyhow::Error::msg)?;
    let spec = exp.settings.search.as_ref().context("--search needs a [search] table in the experiment")?;
    if spec.method != "halving" {
        let flops: Vec<f64> = planned.iter().map(|c| c.flops).collect();
        let chosen = search::select(exp, spec, &flops).map_err(anyhow::Error::msg)?;
        return Ok(Start { cells: chosen.cells, rung: None, description: chosen.description, configurations: None });
    }
    let ladder = Ladder::new(exp, spec, planned)?;
    let all: Vec<usize> = (0..ladder.plan.configs.len()).collect();
    Ok(Start {
        cells: ladder.cells(&all),
        rung: (!exp.rungs.is_empty()).then_some(0),
        description: ladder.plan.description,
        configurations: Some(all.len()),
    })
}

/// `slurm/rung-<k>.json`: the configurations a halving search runs at rung `k` (positions in
/// its sampled order) and their cells.
#[derive(Debug, serde::Serialize, serde::Deserialize)]
pub struct RungSelection {
    pub configurations: Vec<usize>,
    pub cells: Vec<usize>,
}

impl RungSelection {
    fn path(exp: &Experiment, k: usize) -> PathBuf {
        exp.root.join("slurm").join(format!("rung-{k}.json"))
    }

    /// Rung `k`'s selection, if it was made.
    pub fn load(exp: &Experiment, k: usize) -> Result<Option<RungSelection>, SlurmError> {
        let path = Self::path(exp, k);
        let io = |source| SlurmError::Io { what: format!("reading {}", path.display()), source };
        match std::fs::read_to_string(&path) {
            Ok(text) => Ok(Some(serde_json::from_str(&text).map_err(|e| io(e.into()))?)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(io(e)),
        }
    }
}

/// Writes rung `k`'s selection.
pub(super) fn save_rung(exp: &Experiment, k: usize, selection: &RungSelection) -> Result<(), SlurmError> {
    let text = serde_json::to_string_pretty(selection).expect("serializable");
    Ok(write_atomic(&RungSelection::path(exp, k), text.as_bytes())?)
}

/// Submits the selection job of rung `k`, to run once `after` (the last rung's arrays) ended.
pub(super) fn submit_selection(exp: &Experiment, k: usize, after: &[Job]) -> Result<Job, SlurmError> {
    let slurm = exp.root.join("slurm");
    let ids: Vec<&str> = after.iter().map(|j| j.id.as_str()).collect();
    let output = slurm.join("logs").join(format!("select-rung-{k}.out"));
    let output =
        std::path::absolute(&output).map_err(|source| SlurmError::Io { what: "resolving the logs".into(), source })?;
    let args = [
        format!("--dependency=afterany:{}", ids.join(":")),
        format!("--export=ALL,VESTIGE_RUNG={k}"),
        format!("--output={}", output.display()),
    ];
    let id = cluster::sbatch(&args, &slurm.join("select.sbatch").display().to_string())?;
    Ok(Job { id, offset: 0, cells: Vec::new(), rung: None, selects: Some(k) })
}

/// What a selection job does (`vestige search-rung DIR --rung K`): merges the finished cells of
/// the halving search in `dir`, chooses rung `k`'s configurations from rung `k - 1`'s scores as
/// a local search does, writes them to `slurm/rung-<k>.json` and submits their cells (and the
/// next rung's selection). Returns the selection and the jobs submitted.
pub fn select_rung(dir: &Path, k: usize, max_parallel: Option<usize>) -> Result<(RungSelection, Vec<Job>), SlurmError> {
    let exp = Experiment::open_dir(dir)?;
    let spec = exp.settings.search.as_ref().filter(|s| s.method == "halving");
    let spec = spec.context("search-rung: the experiment has no halving [search]")?;
    if k == 0 || k > exp.rungs.len() {
        return Err(anyhow::anyhow!("search-rung: --rung {k}: the search selects rungs 1..={}", exp.rungs.len()).into());
    }
    merge(&exp)?;
    let ladder = Ladder::new(&exp, spec, &plan(&exp)?)?;
    let last = RungSelection::load(&exp, k - 1)?
        .with_context(|| format!("search-rung: rung {} was never selected (no slurm/rung-{}.json)", k - 1, k - 1))?;
    let store = Store::open(&exp.db())?;
    let configurations = ladder.promote(&exp, &store, k, &last.configurations)?;
    let selection = RungSelection { cells: ladder.cells(&configurations), configurations };
    save_rung(&exp, k, &selection)?;
    let rung = (k < exp.rungs.len()).then_some(k);
    let script = exp.root.join("slurm").join("array.sbatch");
    let mut jobs = submit_arrays(&script, &selection.cells, rung, cluster::max_array_size()?, max_parallel)?;
    if k < exp.rungs.len() {
        jobs.push(submit_selection(&exp, k + 1, &jobs)?);
    }
    let mut record = Submissions::load(&exp)?;
    record.jobs.extend(jobs.iter().cloned());
    record.save(&exp)?;
    Ok((selection, jobs))
}
