//! Search mode (`vestige run EXP --search maximize=backdoor.half_life`): instead of the whole
//! grid, run a random sample of configurations of the `[search]` table's axes within a
//! compute budget, each configuration crossed with the other sweep axes (typically the
//! seeds). The report then ranks the configurations and shows which knobs matter.
//!
//! Only random search exists; successive halving is not implemented.

use super::experiment::Experiment;
use super::plan::{human_flops, PlannedCell};
use super::sweep::slug;
use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use serde::Deserialize;
use std::collections::BTreeMap;

/// The objectives a search can maximize.
pub const OBJECTIVES: [&str; 1] = ["backdoor.half_life"];

/// The `[search]` table.
#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct SearchSpec {
    /// Sweep keys (as written in `[sweep]`) whose values the search samples.
    pub axes: Vec<String>,
    /// The budget: at most this many cells, or this much estimated training compute.
    pub budget_cells: Option<usize>,
    pub budget_flops: Option<f64>,
    /// `random`.
    #[serde(default = "default_method")]
    pub method: String,
    /// Seed of the sampling order.
    #[serde(default)]
    pub seed: u64,
}

fn default_method() -> String {
    "random".into()
}

/// The cells a search runs and a sentence saying how they were chosen.
#[derive(Clone, Debug, PartialEq)]
pub struct Selection {
    /// Cell indices, ascending.
    pub cells: Vec<usize>,
    pub description: String,
}

/// Checks `maximize=OBJECTIVE`; returns the objective.
pub fn objective(arg: &str) -> Result<String, String> {
    match arg.split_once('=') {
        Some(("maximize", o)) if OBJECTIVES.contains(&o) => Ok(o.to_string()),
        _ => Err(format!(
            "--search {arg:?}: expected maximize=OBJECTIVE with OBJECTIVE one of {}",
            OBJECTIVES.join(", ")
        )),
    }
}

/// Samples configurations of `spec.axes` in a seeded random order and keeps each whose cells
/// still fit the budget; the result depends only on the experiment, the plan and the spec.
pub fn select(exp: &Experiment, spec: &SearchSpec, planned: &[PlannedCell]) -> Result<Selection, String> {
    if spec.method != "random" {
        return Err(format!("search.method: {:?} is not available; use \"random\"", spec.method));
    }
    if let Some(a) = spec.axes.iter().find(|a| !exp.axes.iter().any(|x| &x.key == *a)) {
        let keys: Vec<&str> = exp.axes.iter().map(|x| x.key.as_str()).collect();
        return Err(format!("search.axes: {a:?} is not a [sweep] key; sweep keys: {keys:?}"));
    }
    if spec.axes.is_empty() || spec.budget_cells.is_none() == spec.budget_flops.is_none() {
        return Err("search: give axes and exactly one of budget_cells, budget_flops".into());
    }
    let mut configs: BTreeMap<Vec<String>, Vec<usize>> = BTreeMap::new();
    for cell in &exp.cells {
        let key = cell.point.iter().filter(|(k, _)| spec.axes.contains(k)).map(|(_, v)| slug(v)).collect();
        configs.entry(key).or_default().push(cell.index);
    }
    let mut order: Vec<Vec<usize>> = configs.into_values().collect();
    order.shuffle(&mut ChaCha8Rng::seed_from_u64(spec.seed));
    let total = order.len();
    let (mut cells, mut used_cells, mut used_flops, mut taken) = (Vec::new(), 0usize, 0.0f64, 0usize);
    for members in order {
        let flops: f64 = members.iter().map(|&i| planned[i].flops).sum();
        let fits = spec.budget_cells.is_none_or(|b| used_cells + members.len() <= b)
            && spec.budget_flops.is_none_or(|b| used_flops + flops <= b);
        if fits {
            (used_cells, used_flops, taken) = (used_cells + members.len(), used_flops + flops, taken + 1);
            cells.extend(members);
        }
    }
    cells.sort_unstable();
    let description = format!(
        "Random search (seed {}) over {}: {taken} of {total} configurations, {used_cells} cells, ≈ {} of training compute.",
        spec.seed,
        spec.axes.join(", "),
        human_flops(used_flops)
    );
    Ok(Selection { cells, description })
}
