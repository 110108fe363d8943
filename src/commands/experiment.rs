//! `vestige run EXPERIMENT.toml` (plan, run the cells, write the report) and `vestige report
//! DIR` (rewrite the report from the store).

use crate::lab::execute::{run as run_cells, Options};
use crate::lab::experiment::Experiment;
use crate::lab::plan::plan;
use crate::lab::slurm::merge;
use anyhow::{bail, Result};
use std::path::{Path, PathBuf};

/// Runs an experiment, writes its report and prints what happened; fails if any cell failed.
pub fn run(path: &Path, opts: &Options) -> Result<()> {
    let (exp, outcome) = run_cells(path, opts)?;
    if opts.plan_only {
        println!("plan saved to {}", exp.root.join("plan.json").display());
        return Ok(());
    }
    println!(
        "experiment {}: {} cells ran, {} already finished, {} failed; results in {}",
        exp.name,
        outcome.ran.len(),
        outcome.skipped.len(),
        outcome.failed.len(),
        exp.root.display()
    );
    for (cell, holder) in &outcome.busy {
        println!("cell {cell} is running in {holder}; skipped here");
    }
    for (cell, dead) in &outcome.taken_over {
        println!("cell {cell}: took over the lock that {dead} left (that runner had died)");
    }
    // A cell with its own store file (a Slurm task) leaves the merge and the report to
    // `vestige report` or `--wait`.
    if !opts.cell_store {
        if let Some(index) = write_report(&exp, outcome.search.as_deref())? {
            println!("report: {}", index.display());
        }
    }
    if let Some((cell, stop)) = outcome.interrupted.into_iter().next() {
        return Err(anyhow::Error::new(stop).context(format!("cell {cell}")));
    }
    if !outcome.failed.is_empty() {
        let list: Vec<String> = outcome.failed.iter().map(|(c, e)| format!("  {c}: {e}")).collect();
        bail!("{} cells failed (rerun to retry them):\n{}", outcome.failed.len(), list.join("\n"));
    }
    Ok(())
}

/// Rewrites the report of the experiment in `dir` from its store.
pub fn report(dir: &Path) -> Result<()> {
    let exp = Experiment::open_dir(dir)?;
    match write_report(&exp, None)? {
        Some(index) => println!("report: {}", index.display()),
        None => println!("experiment {} has no template, so there is no report to write", exp.name),
    }
    Ok(())
}

/// The study's report, if the experiment names one, after merging the cells that kept their
/// own store files (under Slurm); returns the index page. `search` says how a search chose
/// the cells.
pub fn write_report(exp: &Experiment, search: Option<&str>) -> Result<Option<PathBuf>> {
    merge(exp)?;
    match &exp.study {
        Some(study) => Ok(Some(study.report(exp, &plan(exp)?, search)?)),
        None => Ok(None),
    }
}
