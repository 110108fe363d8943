//! `vestige inspect RUN_DIR`: the run's config, phases, checkpoints and last metrics.

use crate::store::Store;
use crate::train::checkpoint;
use crate::train::config::RunConfig;
use anyhow::Result;
use std::collections::BTreeMap;
use std::fmt::Write;
use std::path::Path;

/// A human-readable description of a run directory.
pub fn describe(dir: &Path) -> Result<String> {
    let cfg = RunConfig::from_file(&dir.join("config.toml"))?;
    let mut out = String::new();
    writeln!(out, "run {} (config hash {})", cfg.name, cfg.hash())?;
    let store = Store::open(&cfg.out_dir.join("vestige.db"))?;
    let status = store.runs()?.into_iter().find(|r| r.run == cfg.name).map_or("not started".into(), |r| r.status);
    writeln!(out, "status: {status}")?;
    writeln!(out, "phases:")?;
    let started: BTreeMap<u32, u64> = store.phases(&cfg.name)?.into_iter().map(|(i, _, s)| (i, s)).collect();
    for (i, p) in cfg.phases.iter().enumerate() {
        let at = started.get(&(i as u32)).map_or("not started".to_string(), |s| format!("started at step {s}"));
        writeln!(
            out,
            "  {i}: {} — {} steps, trainable {:?}, mixture {:?} ({at})",
            p.name, p.steps, p.trainable, p.mixture
        )?;
    }
    writeln!(out, "checkpoints:")?;
    for (step, path) in checkpoint::list(&dir.join("checkpoints")) {
        let pin = std::fs::read_to_string(path.join("PINNED")).map(|n| format!(" (pinned: {n})")).unwrap_or_default();
        writeln!(out, "  step {step}{pin}")?;
    }
    let mut last: BTreeMap<(String, String), (u64, f64)> = BTreeMap::new();
    for r in store.metrics(&cfg.name)? {
        last.insert((r.task, r.metric), (r.step, r.value));
    }
    writeln!(out, "last metrics:")?;
    for ((task, metric), (step, value)) in last {
        writeln!(out, "  {task}/{metric} = {value:.5} (step {step})")?;
    }
    Ok(out)
}
