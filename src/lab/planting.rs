//! A backdoor planted in a model and in its clean twin, as the elicitation and removal
//! studies start: one phase on a `kind = "backdoor"` task's stream at its poison rate (the
//! lab shares it between the cells of a seed); the twin trains on the same stream with no
//! sample poisoned.

use super::study::Problem;
use crate::data::spec::{Kind, TaskSpec};
use serde_json::json;

/// The trigger tokens of backdoor task spec `spec` (picked ones included).
pub fn trigger_of(spec: &TaskSpec) -> Result<Vec<u32>, String> {
    let Kind::Backdoor(w) = &spec.kind else { return Err(format!("{:?} is not a backdoor task", spec.name)) };
    let base = w.base.spec().build().map_err(|e| e.to_string())?;
    Ok(w.spec.build(&spec.name, base).trigger.tokens().to_vec())
}

/// The planting phase's name.
pub const PLANT: &str = "plant";

/// The planting phase: `steps` on `task` at `lr` (warmed up over `warmup` steps), evaluated on
/// `task`'s probes twice.
pub fn plant_phase(
    task: &str,
    steps: u64,
    batch: usize,
    lr: f64,
    warmup: u64,
    eval_samples: usize,
) -> serde_json::Value {
    let mut plant = json!({"name": PLANT, "steps": steps, "batch_size": batch,
        "mixture": {task: 1.0}, "optimizer": {"lr": lr},
        "eval": {"tasks": [task], "samples": eval_samples, "exact_match": false, "every": (steps / 2).max(1)}});
    if warmup > 0 {
        plant["schedule"] = json!({"warmup_steps": warmup.min(steps)});
    }
    plant
}

/// The `[[tasks]]` table of backdoor task `task` in a cell's config, unpoisoned when the cell
/// is the clean twin (`backdoored = false`).
pub fn backdoor_task<'a>(
    doc: &'a mut toml::Table,
    task: &str,
    backdoored: bool,
) -> Result<&'a mut toml::Table, Problem> {
    let tasks =
        doc.get_mut("tasks").and_then(|t| t.as_array_mut()).ok_or(("tasks".to_string(), "missing".to_string()))?;
    let table = tasks
        .iter_mut()
        .filter_map(|t| t.as_table_mut())
        .find(|t| t.get("name").and_then(|n| n.as_str()) == Some(task))
        .ok_or(("task".to_string(), format!("backdoor task {task:?} not found")))?;
    if !backdoored {
        table.insert("poison_rate".into(), 0.0.into());
    }
    Ok(table)
}

/// Adds a copy of backdoor task `task` named `name` with `keys` set (e.g. an elicitation
/// target or anti-backdoor data) to `doc`'s `[[tasks]]`.
pub fn derive_task(doc: &mut toml::Table, task: &str, name: &str, keys: &[(&str, toml::Value)]) -> Result<(), Problem> {
    let mut table = backdoor_task(doc, task, true)?.clone();
    table.insert("name".into(), name.into());
    for (k, v) in keys {
        table.insert(k.to_string(), v.clone());
    }
    let tasks = doc.get_mut("tasks").and_then(|t| t.as_array_mut()).expect("found above");
    tasks.push(table.into());
    Ok(())
}
