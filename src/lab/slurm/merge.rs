//! Under Slurm each cell records into its own store file (SQLite's WAL is unsafe on NFS);
//! [`merge`] copies the finished ones into the experiment's store, for the report.

use crate::lab::experiment::Experiment;
use crate::store::{Store, StoreError};

/// Copies every finished cell (of every rung of a halving search) from its own store file
/// into the experiment's store; returns the cells copied. Idempotent: a cell already in the experiment's store as done is left
/// alone, and a cell whose own store does not say done (still running, failed, interrupted)
/// is not copied. A cell recorded in both under different config hashes is refused.
pub fn merge(exp: &Experiment) -> Result<Vec<String>, StoreError> {
    // A halving search's lower rungs' cells too.
    let cells = exp.rungs.iter().flatten().chain(&exp.cells);
    let cell_dbs: Vec<_> = cells.map(|c| (c, exp.cell_db(&c.id))).filter(|(_, db)| db.is_file()).collect();
    if cell_dbs.is_empty() {
        return Ok(Vec::new());
    }
    let store = Store::open(&exp.db())?;
    let mut merged = Vec::new();
    for (cell, db) in cell_dbs {
        let own = Store::open(&db)?;
        let Some(info) = own.run_info(&cell.id)?.filter(|i| i.status == "done") else { continue };
        if store.run_info(&cell.id)?.is_some_and(|i| i.status == "done" && i.config_hash == info.config_hash) {
            continue;
        }
        let config = own.config_toml(&cell.id)?.unwrap_or_default();
        store.begin_run(&cell.id, &config, &info.config_hash)?;
        store.truncate_after(&cell.id, 0)?;
        for (index, name, start) in own.phases(&cell.id)? {
            store.record_phase(&cell.id, index, &name, start)?;
        }
        store.log_metrics(&own.metrics(&cell.id)?)?;
        // Last, so that a merge cut short leaves the cell `running` and the next one redoes it.
        store.set_status(&cell.id, "done")?;
        merged.push(cell.id.clone());
    }
    Ok(merged)
}
