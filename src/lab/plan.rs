//! The plan of an experiment: its cells with their sweep values, parameter counts, training
//! tokens and estimated compute, printed before running and saved as `plan.json`.

use super::experiment::{Cell, Experiment};
use crate::engine::layout::Layout;
use crate::train::build::{build, Tasks};
use crate::train::config::{RunConfig, Trainable};
use anyhow::Result;

/// One cell of the plan.
#[derive(Clone, Debug, serde::Serialize)]
pub struct PlannedCell {
    pub index: usize,
    pub id: String,
    /// `axis key = value` for each sweep axis.
    pub point: Vec<(String, String)>,
    pub params: usize,
    /// The model's vocabulary size.
    pub vocab: usize,
    pub tokens: u64,
    /// Estimated training FLOPs (evaluations not counted).
    pub flops: f64,
}

/// The plan of every cell.
pub fn plan(exp: &Experiment) -> Result<Vec<PlannedCell>> {
    plan_cells(&exp.cells)
}

/// The plan of `cells` (e.g. a halving search's rung).
pub fn plan_cells(cells: &[Cell]) -> Result<Vec<PlannedCell>> {
    cells
        .iter()
        .map(|c| {
            let built = build(&c.config)?;
            let params = Layout::new(&built.model).total;
            let (tokens, flops) = compute(&c.config, &built.tasks, params);
            let point = c.point.iter().map(|(k, v)| (k.clone(), v.to_string())).collect();
            Ok(PlannedCell {
                index: c.index,
                id: c.id.clone(),
                point,
                params,
                vocab: built.model.vocab_size,
                tokens,
                flops,
            })
        })
        .collect()
}

/// Training tokens and FLOPs of a run: per token, ≈ 6·N FLOPs when the weights train,
/// 4·N when only inputs or adapters train (forward + activation gradients), 2·N for none.
pub fn compute(cfg: &RunConfig, tasks: &Tasks, params: usize) -> (u64, f64) {
    let mut total = (0u64, 0.0f64);
    for p in &cfg.phases {
        let width = p.mixture.keys().filter_map(|t| tasks.get(t)).map(|t| t.seq_len()).max().unwrap_or(1) as u64;
        let tokens = p.steps * (p.batch_size * p.grad_accum) as u64 * width;
        let per_token = match p.trainable {
            Trainable::All | Trainable::AllButHead => 6.0,
            Trainable::None => 2.0,
            _ => 4.0,
        };
        total.0 += tokens;
        total.1 += per_token * params as f64 * tokens as f64;
    }
    total
}

/// A human-readable table of the plan.
pub fn render(exp: &Experiment, cells: &[PlannedCell]) -> String {
    let flops: f64 = cells.iter().map(|c| c.flops).sum();
    let mut out = format!(
        "experiment {} ({}): {} cells, ≈ {} of training compute\n",
        exp.name,
        exp.file.display(),
        cells.len(),
        human_flops(flops)
    );
    for c in cells {
        let point: Vec<String> = c.point.iter().map(|(k, v)| format!("{k}={v}")).collect();
        out.push_str(&format!(
            "  {:<40} {:>10} params {:>12} tokens {:>10}  {}\n",
            c.id,
            c.params,
            c.tokens,
            human_flops(c.flops),
            point.join(" ")
        ));
    }
    out
}

/// `3.2 TFLOP`-style.
pub fn human_flops(f: f64) -> String {
    let units = [(1e15, "PFLOP"), (1e12, "TFLOP"), (1e9, "GFLOP"), (1e6, "MFLOP")];
    units.iter().find(|(s, _)| f >= *s).map_or(format!("{f:.0} FLOP"), |(s, u)| format!("{:.1} {u}", f / s))
}
