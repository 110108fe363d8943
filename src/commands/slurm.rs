//! `vestige run EXP --backend slurm` (submit the cells as job arrays, optionally wait for
//! them and write the report), `vestige status DIR` (where each cell stands) and the hidden
//! `vestige search-rung DIR --rung K` (a halving search's selection job).

use super::experiment::write_report;
use crate::lab::experiment::Experiment;
use crate::lab::plan::{plan, render};
use crate::lab::slurm::{self, status, CellState, CellStatus, Options, RungSelection, Submissions};
use crate::train::step_loop::progress_bars;
use anyhow::{bail, Result};
use indicatif::{ProgressBar, ProgressStyle};
use std::path::Path;
use std::time::Duration;

/// Submits the experiment at `path` to Slurm (or prints the script for a dry run); with
/// `wait`, follows the jobs to their end, then writes the report and fails unless every
/// cell is done.
pub fn submit(path: &Path, opts: &Options, wait: bool) -> Result<()> {
    let exp = Experiment::load(path)?;
    eprint!("{}", render(&exp, &plan(&exp)?));
    std::fs::create_dir_all(&exp.root)?;
    crate::fs::write_atomic(&exp.root.join("experiment.toml"), exp.text.as_bytes())?;
    let done = slurm::submit(&exp, opts)?;
    if opts.dry_run {
        print!("{}", done.script);
        for args in &done.arrays {
            println!("# would submit: sbatch {} {}", args.join(" "), done.script_path.display());
        }
        return Ok(());
    }
    for job in &done.jobs {
        match job.selects {
            Some(k) => println!("submitted job {} (the selection of rung {k}, after the jobs above)", job.id),
            None => println!("submitted job {} ({} cells): {}", job.id, job.cells.len(), done.script_path.display()),
        }
    }
    println!("follow it with `vestige status {}`", exp.root.display());
    if !wait {
        return Ok(());
    }
    let exp = Experiment::open_dir(&exp.root)?;
    let bar = progress_bars().add(ProgressBar::new(exp.cells.len() as u64));
    bar.set_style(ProgressStyle::with_template("{prefix:>12} [{bar:30}] {pos}/{len} {msg}").expect("valid template"));
    bar.set_prefix("cells done");
    loop {
        // A halving search's selection jobs submit further jobs as they run.
        let jobs = Submissions::load(&exp)?.jobs;
        let states = submitted(&exp, status(&exp)?)?;
        bar.set_length(states.len() as u64);
        bar.set_position(states.iter().filter(|s| s.state == CellState::Done).count() as u64);
        let running = states.iter().filter(|s| s.state == CellState::Running).count();
        bar.set_message(format!("{running} running"));
        // A selection job records the jobs it submitted before it ends: once none of `jobs` is
        // active, the record read again holds every job.
        if slurm::active(&jobs)? == 0 && Submissions::load(&exp)?.jobs.len() == jobs.len() {
            break;
        }
        std::thread::sleep(Duration::from_secs(2));
    }
    bar.finish_and_clear();
    if let Some(index) = write_report(&exp, done.search.as_deref())? {
        println!("report: {}", index.display());
    }
    for k in (1..=exp.rungs.len()).filter(|_| done.jobs.iter().any(|j| j.selects.is_some())) {
        if RungSelection::load(&exp, k)?.is_none() {
            let log = exp.root.join("slurm").join("logs").join(format!("select-rung-{k}.out"));
            bail!("the selection of the search's rung {k} did not run or failed: see {}", log.display());
        }
    }
    let unfinished: Vec<String> = submitted(&exp, status(&exp)?)?
        .into_iter()
        .filter(|s| s.state != CellState::Done)
        .map(|s| format!("  {}", line(&s.id, &s.state)))
        .collect();
    if !unfinished.is_empty() {
        bail!(
            "{} cells did not finish (resubmit them with --resubmit failed|timed-out|all-unfinished):\n{}",
            unfinished.len(),
            unfinished.join("\n")
        );
    }
    Ok(())
}

/// The states of the cells that went out (every cell, unless a search chose them): a cell no
/// job ran and no runner started is left out once something was submitted.
fn submitted(exp: &Experiment, states: Vec<CellStatus>) -> Result<Vec<CellStatus>> {
    let jobs = Submissions::load(exp)?.jobs;
    let listed = |s: &CellStatus| jobs.iter().any(|j| j.rung == s.rung && j.cells.contains(&s.index));
    Ok(states.into_iter().filter(|s| jobs.is_empty() || listed(s) || s.state != CellState::NotRun).collect())
}

/// What a halving search's selection job does: selects rung `k`, submits it and says so.
pub fn select_rung(dir: &Path, k: usize, max_parallel: Option<usize>) -> Result<()> {
    let (selection, jobs) = slurm::select_rung(dir, k, max_parallel)?;
    println!("rung {k}: configurations {:?}, cells {:?}", selection.configurations, selection.cells);
    for job in jobs {
        match job.selects {
            Some(next) => println!("submitted job {} (the selection of rung {next})", job.id),
            None => println!("submitted job {} ({} cells)", job.id, job.cells.len()),
        }
    }
    Ok(())
}

/// Prints each cell's state and a count per state.
pub fn print_status(dir: &Path) -> Result<()> {
    let exp = Experiment::open_dir(dir)?;
    let states = submitted(&exp, status(&exp)?)?;
    let mut counts = std::collections::BTreeMap::new();
    for s in &states {
        println!("{}", line(&s.id, &s.state));
        *counts.entry(name(&s.state)).or_insert(0) += 1;
    }
    let counts: Vec<String> = counts.iter().map(|(k, n)| format!("{n} {k}")).collect();
    println!("{} cells: {}", states.len(), counts.join(", "));
    let jobs = Submissions::load(&exp)?.jobs;
    for k in (1..=exp.rungs.len()).filter(|_| jobs.iter().any(|j| j.selects.is_some())) {
        match RungSelection::load(&exp, k)? {
            Some(s) => {
                println!("rung {k}: {} configurations selected, {} cells", s.configurations.len(), s.cells.len())
            }
            None => println!("rung {k}: not selected yet"),
        }
    }
    Ok(())
}

/// A state's one-word name.
fn name(state: &CellState) -> &'static str {
    match state {
        CellState::Done => "done",
        CellState::Running => "running",
        CellState::Pending => "pending",
        CellState::Failed { .. } => "failed",
        CellState::TimedOut => "timed out",
        CellState::NotRun => "not run",
    }
}

/// `cell  state  (details)`.
fn line(id: &str, state: &CellState) -> String {
    match state {
        CellState::Failed { code, last_line } => {
            let code = code.map_or("no exit code recorded".to_string(), |c| format!("exit code {c}"));
            format!("{id:<40} failed ({code}): {last_line}")
        }
        s => format!("{id:<40} {}", name(s)),
    }
}
