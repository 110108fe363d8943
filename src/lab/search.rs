//! Search mode (`vestige run EXP --search maximize=OBJECTIVE`, the objective being the
//! study's, e.g. `backdoor.half_life`): instead of the whole grid, run a sample of
//! configurations of the `[search]` table's axes within a compute budget, each configuration
//! crossed with the other sweep axes (typically the seeds). The report then ranks the
//! configurations and shows which knobs matter.
//!
//! Two methods:
//! - `random`: a seeded random sample of whole configurations, run at the full length.
//! - `halving` (successive halving): `n0` sampled configurations run with the continue phase
//!   cut to `1/eta^(rungs-1)` of its steps; the best `1/eta` (at least one) run again at `eta`
//!   times the steps, and so on up to the full length, whose cells are the grid's own. `n0`
//!   is the largest number whose rungs fit the budget (for a FLOP budget, counting the most
//!   expensive survivors possible). The study shortens a lower rung's cells and scores a
//!   configuration ([`crate::lab::study::Study::score`]); at a short rung many half-lives
//!   are censored, so a [`Score`] ranks by a censored lower bound of persistence, ties
//!   broken by how much of the measured behavior remains at the horizon, then by the
//!   sampled order.
//!
//! Both depend only on the experiment, the plan, the spec and (for halving) the cells' results,
//! which are themselves deterministic.

use super::experiment::{Cell, Experiment};
use super::plan::{human_flops, plan_cells, PlannedCell};
use super::study::Study;
use super::sweep::{slug, Axis};
use crate::store::Store;
use anyhow::Context;
use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use serde::Deserialize;
use std::collections::BTreeMap;

/// The search methods.
pub const METHODS: [&str; 2] = ["random", "halving"];

/// The `[search]` table.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct SearchSpec {
    /// Sweep keys (as written in `[sweep]`) whose values the search samples.
    pub axes: Vec<String>,
    /// The budget: at most this many cells, or this much estimated training compute.
    pub budget_cells: Option<usize>,
    pub budget_flops: Option<f64>,
    /// `random` or `halving`.
    #[serde(default = "default_method")]
    pub method: String,
    /// Seed of the sampling order.
    #[serde(default)]
    pub seed: u64,
    /// Halving: the fraction `1/eta` kept at each rung and the factor between rung lengths.
    #[serde(default = "default_eta")]
    pub eta: usize,
    /// Halving: the number of rungs, the last at the full continue phase.
    #[serde(default = "default_rungs")]
    pub rungs: usize,
}

impl Default for SearchSpec {
    fn default() -> Self {
        SearchSpec {
            axes: Vec::new(),
            budget_cells: None,
            budget_flops: None,
            method: default_method(),
            seed: 0,
            eta: default_eta(),
            rungs: default_rungs(),
        }
    }
}

fn default_method() -> String {
    "random".into()
}
fn default_eta() -> usize {
    3
}
fn default_rungs() -> usize {
    3
}

impl SearchSpec {
    /// Range problems as `(key under search, message)`, given the sweep axes and study.
    pub fn problems(&self, axes: &[Axis], study: Option<&dyn Study>) -> Vec<(String, String)> {
        let mut out = Vec::new();
        let mut bad = |k: &str, m: String| out.push((k.to_string(), m));
        if !METHODS.contains(&self.method.as_str()) {
            bad("method", format!("{:?} is not one of {}", self.method, METHODS.join(", ")));
        }
        if self.axes.is_empty() {
            bad("axes", "give at least one [sweep] key to search over".into());
        }
        if let Some(a) = self.axes.iter().find(|a| !axes.iter().any(|x| &x.key == *a)) {
            let keys: Vec<&str> = axes.iter().map(|x| x.key.as_str()).collect();
            bad("axes", format!("{a:?} is not a [sweep] key; sweep keys: {keys:?}"));
        }
        match (self.budget_cells, self.budget_flops) {
            (Some(_), Some(_)) | (None, None) => {
                bad("budget_cells", "give exactly one of budget_cells, budget_flops".into())
            }
            (Some(0), _) => bad("budget_cells", "must be at least 1".into()),
            (_, Some(f)) if !(f > 0.0 && f.is_finite()) => bad("budget_flops", "must be a positive number".into()),
            _ => {}
        }
        if self.method == "halving" {
            if study.and_then(|s| s.objective()).is_none() {
                let name = study.map_or("none".to_string(), |s| format!("{:?}", s.name()));
                bad("method", format!("halving ranks by a study's objective and shortens its measured phase; template {name} has none"));
            }
            if self.eta < 2 {
                bad("eta", "must be at least 2".into());
            }
            if !(1..=8).contains(&self.rungs) {
                bad("rungs", "must be in 1..=8".into());
            }
        }
        out
    }

    /// How many times shorter the continue phase is at rung `k` (0 = shortest) than in full.
    pub fn divisor(&self, k: usize) -> u64 {
        (self.eta as u64).pow((self.rungs - 1 - k) as u32)
    }
}

/// The cells a search runs and a sentence saying how they were chosen.
#[derive(Clone, Debug, PartialEq)]
pub struct Selection {
    /// Cell indices, ascending.
    pub cells: Vec<usize>,
    pub description: String,
}

/// Checks `maximize=OBJECTIVE` against the study's objective; returns the objective.
pub fn objective(arg: &str, study: Option<&dyn Study>) -> Result<String, String> {
    let Some(wanted) = study.and_then(|s| s.objective()) else {
        let name = study.map_or("none".to_string(), |s| format!("{:?}", s.name()));
        return Err(format!("--search {arg:?}: template {name} has no objective to search for"));
    };
    match arg.split_once('=') {
        Some(("maximize", o)) if o == wanted => Ok(o.to_string()),
        _ => Err(format!("--search {arg:?}: expected maximize={wanted}")),
    }
}

/// The configurations of `spec.axes` (each a list of cell indices, over the other axes) in
/// the seeded random order the search visits them.
pub fn configurations(exp: &Experiment, spec: &SearchSpec) -> Vec<Vec<usize>> {
    let mut configs: BTreeMap<Vec<String>, Vec<usize>> = BTreeMap::new();
    for cell in &exp.cells {
        let key = cell.point.iter().filter(|(k, _)| spec.axes.contains(k)).map(|(_, v)| slug(v)).collect();
        configs.entry(key).or_default().push(cell.index);
    }
    let mut order: Vec<Vec<usize>> = configs.into_values().collect();
    order.shuffle(&mut ChaCha8Rng::seed_from_u64(spec.seed));
    order
}

/// Random search: samples configurations of `spec.axes` in a seeded random order and keeps
/// each whose cells still fit the budget; `flops[i]` is cell `i`'s estimated compute.
pub fn select(exp: &Experiment, spec: &SearchSpec, flops: &[f64]) -> Result<Selection, String> {
    check(exp, spec, "random")?;
    let order = configurations(exp, spec);
    let total = order.len();
    let (mut cells, mut used_cells, mut used_flops, mut taken) = (Vec::new(), 0usize, 0.0f64, 0usize);
    for members in order {
        let cost: f64 = members.iter().map(|&i| flops[i]).sum();
        let fits = spec.budget_cells.is_none_or(|b| used_cells + members.len() <= b)
            && spec.budget_flops.is_none_or(|b| used_flops + cost <= b);
        if fits {
            (used_cells, used_flops, taken) = (used_cells + members.len(), used_flops + cost, taken + 1);
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

/// The spec's problems as one message, or a method other than `method`.
fn check(exp: &Experiment, spec: &SearchSpec, method: &str) -> Result<(), String> {
    if let Some((k, m)) = spec.problems(&exp.axes, exp.study.as_deref()).into_iter().next() {
        return Err(format!("search.{k}: {m}"));
    }
    if spec.method != method {
        return Err(format!("search.method: expected {method:?}, found {:?}", spec.method));
    }
    Ok(())
}

/// Configurations per rung: `n0`, then each rung keeps `1/eta` of the last (at least one).
pub fn rung_sizes(n0: usize, eta: usize, rungs: usize) -> Vec<usize> {
    let mut sizes = vec![n0];
    for _ in 1..rungs {
        let last = *sizes.last().expect("a first rung");
        sizes.push((last / eta).max(1));
    }
    sizes
}

/// A successive-halving search before it runs.
#[derive(Clone, Debug, PartialEq)]
pub struct Halving {
    /// The sampled configurations (cell indices of the grid, which are also the indices of
    /// the same configuration's cells at every rung), in the order that breaks ties.
    pub configs: Vec<Vec<usize>>,
    /// Configurations run at each rung.
    pub sizes: Vec<usize>,
    pub description: String,
}

/// Plans a halving search: the largest `n0` whose rungs fit the budget. `flops[k][i]` is the
/// compute of cell `i` at rung `k`.
pub fn plan_halving(exp: &Experiment, spec: &SearchSpec, flops: &[Vec<f64>]) -> Result<Halving, String> {
    check(exp, spec, "halving")?;
    let order = configurations(exp, spec);
    let cost = |n0: usize| -> (usize, f64) {
        let sizes = rung_sizes(n0, spec.eta, spec.rungs);
        let (mut cells, mut total) = (0, 0.0);
        for (k, &n) in sizes.iter().enumerate() {
            let mut costs: Vec<f64> = order[..n0].iter().map(|c| c.iter().map(|&i| flops[k][i]).sum()).collect();
            costs.sort_by(|a, b| b.total_cmp(a));
            total += costs[..n].iter().sum::<f64>();
            let mut sizes: Vec<usize> = order[..n0].iter().map(Vec::len).collect();
            sizes.sort_unstable_by(|a, b| b.cmp(a));
            cells += sizes[..n].iter().sum::<usize>();
        }
        (cells, total)
    };
    let fits = |(cells, total): (usize, f64)| {
        spec.budget_cells.is_none_or(|b| cells <= b) && spec.budget_flops.is_none_or(|b| total <= b)
    };
    let n0 = (1..=order.len()).take_while(|&n| fits(cost(n))).last().ok_or_else(|| {
        let (cells, total) = cost(1);
        format!(
            "search: one configuration through {} rungs needs {cells} cells and ≈ {}, more than the budget",
            spec.rungs,
            human_flops(total)
        )
    })?;
    let sizes = rung_sizes(n0, spec.eta, spec.rungs);
    let (cells, total) = cost(n0);
    let steps: Vec<String> = (0..spec.rungs).map(|k| format!("1/{}", spec.divisor(k))).collect();
    let description = format!(
        "Successive halving (seed {}, eta {}) over {}: {} of {} configurations; configurations per rung {:?} at \
         {} of the continue phase; at most {cells} cells, ≈ {} of training compute.",
        spec.seed,
        spec.eta,
        spec.axes.join(", "),
        n0,
        order.len(),
        sizes,
        steps.join(", "),
        human_flops(total)
    );
    Ok(Halving { configs: order[..n0].to_vec(), sizes, description })
}

/// A configuration's standing at a rung; larger is better, compared in field order.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Score {
    /// Mean over seeds of the half-life where reached, else the horizon (a lower bound).
    pub persistence: f64,
    /// Mean over seeds of the fraction of the measured behavior remaining at the horizon
    /// (1 − the fraction of the way to its floor it moved).
    pub remaining: f64,
}

impl Score {
    /// The means over `seeds` seeds of each finished cell's `(persistence, remaining)`; a
    /// seed without a finished cell, or a non-finite value, counts as 0.
    pub fn mean_over(per_cell: impl IntoIterator<Item = (f64, f64)>, cells: usize, seeds: usize) -> Score {
        let finite = |x: f64| if x.is_finite() { x } else { 0.0 };
        let (p, r) = per_cell.into_iter().fold((0.0, 0.0), |(p, r), (a, b)| (p + finite(a), r + finite(b)));
        let n = seeds.max(cells).max(1) as f64;
        Score { persistence: p / n, remaining: r / n }
    }
}

/// The positions of `scores`, best first: by persistence, then remaining, then position.
pub fn ranking(scores: &[Score]) -> Vec<usize> {
    let mut ranked: Vec<usize> = (0..scores.len()).collect();
    ranked.sort_by(|&a, &b| {
        let (x, y) = (scores[a], scores[b]);
        y.persistence.total_cmp(&x.persistence).then(y.remaining.total_cmp(&x.remaining)).then(a.cmp(&b))
    });
    ranked
}

/// The positions of the `keep` best scores (see [`ranking`]), ascending.
pub fn survivors(scores: &[Score], keep: usize) -> Vec<usize> {
    let mut ranked = ranking(scores);
    ranked.truncate(keep);
    ranked.sort_unstable();
    ranked
}

/// A halving search laid out for running, locally or on Slurm: each rung's cells, their
/// compute, the cells' sizes and the plan.
pub struct Ladder<'a> {
    /// The cells of each rung: the experiment's lower rungs, then the grid's cells.
    pub rungs: Vec<&'a [Cell]>,
    /// `flops[k][i]`: the compute of cell `i` at rung `k`.
    pub flops: Vec<Vec<f64>>,
    /// Each cell's parameter count (the same at every rung).
    pub params: Vec<usize>,
    pub plan: Halving,
}

impl<'a> Ladder<'a> {
    /// Lays out the halving search `spec` of `exp`, whose grid's cells are `planned`.
    pub fn new(exp: &'a Experiment, spec: &SearchSpec, planned: &[PlannedCell]) -> anyhow::Result<Ladder<'a>> {
        let rungs: Vec<&[Cell]> = exp.rungs.iter().map(Vec::as_slice).chain([exp.cells.as_slice()]).collect();
        let mut flops = Vec::new();
        for cells in &exp.rungs {
            flops.push(plan_cells(cells)?.iter().map(|c| c.flops).collect::<Vec<f64>>());
        }
        flops.push(planned.iter().map(|c| c.flops).collect());
        let plan = plan_halving(exp, spec, &flops).map_err(anyhow::Error::msg)?;
        Ok(Ladder { rungs, flops, params: planned.iter().map(|c| c.params).collect(), plan })
    }

    /// The configurations (positions in `plan.configs`) that go on to rung `k` (> 0) from
    /// `alive`, those run at rung `k - 1`: the best by the study's scores of their finished
    /// rung `k - 1` cells in `store`.
    pub fn promote(&self, exp: &Experiment, store: &Store, k: usize, alive: &[usize]) -> anyhow::Result<Vec<usize>> {
        let study = exp.study.as_deref().context("a halving search needs a study to score its configurations")?;
        let mut scores = Vec::new();
        for &p in alive {
            scores.push(study.score(exp, store, self.rungs[k - 1], &self.plan.configs[p], &self.params)?);
        }
        Ok(survivors(&scores, self.plan.sizes[k]).into_iter().map(|j| alive[j]).collect())
    }

    /// The cells (indices, ascending within each configuration) of configurations `alive`.
    pub fn cells(&self, alive: &[usize]) -> Vec<usize> {
        alive.iter().flat_map(|&p| self.plan.configs[p].iter().copied()).collect()
    }
}
