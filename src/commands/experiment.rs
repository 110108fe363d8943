//! `vestige run EXPERIMENT.toml`: plan, run the cells, write the template's report, and say
//! where the results are.

use crate::lab::execute::{run as run_cells, Options};
use crate::lab::experiment::Experiment;
use crate::lab::{backdoor_analysis, backdoor_report, plan::plan};
use anyhow::{bail, Result};
use std::path::{Path, PathBuf};

/// Runs an experiment and prints what happened; fails if any cell failed.
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
    if let Some(page) = report(&exp, outcome.search.as_deref())? {
        println!("report: {}", page.display());
    }
    if !outcome.failed.is_empty() {
        let list: Vec<String> = outcome.failed.iter().map(|(c, e)| format!("  {c}: {e}")).collect();
        bail!("{} cells failed (rerun to retry them):\n{}", outcome.failed.len(), list.join("\n"));
    }
    Ok(())
}

/// Writes the report of the experiment's template from the store; `None` for a template
/// without one. `search` says how a search chose the cells.
pub fn report(exp: &Experiment, search: Option<&str>) -> Result<Option<PathBuf>> {
    match exp.settings.template.as_deref() {
        Some("backdoor") => {
            let params: Vec<usize> = plan(exp)?.iter().map(|c| c.params).collect();
            let analysis = backdoor_analysis::analyse(exp, &params)?;
            Ok(Some(backdoor_report::write(exp, &analysis, search)?))
        }
        _ => Ok(None),
    }
}
