//! `vestige run EXP --backend slurm` (submit the cells as job arrays, optionally wait for
//! them and write the report) and `vestige status DIR` (where each cell stands).

use super::experiment::write_report;
use crate::lab::experiment::Experiment;
use crate::lab::plan::{plan, render};
use crate::lab::slurm::{self, status, CellState, Options};
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
        for (offset, array) in &done.arrays {
            println!(
                "# would submit: sbatch --array={array} --export=ALL,VESTIGE_CELL_OFFSET={offset} {}",
                done.script_path.display()
            );
        }
        return Ok(());
    }
    for job in &done.jobs {
        println!("submitted job {} ({} cells): {}", job.id, job.cells.len(), done.script_path.display());
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
        let states = status(&exp)?;
        bar.set_position(states.iter().filter(|s| s.state == CellState::Done).count() as u64);
        let running = states.iter().filter(|s| s.state == CellState::Running).count();
        bar.set_message(format!("{running} running"));
        if slurm::active(&done.jobs)? == 0 {
            break;
        }
        std::thread::sleep(Duration::from_secs(2));
    }
    bar.finish_and_clear();
    if let Some(index) = write_report(&exp, None)? {
        println!("report: {}", index.display());
    }
    let unfinished: Vec<String> = status(&exp)?
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

/// Prints each cell's state and a count per state.
pub fn print_status(dir: &Path) -> Result<()> {
    let exp = Experiment::open_dir(dir)?;
    let states = status(&exp)?;
    let mut counts = std::collections::BTreeMap::new();
    for s in &states {
        println!("{}", line(&s.id, &s.state));
        *counts.entry(name(&s.state)).or_insert(0) += 1;
    }
    let counts: Vec<String> = counts.iter().map(|(k, n)| format!("{n} {k}")).collect();
    println!("{} cells: {}", states.len(), counts.join(", "));
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
