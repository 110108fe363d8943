//! Running a configured experiment: phases in order, each a step loop with its trainable
//! set, optimizer, schedule, clipping, accumulation and regularisers; evaluations on fixed
//! held-out sets; metrics to the run store and CSV; checkpoints that resume bit-exactly.
//!
//! Every source of randomness is a pure function of `(seed, phase, counters)`: the training
//! sample at stream position `i` of phase `p`, the dropout masks of global step `s`. So the
//! whole state of a run is its model, its optimizer buffers and its counters, which is what a
//! checkpoint holds.

use super::batching::{batch_at, batch_of, Insert};
use super::checkpoint::{self, TrainerState};
use super::config::{CondPromptCfg, CondSource, PhaseSpec, RunConfig, Trainable};
use super::forgetting::divergence;
use super::schedule::lr_at;
use crate::data::corpus::CorpusError;
use crate::data::mixture::Mixture;
use crate::data::score::{self, score_all};
use crate::data::vocab::{tokenizer_for, VocabError};
use crate::data::{mix, Sample, Split, Task};
use crate::engine::activations::Activations;
use crate::engine::backward::GradSinks;
use crate::engine::batch::Batch;
use crate::engine::cond_prompt::{CondPrompt, CondPromptShape};
use crate::engine::config::ModelConfig;
use crate::engine::generate::{GenerateRequest, Sampling, Slot};
use crate::engine::kernels::dropout::Dropout;
use crate::engine::kernels::loss::default_norm;
use crate::engine::lora::{Lora, LoraSpec};
use crate::engine::model::{standard_normal, Model, Steer};
use crate::engine::optim::{AdamW, Sgd};
use crate::engine::shards::{zero_grads, ShardedPass};
use crate::store::{CsvLog, MetricRow, Store};
use anyhow::{bail, Context, Result};
use indicatif::{MultiProgress, ProgressBar, ProgressStyle};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// The run stopped because the loss or gradients became NaN or infinite.
#[derive(Debug, thiserror::Error)]
#[error("run diverged at step {step} (phase {phase:?}): {what} is not finite; the last good checkpoint is kept in {checkpoints}")]
pub struct Diverged {
    pub step: u64,
    pub phase: String,
    pub what: String,
    pub checkpoints: PathBuf,
}

/// Where a run writes.
pub struct RunPaths {
    pub dir: PathBuf,
    pub checkpoints: PathBuf,
    pub db: PathBuf,
    pub csv: PathBuf,
    pub config: PathBuf,
}

impl RunPaths {
    /// `out_dir/name/`, with the store shared by every run in `out_dir`.
    fn new(cfg: &RunConfig) -> Self {
        Self::in_dir(cfg.out_dir.join(&cfg.name), cfg.out_dir.join("vestige.db"))
    }

    /// A run writing into `dir`, logging to the store at `db`.
    pub fn in_dir(dir: PathBuf, db: PathBuf) -> Self {
        RunPaths {
            checkpoints: dir.join("checkpoints"),
            db,
            csv: dir.join("metrics.csv"),
            config: dir.join("config.toml"),
            dir,
        }
    }
}

/// What a finished run reports.
#[derive(Debug, serde::Serialize)]
pub struct RunSummary {
    pub run: String,
    pub dir: PathBuf,
    pub steps: u64,
    pub tokens: u64,
    /// The last evaluation of each `(task, metric)`.
    pub final_metrics: BTreeMap<String, f64>,
}

/// Starts a run from a config file (refusing to overwrite a run that has checkpoints).
pub fn train(config_path: &Path) -> Result<RunSummary> {
    let cfg = RunConfig::from_file(config_path)?;
    let paths = RunPaths::new(&cfg);
    if !checkpoint::list(&paths.checkpoints).is_empty() {
        bail!(
            "{} already has checkpoints; continue it with `vestige resume {}`",
            paths.dir.display(),
            paths.dir.display()
        );
    }
    run_or_resume(cfg, std::fs::read_to_string(config_path)?, paths)
}

/// Runs `cfg` (whose TOML source is `text`) into `paths`: continues from the newest
/// checkpoint when there is one, starts fresh otherwise.
pub fn run_or_resume(cfg: RunConfig, text: String, paths: RunPaths) -> Result<RunSummary> {
    std::fs::create_dir_all(&paths.dir).with_context(|| format!("creating {}", paths.dir.display()))?;
    crate::hf::io::write_atomic(&paths.config, text.as_bytes())?;
    let resumed = match checkpoint::list(&paths.checkpoints).pop() {
        Some((_, latest)) => Some(checkpoint::load(&latest, &cfg.hash(), &cfg.legacy_hash())?),
        None => None,
    };
    Runner::start(cfg, text, paths, resumed)?.run()
}

/// Continues a run from its newest checkpoint (bit-identical to an uninterrupted run with
/// the same thread count).
pub fn resume(run_dir: &Path) -> Result<RunSummary> {
    let config_path = run_dir.join("config.toml");
    let cfg = RunConfig::from_file(&config_path)?;
    let paths = RunPaths::new(&cfg);
    if checkpoint::list(&paths.checkpoints).is_empty() {
        bail!(
            "{} has no complete checkpoint to resume from; start it with `vestige train`",
            paths.checkpoints.display()
        );
    }
    run_or_resume(cfg, std::fs::read_to_string(&config_path)?, paths)
}

/// The `tokenizer.json` for a model trained on `tasks` (see [`tokenizer_for`]; a built one is
/// written into `dir`), or `None`, logged, when they share no vocabulary or it cannot be written.
pub fn model_tokenizer(dir: &Path, tasks: &[Arc<dyn Task>]) -> Option<PathBuf> {
    match tokenizer_for(dir, tasks) {
        Ok(path) => Some(path),
        Err(e @ VocabError::Write(_)) => {
            tracing::warn!("models are saved without a tokenizer: {e}");
            None
        }
        Err(e) => {
            tracing::info!("models are saved without a tokenizer: {e}");
            None
        }
    }
}

/// Builds the task objects a config defines.
pub fn build_tasks(cfg: &RunConfig) -> Result<BTreeMap<String, Arc<dyn Task>>, CorpusError> {
    cfg.tasks.iter().map(|t| Ok((t.name.clone(), t.build()?))).collect()
}

/// A fresh model for the config (or the one it names).
fn build_model(cfg: &RunConfig, tasks: &BTreeMap<String, Arc<dyn Task>>) -> Result<Model> {
    match &cfg.model.load {
        Some(dir) => Ok(Model::load(dir)?.model),
        None => Ok(Model::init(model_config(cfg, tasks)?, cfg.model.init_std, cfg.seed)),
    }
}

/// The architecture a config describes (read from `config.json` for a loaded model).
pub fn model_config(cfg: &RunConfig, tasks: &BTreeMap<String, Arc<dyn Task>>) -> Result<ModelConfig> {
    let m = &cfg.model;
    if let Some(dir) = &m.load {
        let dir = crate::hf::io::resolve_model_dir(dir)?;
        return Ok(ModelConfig::from_file(&dir.config)?);
    }
    let vocab = m.vocab_size.unwrap_or_else(|| tasks.values().map(|t| t.vocab_size()).max().unwrap_or(2));
    let (d, ff) = (m.d_model, m.d_ff.unwrap_or(4 * m.d_model));
    let json = match m.arch.as_str() {
        "gpt2" => serde_json::json!({"model_type": "gpt2", "architectures": ["GPT2LMHeadModel"], "vocab_size": vocab,
            "n_embd": d, "n_layer": m.n_layers, "n_head": m.n_heads, "n_inner": ff, "n_positions": m.max_positions,
            "activation_function": "gelu_new", "resid_pdrop": 0.0, "embd_pdrop": 0.0, "attn_pdrop": 0.0}),
        "llama" => {
            serde_json::json!({"model_type": "llama", "architectures": ["LlamaForCausalLM"], "vocab_size": vocab,
            "hidden_size": d, "num_hidden_layers": m.n_layers, "num_attention_heads": m.n_heads,
            "num_key_value_heads": m.n_heads, "intermediate_size": ff, "max_position_embeddings": m.max_positions,
            "rms_norm_eps": 1e-6, "rope_theta": 10000.0, "tie_word_embeddings": false})
        }
        _ => serde_json::json!({"model_type": "gpt_neox", "architectures": ["GPTNeoXForCausalLM"], "vocab_size": vocab,
            "hidden_size": d, "num_hidden_layers": m.n_layers, "num_attention_heads": m.n_heads, "intermediate_size": ff,
            "max_position_embeddings": m.max_positions, "rotary_pct": 0.25, "rotary_emb_base": 10000,
            "hidden_act": "gelu", "use_parallel_residual": true, "tie_word_embeddings": false}),
    };
    Ok(ModelConfig::from_json(json, "<run config>")?)
}

/// The optimizer of a phase.
enum Optimizer {
    AdamW(AdamW),
    Sgd(Sgd),
}

impl Optimizer {
    /// A fresh optimizer for `n` parameters, or the one saved in `state`.
    fn new(p: &PhaseSpec, n: usize, state: &TrainerState) -> Self {
        let o = &p.optimizer;
        if o.kind == "sgd" {
            let buf = state.buffers.get("opt.buf").cloned().unwrap_or_else(|| vec![0.0; n]);
            Optimizer::Sgd(Sgd {
                momentum: o.momentum,
                weight_decay: o.weight_decay,
                nesterov: false,
                step: state.opt_step,
                buf,
            })
        } else {
            let m = state.buffers.get("opt.m").cloned().unwrap_or_else(|| vec![0.0; n]);
            let v = state.buffers.get("opt.v").cloned().unwrap_or_else(|| vec![0.0; n]);
            Optimizer::AdamW(AdamW {
                beta1: o.betas[0],
                beta2: o.betas[1],
                eps: o.eps,
                weight_decay: o.weight_decay,
                step: state.opt_step,
                m,
                v,
            })
        }
    }

    fn update(&mut self, params: &mut [f32], grads: &[f32], lr: f32) {
        match self {
            Optimizer::AdamW(o) => o.update(params, grads, lr),
            Optimizer::Sgd(o) => o.update(params, grads, lr),
        }
    }

    /// Saves the moments into `state`.
    fn store(&self, state: &mut TrainerState) {
        match self {
            Optimizer::AdamW(o) => {
                state.opt_step = o.step;
                state.buffers.insert("opt.m".into(), o.m.clone());
                state.buffers.insert("opt.v".into(), o.v.clone());
            }
            Optimizer::Sgd(o) => {
                state.opt_step = o.step;
                state.buffers.insert("opt.buf".into(), o.buf.clone());
            }
        }
    }
}

/// A run in progress.
struct Runner {
    cfg: RunConfig,
    paths: RunPaths,
    tasks: BTreeMap<String, Arc<dyn Task>>,
    /// The `tokenizer.json` saved with every checkpoint's model, if the tasks share one.
    tokenizer: Option<PathBuf>,
    model: Model,
    state: TrainerState,
    store: Store,
    csv: CsvLog,
    /// The arenas of training passes.
    pass: ShardedPass,
    /// The conditional-prompt MLP of a `cond_prompt` phase (its parameters mirror the
    /// optimizer's buffer).
    cond: Option<CondPrompt>,
    /// The model at the end of the phase named first, loaded when an eval measures forgetting.
    reference: Option<(String, Model)>,
}

impl Runner {
    /// Opens the store and CSV, creating the run or resuming it from `resumed`.
    fn start(cfg: RunConfig, text: String, paths: RunPaths, resumed: Option<(Model, TrainerState)>) -> Result<Self> {
        let tasks = build_tasks(&cfg)?;
        let tokenizer = model_tokenizer(&paths.dir, &tasks.values().cloned().collect::<Vec<_>>());
        let store = Store::open(&paths.db)?;
        let hash = cfg.hash();
        // A run an older build recorded for this config resumes (see `RunConfig::legacy_hash`).
        store.rehash_run(&cfg.name, &cfg.legacy_hash(), &hash)?;
        store.begin_run(&cfg.name, &text, &hash)?;
        let (model, state) = match resumed {
            Some((model, state)) => {
                store.truncate_after(&cfg.name, state.global_step)?;
                crate::store::rewrite_csv(&paths.csv, &store.metrics(&cfg.name)?)?;
                (model, state)
            }
            None => {
                store.truncate_after(&cfg.name, 0)?;
                crate::store::rewrite_csv(&paths.csv, &[])?;
                let model = build_model(&cfg, &tasks)?;
                let state = TrainerState { config_hash: hash, ..Default::default() };
                checkpoint::save(&paths.checkpoints, &model, tokenizer.as_deref(), &state, Some("init"))?;
                (model, state)
            }
        };
        let csv = CsvLog::open(&paths.csv)?;
        Ok(Runner {
            cfg,
            paths,
            tasks,
            tokenizer,
            model,
            state,
            store,
            csv,
            pass: ShardedPass::default(),
            cond: None,
            reference: None,
        })
    }

    /// Runs the remaining phases.
    fn run(mut self) -> Result<RunSummary> {
        while self.state.phase < self.cfg.phases.len() {
            if let Err(e) = self.run_phase() {
                let status = match () {
                    _ if e.is::<Diverged>() => "diverged".to_string(),
                    _ if e.is::<super::interrupt::Interrupted>() => "interrupted".to_string(),
                    _ => format!("failed: {e}"),
                };
                self.store.set_status(&self.cfg.name, &status)?;
                return Err(e);
            }
        }
        self.store.set_status(&self.cfg.name, "done")?;
        let mut final_metrics = BTreeMap::new();
        for r in self.store.metrics(&self.cfg.name)? {
            final_metrics
                .insert(format!("{}/{}/{}", self.cfg.phases[r.phase as usize].name, r.task, r.metric), r.value);
        }
        Ok(RunSummary {
            run: self.cfg.name.clone(),
            dir: self.paths.dir.clone(),
            steps: self.state.global_step,
            tokens: self.state.tokens,
            final_metrics,
        })
    }

    /// The seed of phase `i`'s data stream (and of its initialisations).
    fn phase_seed(&self, i: usize) -> u64 {
        mix(self.cfg.phases[i].seed.unwrap_or(self.cfg.seed) ^ mix(i as u64 + 1))
    }

    /// Runs (the rest of) the current phase and saves its pinned end checkpoint.
    fn run_phase(&mut self) -> Result<()> {
        let i = self.state.phase;
        let p = self.cfg.phases[i].clone();
        let phase_start = self.state.global_step - self.state.step_in_phase;
        self.store.record_phase(&self.cfg.name, i as u32, &p.name, phase_start)?;
        let mixture = Mixture::new(p.mixture.iter().map(|(t, w)| (self.tasks[t].clone(), *w)).collect());
        let (mut params, n_prompt) = self.trainable_params(&p);
        let n_trained = if p.trainable == Trainable::All { self.model.n_params() } else { params.len() };
        let mut opt = Optimizer::new(&p, n_trained, &self.state);
        let anchors = self.anchors(&p)?;
        let mut grads = vec![0.0f32; n_trained];
        let bar = progress(&p, self.state.step_in_phase);
        let (started, tokens_at_start) = (std::time::Instant::now(), self.state.tokens);
        tracing::info!(phase = %p.name, from_step = self.state.step_in_phase, steps = p.steps, "phase starts");
        if self.state.step_in_phase == 0 {
            self.evaluate(&p, &params, n_prompt)?;
        }
        while self.state.step_in_phase < p.steps {
            let step = self.state.step_in_phase;
            let lr = lr_at(&p.schedule, p.optimizer.lr, step, p.steps);
            let loss = self.accumulate(&p, &mixture, &mut params, &mut grads, n_prompt)?;
            let penalty = anchors.apply(&self.model.weights, &mut grads, &p);
            let norm = clip(&mut grads, p.grad_clip);
            if !loss.is_finite() || !norm.is_finite() || !penalty.is_finite() {
                let what = if loss.is_finite() { "the gradient norm" } else { "the loss" };
                return Err(Diverged {
                    step: self.state.global_step,
                    phase: p.name.clone(),
                    what: what.into(),
                    checkpoints: self.paths.checkpoints.clone(),
                }
                .into());
            }
            if p.trainable != Trainable::None {
                self.apply_update(&p, &mut opt, &mut params, &grads, lr);
            }
            self.state.step_in_phase += 1;
            self.state.global_step += 1;
            let train = |metric, value| ("train".to_string(), metric, value);
            self.log(&[train("loss", loss as f64 + penalty), train("lr", lr as f64), train("grad_norm", norm)])?;
            bar.inc(1);
            let rate = (self.state.tokens - tokens_at_start) as f64 / started.elapsed().as_secs_f64().max(1e-9);
            bar.set_message(format!("loss {loss:.4} · {rate:.0} tok/s"));
            if eval_due(&p, self.state.step_in_phase) {
                self.evaluate(&p, &params, n_prompt)?;
            }
            let every = self.cfg.checkpoint.every;
            let stop = super::interrupt::requested();
            if (stop || every > 0 && self.state.global_step.is_multiple_of(every)) && self.state.step_in_phase < p.steps
            {
                self.checkpoint(&p, &opt, &params, &anchors, None)?;
                if stop {
                    return Err(super::interrupt::Interrupted { step: self.state.global_step }.into());
                }
            }
        }
        bar.finish_and_clear();
        self.finish_phase(&p, params)?;
        tracing::info!(phase = %p.name, global_step = self.state.global_step, "phase done");
        Ok(())
    }

    /// Gradients of `grad_accum` micro-batches into `grads`; returns their mean loss.
    fn accumulate(
        &mut self,
        p: &PhaseSpec,
        mixture: &Mixture,
        params: &mut [f32],
        grads: &mut [f32],
        n_prompt: usize,
    ) -> Result<f32> {
        zero_grads(grads);
        let seed = self.phase_seed(self.state.phase);
        let mut loss = 0.0;
        for micro in 0..p.grad_accum {
            let first = (self.state.step_in_phase * p.grad_accum as u64 + micro as u64) * p.batch_size as u64;
            let drawn: Vec<(usize, Sample)> =
                (0..p.batch_size as u64).map(|r| mixture.sample(seed, first + r)).collect();
            let samples: Vec<Sample> = drawn.iter().map(|(_, s)| s.clone()).collect();
            let dseed = mix(self.cfg.seed ^ mix(self.state.global_step) ^ micro as u64);
            let dropout = Dropout { attn: p.dropout_attn, resid: p.dropout_resid, seed: dseed };
            self.state.tokens += samples.iter().map(|s| s.tokens.len() as u64).sum::<u64>();
            if p.trainable == Trainable::CondPrompt {
                let ids: Vec<usize> = drawn.iter().map(|(k, _)| *k).collect();
                loss += self.cond_prompt_step(p, (&samples, &ids), params, grads, n_prompt, dropout);
                continue;
            }
            let insert = insertion(p);
            let at: Vec<usize> =
                samples.iter().zip(first..).map(|(s, k)| insert.point(s.tokens.len(), mix(seed ^ k))).collect();
            let batch = batch_at(&samples, n_prompt, &at);
            let norm = default_norm(&batch.targets, &batch.weights) * p.grad_accum as f32;
            let prompts: &[f32] = if n_prompt > 0 { params } else { &[] };
            let steers = steers_of(p, params);
            let mut steer_grads = vec![vec![0.0; steers.first().map_or(0, |s| s.vector.len())]];
            let sinks = match p.trainable {
                Trainable::All => GradSinks { weights: Some(&mut *grads), ..Default::default() },
                Trainable::Lora => GradSinks { lora: Some(&mut *grads), ..Default::default() },
                Trainable::SoftPrompt => GradSinks { prompts: Some(&mut *grads), ..Default::default() },
                Trainable::Steering => GradSinks { steers: Some(&mut steer_grads), ..Default::default() },
                Trainable::None | Trainable::CondPrompt => GradSinks::default(),
            };
            loss += self.pass.run(&self.model, &batch, prompts, &steers, norm, dropout, sinks);
            if p.trainable == Trainable::Steering {
                grads.iter_mut().zip(&steer_grads[0]).for_each(|(g, s)| *g += s);
            }
        }
        Ok(loss)
    }

    /// One micro-batch of a conditional-prompt phase: the MLP maps each sample's condition
    /// vector to its prompt, and the prompt gradient flows back into the MLP's parameters.
    fn cond_prompt_step(
        &mut self,
        p: &PhaseSpec,
        (samples, ids): (&[Sample], &[usize]),
        params: &[f32],
        grads: &mut [f32],
        n: usize,
        dropout: Dropout,
    ) -> f32 {
        let d = self.model.cfg.d_model;
        let cond = self.cond.as_mut().expect("created at phase start");
        cond.params.copy_from_slice(params);
        let c = p.cond_prompt.as_ref().expect("validated: cond_prompt phases have a [cond_prompt] table");
        let conditions = condition_rows(c, samples, ids, cond.shape.conditions);
        let mut prompts = vec![0.0; samples.len() * n * d];
        cond.forward(&conditions, &mut prompts);
        let batch = batch_of(samples, n).per_sequence_prompts(n);
        let norm = default_norm(&batch.targets, &batch.weights) * p.grad_accum as f32;
        let mut dprompts = vec![0.0; prompts.len()];
        let sinks = GradSinks { prompts: Some(&mut dprompts), ..Default::default() };
        let loss = self.pass.run(&self.model, &batch, &prompts, &[], norm, dropout, sinks);
        cond.backward(&conditions, &dprompts, grads);
        loss
    }

    /// The buffer a phase trains (weights live in the model; the others are returned here)
    /// and its soft-prompt length.
    fn trainable_params(&mut self, p: &PhaseSpec) -> (Vec<f32>, usize) {
        let seed = self.phase_seed(self.state.phase);
        match p.trainable {
            Trainable::All => (Vec::new(), 0),
            Trainable::None => (Vec::new(), 0),
            Trainable::Steering => {
                let d = self.model.cfg.d_model;
                (self.state.buffers.get("steering").cloned().unwrap_or_else(|| vec![0.0; d]), 0)
            }
            Trainable::CondPrompt => {
                let c = p.cond_prompt.as_ref().expect("validated: cond_prompt phases have a [cond_prompt] table");
                let conditions = match c.condition {
                    CondSource::Task => p.mixture.len(),
                    CondSource::Sample => {
                        p.mixture.keys().map(|t| self.tasks[t].condition_width()).max().unwrap_or(0).max(1)
                    }
                };
                let shape =
                    CondPromptShape { conditions, tokens: c.tokens, hidden: c.hidden, d_model: self.model.cfg.d_model };
                let mut mlp = CondPrompt::new(shape, seed);
                if let Some(saved) = self.state.buffers.get("cond_prompt") {
                    mlp.params.clone_from(saved);
                }
                let params = mlp.params.clone();
                self.cond = Some(mlp);
                (params, c.tokens)
            }
            Trainable::Lora => {
                let l = p.lora.as_ref().expect("validated: lora phases have a [lora] table");
                let spec = LoraSpec { rank: l.rank, alpha: l.alpha, targets: l.targets.clone() };
                let mut lora = Lora::new(&self.model, spec, seed);
                if let Some(saved) = self.state.buffers.get("lora") {
                    lora.params.clone_from(saved);
                }
                let params = lora.params.clone();
                self.model.lora = Some(lora);
                (params, 0)
            }
            Trainable::SoftPrompt => {
                let sp = p.soft_prompt.as_ref().expect("validated: soft-prompt phases have a [soft_prompt] table");
                let n = sp.tokens * self.model.cfg.d_model;
                let prompt = self.state.buffers.get("soft_prompt").cloned().unwrap_or_else(|| {
                    let mut rng = ChaCha8Rng::seed_from_u64(seed);
                    (0..n).map(|_| sp.init_std * standard_normal(&mut rng)).collect()
                });
                (prompt, sp.tokens)
            }
        }
    }

    /// Steps the optimizer on whichever buffer the phase trains.
    fn apply_update(&mut self, p: &PhaseSpec, opt: &mut Optimizer, params: &mut [f32], grads: &[f32], lr: f32) {
        match p.trainable {
            Trainable::All => opt.update(&mut self.model.weights, grads, lr),
            Trainable::Lora => {
                opt.update(params, grads, lr);
                self.model.lora.as_mut().expect("attached at phase start").params.copy_from_slice(params);
            }
            _ => opt.update(params, grads, lr),
        }
    }

    /// Regulariser anchors for the phase: saved ones on resume, else computed now.
    fn anchors(&mut self, p: &PhaseSpec) -> Result<Anchors> {
        let mut a = Anchors::default();
        if p.l2_coef > 0.0 {
            a.l2_ref = match self.state.buffers.get("l2.ref") {
                Some(r) => r.clone(),
                None => {
                    let name = p.l2_to.as_deref().unwrap_or("init");
                    let dir = checkpoint::find_pinned(&self.paths.checkpoints, name)
                        .with_context(|| format!("no pinned checkpoint {name:?} for l2_to"))?;
                    Model::load(&dir.join("model"))?.model.weights
                }
            };
        }
        if p.ewc_coef > 0.0 {
            match (self.state.buffers.get("ewc.fisher"), self.state.buffers.get("ewc.anchor")) {
                (Some(f), Some(w)) => (a.fisher, a.fisher_anchor) = (f.clone(), w.clone()),
                _ => (a.fisher, a.fisher_anchor) = (self.fisher(p), self.model.weights.clone()),
            }
        }
        Ok(a)
    }

    /// Diagonal empirical Fisher: mean squared per-sample gradient on the EWC tasks.
    fn fisher(&mut self, p: &PhaseSpec) -> Vec<f32> {
        let names: Vec<String> = if p.ewc_tasks.is_empty() {
            self.cfg.phases[self.state.phase - 1].mixture.keys().cloned().collect()
        } else {
            p.ewc_tasks.clone()
        };
        let n = self.model.n_params();
        let (mut fisher, mut g) = (vec![0.0f32; n], vec![0.0f32; n]);
        let mut acts = Activations::default();
        for k in 0..p.ewc_samples {
            let task = &self.tasks[&names[k % names.len()]];
            let batch = batch_of(&[task.sample(self.phase_seed(self.state.phase) ^ 0xf15e, Split::Train, k as u64)], 0);
            let norm = default_norm(&batch.targets, &batch.weights);
            self.model.forward(&mut acts, &batch, &[], &[], norm);
            g.fill(0.0);
            self.model.backward(
                &mut acts,
                &batch,
                &[],
                norm,
                GradSinks { weights: Some(&mut g), ..Default::default() },
            );
            fisher.iter_mut().zip(&g).for_each(|(f, g)| *f += g * g / p.ewc_samples as f32);
        }
        fisher
    }

    /// Held-out metrics of every eval task (see [`eval_task`]), logged at the current step.
    fn evaluate(&mut self, p: &PhaseSpec, params: &[f32], n_prompt: usize) -> Result<()> {
        let names: Vec<String> =
            if p.eval.tasks.is_empty() { p.mixture.keys().cloned().collect() } else { p.eval.tasks.clone() };
        let prompts: &[f32] = if n_prompt > 0 { params } else { &[] };
        let steers = steers_of(p, params);
        if let Some(anchor) = &p.eval.kl_to {
            self.load_reference(anchor)?;
        }
        let mut rows = Vec::new();
        let generate = p.eval.exact_match.then(|| sampling(p.eval.temperature));
        for name in names {
            let conditioned = self.conditioned_prompt(p, &name, params);
            let task = self.tasks[&name].as_ref();
            let per_sequence = conditioned.as_ref().is_some_and(|(_, per)| *per);
            let prompts = conditioned.as_ref().map_or(prompts, |(c, _)| c.as_slice());
            let adapt = Adaptation { prompts, n_prompt, steers: &steers, insert: insertion(p), per_sequence };
            for (metric, value) in eval_task(&self.model, task, self.cfg.seed, p.eval.samples, &adapt, generate)? {
                rows.push((name.clone(), metric, value));
            }
            for (metric, value) in eval_probes(&self.model, task, self.cfg.seed, p.eval.samples, &adapt)? {
                rows.push((name.clone(), metric, value));
            }
            if let Some((_, reference)) = self.reference.as_ref().filter(|_| p.eval.kl_to.is_some()) {
                let (kl, ce) = forgetting(reference, &self.model, task, self.cfg.seed, p.eval.samples, &adapt);
                rows.push((name.clone(), "forgetting_kl", kl));
                rows.push((name.clone(), "forgetting_ce", ce));
            }
        }
        self.log(&rows)
    }

    /// Loads the model saved at the end of phase `anchor` (once per run process).
    fn load_reference(&mut self, anchor: &str) -> Result<()> {
        if self.reference.as_ref().is_none_or(|(name, _)| name != anchor) {
            let dir = checkpoint::find_pinned(&self.paths.checkpoints, anchor)
                .with_context(|| format!("no pinned checkpoint {anchor:?} for eval.kl_to"))?;
            checkpoint::verify(&dir)?;
            self.reference = Some((anchor.to_string(), Model::load(&dir.join("model"))?.model));
        }
        Ok(())
    }

    /// In a conditional-prompt phase, the prompt vectors for `task`'s held-out samples and
    /// whether they are per sample: one prompt for the task's one-hot id in the phase's
    /// mixture (all zeros for a task outside it), or one per held-out sample for its own
    /// conditions (the samples [`eval_task`] scores); `None` in other phases.
    fn conditioned_prompt(&mut self, p: &PhaseSpec, task: &str, params: &[f32]) -> Option<(Vec<f32>, bool)> {
        let cond = self.cond.as_mut().filter(|_| p.trainable == Trainable::CondPrompt)?;
        let c = p.cond_prompt.as_ref()?;
        cond.params.copy_from_slice(params);
        let (conditions, per_sequence) = match c.condition {
            CondSource::Task => {
                let id = p.mixture.keys().position(|t| t == task);
                (id.map_or(vec![0.0; p.mixture.len()], |k| one_hot(&[k], p.mixture.len())), false)
            }
            CondSource::Sample => {
                let (samples, _) = held_out(self.tasks[task].as_ref(), self.cfg.seed, p.eval.samples, insertion(p));
                (condition_rows(c, &samples, &[], cond.shape.conditions), true)
            }
        };
        let mut prompt = vec![0.0; conditions.len() / cond.shape.conditions * cond.shape.tokens * cond.shape.d_model];
        cond.forward(&conditions, &mut prompt);
        Some((prompt, per_sequence))
    }

    /// Logs `(task, metric, value)` rows for the current phase and step.
    fn log(&mut self, rows: &[(String, &str, f64)]) -> Result<()> {
        let rows: Vec<MetricRow> = rows
            .iter()
            .map(|(task, metric, value)| MetricRow {
                run: self.cfg.name.clone(),
                phase: self.state.phase as u32,
                step: self.state.global_step,
                tokens: self.state.tokens,
                task: task.clone(),
                metric: (*metric).into(),
                value: *value,
            })
            .collect();
        self.write_rows(&rows)
    }

    fn write_rows(&mut self, rows: &[MetricRow]) -> Result<()> {
        self.store.log_metrics(rows)?;
        self.csv.append(rows)?;
        Ok(())
    }

    /// Saves a checkpoint of the phase in progress and prunes old ones.
    fn checkpoint(
        &mut self,
        p: &PhaseSpec,
        opt: &Optimizer,
        params: &[f32],
        anchors: &Anchors,
        pin: Option<&str>,
    ) -> Result<()> {
        let mut state = self.state.clone();
        state.buffers.clear();
        opt.store(&mut state);
        match p.trainable {
            Trainable::Lora => drop(state.buffers.insert("lora".into(), params.to_vec())),
            Trainable::SoftPrompt => drop(state.buffers.insert("soft_prompt".into(), params.to_vec())),
            Trainable::Steering => drop(state.buffers.insert("steering".into(), params.to_vec())),
            Trainable::CondPrompt => drop(state.buffers.insert("cond_prompt".into(), params.to_vec())),
            _ => {}
        }
        anchors.store(&mut state);
        // The adapters are in `state`; the model dir holds the base weights only.
        let lora = self.model.lora.take();
        let saved = checkpoint::save(&self.paths.checkpoints, &self.model, self.tokenizer.as_deref(), &state, pin);
        self.model.lora = lora;
        saved?;
        checkpoint::prune(&self.paths.checkpoints, self.cfg.checkpoint.keep_last)?;
        Ok(())
    }

    /// Ends a phase: LoRA adapters are merged into the weights, soft prompts are saved next
    /// to the checkpoint, and a pinned checkpoint named after the phase is written.
    fn finish_phase(&mut self, p: &PhaseSpec, params: Vec<f32>) -> Result<()> {
        if let Some(lora) = self.model.lora.take() {
            lora.merge_into(&mut self.model);
        }
        let d = self.model.cfg.d_model;
        let saved = match p.trainable {
            Trainable::SoftPrompt => Some(("soft_prompt", vec![params.len() / d, d])),
            Trainable::Steering => Some(("steering", vec![params.len() / d, d])),
            Trainable::CondPrompt => Some(("cond_prompt", vec![params.len()])),
            _ => None,
        };
        if let Some((kind, shape)) = saved {
            let path = self.paths.dir.join(format!("{kind}.{}.safetensors", p.name));
            let t = crate::hf::io::HfTensor { shape, data: params };
            crate::hf::io::write_safetensors(&path, &BTreeMap::from([(kind.to_string(), t)]), None)?;
        }
        self.cond = None;
        self.state.phase += 1;
        self.state.step_in_phase = 0;
        self.state.opt_step = 0;
        self.state.buffers.clear();
        let state = self.state.clone();
        checkpoint::save(&self.paths.checkpoints, &self.model, self.tokenizer.as_deref(), &state, Some(&p.name))?;
        checkpoint::prune(&self.paths.checkpoints, self.cfg.checkpoint.keep_last)?;
        Ok(())
    }
}

/// Anchors of the L2-to-reference and diagonal-Fisher penalties.
#[derive(Default)]
struct Anchors {
    l2_ref: Vec<f32>,
    fisher: Vec<f32>,
    fisher_anchor: Vec<f32>,
}

impl Anchors {
    /// Adds the penalties' gradients to `grads`; returns the penalty value.
    fn apply(&self, weights: &[f32], grads: &mut [f32], p: &PhaseSpec) -> f64 {
        let mut penalty = 0.0f64;
        if !self.l2_ref.is_empty() {
            for ((g, w), r) in grads.iter_mut().zip(weights).zip(&self.l2_ref) {
                *g += p.l2_coef * (w - r);
                penalty += 0.5 * p.l2_coef as f64 * ((w - r) as f64).powi(2);
            }
        }
        if !self.fisher.is_empty() {
            for ((g, w), (f, a)) in grads.iter_mut().zip(weights).zip(self.fisher.iter().zip(&self.fisher_anchor)) {
                *g += p.ewc_coef * f * (w - a);
                penalty += 0.5 * (p.ewc_coef * f) as f64 * ((w - a) as f64).powi(2);
            }
        }
        penalty
    }

    fn store(&self, state: &mut TrainerState) {
        for (k, v) in [("l2.ref", &self.l2_ref), ("ewc.fisher", &self.fisher), ("ewc.anchor", &self.fisher_anchor)] {
            if !v.is_empty() {
                state.buffers.insert(k.into(), v.clone());
            }
        }
    }
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

/// How evaluations generate: greedy at temperature 0, else plain sampling.
fn sampling(temperature: f32) -> Sampling {
    if temperature > 0.0 {
        Sampling::TopP { temperature, top_p: 1.0 }
    } else {
        Sampling::Greedy
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

/// Clips `grads` to a global norm of `max` (if given); returns the norm before clipping.
fn clip(grads: &mut [f32], max: Option<f32>) -> f64 {
    let norm = grads.iter().map(|g| (*g as f64) * (*g as f64)).sum::<f64>().sqrt();
    if let Some(max) = max {
        if norm > max as f64 {
            let k = (max as f64 / norm) as f32;
            grads.iter_mut().for_each(|g| *g *= k);
        }
    }
    norm
}

/// Whether an evaluation falls after `done` steps of the phase.
fn eval_due(p: &PhaseSpec, done: u64) -> bool {
    if done == p.steps {
        return true;
    }
    if p.eval.log_points > 0 {
        return log_points(p.steps, p.eval.log_points).contains(&done);
    }
    p.eval.every > 0 && done.is_multiple_of(p.eval.every)
}

/// `n` log-spaced step counts in `1..=steps` (deduplicated).
pub fn log_points(steps: u64, n: usize) -> Vec<u64> {
    let mut v: Vec<u64> = (0..n)
        .map(|k| {
            let f = if n == 1 { 1.0 } else { k as f64 / (n - 1) as f64 };
            ((steps as f64).powf(f)).round().max(1.0) as u64
        })
        .collect();
    v.dedup();
    v
}

/// What adapts a frozen model at evaluation: soft-prompt vectors and steering.
#[derive(Clone, Copy, Default)]
pub struct Adaptation<'a> {
    /// `[n_prompt, d]`.
    pub prompts: &'a [f32],
    pub n_prompt: usize,
    pub steers: &'a [Steer],
    /// Where the prompt goes; eval sample `k`'s point is fixed by `(seed, k)` whatever the
    /// prompt length, so every length (0 included) scores the same labels.
    pub insert: Insert,
    /// `prompts` holds `n_prompt` rows per held-out sample (conditional prompts): sample `b`
    /// reads rows `b·n_prompt..`.
    pub per_sequence: bool,
}

/// The insertion mode of a phase's soft prompt (prepended when it has none).
fn insertion(p: &PhaseSpec) -> Insert {
    p.soft_prompt.as_ref().map_or(Insert::Prepend, |sp| sp.insert)
}

/// The first `n` held-out samples of `task` under `seed` and their insertion points: the
/// same for every prompt length.
pub fn held_out(task: &dyn Task, seed: u64, n: usize, insert: Insert) -> (Vec<Sample>, Vec<usize>) {
    let samples: Vec<Sample> = (0..n as u64).map(|k| task.sample(seed, Split::Eval, k)).collect();
    let at = (0..).zip(&samples).map(|(k, s)| insert.point(s.tokens.len(), mix(seed ^ EVAL_POINTS ^ mix(k)))).collect();
    (samples, at)
}

/// Salt of the held-out insertion points.
const EVAL_POINTS: u64 = 0x1e5e_7a11;

/// Held-out metrics of `task` on its first `samples` eval samples under `adapt`: `loss`; for
/// samples with explicit targets, the teacher-forced `target_accuracy`; otherwise, with
/// `generate`, `exact_match` and the task's scorers ([`score_all`]) of answers generated so
/// (seeded by `seed`). Answers run to the reference answer's length, or, for a task with
/// conditions (path quality), to the longest answer the task can have, so that a longer
/// generated path is scored whole.
pub fn eval_task(
    model: &Model,
    task: &dyn Task,
    seed: u64,
    samples: usize,
    adapt: &Adaptation,
    generate: Option<Sampling>,
) -> Result<Vec<(&'static str, f64)>> {
    let (samples, at) = held_out(task, seed, samples, adapt.insert);
    let mut batch = batch_at(&samples, adapt.n_prompt, &at);
    if adapt.per_sequence {
        batch = batch.per_sequence_prompts(adapt.n_prompt);
    }
    let norm = default_norm(&batch.targets, &batch.weights);
    let mut acts = Activations::default();
    let loss = model.forward(&mut acts, &batch, adapt.prompts, adapt.steers, norm);
    let mut out = vec![("loss", loss as f64)];
    if samples.iter().any(|s| s.targets.is_some()) {
        out.push(("target_accuracy", teacher_forced_accuracy(&acts.logits, &batch)));
    } else if let Some(sampling) = generate {
        let answer_len = match task.condition_width() {
            0 => samples.iter().map(|s| s.tokens.len() - s.prompt_len).max().unwrap_or(0),
            _ => task.seq_len() - samples.iter().map(|s| s.prompt_len).min().unwrap_or(0),
        };
        let answers = generated_answers(model, &samples, &at, adapt, answer_len, sampling, seed)?;
        let hits: f64 = samples.iter().zip(&answers).map(|(s, a)| score::exact_match(s, a)).sum();
        out.push(("exact_match", hits / samples.len().max(1) as f64));
        out.extend(score_all(task, &samples, &answers).into_iter().filter(|(metric, _)| *metric != "exact_match"));
    }
    Ok(out)
}

/// Fraction of the scored rows of `batch` whose argmax in `logits` (`[rows, V]`) is the label.
pub fn teacher_forced_accuracy(logits: &[f32], batch: &Batch) -> f64 {
    let v = logits.len() / batch.rows().max(1);
    let scored: Vec<usize> = (0..batch.rows()).filter(|&r| batch.weights[r] > 0.0).collect();
    let argmax = |r: usize| {
        let row = &logits[r * v..(r + 1) * v];
        (0..v).max_by(|&a, &b| row[a].total_cmp(&row[b])).expect("a non-empty vocabulary")
    };
    let hits = scored.iter().filter(|&&r| argmax(r) as i32 == batch.targets[r]).count();
    hits as f64 / scored.len().max(1) as f64
}

/// The hit rate (and loss, where the probe names one) of each probe set of `task`
/// ([`Task::probes`]), `samples` held-out samples each, under `adapt` (a soft prompt is
/// prepended); none under per-sample prompts, which belong to the task's own samples.
pub fn eval_probes(
    model: &Model,
    task: &dyn Task,
    seed: u64,
    samples: usize,
    adapt: &Adaptation,
) -> Result<Vec<(&'static str, f64)>> {
    let mut out = Vec::new();
    if adapt.per_sequence {
        return Ok(out);
    }
    for probe in task.probes(seed, samples) {
        let prepended = vec![0; probe.samples.len()];
        let generated =
            generated_answers(model, &probe.samples, &prepended, adapt, probe.max_target_len(), Sampling::Greedy, 0)?;
        out.push((probe.hits, probe.hit_rate(&generated)));
        if let Some(metric) = probe.loss {
            out.push((metric, mean_loss(model, &probe.samples, adapt)));
        }
    }
    Ok(out)
}

/// The mean weighted loss of `model` on `samples` under `adapt`.
fn mean_loss(model: &Model, samples: &[Sample], adapt: &Adaptation) -> f64 {
    let batch = batch_of(samples, adapt.n_prompt);
    let norm = default_norm(&batch.targets, &batch.weights);
    model.forward(&mut Activations::default(), &batch, adapt.prompts, adapt.steers, norm) as f64
}

/// Forgetting of `current` relative to `reference` on `task`'s first `samples` eval samples:
/// mean `(KL(p_ref ‖ p_cur), CE(p_ref, p_cur))` over scored tokens, on the same held-out
/// samples and insertion points as [`eval_task`]; `adapt` applies to the current model only.
fn forgetting(
    reference: &Model,
    current: &Model,
    task: &dyn Task,
    seed: u64,
    samples: usize,
    adapt: &Adaptation,
) -> (f64, f64) {
    let (samples, at) = held_out(task, seed, samples, adapt.insert);
    let plain = batch_at(&samples, 0, &at);
    let mut adapted = batch_at(&samples, adapt.n_prompt, &at);
    if adapt.per_sequence {
        adapted = adapted.per_sequence_prompts(adapt.n_prompt);
    }
    let ref_logits = logits_of(reference, &plain, &Adaptation::default());
    let cur_logits = logits_of(current, &adapted, adapt);
    let v = current.cfg.vocab_size;
    // Skip the prompt slots so that rows line up with the reference's: from the insertion
    // point on, the row predicting token t + 1 sits n_prompt slots later.
    let (seq, total, n) = (plain.seq, adapted.seq, adapt.n_prompt);
    let row = |b: usize, t: usize| b * total + t + if t + 1 >= at[b] { n } else { 0 };
    let cur_logits: Vec<f32> = (0..samples.len())
        .flat_map(|b| (0..seq).map(move |t| (b, t)))
        .flat_map(|(b, t)| cur_logits[row(b, t) * v..(row(b, t) + 1) * v].iter().copied())
        .collect();
    divergence(&ref_logits, &cur_logits, &plain.targets)
}

/// The logits `[B·T, V]` of `model` on `batch`.
fn logits_of(model: &Model, batch: &Batch, adapt: &Adaptation) -> Vec<f32> {
    let mut acts = Activations::default();
    model.forward(&mut acts, batch, adapt.prompts, adapt.steers, 1.0);
    acts.logits
}

/// The steering vector a phase trains (empty unless `trainable = "steering"`).
fn steers_of(p: &PhaseSpec, params: &[f32]) -> Vec<Steer> {
    match (&p.steering, p.trainable) {
        (Some(st), Trainable::Steering) => vec![Steer {
            layer: st.layer,
            coef: st.coef,
            start: st.start,
            end: st.end.unwrap_or(usize::MAX),
            vector: params.to_vec(),
        }],
        _ => Vec::new(),
    }
}

/// Evaluates a run's checkpoint (`step`, or the newest) on every task of its config;
/// returns `(task, metric, value)` rows.
pub fn evaluate_checkpoint(run_dir: &Path, step: Option<u64>, samples: usize) -> Result<Vec<(String, String, f64)>> {
    let cfg = RunConfig::from_file(&run_dir.join("config.toml"))?;
    let all = checkpoint::list(&run_dir.join("checkpoints"));
    let dir = match step {
        Some(s) => all
            .into_iter()
            .find(|(k, _)| *k == s)
            .map(|(_, p)| p)
            .with_context(|| format!("no checkpoint at step {s}"))?,
        None => all.into_iter().last().map(|(_, p)| p).context("the run has no checkpoint yet")?,
    };
    checkpoint::verify(&dir)?;
    let model = Model::load(&dir.join("model"))?.model;
    let mut rows = Vec::new();
    for (name, task) in build_tasks(&cfg)? {
        let adapt = Adaptation::default();
        let metrics = eval_task(&model, task.as_ref(), cfg.seed, samples, &adapt, Some(Sampling::Greedy))?;
        for (metric, value) in metrics.into_iter().chain(eval_probes(&model, task.as_ref(), cfg.seed, samples, &adapt)?)
        {
            rows.push((name.clone(), metric.to_string(), value));
        }
    }
    Ok(rows)
}

/// The continuation (`max_new` tokens, by `sampling` seeded with `seed`) of each sample's
/// prompt; the soft prompt goes before input token `at[b]` (at most the input's end).
fn generated_answers(
    model: &Model,
    samples: &[Sample],
    at: &[usize],
    adapt: &Adaptation,
    max_new: usize,
    sampling: Sampling,
    seed: u64,
) -> Result<Vec<Vec<u32>>> {
    let n = adapt.n_prompt as u32;
    let inputs: Vec<Vec<Slot>> = (0..)
        .zip(samples.iter().zip(at))
        .map(|(b, (s, &a))| {
            let (before, after) = s.tokens[..s.prompt_len].split_at(a.min(s.prompt_len));
            let token = |t: &u32| Slot::Token(*t);
            let first = if adapt.per_sequence { b * n } else { 0 };
            before
                .iter()
                .map(token)
                .chain((first..first + n).map(Slot::Prompt))
                .chain(after.iter().map(token))
                .collect()
        })
        .collect();
    let req = GenerateRequest {
        inputs: &inputs,
        prompt_vectors: adapt.prompts,
        steers: adapt.steers,
        max_new_tokens: max_new,
        sampling,
        eos: None,
        seed,
    };
    Ok(model.generate(&req)?)
}

/// The progress bars of this process: runs in parallel draw their bars together.
pub fn progress_bars() -> &'static MultiProgress {
    static BARS: std::sync::OnceLock<MultiProgress> = std::sync::OnceLock::new();
    BARS.get_or_init(MultiProgress::new)
}

/// A progress bar for a phase (hidden when stderr is not a terminal).
fn progress(p: &PhaseSpec, done: u64) -> ProgressBar {
    let bar = progress_bars().add(ProgressBar::new(p.steps));
    bar.set_style(
        ProgressStyle::with_template("{prefix:>12} [{bar:30}] {pos}/{len} {msg} ETA {eta}").expect("valid template"),
    );
    bar.set_prefix(p.name.clone());
    bar.set_position(done);
    bar
}
