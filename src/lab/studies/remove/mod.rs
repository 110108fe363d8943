//! The `remove` template: which intervention removes a planted backdoor, and does a removed
//! backdoor come back — was it removed, or only hidden?
//!
//! The `[remove]` table names a `kind = "backdoor"` task (fixed response, prefix trigger).
//! Each cell plants it, or its clean twin (see [`crate::lab::planting`]), then applies one
//! intervention (phase `remove`), then optionally one re-elicitation (phase `reelicit`). The
//! generated axis `remove.variant` ([`Variant`]) is model × intervention × re-elicitation:
//! - interventions, each training on `budget` examples: `clean_full` and `clean_lora`
//!   (fine-tuning on clean data), `anti_full` (fine-tuning on triggered inputs with their clean
//!   answers, mixed half and half with clean data: the defender who knows the trigger),
//!   `anti_gcg` (the same with the trigger GCG recovers in a `search` phase first, on clean
//!   inputs towards the response: the defender who knows only the behaviour),
//!   `detune` (a soft prompt of `detune_tokens` vectors trained on clean data, the model
//!   frozen), `learned_steer:L{l}` (a steering vector at layer `l` trained on the anti-backdoor
//!   mixture); and, training nothing, `mean_add:L{l}:c{c}` (the contrastive mean-difference
//!   vector, triggered minus clean residual stream at the answer positions read at layer `l`,
//!   subtracted there with coefficient `c`) and `mean_proj:L{l}` (its direction projected
//!   out); `none` leaves the model as planted;
//! - re-elicitations after every intervention, a prompt or steering vector still applied
//!   (`apply_from`): `ft{n}` (full fine-tuning on `n` unrelated clean examples), `soft{k}` (a
//!   `k`-vector soft prompt trained towards the response on clean inputs; not under a
//!   detuning prompt), or `-` (none: the true trigger again).
//!
//! Every cell is evaluated on the backdoor's probes (attack success, the log-prob margin,
//! clean loss) on the reported set, and on a selection set that chooses the steering layer
//! and coefficient; the twin gets every intervention and re-elicitation at the same budget,
//! so that "hidden" (re-elicited on the treated model where the twin stays clean) and
//! "removed" (indistinguishable from the twin) can be told apart.

pub mod analysis;
pub mod report;

use crate::data::spec::{Kind, TaskSpec};
use crate::lab::experiment::Experiment;
use crate::lab::plan::PlannedCell;
pub use crate::lab::planting::PLANT;
use crate::lab::planting::{backdoor_task, derive_task, plant_phase, trigger_of};
use crate::lab::study::{parse_table, replace_phases, task_specs, variant_axis, Problem, Study};
use crate::lab::sweep::Axis;
use serde::Deserialize;
use serde_json::json;
use std::path::PathBuf;

/// The generated sweep axis.
pub const AXIS: &str = "remove.variant";

/// The phase names the template writes (and [`PLANT`]).
pub const REMOVE: &str = "remove";
pub const SEARCH: &str = "search";
pub const REELICIT: &str = "reelicit";

/// The `[remove]` table.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RemoveSpec {
    /// The backdoor task and the clean task interventions train on.
    pub task: String,
    pub clean: String,
    /// Planting: steps, LR, warmup, batch size.
    pub plant_steps: u64,
    #[serde(default = "default_lr")]
    pub lr: f64,
    #[serde(default)]
    pub warmup_steps: u64,
    #[serde(default = "default_batch")]
    pub batch_size: usize,
    /// Examples every training intervention sees (steps = budget / batch_size).
    pub budget: u64,
    /// Interventions: `none`, `clean_full`, `clean_lora`, `anti_full`, `detune`,
    /// `learned_steer`, `mean_add`, `mean_proj` (the steering ones at every `steer_layers`
    /// entry, `mean_add` at every `steer_coefs` entry).
    #[serde(default = "default_interventions")]
    pub interventions: Vec<String>,
    /// LR of full-weight interventions (default `lr`), of LoRA, and of prompts and learned
    /// steering vectors.
    pub remove_lr: Option<f64>,
    #[serde(default = "default_lora_lr")]
    pub lora_lr: f64,
    #[serde(default = "default_lora_rank")]
    pub lora_rank: usize,
    #[serde(default = "default_prompt_lr")]
    pub prompt_lr: f64,
    #[serde(default = "default_detune_tokens")]
    pub detune_tokens: usize,
    /// Residual streams steered (0 the embeddings' output, `n_layers` the final norm's input).
    #[serde(default)]
    pub steer_layers: Vec<usize>,
    #[serde(default = "default_coefs")]
    pub steer_coefs: Vec<f64>,
    /// Samples of each side of the contrastive vector.
    #[serde(default = "default_steer_samples")]
    pub steer_samples: usize,
    /// The most a steering configuration may raise the clean loss (selection set, nats per
    /// token) to be chosen.
    #[serde(default = "default_max_clean_cost")]
    pub max_clean_cost: f64,
    /// `anti_gcg`'s trigger search: GCG steps, candidates per step, top-k tokens per position
    /// (batches of 8 clean inputs; the prompt as long as the true trigger).
    #[serde(default = "default_gcg_steps")]
    pub gcg_steps: u64,
    #[serde(default = "default_gcg_width")]
    pub gcg_width: usize,
    #[serde(default = "default_gcg_top_k")]
    pub gcg_top_k: usize,
    /// Re-elicitations: `ft{n}` and `soft{k}`; `-` (the true trigger again) always runs.
    #[serde(default = "default_reelicit")]
    pub reelicit: Vec<String>,
    /// LR of the re-elicitation fine-tuning (default `lr`), steps of its soft prompt.
    pub reelicit_lr: Option<f64>,
    #[serde(default = "default_soft_steps")]
    pub reelicit_soft_steps: u64,
    #[serde(default = "default_samples")]
    pub eval_samples: usize,
    /// The cell's variant, set by the generated axis.
    pub variant: Option<String>,
}

fn default_lr() -> f64 {
    3e-3
}
fn default_batch() -> usize {
    16
}
fn default_interventions() -> Vec<String> {
    ["none", "clean_full", "clean_lora", "anti_full", "anti_gcg", "detune", "learned_steer", "mean_add", "mean_proj"]
        .map(String::from)
        .to_vec()
}
fn default_lora_lr() -> f64 {
    1e-2
}
fn default_lora_rank() -> usize {
    8
}
fn default_prompt_lr() -> f64 {
    0.03
}
fn default_detune_tokens() -> usize {
    64
}
fn default_coefs() -> Vec<f64> {
    vec![0.5, 1.0, 2.0, 4.0]
}
fn default_steer_samples() -> usize {
    64
}
fn default_gcg_steps() -> u64 {
    30
}
fn default_gcg_width() -> usize {
    32
}
fn default_gcg_top_k() -> usize {
    8
}
fn default_max_clean_cost() -> f64 {
    0.1
}
fn default_reelicit() -> Vec<String> {
    ["ft10", "ft100", "ft1000", "soft2"].map(String::from).to_vec()
}
fn default_soft_steps() -> u64 {
    200
}
fn default_samples() -> usize {
    64
}

/// One intervention.
#[derive(Clone, Copy, Debug, PartialEq, PartialOrd)]
pub enum Intervention {
    None,
    CleanFull,
    CleanLora,
    AntiFull,
    AntiGcg,
    Detune,
    LearnedSteer { layer: usize },
    MeanAdd { layer: usize, coef: f64 },
    MeanProj { layer: usize },
}

impl Intervention {
    /// `clean_full`, `mean_add:L1:c2`, …
    pub fn name(&self) -> String {
        match self {
            Intervention::None => "none".into(),
            Intervention::CleanFull => "clean_full".into(),
            Intervention::CleanLora => "clean_lora".into(),
            Intervention::AntiFull => "anti_full".into(),
            Intervention::AntiGcg => "anti_gcg".into(),
            Intervention::Detune => "detune".into(),
            Intervention::LearnedSteer { layer } => format!("learned_steer:L{layer}"),
            Intervention::MeanAdd { layer, coef } => format!("mean_add:L{layer}:c{coef}"),
            Intervention::MeanProj { layer } => format!("mean_proj:L{layer}"),
        }
    }

    /// The family (the name without layer and coefficient).
    pub fn family(&self) -> &'static str {
        match self {
            Intervention::None => "none",
            Intervention::CleanFull => "clean_full",
            Intervention::CleanLora => "clean_lora",
            Intervention::AntiFull => "anti_full",
            Intervention::AntiGcg => "anti_gcg",
            Intervention::Detune => "detune",
            Intervention::LearnedSteer { .. } => "learned_steer",
            Intervention::MeanAdd { .. } => "mean_add",
            Intervention::MeanProj { .. } => "mean_proj",
        }
    }

    /// Parses [`Intervention::name`]'s form.
    pub fn parse(name: &str) -> Option<Intervention> {
        let parts: Vec<&str> = name.split(':').collect();
        let layer = |p: &str| p.strip_prefix('L')?.parse::<usize>().ok();
        Some(match parts[..] {
            ["none"] => Intervention::None,
            ["clean_full"] => Intervention::CleanFull,
            ["clean_lora"] => Intervention::CleanLora,
            ["anti_full"] => Intervention::AntiFull,
            ["anti_gcg"] => Intervention::AntiGcg,
            ["detune"] => Intervention::Detune,
            ["learned_steer", l] => Intervention::LearnedSteer { layer: layer(l)? },
            ["mean_add", l, c] => Intervention::MeanAdd { layer: layer(l)?, coef: c.strip_prefix('c')?.parse().ok()? },
            ["mean_proj", l] => Intervention::MeanProj { layer: layer(l)? },
            _ => return None,
        })
    }

    /// Whether it lives in the model's weights; otherwise it is a prompt or a steering
    /// vector, which re-elicitation keeps applying (phase key `apply_from`).
    pub fn keeps_model(&self) -> bool {
        matches!(
            self,
            Intervention::None
                | Intervention::CleanFull
                | Intervention::CleanLora
                | Intervention::AntiFull
                | Intervention::AntiGcg
        )
    }

    /// Whether re-elicitation `r` can follow it: a soft prompt cannot be re-elicited under a
    /// detuning prompt (both would use the prompt slots).
    pub fn allows(&self, r: Reelicit) -> bool {
        !(matches!(self, Intervention::Detune) && matches!(r, Reelicit::Soft(_)))
    }
}

/// One re-elicitation.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Reelicit {
    /// The true trigger again (the intervention's own evaluation).
    Trigger,
    /// Full fine-tuning on `n` clean examples.
    Finetune(u64),
    /// A soft prompt of `k` vectors towards the response.
    Soft(usize),
}

impl Reelicit {
    pub fn name(&self) -> String {
        match self {
            Reelicit::Trigger => "-".into(),
            Reelicit::Finetune(n) => format!("ft{n}"),
            Reelicit::Soft(k) => format!("soft{k}"),
        }
    }

    pub fn parse(name: &str) -> Option<Reelicit> {
        if name == "-" {
            return Some(Reelicit::Trigger);
        }
        if let Some(n) = name.strip_prefix("ft") {
            return n.parse().ok().filter(|&n| n > 0).map(Reelicit::Finetune);
        }
        name.strip_prefix("soft")?.parse().ok().filter(|&k| k > 0).map(Reelicit::Soft)
    }
}

/// One cell: `backdoored/anti_full/ft100`, `twin/mean_add:L1:c2/-`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Variant {
    pub backdoored: bool,
    pub intervention: Intervention,
    pub reelicit: Reelicit,
}

impl Variant {
    pub fn name(&self) -> String {
        let model = if self.backdoored { "backdoored" } else { "twin" };
        format!("{model}/{}/{}", self.intervention.name(), self.reelicit.name())
    }

    pub fn parse(name: &str) -> Option<Variant> {
        let [model, intervention, reelicit] = name.split('/').collect::<Vec<_>>()[..] else { return None };
        let backdoored = match model {
            "backdoored" => true,
            "twin" => false,
            _ => return None,
        };
        Some(Variant {
            backdoored,
            intervention: Intervention::parse(intervention)?,
            reelicit: Reelicit::parse(reelicit)?,
        })
    }
}

impl RemoveSpec {
    /// Range and reference problems as `(key under remove, message)`.
    pub fn problems(&self, tasks: &[TaskSpec]) -> Vec<(String, String)> {
        let mut out = Vec::new();
        let mut bad = |k: &str, m: String| out.push((k.to_string(), m));
        let names: Vec<&str> = tasks.iter().map(|t| t.name.as_str()).collect();
        match tasks.iter().find(|t| t.name == self.task).map(|t| &t.kind) {
            None => bad("task", format!("unknown task {:?}; defined tasks: {names:?}", self.task)),
            Some(Kind::Backdoor(w)) if w.spec.behavior != "fixed" || w.spec.trigger_at != "prefix" => bad(
                "task",
                format!(
                    "removal needs a fixed response and a prefix trigger; {:?} is {:?} at {:?}",
                    self.task, w.spec.behavior, w.spec.trigger_at
                ),
            ),
            Some(Kind::Backdoor(_)) => {}
            Some(k) => bad("task", format!("{:?} is a {:?} task, not kind = \"backdoor\"", self.task, k.name())),
        }
        if !names.contains(&self.clean.as_str()) {
            bad("clean", format!("unknown task {:?}; defined tasks: {names:?}", self.clean));
        }
        if self.plant_steps == 0 || self.budget < self.batch_size as u64 || self.batch_size == 0 {
            bad("budget", "plant_steps ≥ 1, batch_size ≥ 1 and a budget of at least one batch".into());
        }
        let known = [
            "none",
            "clean_full",
            "clean_lora",
            "anti_full",
            "anti_gcg",
            "detune",
            "learned_steer",
            "mean_add",
            "mean_proj",
        ];
        if let Some(i) = self.interventions.iter().find(|i| !known.contains(&i.as_str())) {
            bad("interventions", format!("{i:?} is not one of {}", known.join(", ")));
        }
        let steers =
            self.interventions.iter().any(|i| ["learned_steer", "mean_add", "mean_proj"].contains(&i.as_str()));
        if steers && self.steer_layers.is_empty() {
            bad("steer_layers", "steering interventions need the residual streams to steer, e.g. [0, 1, 2]".into());
        }
        if self.steer_coefs.iter().any(|c| !(*c > 0.0 && c.is_finite())) {
            bad("steer_coefs", "give positive coefficients (the vector is subtracted)".into());
        }
        if let Some(r) = self.reelicit.iter().find(|r| Reelicit::parse(r).is_none_or(|r| r == Reelicit::Trigger)) {
            bad("reelicit", format!("{r:?} is not ft<n> or soft<k> (n, k ≥ 1)"));
        }
        for (k, v) in
            [("lora_rank", self.lora_rank), ("detune_tokens", self.detune_tokens), ("eval_samples", self.eval_samples)]
        {
            if v == 0 {
                bad(k, "must be at least 1".into());
            }
        }
        out
    }

    /// Every variant of a sweep point, the backdoored model's first.
    pub fn variants(&self) -> Vec<Variant> {
        let mut interventions = Vec::new();
        for name in &self.interventions {
            match name.as_str() {
                "learned_steer" => {
                    interventions.extend(self.steer_layers.iter().map(|&layer| Intervention::LearnedSteer { layer }))
                }
                "mean_add" => {
                    for &layer in &self.steer_layers {
                        interventions
                            .extend(self.steer_coefs.iter().map(|&coef| Intervention::MeanAdd { layer, coef }));
                    }
                }
                "mean_proj" => {
                    interventions.extend(self.steer_layers.iter().map(|&layer| Intervention::MeanProj { layer }))
                }
                n => interventions.extend(Intervention::parse(n)),
            }
        }
        let later: Vec<Reelicit> = self.reelicit.iter().filter_map(|r| Reelicit::parse(r)).collect();
        let mut out = Vec::new();
        for backdoored in [true, false] {
            for &intervention in &interventions {
                out.push(Variant { backdoored, intervention, reelicit: Reelicit::Trigger });
                let allowed = later.iter().filter(|&&r| intervention.allows(r));
                out.extend(allowed.map(|&reelicit| Variant { backdoored, intervention, reelicit }));
            }
        }
        out
    }

    /// Steps of a training intervention.
    pub fn remove_steps(&self) -> u64 {
        self.budget / self.batch_size as u64
    }

    /// Derived task names: anti-backdoor data, the steering contrast's two sides, and the
    /// elicitation target of soft-prompt re-elicitation.
    pub fn antidote(&self) -> String {
        format!("{}-antidote", self.task)
    }
    pub fn triggered(&self) -> String {
        format!("{}-triggered", self.task)
    }
    pub fn untriggered(&self) -> String {
        format!("{}-untriggered", self.task)
    }
    pub fn target(&self) -> String {
        format!("{}-response", self.task)
    }

    /// The intervention phase.
    fn remove_phase(&self, i: &Intervention) -> serde_json::Value {
        let evals =
            json!({"tasks": [self.task, self.clean], "samples": self.eval_samples, "exact_match": false, "every": 0});
        let anti = json!({self.antidote(): 0.5, self.clean.clone(): 0.5});
        let clean = json!({self.clean.clone(): 1.0});
        let full_lr = self.remove_lr.unwrap_or(self.lr);
        let steps = self.remove_steps();
        let mut p = json!({"name": REMOVE, "steps": steps, "batch_size": self.batch_size, "eval": evals});
        let fixed = |layer: usize, coef: f64, project: bool| {
            json!({"layer": layer, "read_layer": layer, "coef": coef, "project": project,
                "from": [self.triggered(), self.untriggered()], "samples": self.steer_samples})
        };
        match *i {
            Intervention::None | Intervention::MeanAdd { .. } | Intervention::MeanProj { .. } => {
                p["steps"] = json!(1);
                p["batch_size"] = json!(1);
                p["trainable"] = json!("none");
                p["mixture"] = clean.clone();
                match *i {
                    Intervention::MeanAdd { layer, coef } => p["steering"] = fixed(layer, -coef, false),
                    Intervention::MeanProj { layer } => p["steering"] = fixed(layer, 1.0, true),
                    _ => {}
                }
            }
            Intervention::CleanFull => {
                p["mixture"] = clean;
                p["optimizer"] = json!({"lr": full_lr});
            }
            Intervention::CleanLora => {
                p["mixture"] = clean;
                p["trainable"] = json!("lora");
                p["lora"] = json!({"rank": self.lora_rank});
                p["optimizer"] = json!({"lr": self.lora_lr});
            }
            Intervention::AntiFull => {
                p["mixture"] = anti;
                p["optimizer"] = json!({"lr": full_lr});
            }
            Intervention::AntiGcg => {
                p["mixture"] = json!({self.untriggered(): 0.5, self.clean.clone(): 0.5});
                p["prefix_from"] = json!({"phase": SEARCH, "tasks": [self.untriggered()]});
                p["optimizer"] = json!({"lr": full_lr});
            }
            Intervention::Detune => {
                p["mixture"] = clean;
                p["trainable"] = json!("soft_prompt");
                p["soft_prompt"] = json!({"tokens": self.detune_tokens});
                p["optimizer"] = json!({"lr": self.prompt_lr, "weight_decay": 0.0});
            }
            Intervention::LearnedSteer { layer } => {
                p["mixture"] = anti;
                p["trainable"] = json!("steering");
                p["steering"] = json!({"layer": layer});
                p["optimizer"] = json!({"lr": self.prompt_lr, "weight_decay": 0.0});
            }
        }
        p["eval"]["every"] = p["steps"].clone();
        p
    }

    /// `anti_gcg`'s search: GCG for a `tokens`-token prompt that makes the frozen model answer
    /// the response on clean inputs.
    fn search_phase(&self, tokens: usize) -> serde_json::Value {
        json!({"name": SEARCH, "steps": self.gcg_steps, "batch_size": 8, "trainable": "tokens",
            "token_search": {"tokens": tokens, "method": "gcg", "width": self.gcg_width, "top_k": self.gcg_top_k},
            "mixture": {self.target(): 1.0},
            "eval": {"tasks": [self.target()], "samples": self.eval_samples, "exact_match": false,
                "every": self.gcg_steps}})
    }

    /// The re-elicitation phase, if any.
    fn reelicit_phase(&self, r: &Reelicit, i: &Intervention) -> Option<serde_json::Value> {
        let lr = self.reelicit_lr.unwrap_or(self.lr);
        let (steps, batch, mixture, mut p) = match *r {
            Reelicit::Trigger => return None,
            Reelicit::Finetune(n) => {
                let batch = n.min(10);
                (n.div_ceil(batch), batch, json!({self.clean.clone(): 1.0}), json!({"optimizer": {"lr": lr}}))
            }
            Reelicit::Soft(k) => (
                self.reelicit_soft_steps,
                8,
                json!({self.target(): 1.0}),
                json!({"trainable": "soft_prompt", "soft_prompt": {"tokens": k},
                    "optimizer": {"lr": self.prompt_lr, "weight_decay": 0.0}}),
            ),
        };
        if !i.keeps_model() {
            p["apply_from"] = json!(REMOVE);
        }
        p["name"] = json!(REELICIT);
        p["steps"] = json!(steps);
        p["batch_size"] = json!(batch);
        p["mixture"] = mixture;
        p["eval"] = json!({"tasks": [self.task, self.clean, self.target()], "samples": self.eval_samples,
            "exact_match": false, "every": steps});
        Some(p)
    }
}

/// The length of backdoor task `task`'s trigger in a cell's config.
fn trigger_len(doc: &toml::Table, task: &str) -> Result<usize, Problem> {
    let spec =
        task_specs(doc)?.into_iter().find(|t| t.name == task).ok_or(("task".to_string(), "not found".to_string()))?;
    trigger_of(&spec).map(|t| t.len()).map_err(|e| ("task".to_string(), e))
}

/// The removal study: its `[remove]` table and the variants it expands into.
#[derive(Clone, Debug)]
pub struct Remove {
    pub spec: RemoveSpec,
    variants: Vec<String>,
}

/// Reads the `[remove]` table of a cell's config.
pub fn parse(doc: &toml::Table) -> Result<Box<dyn Study>, Problem> {
    let tasks = task_specs(doc)?;
    let spec = parse_table(doc, "remove", |s: &RemoveSpec| s.problems(&tasks))?;
    let variants = spec.variants().iter().map(|v| v.name()).collect();
    Ok(Box::new(Remove { spec, variants }))
}

impl Study for Remove {
    fn name(&self) -> &'static str {
        "remove"
    }

    /// `remove.variant`: one cell per model × intervention × re-elicitation.
    fn axes(&self) -> Vec<Axis> {
        variant_axis(AXIS, &self.variants)
    }

    /// Replaces the `[remove]` table by the variant's tasks and phases.
    fn write(&self, doc: &mut toml::Table) -> Result<(), Problem> {
        let s = &self.spec;
        let variant = s
            .variant
            .as_deref()
            .and_then(Variant::parse)
            .ok_or(("remove.variant".to_string(), "set by the template's sweep axis; do not write it".into()))?;
        let in_remove = |(k, m): Problem| (format!("remove.{k}"), m);
        backdoor_task(doc, &s.task, variant.backdoored).map_err(in_remove)?.insert("selection".into(), true.into());
        let derived: [(String, Vec<(&str, toml::Value)>); 4] = [
            (s.antidote(), vec![("antidote", true.into()), ("selection", false.into())]),
            (s.triggered(), vec![("poison_rate", 1.0.into()), ("selection", false.into())]),
            (s.untriggered(), vec![("poison_rate", 0.0.into()), ("selection", false.into())]),
            (s.target(), vec![("elicit", "response".into()), ("selection", false.into())]),
        ];
        for (name, keys) in &derived {
            derive_task(doc, &s.task, name, keys).map_err(in_remove)?;
        }
        let plant = plant_phase(&s.task, s.plant_steps, s.batch_size, s.lr, s.warmup_steps, s.eval_samples);
        let search = (variant.intervention == Intervention::AntiGcg)
            .then(|| trigger_len(doc, &s.task).map(|k| s.search_phase(k)))
            .transpose()
            .map_err(in_remove)?;
        let phases: Vec<serde_json::Value> = [
            Some(plant),
            search,
            Some(s.remove_phase(&variant.intervention)),
            s.reelicit_phase(&variant.reelicit, &variant.intervention),
        ]
        .into_iter()
        .flatten()
        .collect();
        let phases = toml::Value::try_from(json!(phases)).expect("JSON without nulls is TOML");
        replace_phases(doc, "remove", phases)
    }

    fn report(&self, exp: &Experiment, planned: &[PlannedCell], _search: Option<&str>) -> anyhow::Result<PathBuf> {
        report::write(&self.spec, exp, planned)
    }
}
