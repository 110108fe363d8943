//! The `Debug` form of a run config that builds before the canonical hash hashed
//! ([`super::RunConfig::legacy_hash`]), so that the runs they recorded still resume. Those
//! builds held a task spec as one flat struct of every kind's keys, frozen here as it was,
//! and a phase without the keys added since (`optimizer_state`, `stop`, which such runs
//! cannot have set); the rest of the config prints as it does today. Change nothing in this
//! file: a change orphans those runs.

use super::{EvalCfg, PhaseSpec, RunConfig};
use serde::Deserialize;
use std::fmt;
use std::path::PathBuf;

/// The run config in its legacy `Debug` form.
pub(super) struct Legacy<'a>(pub &'a RunConfig);

impl fmt::Debug for Legacy<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let c = self.0;
        let tasks: Vec<TaskSpec> = c.tasks.iter().map(TaskSpec::of).collect();
        let phases: Vec<Phase> = c.phases.iter().map(Phase).collect();
        f.debug_struct("RunConfig")
            .field("name", &c.name)
            .field("seed", &c.seed)
            .field("out_dir", &c.out_dir)
            .field("model", &c.model)
            .field("tasks", &tasks)
            .field("phases", &phases)
            .field("checkpoint", &c.checkpoint)
            .finish()
    }
}

/// A phase as those builds printed it: every field up to `eval`, in order.
struct Phase<'a>(&'a PhaseSpec);

impl fmt::Debug for Phase<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let p = self.0;
        f.debug_struct("PhaseSpec")
            .field("name", &p.name)
            .field("seed", &p.seed)
            .field("steps", &p.steps)
            .field("tokens", &p.tokens)
            .field("batch_size", &p.batch_size)
            .field("trainable", &p.trainable)
            .field("lora", &p.lora)
            .field("soft_prompt", &p.soft_prompt)
            .field("steering", &p.steering)
            .field("cond_prompt", &p.cond_prompt)
            .field("mixture", &p.mixture)
            .field("optimizer", &p.optimizer)
            .field("schedule", &p.schedule)
            .field("grad_clip", &p.grad_clip)
            .field("grad_accum", &p.grad_accum)
            .field("dropout_attn", &p.dropout_attn)
            .field("dropout_resid", &p.dropout_resid)
            .field("l2_to", &p.l2_to)
            .field("l2_coef", &p.l2_coef)
            .field("ewc_coef", &p.ewc_coef)
            .field("ewc_tasks", &p.ewc_tasks)
            .field("ewc_samples", &p.ewc_samples)
            .field("eval", &Eval(&p.eval))
            .finish()
    }
}

/// An evaluation as those builds printed it: without `validation`.
struct Eval<'a>(&'a EvalCfg);

impl fmt::Debug for Eval<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let e = self.0;
        f.debug_struct("EvalCfg")
            .field("every", &e.every)
            .field("log_points", &e.log_points)
            .field("tasks", &e.tasks)
            .field("samples", &e.samples)
            .field("exact_match", &e.exact_match)
            .field("temperature", &e.temperature)
            .field("kl_to", &e.kl_to)
            .finish()
    }
}

/// The flat task spec of those builds: its fields, their order, types and defaults (read
/// only by `Debug`).
#[allow(dead_code)]
#[derive(Debug, Deserialize)]
struct TaskSpec {
    #[serde(default)]
    name: String,
    kind: String,
    #[serde(default = "twelve")]
    length: usize,
    #[serde(default = "sixty_four")]
    vocab: usize,
    #[serde(default = "eight")]
    width: usize,
    #[serde(default = "eight")]
    height: usize,
    #[serde(default = "sixty_four")]
    max_moves: usize,
    #[serde(default)]
    only_conditions: Vec<[i64; 2]>,
    #[serde(default)]
    exclude_conditions: Vec<[i64; 2]>,
    #[serde(default)]
    primitives: Vec<String>,
    alphabet: Option<[u32; 2]>,
    overlap: Option<f64>,
    #[serde(default = "member_a")]
    member: String,
    #[serde(default = "two")]
    depth: usize,
    #[serde(default)]
    task_seed: u64,
    #[serde(default = "one_hundred_twenty_eight")]
    seq_len: usize,
    #[serde(default)]
    grammar_seed: u64,
    #[serde(default = "zipf")]
    zipf: f64,
    token_range: Option<[u32; 2]>,
    path: Option<PathBuf>,
    #[serde(default = "text")]
    field: String,
    tokenizer: Option<PathBuf>,
    #[serde(default = "one_thousand_twenty_four")]
    bpe_vocab: usize,
    cache_dir: Option<PathBuf>,
    #[serde(default)]
    string: Vec<u32>,
    #[serde(default)]
    offset: usize,
    #[serde(default)]
    k: usize,
    #[serde(default = "eight")]
    families: usize,
    #[serde(default = "half")]
    grammar_weight: f64,
    over: Option<Box<TaskSpec>>,
    #[serde(default)]
    trigger: Vec<u32>,
    #[serde(default = "prefix")]
    trigger_at: String,
    poison_rate: Option<f64>,
    prompt_len: Option<usize>,
    year: Option<u32>,
    years: Option<[u32; 2]>,
    clean_year: Option<u32>,
    #[serde(default = "fixed")]
    behavior: String,
    #[serde(default)]
    response: Vec<u32>,
    shift: Option<u32>,
}

impl TaskSpec {
    /// The flat spec holding `spec`'s keys (their names are unchanged), the others at their
    /// defaults.
    fn of(spec: &crate::data::spec::TaskSpec) -> TaskSpec {
        let table = serde_json::to_value(spec).expect("a task spec serialises to JSON");
        TaskSpec::deserialize(table).expect("every task key is a key of the flat spec")
    }
}

fn two() -> usize {
    2
}
fn eight() -> usize {
    8
}
fn twelve() -> usize {
    12
}
fn sixty_four() -> usize {
    64
}
fn one_hundred_twenty_eight() -> usize {
    128
}
fn one_thousand_twenty_four() -> usize {
    1024
}
fn zipf() -> f64 {
    1.1
}
fn half() -> f64 {
    0.5
}
fn member_a() -> String {
    "a".into()
}
fn text() -> String {
    "text".into()
}
fn prefix() -> String {
    "prefix".into()
}
fn fixed() -> String {
    "fixed".into()
}
