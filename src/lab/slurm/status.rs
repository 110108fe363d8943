//! Where each cell of an experiment stands, from what is on disk and in the queue: the
//! stores (the experiment's and each cell's own), `squeue` for the submitted jobs, and the
//! end each task wrote to `slurm/exits/` (a minimal cluster keeps no accounting for
//! `sacct` to read).

use super::{cluster, task_name, SlurmError, Submissions};
use crate::lab::experiment::Experiment;
use crate::lab::lock::CellLock;
use crate::store::Store;

/// Where a cell stands.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CellState {
    Done,
    Running,
    /// Queued (also after a requeue).
    Pending,
    /// It ended without finishing: its exit code when the task recorded one (143 for a
    /// cancelled task), and the last line of its log.
    Failed {
        code: Option<i32>,
        last_line: String,
    },
    TimedOut,
    /// Never started (or started outside Slurm and stopped without a trace).
    NotRun,
}

/// One cell's state.
#[derive(Clone, Debug)]
pub struct CellStatus {
    pub index: usize,
    /// The lower halving rung of the cell; none for the grid's cells.
    pub rung: Option<usize>,
    pub id: String,
    pub state: CellState,
}

/// The state of every cell of `exp`: of a halving search's lower rungs too, once it went out.
pub fn status(exp: &Experiment) -> Result<Vec<CellStatus>, SlurmError> {
    let submissions = Submissions::load(exp)?;
    let ids: Vec<String> = submissions.jobs.iter().map(|j| j.id.clone()).collect();
    let queue = if ids.is_empty() { Vec::new() } else { cluster::queued(&ids)? };
    let shared = if exp.db().is_file() { Some(Store::open(&exp.db())?) } else { None };
    let mut out = Vec::new();
    let rungs = exp.rungs.iter().enumerate().filter(|_| submissions.search.is_some());
    let cells = rungs.flat_map(|(k, cells)| cells.iter().map(move |c| (Some(k), c)));
    for (rung, cell) in cells.chain(exp.cells.iter().map(|c| (None, c))) {
        let name = task_name(cell.index, rung);
        let mut recorded = match &shared {
            Some(store) => store.run_info(&cell.id)?.map(|i| i.status),
            None => None,
        };
        let own = exp.cell_db(&cell.id);
        if recorded.as_deref() != Some("done") && own.is_file() {
            recorded = Store::open(&own)?.run_info(&cell.id)?.map(|i| i.status);
        }
        let queued = queue.iter().find(|(job, task, _)| {
            submissions
                .jobs
                .iter()
                .any(|j| &j.id == job && j.rung == rung && task.map(|t| j.offset + t) == Some(cell.index))
        });
        let exit = std::fs::read_to_string(exp.root.join("slurm").join("exits").join(&name))
            .ok()
            .map(|s| s.trim().to_string());
        let last_line = || {
            let log = std::fs::read_to_string(exp.root.join("slurm").join("logs").join(format!("{name}.log")))
                .unwrap_or_default();
            log.lines().rev().find(|l| !l.trim().is_empty()).unwrap_or_default().trim().to_string()
        };
        let state = match (recorded.as_deref(), queued, exit.as_deref()) {
            (Some("done"), _, _) => CellState::Done,
            (_, Some((_, _, st)), _) if st == "PD" => CellState::Pending,
            (_, Some(_), _) => CellState::Running,
            _ if CellLock::held_by(&exp.cells_dir().join(&cell.id))
                .map_err(|source| SlurmError::Io { what: format!("reading the lock of cell {}", cell.id), source })?
                .is_some() =>
            {
                CellState::Running
            }
            (_, None, Some("exit 143")) if out_of_time(exp, &submissions, cell.index, rung) => CellState::TimedOut,
            (_, None, Some(e)) => {
                CellState::Failed { code: e.strip_prefix("exit ").and_then(|c| c.parse().ok()), last_line: last_line() }
            }
            (Some(_), None, None) => CellState::Failed { code: None, last_line: last_line() },
            (None, None, None) => CellState::NotRun,
        };
        out.push(CellStatus { index: cell.index, rung, id: cell.id.clone(), state });
    }
    Ok(out)
}

/// Whether Slurm's note in the output file of the last job that ran cell `index` says it
/// (of `rung`) was stopped for its time limit (`*** JOB ... CANCELLED AT ... DUE TO TIME LIMIT ***`).
fn out_of_time(exp: &Experiment, submissions: &Submissions, index: usize, rung: Option<usize>) -> bool {
    let last = submissions.jobs.iter().rev().find(|j| j.rung == rung && j.cells.contains(&index));
    last.is_some_and(|j| {
        let out = exp.root.join("slurm").join("logs").join(format!("job-{}_{}.out", j.id, index - j.offset));
        std::fs::read_to_string(out).is_ok_and(|text| text.contains("DUE TO TIME LIMIT"))
    })
}
