//! Running an experiment locally: cells run in parallel within a thread budget (each cell
//! in its own thread pool of `threads_per_cell` threads, so its results depend only on that
//! count), cheapest first; finished cells are skipped, interrupted ones resume from their
//! checkpoints. A cell runs under its [`CellLock`], so a second runner (another terminal, a
//! requeued Slurm task) skips a cell that is running elsewhere. A worker passes over a cell
//! whose shared base another worker is still training (it would wait on the base's lock)
//! while there is a cell it can start at once. A search runs a budgeted
//! sample of the cells instead: at once (random), or rung by rung, each rung's survivors
//! chosen from the last one's results (halving).

use super::experiment::{Cell, Experiment};
use super::lock::{Acquired, CellLock};
use super::plan::{plan, plan_cells, render, PlannedCell};
use super::search::{self, Ladder, SearchSpec};
use super::slurm::merge;
use crate::fs::write_atomic;
use crate::store::Store;
use crate::train::build::build;
use crate::train::interrupt::Interrupted;
use crate::train::run::{run_or_resume, RunError, RunPaths};
use crate::train::shared_base;
use crate::train::step_loop::progress_bars;
use anyhow::{bail, Context, Result};
use indicatif::{ProgressBar, ProgressStyle};
use std::path::Path;
use std::sync::Mutex;

/// How to run.
#[derive(Clone, Debug, Default)]
pub struct Options {
    /// Run only this cell (by index), e.g. from an external scheduler.
    pub cell: Option<usize>,
    /// With `cell`: the cell of this lower rung of a halving search ([`Experiment::rungs`]),
    /// as a Slurm task of a searched rung runs it.
    pub rung: Option<usize>,
    /// With `cell`: record into the cell's own store file ([`Experiment::cell_db`]) instead
    /// of the experiment's, as a Slurm task does (SQLite's WAL is unsafe on NFS).
    pub cell_store: bool,
    /// Print and save the plan, run nothing.
    pub plan_only: bool,
    /// Override the experiment's thread budget.
    pub threads: Option<usize>,
    /// `maximize=OBJECTIVE`: run the `[search]` table's budgeted sample of cells.
    pub search: Option<String>,
}

/// What happened to the cells.
#[derive(Debug, Default)]
pub struct Outcome {
    pub ran: Vec<String>,
    pub skipped: Vec<String>,
    /// `(cell, holder)`: cells another runner holds the lock of, skipped.
    pub busy: Vec<(String, String)>,
    /// `(cell, holder)`: cells whose lock a runner that died left behind, taken over.
    pub taken_over: Vec<(String, String)>,
    /// Cells stopped by `SIGUSR1` after a checkpoint (see [`crate::train::interrupt`]).
    pub interrupted: Vec<(String, Interrupted)>,
    /// `(cell, error)`.
    pub failed: Vec<(String, String)>,
    /// How a search chose the cells, when one did.
    pub search: Option<String>,
}

/// Loads, plans and runs an experiment (or one of its cells).
pub fn run(path: &Path, opts: &Options) -> Result<(Experiment, Outcome)> {
    let exp = Experiment::load(path)?;
    let planned = plan(&exp)?;
    eprint!("{}", render(&exp, &planned));
    std::fs::create_dir_all(&exp.root).with_context(|| format!("creating {}", exp.root.display()))?;
    write_atomic(&exp.root.join("experiment.toml"), exp.text.as_bytes())?;
    write_atomic(&exp.root.join("plan.json"), serde_json::to_string_pretty(&planned)?.as_bytes())?;
    if opts.plan_only {
        return Ok((exp, Outcome::default()));
    }
    let mut outcome = Outcome::default();
    let grid = match (opts.rung, opts.cell) {
        (None, _) => exp.cells.as_slice(),
        (Some(_), None) => bail!("--rung needs --cell"),
        (Some(k), Some(_)) => match exp.rungs.get(k) {
            Some(cells) => cells.as_slice(),
            None => bail!("--rung {k}: the experiment's search has lower rungs 0..{}", exp.rungs.len()),
        },
    };
    let db = match (opts.cell, opts.cell_store) {
        (Some(i), true) if i < grid.len() => exp.cell_db(&grid[i].id),
        (None, true) => bail!("a cell's own store file (--cell-store) needs --cell"),
        _ => exp.db(),
    };
    if !opts.cell_store {
        // Cells a Slurm array finished count here too.
        merge(&exp)?;
    }
    let store = Store::open(&db)?;
    let threads = opts.threads.or(exp.settings.threads).unwrap_or_else(available_threads);
    let flops: Vec<f64> = planned.iter().map(|c| c.flops).collect();
    let with_flops = |indices: &mut dyn Iterator<Item = usize>| -> Vec<(&Cell, f64)> {
        indices.map(|i| (&exp.cells[i], flops[i])).collect()
    };
    let selected = match (opts.cell, &opts.search) {
        (Some(i), _) if i >= grid.len() => bail!("--cell {i}: the experiment has cells 0..{}", grid.len()),
        (Some(i), _) if opts.rung.is_some() => vec![(&grid[i], plan_cells(&grid[i..=i])?[0].flops)],
        (Some(i), _) => with_flops(&mut std::iter::once(i)),
        (None, Some(arg)) => {
            search::objective(arg, exp.study.as_deref()).map_err(anyhow::Error::msg)?;
            let spec = exp.settings.search.as_ref().context("--search needs a [search] table in the experiment")?;
            if spec.method == "halving" {
                outcome.search = Some(halving(&exp, spec, &planned, &store, threads, &mut outcome)?);
                return Ok((exp, outcome));
            }
            let chosen = search::select(&exp, spec, &flops).map_err(anyhow::Error::msg)?;
            eprintln!("{}", chosen.description);
            outcome.search = Some(chosen.description);
            with_flops(&mut chosen.cells.into_iter())
        }
        (None, None) => with_flops(&mut (0..exp.cells.len())),
    };
    run_batch(&exp, &store, selected, threads, &mut outcome)?;
    Ok((exp, outcome))
}

/// Runs a successive-halving search rung by rung: each rung's cells for the configurations
/// still in, then the best `1/eta` of them by the search's score go on. Returns its description.
fn halving(
    exp: &Experiment,
    spec: &SearchSpec,
    planned: &[PlannedCell],
    store: &Store,
    threads: usize,
    outcome: &mut Outcome,
) -> Result<String> {
    let ladder = Ladder::new(exp, spec, planned)?;
    eprintln!("{}", ladder.plan.description);
    let mut alive: Vec<usize> = (0..ladder.plan.configs.len()).collect();
    for (k, cells) in ladder.rungs.iter().enumerate() {
        if k > 0 {
            alive = ladder.promote(exp, store, k, &alive)?;
        }
        eprintln!("rung {k}: {} configurations at 1/{} of the continue phase", alive.len(), spec.divisor(k));
        let batch = ladder.cells(&alive).into_iter().map(|i| (&cells[i], ladder.flops[k][i])).collect();
        run_batch(exp, store, batch, threads, outcome)?;
    }
    Ok(ladder.plan.description)
}

/// Runs `cells` (with their estimated compute), skipping finished ones; records what happened.
fn run_batch(
    exp: &Experiment,
    store: &Store,
    cells: Vec<(&Cell, f64)>,
    threads: usize,
    outcome: &mut Outcome,
) -> Result<()> {
    let mut todo = Vec::new();
    for (cell, flops) in cells {
        let hash = cell.config.hash();
        let mut info = store.run_info(&cell.id)?;
        // A cell an older build recorded for this config counts (see `RunConfig::legacy_hash`).
        if let Some(i) = info.as_mut().filter(|i| i.config_hash != hash) {
            if i.config_hash == cell.config.legacy_hash() {
                store.rehash_run(&cell.id, &i.config_hash, &hash)?;
                i.config_hash = hash.clone();
            }
        }
        match info {
            Some(info) if info.status == "done" && info.config_hash == hash => outcome.skipped.push(cell.id.clone()),
            Some(info) if info.status == "done" => outcome.failed.push((
                cell.id.clone(),
                format!(
                    "finished under config hash {}, but the experiment now gives {} (the experiment file or \
                     vestige's config format changed); its results stay in the store and the report — give the \
                     experiment a new name to rerun it",
                    info.config_hash, hash
                ),
            )),
            _ => todo.push((cell, flops)),
        }
    }
    // Cheapest first, so that an interrupted or partial experiment covers every condition.
    todo.sort_by(|a, b| a.1.total_cmp(&b.1));
    if !outcome.skipped.is_empty() {
        eprintln!("{} cells already finished, skipped", outcome.skipped.len());
    }
    let results = run_cells(exp, store.path(), &todo, threads);
    for ((cell, _), result) in todo.iter().zip(results) {
        match result {
            Ok(Ran::Finished { took_over }) => {
                outcome.taken_over.extend(took_over.map(|dead| (cell.id.clone(), dead)));
                outcome.ran.push(cell.id.clone())
            }
            Ok(Ran::Elsewhere) => outcome.skipped.push(cell.id.clone()),
            Ok(Ran::Busy(holder)) => outcome.busy.push((cell.id.clone(), holder)),
            Err(e) if e.is::<Interrupted>() => {
                outcome.interrupted.push((cell.id.clone(), e.downcast().expect("an interruption")))
            }
            Err(e) => outcome.failed.push((cell.id.clone(), format!("{e:#}"))),
        }
    }
    Ok(())
}

/// The machine's cores.
fn available_threads() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// What became of a cell a runner set out to run.
enum Ran {
    /// Ran it, after taking over the lock a dead runner (`pid@host`) left, if one did.
    Finished { took_over: Option<String> },
    /// Another runner finished it meanwhile.
    Elsewhere,
    /// Another runner holds its lock (`pid@host`).
    Busy(String),
}

/// Runs `cells` (with their estimated compute) on `threads / threads_per_cell` workers,
/// recording into the store at `db`; returns each cell's result in order.
fn run_cells(exp: &Experiment, db: &Path, cells: &[(&Cell, f64)], threads: usize) -> Vec<Result<Ran>> {
    let per_cell = exp.settings.threads_per_cell.min(threads).max(1);
    let workers = (threads / per_cell).clamp(1, cells.len().max(1));
    let bar = cells_bar(cells.len());
    // The keys the cells' runs will give their first phases: computed under the cells' own
    // thread count, which the key includes.
    let keys_pool = rayon::ThreadPoolBuilder::new().num_threads(per_cell).build().expect("a thread pool");
    let bases: Vec<Option<String>> = keys_pool.install(|| {
        cells.iter().map(|(c, _)| build(&c.config).ok().and_then(|b| shared_base::key(&c.config, &b.model))).collect()
    });
    let bases_dir = exp.bases_dir();
    let published = |key: &str| shared_base::is_published(&bases_dir, key);
    let queue = Mutex::new(Queue { pending: (0..cells.len()).collect(), training: Vec::new() });
    let results: Mutex<Vec<Option<Result<Ran>>>> = Mutex::new((0..cells.len()).map(|_| None).collect());
    let flops_done = Mutex::new(0.0f64);
    let total: f64 = cells.iter().map(|c| c.1).sum();
    let started = std::time::Instant::now();
    std::thread::scope(|s| {
        for _ in 0..workers {
            s.spawn(|| {
                let pool = rayon::ThreadPoolBuilder::new().num_threads(per_cell).build().expect("a thread pool");
                loop {
                    let Some((k, trains)) = queue.lock().expect("no poisoned lock").take(&bases, &published) else {
                        break;
                    };
                    let (cell, flops) = cells[k];
                    bar.set_message(format!("running {}", cell.id));
                    let result = pool.install(|| run_cell(exp, db, cell));
                    queue.lock().expect("no poisoned lock").done(trains);
                    if let Err(e) = &result {
                        bar.println(format!("cell {} failed: {e:#}", cell.id));
                    }
                    let mut done = flops_done.lock().expect("no poisoned lock");
                    *done += flops;
                    bar.set_message(eta(*done, total, started.elapsed().as_secs_f64()));
                    results.lock().expect("no poisoned lock")[k] = Some(result);
                    bar.inc(1);
                }
            });
        }
    });
    bar.finish_and_clear();
    results.into_inner().expect("no poisoned lock").into_iter().map(|r| r.expect("every cell ran")).collect()
}

/// The cells a runner's workers have yet to start (indices, in order of preference) and the
/// shared bases its workers are training.
#[derive(Debug, Default)]
pub struct Queue {
    pub pending: Vec<usize>,
    pub training: Vec<String>,
}

impl Queue {
    /// The next cell to start, given each cell's base key (`bases`) and which bases are
    /// published: the first pending cell whose base no worker is training (or that has been
    /// published meanwhile), else the first pending cell (its run waits on the base's lock).
    /// With it, the base its worker will train, if it is the first to need an unpublished one:
    /// hand it back to [`Queue::done`] when the cell ends.
    pub fn take(
        &mut self,
        bases: &[Option<String>],
        published: &dyn Fn(&str) -> bool,
    ) -> Option<(usize, Option<String>)> {
        let ready = |k: &usize| bases[*k].as_ref().is_none_or(|b| !self.training.contains(b) || published(b));
        let at = self.pending.iter().position(ready).unwrap_or(0);
        if self.pending.is_empty() {
            return None;
        }
        let k = self.pending.remove(at);
        let trains = bases[k].clone().filter(|b| !self.training.contains(b) && !published(b));
        self.training.extend(trains.clone());
        Some((k, trains))
    }

    /// A cell that trained base `trained` ended.
    pub fn done(&mut self, trained: Option<String>) {
        self.training.retain(|b| Some(b) != trained.as_ref());
    }
}

/// Runs or resumes one cell under its lock, recording into the store at `db`.
fn run_cell(exp: &Experiment, db: &Path, cell: &Cell) -> Result<Ran> {
    let dir = exp.cells_dir().join(&cell.id);
    let lock = match CellLock::try_acquire(&dir).with_context(|| format!("locking cell {}", cell.id))? {
        Acquired::Locked(lock) => lock,
        Acquired::Busy(holder) => return Ok(Ran::Busy(holder)),
    };
    // Checked again under the lock: the runner that held it may have finished the cell.
    if Store::open(db)?.run_info(&cell.id)?.is_some_and(|i| i.status == "done" && i.config_hash == cell.config.hash()) {
        return Ok(Ran::Elsewhere);
    }
    let paths = RunPaths { bases: Some(exp.bases_dir()), ..RunPaths::in_dir(dir, db.to_path_buf()) };
    // An interruption stays its own error, so that the outcome can tell it from a failure.
    run_or_resume(cell.config.clone(), build(&cell.config)?, cell.text.clone(), paths).map_err(|e| match e {
        RunError::Interrupted(stop) => anyhow::Error::from(stop),
        e => e.into(),
    })?;
    Ok(Ran::Finished { took_over: lock.took_over().map(str::to_string) })
}

/// The experiment-level progress bar.
fn cells_bar(n: usize) -> ProgressBar {
    let bar = progress_bars().add(ProgressBar::new(n as u64));
    bar.set_style(ProgressStyle::with_template("{prefix:>12} [{bar:30}] {pos}/{len} {msg}").expect("valid template"));
    bar.set_prefix("cells");
    bar
}

/// Remaining time from the compute done so far.
fn eta(done: f64, total: f64, elapsed: f64) -> String {
    let rate = done / elapsed.max(1e-9);
    format!("{:.2} GFLOP/s, ETA {:.0} s", rate / 1e9, (total - done).max(0.0) / rate.max(1e-9))
}
