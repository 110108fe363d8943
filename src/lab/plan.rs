//! The plan of an experiment: its cells with their sweep values, parameter counts, training
//! tokens and estimated compute, printed before running and saved as `plan.json`.

use super::experiment::{Cell, Experiment};
use crate::engine::layout::Layout;
use crate::train::build::{build, Tasks};
use crate::train::config::{PhaseSpec, RunConfig, Trainable};
use crate::train::reinforce::Source;
use crate::train::shared_base;
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
    /// The key of a first phase the lab shares between cells (see
    /// [`crate::train::shared_base`]) and that phase's FLOPs, which cells with the same key
    /// spend once between them.
    pub shared: Option<(String, f64)>,
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
            let shared = shared_base::key(&c.config, &built.model)
                .map(|k| (k, phase_compute(&c.config.phases[0], &built.tasks, params).1));
            let point = c.point.iter().map(|(k, v)| (k.clone(), v.to_string())).collect();
            Ok(PlannedCell {
                index: c.index,
                id: c.id.clone(),
                point,
                params,
                vocab: built.model.vocab_size,
                tokens,
                flops,
                shared,
            })
        })
        .collect()
}

/// Training tokens and FLOPs of a run (see [`phase_compute`]).
pub fn compute(cfg: &RunConfig, tasks: &Tasks, params: usize) -> (u64, f64) {
    cfg.phases.iter().map(|p| phase_compute(p, tasks, params)).fold((0, 0.0), |(t, f), (u, g)| (t + u, f + g))
}

/// Training tokens (prompt slots included) and FLOPs of one phase: per token, ≈ 6·N FLOPs
/// when the weights train, 4·N when only inputs or adapters train (forward + activation
/// gradients), 2·N for none. A discrete prompt search counts every token it passes through
/// the model: per step its batch once forward and backward (GCG's gradient, 4·N) and once
/// forward per scored candidate (2·N), see
/// [`crate::train::token_search::TokenSearchCfg::passes`]. A sampling-based phase counts
/// its samples' forward, their training and its prediction batch (see
/// [`crate::train::reinforce`]).
pub fn phase_compute(p: &PhaseSpec, tasks: &Tasks, params: usize) -> (u64, f64) {
    let longest = p.mixture.keys().filter_map(|t| tasks.get(t)).map(|t| t.seq_len()).max().unwrap_or(1) as u64;
    let prompt = match p.trainable {
        Trainable::SoftPrompt => p.soft_prompt.as_ref().map_or(0, |s| s.tokens),
        Trainable::CondPrompt => p.cond_prompt.as_ref().map_or(0, |c| c.tokens),
        Trainable::Tokens => p.token_search.as_ref().map_or(0, |t| t.tokens),
        _ => 0,
    };
    // Prompt slots pass through the model like tokens.
    let width = longest + prompt as u64;
    if let (Trainable::Tokens, Some(ts)) = (p.trainable, &p.token_search) {
        let sequence = p.steps * p.batch_size as u64 * width;
        let (forward_backward, forward) = ts.passes();
        let flops = (4 * forward_backward + 2 * forward) as f64 * params as f64 * sequence as f64;
        return (sequence * (forward_backward + forward), flops);
    }
    if let Some(rl) = &p.rl {
        // Sampling (a forward), training (forward and backward), the log-probability
        // forwards a KL penalty or entropy bonus needs; the condition token; the prediction
        // batch.
        let env = tasks.get(&rl.env).map_or(longest, |t| t.seq_len() as u64) + 1;
        let sequences = p.steps * (rl.prompts * rl.k) as u64;
        let shaped = f64::from(u8::from(rl.kl_coef > 0.0 || rl.entropy_coef > 0.0) + u8::from(rl.kl_coef > 0.0));
        let predicted = if rl.prediction > 0.0 { p.steps * p.batch_size as u64 * longest } else { 0 };
        let sampled = if rl.source == Source::Samples { 2.0 } else { 0.0 };
        let flops =
            ((6.0 + sampled + 2.0 * shaped) * (sequences * env) as f64 + 6.0 * predicted as f64) * params as f64;
        return (sequences * env + predicted, flops);
    }
    let tokens = p.steps * (p.batch_size * p.grad_accum) as u64 * width;
    let per_token = match p.trainable {
        t if t.trains_weights() => 6.0,
        Trainable::None => 2.0,
        _ => 4.0,
    };
    (tokens, per_token * params as f64 * tokens as f64)
}

/// The training FLOPs of `cells` with every shared first phase counted once.
pub fn total_flops(cells: &[PlannedCell]) -> f64 {
    let mut seen = std::collections::BTreeSet::new();
    let repeated = cells.iter().filter_map(|c| c.shared.as_ref()).filter(|(key, _)| !seen.insert(key.clone()));
    cells.iter().map(|c| c.flops).sum::<f64>() - repeated.map(|(_, f)| f).sum::<f64>()
}

/// A human-readable table of the plan; a cell's FLOPs include its first phase, which the
/// total counts once per shared base.
pub fn render(exp: &Experiment, cells: &[PlannedCell]) -> String {
    let bases: std::collections::BTreeSet<&String> =
        cells.iter().filter_map(|c| c.shared.as_ref().map(|s| &s.0)).collect();
    let sharing = match bases.len() {
        0 => String::new(),
        n => format!(" ({n} shared first phases, each counted once)"),
    };
    let mut out = format!(
        "experiment {} ({}): {} cells, ≈ {} of training compute{sharing}\n",
        exp.name,
        exp.file.display(),
        cells.len(),
        human_flops(total_flops(cells))
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
