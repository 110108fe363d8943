//! The run configuration: one TOML file describing the model, the tasks and the ordered
//! phases of a run. Unknown keys are rejected, ranges are checked before any compute (each
//! task kind checks its own keys, see [`crate::data::spec`]), and every error names the
//! file, the key path and its line.

use super::batching::Insert;
use super::canonical::canonical_json;
use super::locate::line_of;
use super::reinforce::{environment, RlCfg};
use super::token_search::TokenSearchCfg;
pub use crate::data::spec::TaskSpec;
use crate::data::spec::{Base, Kind};
use crate::data::Task;
use crate::engine::lora::Proj;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

mod legacy;

/// A whole run.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RunConfig {
    /// Run name (the directory under `out_dir`).
    pub name: String,
    /// Seed for initialisation, data order, dropout and prompts.
    #[serde(default)]
    pub seed: u64,
    /// Where runs are written.
    #[serde(default = "default_out_dir")]
    pub out_dir: PathBuf,
    #[serde(default)]
    pub model: ModelSpec,
    /// Named task definitions that phases mix and evaluate.
    pub tasks: Vec<TaskSpec>,
    /// The phases, in order.
    pub phases: Vec<PhaseSpec>,
    #[serde(default)]
    pub checkpoint: CheckpointSpec,
}

fn default_out_dir() -> PathBuf {
    PathBuf::from("runs")
}

/// The model: loaded from a Hugging Face directory, or initialised fresh.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct ModelSpec {
    /// A local HF model directory to start from (the other keys are then ignored).
    pub load: Option<PathBuf>,
    /// `gpt_neox`, `gpt2` or `llama`.
    pub arch: String,
    pub d_model: usize,
    pub n_layers: usize,
    pub n_heads: usize,
    /// Defaults to `4 · d_model`.
    pub d_ff: Option<usize>,
    pub max_positions: usize,
    /// Defaults to the largest task vocabulary.
    pub vocab_size: Option<usize>,
    pub init_std: f32,
}

impl Default for ModelSpec {
    fn default() -> Self {
        ModelSpec {
            load: None,
            arch: "gpt_neox".into(),
            d_model: 64,
            n_layers: 2,
            n_heads: 4,
            d_ff: None,
            max_positions: 128,
            vocab_size: None,
            init_std: 0.02,
        }
    }
}

/// What a phase trains.
#[derive(Clone, Copy, Debug, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum Trainable {
    All,
    /// Every weight but the untied output head (the unembedding), which stays as it was: the
    /// control that separates drift of the output rows from forgetting.
    AllButHead,
    None,
    Lora,
    SoftPrompt,
    /// A steering vector added to one residual stream.
    Steering,
    /// A conditional soft prompt: an MLP maps each sample's condition vector (see
    /// [`CondSource`]) to its own prompt vectors, prepended.
    CondPrompt,
    /// A discrete prompt of vocabulary tokens, searched with the model frozen (see
    /// [`crate::train::token_search`]).
    Tokens,
}

impl Trainable {
    /// Whether it trains the model's weights in place (all of them, or all but the head).
    pub fn trains_weights(self) -> bool {
        matches!(self, Trainable::All | Trainable::AllButHead)
    }
}

/// LoRA settings.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct LoraCfg {
    pub rank: usize,
    #[serde(default = "default_alpha")]
    pub alpha: f32,
    #[serde(default = "all_projections")]
    pub targets: Vec<Proj>,
}

fn default_alpha() -> f32 {
    16.0
}
fn all_projections() -> Vec<Proj> {
    Proj::ALL.to_vec()
}

/// Soft-prompt settings.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct SoftPromptCfg {
    /// Prompt length; 0 (with `trainable = "none"`) evaluates the frozen model under the same
    /// insertion and masking, the 0-token baseline of a prompt-length sweep.
    pub tokens: usize,
    /// Standard deviation of the normal init (0: zero init).
    #[serde(default = "default_prompt_std")]
    pub init_std: f32,
    /// `prepend` or `random` (see [`crate::train::batching`] for the masking).
    #[serde(default)]
    pub insert: Insert,
}

/// Steering-vector settings: `coef · v` is added to residual stream `layer` (the input of
/// block `layer`; `n_layers` is the final norm's input) at slots `start..end`.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct SteeringCfg {
    pub layer: usize,
    #[serde(default = "one_f32")]
    pub coef: f32,
    #[serde(default)]
    pub start: usize,
    /// End slot (exclusive); default: the whole sequence.
    pub end: Option<usize>,
    /// `[with, without]`: the vector starts as the mean difference of residual stream
    /// `read_layer` (default `layer`) at the answer positions between the first `samples`
    /// training samples of task `with` and of task `without`, computed at the phase start
    /// (see [`crate::train::steering`]); otherwise at zero.
    pub from: Option<[String; 2]>,
    pub read_layer: Option<usize>,
    #[serde(default = "default_steer_samples")]
    pub samples: usize,
    /// Ablation: remove `coef` of the component along the vector instead of adding
    /// `coef · vector` (a fixed vector: `trainable = "none"`).
    #[serde(default)]
    pub project: bool,
}

fn default_steer_samples() -> usize {
    64
}

/// Conditional soft-prompt settings.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct CondPromptCfg {
    pub tokens: usize,
    /// Hidden width per prompt token (the reference study used 128).
    #[serde(default = "default_hidden")]
    pub hidden: usize,
    #[serde(default)]
    pub condition: CondSource,
    /// `sample` conditions are multiplied by this before the MLP.
    #[serde(default = "one_f32")]
    pub scale: f32,
}

/// What a conditional prompt is conditioned on.
#[derive(Clone, Copy, Debug, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum CondSource {
    /// The one-hot id of each sample's task (its position in the phase's `mixture`, sorted
    /// by name; all zeros for a task outside it).
    #[default]
    Task,
    /// Each sample's own [`crate::data::Sample::conditions`] (pathfinding: extra and invalid
    /// moves of its path), times `scale`.
    Sample,
}

/// The conditional prompt MLP's default hidden width per token (the reference study's).
pub fn default_hidden() -> usize {
    128
}

fn one_f32() -> f32 {
    1.0
}

fn default_prompt_std() -> f32 {
    0.1
}

/// The optimizer.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct OptimizerCfg {
    /// `adamw` or `sgd`.
    pub kind: String,
    pub lr: f32,
    pub betas: [f32; 2],
    pub eps: f32,
    pub weight_decay: f32,
    /// SGD momentum.
    pub momentum: f32,
}

impl Default for OptimizerCfg {
    fn default() -> Self {
        OptimizerCfg {
            kind: "adamw".into(),
            lr: 1e-3,
            betas: [0.9, 0.999],
            eps: 1e-8,
            weight_decay: 0.0,
            momentum: 0.9,
        }
    }
}

/// The learning-rate schedule: linear warm-up, then constant, cosine or linear decay.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct ScheduleCfg {
    /// `constant`, `cosine` or `linear`.
    pub kind: String,
    pub warmup_steps: u64,
    /// Final learning rate as a fraction of `lr` (decaying schedules).
    pub min_lr_ratio: f32,
}

impl Default for ScheduleCfg {
    fn default() -> Self {
        ScheduleCfg { kind: "constant".into(), warmup_steps: 0, min_lr_ratio: 0.0 }
    }
}

/// What a phase's optimizer starts from.
#[derive(Clone, Copy, Debug, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum OptimizerStart {
    /// Fresh moments and step count (bias correction starts over).
    #[default]
    Reset,
    /// The previous phase's moments and step count (same trainable set and optimizer kind).
    Carry,
}

/// When a phase ends before its `steps` cap: checked at each of its evaluations after its
/// first step, on one evaluated task's metric.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct StopCfg {
    /// An evaluated task of the phase, or several (a threshold then holds for all of them).
    pub task: TaskNames,
    /// One of its held-out metrics (`loss`, `exact_match`, …).
    pub metric: String,
    /// Stop once the metric is at least this value …
    pub at_least: Option<f64>,
    /// … or at most this value …
    pub at_most: Option<f64>,
    /// … or once this many evaluations in a row improved on the phase's best by less than
    /// `min_improvement` (relative), improvement meaning lower for `direction = "min"`.
    pub patience: Option<usize>,
    #[serde(default)]
    pub min_improvement: f64,
    #[serde(default)]
    pub direction: Direction,
}

/// One task name or a list of them.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(untagged)]
pub enum TaskNames {
    One(String),
    Many(Vec<String>),
}

impl TaskNames {
    pub fn names(&self) -> &[String] {
        match self {
            TaskNames::One(name) => std::slice::from_ref(name),
            TaskNames::Many(names) => names,
        }
    }
}

/// Which way a metric improves.
#[derive(Clone, Copy, Debug, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum Direction {
    #[default]
    Min,
    Max,
}

impl StopCfg {
    /// Whether the phase stops after the evaluations `values` (this phase's, in step order,
    /// the latest last).
    pub fn met(&self, values: &[f64]) -> bool {
        let Some(&last) = values.last() else { return false };
        if let Some(v) = self.at_least {
            return last >= v;
        }
        if let Some(v) = self.at_most {
            return last <= v;
        }
        let Some(patience) = self.patience else { return false };
        let better = |x: f64, best: f64| match self.direction {
            Direction::Min => x < best - self.min_improvement * best.abs(),
            Direction::Max => x > best + self.min_improvement * best.abs(),
        };
        let mut best = values[0];
        let mut stale = 0;
        for &x in &values[1..] {
            if better(x, best) {
                best = x;
                stale = 0;
            } else {
                stale += 1;
            }
        }
        stale >= patience
    }
}

/// When and what to evaluate.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct EvalCfg {
    /// Evaluate every N steps (linear schedule); 0 disables unless `log_points` is set.
    pub every: u64,
    /// Evaluate at this many log-spaced steps instead.
    pub log_points: usize,
    /// Tasks to evaluate (default: the phase's mixture).
    pub tasks: Vec<String>,
    /// Held-out samples per task.
    pub samples: usize,
    /// Also log `val_loss`, the loss on this many validation samples per task (eval indices
    /// from [`crate::data::SELECTION_OFFSET`], disjoint from the reported ones), for choosing
    /// a learning rate, restart or stopping step apart from the reported loss; 0: none.
    pub validation: usize,
    /// Also measure exact match and the task's scorers on generated answers.
    pub exact_match: bool,
    /// Generate those answers by sampling at this temperature (seeded by the run seed, the
    /// same for every cell); 0: greedy decoding.
    pub temperature: f32,
    /// Measure forgetting against the model as it was at the end of this earlier phase:
    /// `forgetting_kl` (KL from that model's next-token distribution to the current one) and
    /// `forgetting_ce` (cross-entropy of the current model against it), per scored token.
    pub kl_to: Option<String>,
}

impl Default for EvalCfg {
    fn default() -> Self {
        EvalCfg {
            every: 0,
            log_points: 0,
            tasks: Vec::new(),
            samples: 64,
            validation: 0,
            exact_match: true,
            temperature: 0.0,
            kl_to: None,
        }
    }
}

/// One phase of a run.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct PhaseSpec {
    pub name: String,
    /// Seed of this phase's data order, initialisation and prompt positions (default: the
    /// run's seed). Restarts of a phase differ here; the held-out sets follow the run's seed.
    pub seed: Option<u64>,
    /// Length in optimizer steps (give this or `tokens`).
    #[serde(default)]
    pub steps: u64,
    /// Length in tokens: the phase runs `ceil(tokens / (batch_size · grad_accum · L))`
    /// steps, where `L` is the longest sample of its mixture (the padded batch width).
    pub tokens: Option<u64>,
    #[serde(default = "default_batch")]
    pub batch_size: usize,
    #[serde(default = "default_trainable")]
    pub trainable: Trainable,
    pub lora: Option<LoraCfg>,
    pub soft_prompt: Option<SoftPromptCfg>,
    pub steering: Option<SteeringCfg>,
    pub cond_prompt: Option<CondPromptCfg>,
    pub token_search: Option<TokenSearchCfg>,
    /// Sampling-based training in an environment (see [`crate::train::reinforce`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rl: Option<RlCfg>,
    /// Task name → sampling weight.
    pub mixture: BTreeMap<String, f64>,
    #[serde(default)]
    pub optimizer: OptimizerCfg,
    #[serde(default)]
    pub schedule: ScheduleCfg,
    /// Clip the global gradient norm to this value.
    pub grad_clip: Option<f32>,
    #[serde(default = "one")]
    pub grad_accum: usize,
    #[serde(default)]
    pub dropout_attn: f32,
    #[serde(default)]
    pub dropout_resid: f32,
    /// Anchor for the L2-to-reference penalty: `init` or the name of an earlier phase.
    pub l2_to: Option<String>,
    #[serde(default)]
    pub l2_coef: f32,
    /// Diagonal-Fisher (EWC) penalty strength; the Fisher is estimated at the phase start.
    #[serde(default)]
    pub ewc_coef: f32,
    /// Tasks whose gradients estimate the Fisher (default: the previous phase's mixture).
    #[serde(default)]
    pub ewc_tasks: Vec<String>,
    #[serde(default = "default_ewc_samples")]
    pub ewc_samples: usize,
    #[serde(default)]
    pub eval: EvalCfg,
    /// What the optimizer starts from: `reset` (default) or `carry` (the previous phase's).
    #[serde(default)]
    pub optimizer_state: OptimizerStart,
    /// End the phase early (its `steps` then being a cap); the step it stopped at is logged
    /// as task `stop`, metric `step`.
    pub stop: Option<StopCfg>,
    /// Prepends the discrete prompt an earlier `trainable = "tokens"` phase found to this
    /// phase's training samples of the listed tasks (weight 0, like a trigger): e.g.
    /// anti-backdoor data made with a recovered trigger.
    pub prefix_from: Option<PrefixFrom>,
    /// Applies, fixed, the soft prompt or steering vector an earlier phase trained or
    /// computed (its saved `soft_prompt.<phase>` or `steering.<phase>` file) while this phase
    /// trains and evaluates: e.g. fine-tuning a model under its detuning prompt.
    pub apply_from: Option<String>,
}

/// Where a phase's training prefix comes from.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct PrefixFrom {
    /// The earlier phase whose prompt (`prompt_tokens.<phase>.safetensors`) is prepended.
    pub phase: String,
    /// The tasks of this phase's mixture whose samples get it.
    pub tasks: Vec<String>,
}

fn default_batch() -> usize {
    16
}
fn default_trainable() -> Trainable {
    Trainable::All
}
fn one() -> usize {
    1
}
fn default_ewc_samples() -> usize {
    64
}

/// Checkpointing.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct CheckpointSpec {
    /// Save every N steps (0: only at phase ends, which are always saved and pinned).
    pub every: u64,
    /// Unpinned checkpoints kept.
    pub keep_last: usize,
}

impl Default for CheckpointSpec {
    fn default() -> Self {
        CheckpointSpec { every: 0, keep_last: 3 }
    }
}

/// A configuration error: file, line, key path and what is allowed.
#[derive(Debug, thiserror::Error)]
#[error("{file}:{line}: {key}: {message}")]
pub struct ConfigError {
    pub file: String,
    pub line: usize,
    pub key: String,
    pub message: String,
}

impl ConfigError {
    /// The text of the config file at `path`, or an error naming it.
    pub fn read(path: &Path) -> Result<String, ConfigError> {
        std::fs::read_to_string(path).map_err(|e| ConfigError {
            file: path.display().to_string(),
            line: 0,
            key: String::new(),
            message: format!("cannot read: {e}"),
        })
    }
}

/// A range or reference problem found after parsing.
struct Problem {
    key: String,
    message: String,
}

/// `x > 0` (false for NaN).
fn positive(x: f32) -> bool {
    x > 0.0
}

/// `x ≥ 0` (false for NaN).
fn non_negative(x: f32) -> bool {
    x >= 0.0
}

fn problem(key: impl Into<String>, message: impl Into<String>) -> Problem {
    Problem { key: key.into(), message: message.into() }
}

/// The first `[[tasks]]` table of `text` that is not a task spec, as a problem at its key:
/// the TOML parse reports a task's errors at the start of its table, without the key.
fn task_table_problem(text: &str) -> Option<Problem> {
    let doc: toml::Table = toml::from_str(text).ok()?;
    doc.get("tasks")?.as_array()?.iter().enumerate().find_map(|(i, t)| {
        let e = TaskSpec::from_table(t.clone().try_into().ok()?).err()?;
        Some(problem(format!("tasks[{i}].{}", e.key), e.message))
    })
}

impl RunConfig {
    /// Reads, parses and validates a config file.
    pub fn from_file(path: &Path) -> Result<Self, ConfigError> {
        Self::from_toml(&ConfigError::read(path)?, &path.display().to_string())
    }

    /// Parses and validates TOML text; `file` names it in errors.
    pub fn from_toml(text: &str, file: &str) -> Result<Self, ConfigError> {
        let at_key =
            |p: Problem| ConfigError { file: file.into(), line: line_of(text, &p.key), key: p.key, message: p.message };
        let cfg: RunConfig = toml::from_str(text).map_err(|e| match task_table_problem(text) {
            Some(p) => at_key(p),
            None => {
                let line = e.span().map_or(0, |s| text[..s.start].lines().count().max(1));
                let line = if e.span().is_some_and(|s| text[..s.start].ends_with('\n')) { line + 1 } else { line };
                ConfigError { file: file.into(), line, key: "(parse)".into(), message: e.message().trim().to_string() }
            }
        })?;
        let mut cfg = cfg;
        let lengths = cfg.problems().map_err(at_key)?;
        cfg.resolve_token_lengths(&lengths);
        Ok(cfg)
    }

    /// Converts phases given in tokens into steps (see [`PhaseSpec::tokens`]), given each
    /// task's sample length.
    fn resolve_token_lengths(&mut self, lengths: &BTreeMap<String, u64>) {
        for p in &mut self.phases {
            if let Some(tokens) = p.tokens {
                let width = p.mixture.keys().map(|t| lengths[t.as_str()]).max().unwrap_or(1);
                p.steps = tokens.div_ceil(p.batch_size as u64 * p.grad_accum as u64 * width).max(1);
            }
        }
    }

    /// Every range and reference check; the first problem is reported. Without problems,
    /// the sample length of every task.
    fn problems(&self) -> Result<BTreeMap<String, u64>, Problem> {
        let mut out = Vec::new();
        let mut built = Vec::new();
        let m = &self.model;
        if self.name.is_empty() || self.name.contains(['/', '\\']) {
            out.push(problem("name", "must be a non-empty name without path separators"));
        }
        if !["gpt_neox", "gpt2", "llama"].contains(&m.arch.as_str()) {
            out.push(problem("model.arch", format!("{:?} is not one of \"gpt_neox\", \"gpt2\", \"llama\"", m.arch)));
        }
        for (key, v) in [("model.d_model", m.d_model), ("model.n_layers", m.n_layers), ("model.n_heads", m.n_heads)] {
            if v == 0 {
                out.push(problem(key, "must be at least 1"));
            }
        }
        if m.n_heads > 0 && !m.d_model.is_multiple_of(m.n_heads) {
            out.push(problem("model.n_heads", format!("must divide d_model = {}", m.d_model)));
        }
        if !(m.init_std > 0.0 && m.init_std.is_finite()) {
            out.push(problem("model.init_std", "must be a positive number"));
        }
        if self.tasks.is_empty() {
            out.push(problem("tasks", "define at least one [[tasks]] entry"));
        }
        let names: Vec<&str> = self.tasks.iter().map(|t| t.name.as_str()).collect();
        for (i, t) in self.tasks.iter().enumerate() {
            let key = |k: &str| format!("tasks[{i}].{k}");
            if t.name.is_empty() {
                out.push(problem(key("name"), "give the task a name"));
            }
            if names.iter().filter(|n| **n == t.name).count() > 1 {
                out.push(problem(key("name"), format!("task name {:?} is used twice", t.name)));
            }
            if let Err(e) = t.check() {
                out.push(problem(key(&e.key), e.message));
                continue;
            }
            let task = match super::build::build_task(t) {
                Ok(task) => task,
                Err(e) => {
                    let nested = matches!(t.kind.base(), Some(Base::Over { .. }));
                    out.push(problem(key(if nested { "over.path" } else { "path" }), e.to_string()));
                    continue;
                }
            };
            let longest = task.seq_len();
            if longest > m.max_positions && m.load.is_none() {
                let msg = format!("samples reach {longest} tokens, above model.max_positions = {}", m.max_positions);
                out.push(problem(key("kind"), msg));
            }
            if let Err(e) = t.check_length(longest) {
                out.push(problem(key(&e.key), e.message));
            }
            built.push((i, task));
        }
        if let Some(v) = m.vocab_size {
            let too_big = built.iter().find(|(_, task)| task.vocab_size() > v);
            if let Some((i, task)) = too_big {
                let need = task.vocab_size();
                out.push(problem(
                    format!("tasks[{i}].vocab"),
                    format!("the task needs {need} tokens, above model.vocab_size = {v}"),
                ));
            }
        }
        if self.phases.is_empty() {
            out.push(problem("phases", "define at least one [[phases]] entry"));
        }
        for (i, p) in self.phases.iter().enumerate() {
            self.phase_problems(i, p, &names, &mut out);
            self.prompt_fits(i, p, &built, &mut out);
        }
        match out.into_iter().next() {
            Some(p) => Err(p),
            None => Ok(built.iter().map(|(i, task)| (self.tasks[*i].name.clone(), task.seq_len() as u64)).collect()),
        }
    }

    /// A fresh model must have positions for the longest task sample plus the soft prompt.
    fn prompt_fits(&self, i: usize, p: &PhaseSpec, built: &[(usize, Arc<dyn Task>)], out: &mut Vec<Problem>) {
        let tokens = [
            p.soft_prompt.as_ref().map(|s| s.tokens),
            p.cond_prompt.as_ref().map(|c| c.tokens),
            p.token_search.as_ref().map(|t| t.tokens),
        ]
        .into_iter()
        .max()
        .flatten();
        let Some(tokens) = tokens.filter(|_| self.model.load.is_none()) else { return };
        let used = p.mixture.keys().chain(&p.eval.tasks);
        let longest =
            used.filter_map(|t| built.iter().find(|(k, _)| &self.tasks[*k].name == t)).map(|(_, t)| t.seq_len());
        let need = longest.max().unwrap_or(0) + tokens;
        if need > self.model.max_positions {
            let msg = format!(
                "{tokens} prompt tokens + the longest sample need {need} positions, above model.max_positions = {}",
                self.model.max_positions
            );
            out.push(problem(
                format!(
                    "phases[{i}].{}",
                    match (&p.soft_prompt, &p.cond_prompt) {
                        (Some(_), _) => "soft_prompt.tokens",
                        (_, Some(_)) => "cond_prompt.tokens",
                        _ => "token_search.tokens",
                    }
                ),
                msg,
            ));
        }
    }

    fn phase_problems(&self, i: usize, p: &PhaseSpec, tasks: &[&str], out: &mut Vec<Problem>) {
        let key = |k: &str| format!("phases[{i}].{k}");
        let unit = |x: f32| (0.0..1.0).contains(&x);
        if self.phases[..i].iter().any(|q| q.name == p.name) {
            out.push(problem(key("name"), format!("phase name {:?} is used twice", p.name)));
        }
        match (p.steps, p.tokens) {
            (0, None) => out.push(problem(key("steps"), "give the phase length as steps = N or tokens = N")),
            (s, Some(_)) if s > 0 => out.push(problem(key("tokens"), "give either steps or tokens, not both")),
            (_, Some(0)) => out.push(problem(key("tokens"), "must be at least 1")),
            _ => {}
        }
        for (k, v) in [("batch_size", p.batch_size as u64), ("grad_accum", p.grad_accum as u64)] {
            if v == 0 {
                out.push(problem(key(k), "must be at least 1"));
            }
        }
        if p.mixture.is_empty() {
            out.push(problem(key("mixture"), "name at least one task with a positive weight"));
        }
        for (t, w) in &p.mixture {
            if !tasks.contains(&t.as_str()) {
                out.push(problem(
                    format!("{}.{t}", key("mixture")),
                    format!("unknown task {t:?}; defined tasks: {tasks:?}"),
                ));
            } else if !(*w > 0.0 && w.is_finite()) {
                out.push(problem(format!("{}.{t}", key("mixture")), "weight must be a positive number"));
            }
        }
        for (j, t) in p.eval.tasks.iter().chain(&p.ewc_tasks).enumerate() {
            if !tasks.contains(&t.as_str()) {
                let k = if j < p.eval.tasks.len() {
                    format!("eval.tasks[{j}]")
                } else {
                    format!("ewc_tasks[{}]", j - p.eval.tasks.len())
                };
                out.push(problem(key(&k), format!("unknown task {t:?}; defined tasks: {tasks:?}")));
            }
        }
        let o = &p.optimizer;
        if !["adamw", "sgd"].contains(&o.kind.as_str()) {
            out.push(problem(key("optimizer.kind"), format!("{:?} is not one of \"adamw\", \"sgd\"", o.kind)));
        }
        if !(o.lr > 0.0 && o.lr.is_finite()) {
            out.push(problem(key("optimizer.lr"), "must be a positive number"));
        }
        if !(unit(o.betas[0]) && unit(o.betas[1])) {
            out.push(problem(key("optimizer.betas"), "each beta must be in [0, 1)"));
        }
        if !positive(o.eps) {
            out.push(problem(key("optimizer.eps"), "must be positive"));
        }
        if !non_negative(o.weight_decay) {
            out.push(problem(key("optimizer.weight_decay"), "must be at least 0"));
        }
        if !unit(o.momentum) {
            out.push(problem(key("optimizer.momentum"), "must be in [0, 1)"));
        }
        let s = &p.schedule;
        if !["constant", "cosine", "linear"].contains(&s.kind.as_str()) {
            out.push(problem(
                key("schedule.kind"),
                format!("{:?} is not one of \"constant\", \"cosine\", \"linear\"", s.kind),
            ));
        }
        if p.tokens.is_none() && s.warmup_steps > p.steps {
            out.push(problem(key("schedule.warmup_steps"), format!("exceeds the phase's {} steps", p.steps)));
        }
        if !(0.0..=1.0).contains(&s.min_lr_ratio) {
            out.push(problem(key("schedule.min_lr_ratio"), "must be in [0, 1]"));
        }
        if p.grad_clip.is_some_and(|c| !positive(c)) {
            out.push(problem(key("grad_clip"), "must be positive"));
        }
        for (k, v) in [("dropout_attn", p.dropout_attn), ("dropout_resid", p.dropout_resid)] {
            if !unit(v) {
                out.push(problem(key(k), "must be in [0, 1)"));
            }
        }
        for (k, v) in [("l2_coef", p.l2_coef), ("ewc_coef", p.ewc_coef)] {
            if !(non_negative(v) && v.is_finite()) {
                out.push(problem(key(k), "must be at least 0"));
            }
        }
        if let Some(anchor) = &p.l2_to {
            if anchor != "init" && !self.phases[..i].iter().any(|q| &q.name == anchor) {
                out.push(problem(key("l2_to"), format!("{anchor:?} is neither \"init\" nor an earlier phase")));
            }
        }
        if p.l2_coef > 0.0 && p.l2_to.is_none() {
            out.push(problem(key("l2_coef"), "needs l2_to (\"init\" or an earlier phase)"));
        }
        if p.optimizer_state == OptimizerStart::Carry {
            match i.checked_sub(1).map(|j| &self.phases[j]) {
                None => out.push(problem(key("optimizer_state"), "the first phase has no optimizer to carry")),
                Some(q) if q.optimizer.kind != p.optimizer.kind => out.push(problem(
                    key("optimizer_state"),
                    format!("carry needs the previous phase's optimizer kind ({:?})", q.optimizer.kind),
                )),
                Some(q)
                    if (q.trainable, &q.lora, &q.soft_prompt, &q.steering, &q.cond_prompt)
                        != (p.trainable, &p.lora, &p.soft_prompt, &p.steering, &p.cond_prompt) =>
                {
                    out.push(problem(key("optimizer_state"), "carry needs the previous phase's trainable set"))
                }
                Some(_) => {}
            }
        }
        if let Some(stop) = &p.stop {
            for t in stop.task.names() {
                let evaluated =
                    if p.eval.tasks.is_empty() { p.mixture.contains_key(t) } else { p.eval.tasks.contains(t) };
                if !evaluated {
                    out.push(problem(key("stop.task"), format!("{t:?} is not evaluated in this phase")));
                }
            }
            if stop.task.names().is_empty() {
                out.push(problem(key("stop.task"), "name at least one task"));
            }
            if stop.patience.is_some() && stop.task.names().len() > 1 {
                out.push(problem(key("stop.task"), "patience watches one task"));
            }
            if p.eval.every == 0 && p.eval.log_points == 0 {
                out.push(problem(key("stop"), "needs evaluations (eval.every or eval.log_points)"));
            }
            let given = [stop.at_least.is_some(), stop.at_most.is_some(), stop.patience.is_some()];
            if given.iter().filter(|&&g| g).count() != 1 {
                out.push(problem(key("stop"), "give exactly one of at_least, at_most, patience"));
            }
            if stop.patience == Some(0) {
                out.push(problem(key("stop.patience"), "must be at least 1"));
            }
            if !(non_negative(stop.min_improvement as f32) && stop.min_improvement.is_finite()) {
                out.push(problem(key("stop.min_improvement"), "must be at least 0"));
            }
        }
        if p.ewc_coef > 0.0 && i == 0 && p.ewc_tasks.is_empty() {
            out.push(problem(key("ewc_coef"), "the first phase needs ewc_tasks to estimate the Fisher"));
        }
        if (p.l2_coef > 0.0 || p.ewc_coef > 0.0) && !p.trainable.trains_weights() {
            out.push(problem(key("trainable"), "l2_coef and ewc_coef regularise weights: use trainable = \"all\""));
        }
        match (p.trainable, &p.lora, &p.soft_prompt) {
            (Trainable::Lora, None, _) => {
                out.push(problem(key("lora"), "trainable = \"lora\" needs a [phases.lora] table"))
            }
            (Trainable::SoftPrompt, _, None) => {
                out.push(problem(key("soft_prompt"), "trainable = \"soft_prompt\" needs a [phases.soft_prompt] table"))
            }
            _ => {}
        }
        match (&p.token_search, p.trainable) {
            (None, Trainable::Tokens) => {
                out.push(problem(key("token_search"), "trainable = \"tokens\" needs a [phases.token_search] table"))
            }
            (Some(_), t) if t != Trainable::Tokens => {
                out.push(problem(key("token_search"), "only trainable = \"tokens\" searches a discrete prompt"))
            }
            (Some(ts), _) => {
                out.extend(ts.problems().into_iter().map(|(k, m)| problem(key(&format!("token_search.{k}")), m)));
                if p.grad_accum != 1 {
                    out.push(problem(
                        key("grad_accum"),
                        "a token search scores one batch per step: use grad_accum = 1",
                    ));
                }
            }
            _ => {}
        }
        match (&p.cond_prompt, p.trainable) {
            (None, Trainable::CondPrompt) => {
                out.push(problem(key("cond_prompt"), "trainable = \"cond_prompt\" needs a [phases.cond_prompt] table"))
            }
            (Some(c), _) if c.tokens == 0 || c.hidden == 0 => {
                out.push(problem(key("cond_prompt"), "tokens and hidden must be at least 1"))
            }
            (Some(c), _) if !(positive(c.scale) && c.scale.is_finite()) => {
                out.push(problem(key("cond_prompt.scale"), "must be a positive number"))
            }
            (Some(c), Trainable::CondPrompt) if c.condition == CondSource::Sample => {
                let plain = p.mixture.keys().chain(&p.eval.tasks).find(|t| {
                    let spec = self.tasks.iter().find(|s| &&s.name == t);
                    spec.is_some_and(|s| !matches!(s.kind, Kind::Pathfinding(_)))
                });
                if let Some(t) = plain {
                    out.push(problem(
                        key("cond_prompt.condition"),
                        format!("task {t:?} has no per-sample conditions (only pathfinding tasks do); use condition = \"task\""),
                    ));
                }
            }
            _ => {}
        }
        if !(non_negative(p.eval.temperature) && p.eval.temperature.is_finite()) {
            out.push(problem(key("eval.temperature"), "must be a number ≥ 0 (0: greedy)"));
        }
        match (&p.steering, p.trainable) {
            (None, Trainable::Steering) => {
                out.push(problem(key("steering"), "trainable = \"steering\" needs a [phases.steering] table"))
            }
            (Some(st), _)
                if self.model.load.is_none()
                    && st.read_layer.unwrap_or(st.layer).max(st.layer) > self.model.n_layers =>
            {
                out.push(problem(
                    key("steering.layer"),
                    format!(
                        "layer and read_layer must be at most model.n_layers = {} (the final norm's input)",
                        self.model.n_layers
                    ),
                ))
            }
            (Some(st), _) if st.end.is_some_and(|e| e <= st.start) => {
                out.push(problem(key("steering.end"), "must be greater than steering.start"))
            }
            (Some(st), Trainable::Steering) if st.project => out.push(problem(
                key("steering.project"),
                "a projected direction is fixed: use trainable = \"none\" with steering.from",
            )),
            (Some(st), Trainable::None) if st.from.is_none() => out.push(problem(
                key("steering.from"),
                "a fixed steering vector (trainable = \"none\") needs from = [with_task, without_task]",
            )),
            (Some(st), _) if st.from.as_ref().is_some_and(|f| f.iter().any(|t| !tasks.contains(&t.as_str()))) => {
                out.push(problem(key("steering.from"), format!("names a task not in [[tasks]]: {:?}", st.from)))
            }
            (Some(st), t) if t != Trainable::Steering && t != Trainable::None => out.push(problem(
                key("steering"),
                "a steering vector goes with trainable = \"steering\" (learned) or \"none\" (fixed)",
            )),
            _ => {}
        }
        if let Some(l) = &p.lora {
            if l.rank == 0 {
                out.push(problem(key("lora.rank"), "must be at least 1"));
            }
        }
        match (&p.soft_prompt, p.trainable) {
            (Some(sp), Trainable::SoftPrompt) if sp.tokens == 0 => {
                out.push(problem(key("soft_prompt.tokens"), "must be at least 1 (0 needs trainable = \"none\")"))
            }
            (Some(sp), t) if t != Trainable::SoftPrompt && sp.tokens > 0 => out.push(problem(
                key("soft_prompt.tokens"),
                "only trainable = \"soft_prompt\" trains a prompt; use tokens = 0 for the frozen baseline",
            )),
            (Some(sp), _) if sp.insert != Insert::Prepend && p.eval.kl_to.is_some() => {
                out.push(problem(key("eval.kl_to"), "forgetting is measured with prepended prompts only"))
            }
            _ => {}
        }
        if p.eval.samples == 0 {
            out.push(problem(key("eval.samples"), "must be at least 1"));
        }
        if let Some(from) = &p.apply_from {
            match self.phases[..i].iter().find(|q| &q.name == from) {
                None => out.push(problem(key("apply_from"), format!("{from:?} is not an earlier phase"))),
                Some(q)
                    if !(matches!(q.trainable, Trainable::SoftPrompt | Trainable::Steering)
                        || q.trainable == Trainable::None && q.steering.is_some()) =>
                {
                    out.push(problem(
                        key("apply_from"),
                        format!("phase {from:?} leaves no soft prompt or steering vector"),
                    ))
                }
                Some(q) if q.trainable == Trainable::SoftPrompt && p.trainable == Trainable::SoftPrompt => out.push(
                    problem(key("apply_from"), "a carried prompt and a trained prompt cannot share the prompt slots"),
                ),
                _ if matches!(p.trainable, Trainable::Steering | Trainable::Tokens | Trainable::CondPrompt) => out
                    .push(problem(
                        key("apply_from"),
                        "applies with trainable = all, all_but_head, lora, soft_prompt or none",
                    )),
                _ => {}
            }
        }
        if let Some(from) = &p.prefix_from {
            if !self.phases[..i].iter().any(|q| q.name == from.phase && q.trainable == Trainable::Tokens) {
                out.push(problem(
                    key("prefix_from.phase"),
                    format!("{:?} is not an earlier trainable = \"tokens\" phase", from.phase),
                ));
            }
            if let Some(t) = from.tasks.iter().find(|t| !p.mixture.contains_key(*t)) {
                out.push(problem(key("prefix_from.tasks"), format!("{t:?} is not in this phase's mixture")));
            }
        }
        if let Some(anchor) = &p.eval.kl_to {
            if !self.phases[..i].iter().any(|q| &q.name == anchor) {
                out.push(problem(key("eval.kl_to"), format!("{anchor:?} is not an earlier phase")));
            }
        }
        if let Some(rl) = &p.rl {
            self.rl_problems(i, p, rl, out);
        }
    }

    /// The checks of a sampling-based phase's `[phases.rl]` table.
    fn rl_problems(&self, i: usize, p: &PhaseSpec, rl: &RlCfg, out: &mut Vec<Problem>) {
        let key = |k: &str| format!("phases[{i}].{k}");
        out.extend(rl.problems().into_iter().map(|(k, m)| problem(key(&format!("rl.{k}")), m)));
        if !matches!(p.trainable, Trainable::All | Trainable::Lora) {
            out.push(problem(key("trainable"), "a sampling-based phase trains the weights: use \"all\" or \"lora\""));
        }
        if p.grad_accum != 1 {
            out.push(problem(key("grad_accum"), "a sampling-based phase trains on one batch per step: use 1"));
        }
        if p.token_search.is_some() || p.prefix_from.is_some() || p.apply_from.is_some() {
            out.push(problem(key("rl"), "a sampling-based phase takes no token_search, prefix_from or apply_from"));
        }
        match environment(rl, &self.tasks) {
            Err(m) => out.push(problem(key("rl.env"), m)),
            Ok(env) => {
                let need = env.task().vocab_size() + rl.n_conditions();
                if self.model.vocab_size.is_some_and(|v| v < need)
                    || (self.model.vocab_size.is_none() && rl.n_conditions() > 0)
                {
                    out.push(problem(
                        "model.vocab_size",
                        format!(
                            "phases[{i}].rl needs {need} tokens: the environment's and one condition token per bin"
                        ),
                    ));
                }
            }
        }
        if let Some(anchor) = &rl.kl_to {
            if !self.phases[..i].iter().any(|q| &q.name == anchor) {
                out.push(problem(key("rl.kl_to"), format!("{anchor:?} is not an earlier phase")));
            }
        }
    }

    /// A stable hash of the configuration's meaning, used to refuse resuming a run with a
    /// different config: 24 hex digits of the SHA-256 of its [`canonical_json`] form. The
    /// rule: a key whose value equals the value it takes when absent from the TOML (a
    /// default, an unset option) does not count, so writing a default out, the order of keys
    /// and tables, and a field added later with a default leave the hash as it is; any
    /// other value changes it. Where results are written (`out_dir`) is not part of the
    /// meaning, so an experiment moved to another directory still resumes.
    pub fn hash(&self) -> String {
        let anywhere = RunConfig { out_dir: default_out_dir(), ..self.clone() };
        short_sha256(&canonical_json(&anywhere))
    }

    /// The hash that builds before [`RunConfig::hash`] recorded: of the `Debug` form, with
    /// task specs in the flat form of those builds (`config/legacy.rs`). It recognises a run
    /// they stored only while the other parts' `Debug` forms are what they were then, i.e. no
    /// model, phase or checkpoint field has been added, removed, renamed or reordered since.
    pub fn legacy_hash(&self) -> String {
        short_sha256(&format!("{:?}", legacy::Legacy(self)))
    }
}

/// The first 12 bytes of the SHA-256 of `text`, in hex.
pub(crate) fn short_sha256(text: &str) -> String {
    use sha2::{Digest, Sha256};
    Sha256::digest(text.as_bytes()).iter().take(12).map(|b| format!("{b:02x}")).collect()
}
