//! The trainable set of a phase: what it trains (the weights, LoRA adapters, a soft prompt, a
//! steering vector, a conditional-prompt MLP, a searched discrete prompt, or nothing), with its own config and
//! parameters: how it starts (fresh or from a checkpoint), how a micro-batch sends gradients
//! to it, what it adds to an evaluation, its name in checkpoints and the artifact saved when
//! its phase ends. The optimizer, schedule, clipping and regularisers are the step loop's.

use super::batching::{batch_at, batch_of, Insert};
use super::build::Tasks;
use super::config::{CondPromptCfg, CondSource, PhaseSpec, SteeringCfg, Trainable};
use super::eval::{held_out, EvalSet};
use super::optimizer::Optimizer;
use super::steering::mean_difference;
use super::token_search::TokenSearch;
use crate::data::{Sample, Split, Task};
use crate::engine::backward::GradSinks;
use crate::engine::cond_prompt::{CondPrompt, CondPromptShape};
use crate::engine::kernels::dropout::Dropout;
use crate::engine::kernels::loss::default_norm;
use crate::engine::lora::{Lora, LoraSpec};
use crate::engine::model::{standard_normal, Model, Steer};
use crate::engine::shards::ShardedPass;
use crate::hf::io::{read_safetensors, write_safetensors, HfError, HfTensor};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use std::collections::BTreeMap;
use std::path::Path;

/// What a phase trains, with its parameters.
pub enum TrainableSet {
    /// The model's weights, trained in place; those in `frozen` (the output head, for
    /// `all_but_head`) get no gradient and keep their values.
    Weights { frozen: Option<std::ops::Range<usize>> },
    /// Nothing: an evaluation-only phase.
    Nothing,
    /// LoRA adapters, attached to the model (`model.lora`) for the phase and merged into its
    /// weights at the end.
    Lora,
    /// `[tokens, d]` prompt vectors.
    SoftPrompt { prompt: Vec<f32>, tokens: usize },
    /// One steering vector, added to a residual stream.
    Steering(Steer),
    /// A steering vector applied but not trained (a contrastive vector, or a projection).
    FixedSteer(Steer),
    /// An MLP from each sample's condition vector to its own prompt; `mixture` names the
    /// phase's tasks in order (a task's one-hot condition).
    CondPrompt { mlp: CondPrompt, cfg: CondPromptCfg, mixture: Vec<String> },
    /// A discrete prompt and its rows (`[k, d]`, the embedding rows of its tokens), changed
    /// by search steps rather than an optimizer.
    Tokens { search: TokenSearch, rows: Vec<f32> },
}

/// A soft prompt or steering vector an earlier phase left, applied but not trained (see
/// `apply_from`).
#[derive(Clone, Debug, Default)]
pub struct Fixed {
    /// `[n, d]` prompt rows (prepended where the phase's prompts go).
    pub prompt: Vec<f32>,
    pub steer: Option<Steer>,
}

impl Fixed {
    /// What earlier phase `from` of the run in `dir` left: its soft prompt, or its steering
    /// vector placed as its config says (the vector read from its saved artifact).
    pub fn load(dir: &Path, from: &PhaseSpec) -> Result<Fixed, HfError> {
        let (kind, steer) = match (&from.steering, from.trainable) {
            (Some(st), Trainable::Steering | Trainable::None) => (Trainable::Steering, Some(st)),
            _ => (Trainable::SoftPrompt, None),
        };
        let name = checkpoint_key(kind).expect("prompts and steering vectors have a name");
        let data = read_safetensors(&artifact(dir, kind, &from.name))?.remove(name).map(|t| t.data).unwrap_or_default();
        Ok(match steer {
            Some(st) => Fixed {
                prompt: Vec::new(),
                steer: Some(Steer {
                    layer: st.layer,
                    coef: st.coef,
                    start: st.start,
                    end: st.end.unwrap_or(usize::MAX),
                    vector: data,
                    project: st.project,
                }),
            },
            None => Fixed { prompt: data, steer: None },
        })
    }

    /// Its prompt rows.
    pub fn n_prompt(&self, d: usize) -> usize {
        self.prompt.len() / d.max(1)
    }
}

/// One micro-batch of training samples.
pub struct MicroBatch<'a> {
    pub samples: &'a [Sample],
    /// The index of each sample's task in the phase's mixture.
    pub task_ids: &'a [usize],
    /// Where each sample's soft prompt goes.
    pub at: &'a [usize],
    /// Micro-batches per step (the loss is their mean).
    pub grad_accum: usize,
    pub dropout: Dropout,
    /// A carried prompt or steering vector, applied but not trained.
    pub fixed: &'a Fixed,
    /// The loss normaliser when the weights carry their own scale (sampling-based phases);
    /// `None`: `Σ |w|` (a weighted mean).
    pub norm: Option<f32>,
}

/// The checkpoint (and artifact) name of each trainable set that keeps its own parameters.
const KEYS: [(Trainable, &str); 5] = [
    (Trainable::Lora, "lora"),
    (Trainable::SoftPrompt, "soft_prompt"),
    (Trainable::Steering, "steering"),
    (Trainable::CondPrompt, "cond_prompt"),
    (Trainable::Tokens, "prompt_tokens"),
];

/// The tensor name of a trainable set's parameters in checkpoints; `None` for the weights
/// (saved as the model) and for nothing.
pub fn checkpoint_key(kind: Trainable) -> Option<&'static str> {
    KEYS.iter().find(|(k, _)| *k == kind).map(|(_, name)| *name)
}

/// The file a phase's trained or computed parameters of `kind` are saved to when it ends:
/// `<kind>.<phase>.safetensors` in the run directory `dir`.
pub fn artifact(dir: &Path, kind: Trainable, phase: &str) -> std::path::PathBuf {
    let name = checkpoint_key(kind).expect("a set with its own parameters has a name");
    dir.join(format!("{name}.{phase}.safetensors"))
}

/// The trainable parameters saved in a checkpoint's `tensors`, taken out of them.
pub fn take_saved(tensors: &mut BTreeMap<String, Vec<f32>>) -> Option<(Trainable, Vec<f32>)> {
    KEYS.iter().find_map(|(kind, name)| tensors.remove(*name).map(|v| (*kind, v)))
}

/// Where a phase's soft or discrete prompt goes (prepended when it has none).
pub fn insertion(p: &PhaseSpec) -> Insert {
    match (&p.soft_prompt, &p.token_search) {
        (_, Some(ts)) if p.trainable == Trainable::Tokens => ts.insert,
        (Some(sp), _) => sp.insert,
        _ => Insert::Prepend,
    }
}

impl TrainableSet {
    /// The set phase `p` trains, its parameters restored from `saved` or initialised from
    /// `seed`. LoRA adapters are attached to `model`.
    pub fn new(p: &PhaseSpec, model: &mut Model, tasks: &Tasks, seed: u64, saved: Option<Vec<f32>>) -> Self {
        let d = model.cfg.d_model;
        match p.trainable {
            Trainable::All => TrainableSet::Weights { frozen: None },
            Trainable::AllButHead => {
                let head = model.layout.head.as_ref().expect("validated: all_but_head needs an untied head");
                TrainableSet::Weights { frozen: Some(head.offset..head.offset + head.len()) }
            }
            Trainable::None => match &p.steering {
                Some(st) => TrainableSet::FixedSteer(steer(st, model, tasks, seed, None)),
                None => TrainableSet::Nothing,
            },
            Trainable::Steering => {
                let st = p.steering.as_ref().expect("validated: steering phases have a [steering] table");
                TrainableSet::Steering(steer(st, model, tasks, seed, saved))
            }
            Trainable::CondPrompt => {
                let cfg = p.cond_prompt.clone().expect("validated: cond_prompt phases have a [cond_prompt] table");
                let conditions = match cfg.condition {
                    CondSource::Task => p.mixture.len(),
                    CondSource::Sample => {
                        p.mixture.keys().map(|t| tasks[t].condition_width()).max().unwrap_or(0).max(1)
                    }
                };
                let shape = CondPromptShape { conditions, tokens: cfg.tokens, hidden: cfg.hidden, d_model: d };
                let mut mlp = CondPrompt::new(shape, seed);
                if let Some(saved) = saved {
                    mlp.params = saved;
                }
                TrainableSet::CondPrompt { mlp, cfg, mixture: p.mixture.keys().cloned().collect() }
            }
            Trainable::Lora => {
                let l = p.lora.as_ref().expect("validated: lora phases have a [lora] table");
                let spec = LoraSpec { rank: l.rank, alpha: l.alpha, targets: l.targets.clone() };
                let mut lora = Lora::new(model, spec, seed);
                if let Some(saved) = saved {
                    lora.params = saved;
                }
                model.lora = Some(lora);
                TrainableSet::Lora
            }
            Trainable::SoftPrompt => {
                let sp = p.soft_prompt.as_ref().expect("validated: soft-prompt phases have a [soft_prompt] table");
                let prompt = saved.unwrap_or_else(|| {
                    let mut rng = ChaCha8Rng::seed_from_u64(seed);
                    (0..sp.tokens * d).map(|_| sp.init_std * standard_normal(&mut rng)).collect()
                });
                TrainableSet::SoftPrompt { prompt, tokens: sp.tokens }
            }
            Trainable::Tokens => {
                let cfg = p.token_search.clone().expect("validated: tokens phases have a [token_search] table");
                let search = TokenSearch::new(cfg, model.cfg.vocab_size, seed, saved);
                TrainableSet::Tokens { rows: search.rows(model), search }
            }
        }
    }

    /// The number of parameters it trains.
    pub fn len(&self, model: &Model) -> usize {
        match self {
            TrainableSet::Weights { .. } => model.n_params(),
            TrainableSet::Nothing | TrainableSet::Tokens { .. } | TrainableSet::FixedSteer(_) => 0,
            TrainableSet::Lora => model.lora.as_ref().expect("attached at phase start").params.len(),
            TrainableSet::SoftPrompt { prompt, .. } => prompt.len(),
            TrainableSet::Steering(steer) => steer.vector.len(),
            TrainableSet::CondPrompt { mlp, .. } => mlp.params.len(),
        }
    }

    /// Whether it trains the model's weights in place (so every checkpoint of its phase
    /// stores them).
    pub fn trains_weights(&self) -> bool {
        matches!(self, TrainableSet::Weights { .. })
    }

    /// Soft-prompt slots per sample.
    pub fn n_prompt(&self) -> usize {
        match self {
            TrainableSet::SoftPrompt { tokens, .. } => *tokens,
            TrainableSet::CondPrompt { cfg, .. } => cfg.tokens,
            TrainableSet::Tokens { search, .. } => search.tokens.len(),
            _ => 0,
        }
    }

    /// The prompt vectors every sample shares (a soft or discrete prompt's; none otherwise).
    pub fn prompts(&self) -> &[f32] {
        match self {
            TrainableSet::SoftPrompt { prompt, .. } | TrainableSet::Tokens { rows: prompt, .. } => prompt,
            _ => &[],
        }
    }

    /// The steering vectors of a forward pass.
    pub fn steers(&self) -> &[Steer] {
        match self {
            TrainableSet::Steering(steer) | TrainableSet::FixedSteer(steer) => std::slice::from_ref(steer),
            _ => &[],
        }
    }

    /// Forward and backward of one micro-batch on `model`: adds the gradient of the set's
    /// parameters to `grads` (laid out as [`TrainableSet::len`]) and returns the loss.
    pub fn micro_batch(&mut self, model: &Model, pass: &mut ShardedPass, mb: &MicroBatch, grads: &mut [f32]) -> f32 {
        if let TrainableSet::CondPrompt { mlp, cfg, .. } = self {
            return cond_prompt_step(model, pass, mlp, cfg, mb, grads);
        }
        let d = model.cfg.d_model;
        let n_prompt = self.n_prompt().max(mb.fixed.n_prompt(d));
        let batch = batch_at(mb.samples, n_prompt, mb.at);
        let norm = mb.norm.unwrap_or_else(|| default_norm(&batch.targets, &batch.weights)) * mb.grad_accum as f32;
        let prompts = if self.prompts().is_empty() { &mb.fixed.prompt[..] } else { self.prompts() };
        let steers: Vec<Steer> = self.steers().iter().chain(&mb.fixed.steer).cloned().collect();
        let steers = &steers[..];
        let mut steer_grads = vec![vec![0.0; steers.first().map_or(0, |s| s.vector.len())]];
        let sinks = match *self {
            TrainableSet::Weights { .. } => GradSinks { weights: Some(&mut *grads), ..Default::default() },
            TrainableSet::Lora => GradSinks { lora: Some(&mut *grads), ..Default::default() },
            TrainableSet::SoftPrompt { .. } => GradSinks { prompts: Some(&mut *grads), ..Default::default() },
            TrainableSet::Steering(_) => GradSinks { steers: Some(&mut steer_grads), ..Default::default() },
            TrainableSet::Nothing
            | TrainableSet::CondPrompt { .. }
            | TrainableSet::Tokens { .. }
            | TrainableSet::FixedSteer(_) => GradSinks::default(),
        };
        let loss = pass.run(model, &batch, prompts, steers, norm, mb.dropout, sinks);
        match self {
            TrainableSet::Steering(_) => grads.iter_mut().zip(&steer_grads[0]).for_each(|(g, s)| *g += s),
            TrainableSet::Weights { frozen: Some(r) } => grads[r.clone()].fill(0.0),
            _ => {}
        }
        loss
    }

    /// One optimizer step on the set's parameters (none in an evaluation-only phase).
    pub fn update(&mut self, opt: &mut Optimizer, model: &mut Model, grads: &[f32], lr: f32) {
        let params: &mut [f32] = match self {
            TrainableSet::Nothing | TrainableSet::Tokens { .. } | TrainableSet::FixedSteer(_) => return,
            TrainableSet::Weights { frozen: Some(r) } => {
                // The optimizer sees a zero gradient there, but weight decay and carried
                // moments would still move the rows: they are put back.
                let kept = model.weights[r.clone()].to_vec();
                opt.update(&mut model.weights, grads, lr);
                model.weights[r.clone()].copy_from_slice(&kept);
                return;
            }
            TrainableSet::Weights { frozen: None } => &mut model.weights,
            TrainableSet::Lora => &mut model.lora.as_mut().expect("attached at phase start").params,
            TrainableSet::SoftPrompt { prompt, .. } => prompt,
            TrainableSet::Steering(steer) => &mut steer.vector,
            TrainableSet::CondPrompt { mlp, .. } => &mut mlp.params,
        };
        opt.update(params, grads, lr);
    }

    /// In a conditional-prompt phase, the prompt vectors for `task`'s held-out samples (those
    /// of `set` under `seed`, as [`super::eval::eval_task`] draws them) and whether they
    /// are per sample: one prompt for the task's one-hot id in the phase's mixture (all zeros
    /// for a task outside it), or one per held-out sample for its own conditions. `None` for
    /// other sets.
    pub fn conditioned_prompt(
        &mut self,
        name: &str,
        task: &dyn Task,
        seed: u64,
        set: EvalSet,
        insert: Insert,
    ) -> Option<(Vec<f32>, bool)> {
        let TrainableSet::CondPrompt { mlp, cfg, mixture } = self else { return None };
        let (conditions, per_sequence) = match cfg.condition {
            CondSource::Task => {
                let id = mixture.iter().position(|t| t == name);
                (id.map_or(vec![0.0; mixture.len()], |k| one_hot(&[k], mixture.len())), false)
            }
            CondSource::Sample => {
                let (samples, _) = held_out(task, seed, set, insert);
                (condition_rows(cfg, &samples, &[], mlp.shape.conditions), true)
            }
        };
        let mut prompt = vec![0.0; conditions.len() / mlp.shape.conditions * mlp.shape.tokens * mlp.shape.d_model];
        mlp.forward(&conditions, &mut prompt);
        Some((prompt, per_sequence))
    }

    /// Its kind and parameters, for a checkpoint; `None` for the weights (saved as the model)
    /// and for nothing.
    pub fn saved(&self, model: &Model) -> Option<(Trainable, Vec<f32>)> {
        match self {
            TrainableSet::Weights { .. } | TrainableSet::Nothing | TrainableSet::FixedSteer(_) => None,
            TrainableSet::Lora => {
                Some((Trainable::Lora, model.lora.as_ref().expect("attached at phase start").params.clone()))
            }
            TrainableSet::SoftPrompt { prompt, .. } => Some((Trainable::SoftPrompt, prompt.clone())),
            TrainableSet::Steering(steer) => Some((Trainable::Steering, steer.vector.clone())),
            TrainableSet::CondPrompt { mlp, .. } => Some((Trainable::CondPrompt, mlp.params.clone())),
            TrainableSet::Tokens { search, .. } => Some((Trainable::Tokens, search.saved())),
        }
    }

    /// The searched prompt, when the set is one: its search and rows.
    pub fn token_search(&mut self) -> Option<(&mut TokenSearch, &mut Vec<f32>)> {
        match self {
            TrainableSet::Tokens { search, rows } => Some((search, rows)),
            _ => None,
        }
    }

    /// What an evaluation logs about the prompt itself: a discrete prompt's tokens
    /// (`prompt_token_i`); a soft prompt's nearest embedding row by cosine similarity
    /// (`nearest_token_i`) and that similarity (`nearest_cos_i`).
    pub fn prompt_metrics(&self, model: &Model) -> Vec<(String, f64)> {
        match self {
            TrainableSet::Tokens { search, .. } => {
                (0..).zip(&search.tokens).map(|(i, &t)| (format!("prompt_token_{i}"), t as f64)).collect()
            }
            TrainableSet::SoftPrompt { prompt, .. } => {
                let d = model.cfg.d_model;
                let wte = model.w(&model.layout.wte);
                let norm = |x: &[f32]| x.iter().map(|a| a * a).sum::<f32>().sqrt().max(1e-12);
                let mut out = Vec::new();
                for (i, p) in prompt.chunks_exact(d).enumerate() {
                    let cos = |e: &[f32]| e.iter().zip(p).map(|(a, b)| a * b).sum::<f32>() / (norm(e) * norm(p));
                    let rows = wte.chunks_exact(d).take(model.cfg.vocab_size).map(cos).enumerate();
                    let (t, c) = rows.max_by(|a, b| a.1.total_cmp(&b.1)).unwrap_or((0, 0.0));
                    out.push((format!("nearest_token_{i}"), t as f64));
                    out.push((format!("nearest_cos_{i}"), c as f64));
                }
                out
            }
            _ => Vec::new(),
        }
    }

    /// Ends phase `phase`: LoRA adapters are merged into `model`'s weights; a soft prompt, a
    /// steering vector or a conditional-prompt MLP is saved as `<kind>.<phase>.safetensors`
    /// in `dir`. Returns whether the phase changed the model's weights.
    pub fn finish(self, model: &mut Model, dir: &Path, spec: &PhaseSpec) -> Result<bool, HfError> {
        let phase = spec.name.as_str();
        let d = model.cfg.d_model;
        let (kind, shape, data) = match self {
            TrainableSet::Weights { .. } => return Ok(true),
            TrainableSet::Nothing => return Ok(false),
            TrainableSet::Lora => {
                model.lora.take().expect("attached at phase start").merge_into(model);
                return Ok(true);
            }
            TrainableSet::SoftPrompt { prompt, .. } => (Trainable::SoftPrompt, vec![prompt.len() / d, d], prompt),
            TrainableSet::Steering(steer) | TrainableSet::FixedSteer(steer) => {
                (Trainable::Steering, vec![steer.vector.len() / d, d], steer.vector)
            }
            TrainableSet::CondPrompt { mlp, .. } => (Trainable::CondPrompt, vec![mlp.params.len()], mlp.params),
            TrainableSet::Tokens { search, .. } => {
                (Trainable::Tokens, vec![search.tokens.len()], search.tokens.iter().map(|&t| t as f32).collect())
            }
        };
        let name = checkpoint_key(kind).expect("a set with its own parameters has a name");
        let path = artifact(dir, kind, phase);
        let provenance = spec.steering.as_ref().filter(|_| kind == Trainable::Steering).map(steering_provenance);
        write_safetensors(&path, &BTreeMap::from([(name.to_string(), HfTensor { shape, data })]), provenance.as_ref())?;
        Ok(false)
    }
}

/// Where a steering vector was read and where it is applied, for its saved file's metadata.
fn steering_provenance(st: &SteeringCfg) -> BTreeMap<String, String> {
    let mut m = BTreeMap::from([
        ("applied_layer".to_string(), st.layer.to_string()),
        ("applied_rows".to_string(), format!("{}..{}", st.start, st.end.map_or("end".into(), |e| e.to_string()))),
        ("coef".to_string(), st.coef.to_string()),
        ("operation".to_string(), if st.project { "project_out" } else { "add" }.to_string()),
    ]);
    if let Some([with, without]) = &st.from {
        m.insert("read_layer".into(), st.read_layer.unwrap_or(st.layer).to_string());
        m.insert("read_from".into(), format!("mean difference at answer positions: {with} − {without}"));
        m.insert("read_samples".into(), st.samples.to_string());
    }
    m
}

/// The steering vector `st` describes: `saved`, else the mean difference of its `from`
/// tasks' first training samples (drawn with `seed`), else zero.
fn steer(st: &SteeringCfg, model: &Model, tasks: &Tasks, seed: u64, saved: Option<Vec<f32>>) -> Steer {
    let vector = saved.unwrap_or_else(|| match &st.from {
        Some([with, without]) => {
            let draw = |t: &str| -> Vec<Sample> {
                (0..st.samples as u64).map(|k| tasks[t].sample(seed, Split::Train, k)).collect()
            };
            mean_difference(model, &draw(with), &draw(without), st.read_layer.unwrap_or(st.layer))
        }
        None => vec![0.0; model.cfg.d_model],
    });
    Steer {
        layer: st.layer,
        coef: st.coef,
        start: st.start,
        end: st.end.unwrap_or(usize::MAX),
        vector,
        project: st.project,
    }
}

/// One micro-batch of a conditional-prompt phase: the MLP maps each sample's condition
/// vector to its prompt, and the prompt gradient flows back into the MLP's parameters.
fn cond_prompt_step(
    model: &Model,
    pass: &mut ShardedPass,
    mlp: &mut CondPrompt,
    cfg: &CondPromptCfg,
    mb: &MicroBatch,
    grads: &mut [f32],
) -> f32 {
    let (n, d) = (cfg.tokens, model.cfg.d_model);
    let conditions = condition_rows(cfg, mb.samples, mb.task_ids, mlp.shape.conditions);
    let mut prompts = vec![0.0; mb.samples.len() * n * d];
    mlp.forward(&conditions, &mut prompts);
    let batch = batch_of(mb.samples, n).per_sequence_prompts(n);
    let norm = default_norm(&batch.targets, &batch.weights) * mb.grad_accum as f32;
    let mut dprompts = vec![0.0; prompts.len()];
    let sinks = GradSinks { prompts: Some(&mut dprompts), ..Default::default() };
    let loss = pass.run(model, &batch, &prompts, &[], norm, mb.dropout, sinks);
    mlp.backward(&conditions, &dprompts, grads);
    loss
}

/// The `[samples, k]` condition rows of a conditional prompt: each sample's task id one-hot
/// (`ids`), or its own conditions times `scale` (zero-padded or cut to `k`).
pub fn condition_rows(c: &CondPromptCfg, samples: &[Sample], ids: &[usize], k: usize) -> Vec<f32> {
    match c.condition {
        CondSource::Task => one_hot(ids, k),
        CondSource::Sample => {
            samples.iter().flat_map(|s| (0..k).map(move |j| s.conditions.get(j).map_or(0.0, |v| v * c.scale))).collect()
        }
    }
}

/// `[ids.len(), n]` one-hot rows.
fn one_hot(ids: &[usize], n: usize) -> Vec<f32> {
    let mut out = vec![0.0; ids.len() * n];
    for (row, &k) in ids.iter().enumerate() {
        out[row * n + k] = 1.0;
    }
    out
}
