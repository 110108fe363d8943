//! `vestige run EXPERIMENT.toml`: plan, run the cells, write the template's report, and say
//! where the results are.

use crate::lab::execute::{run as run_cells, Options};
use anyhow::{bail, Result};
use std::path::Path;

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
    if exp.settings.template.as_deref() == Some("distance") {
        println!("report: {}", crate::lab::distance_report::write(&exp)?.display());
    }
    if !outcome.failed.is_empty() {
        let list: Vec<String> = outcome.failed.iter().map(|(c, e)| format!("  {c}: {e}")).collect();
        bail!("{} cells failed (rerun to retry them):\n{}", outcome.failed.len(), list.join("\n"));
    }
    Ok(())
}
