//! The step loop of a run: phases in order, each with its trainable set, optimizer,
//! schedule, clipping, gradient accumulation and regularisers; evaluations when due;
//! metrics to the run store and CSV; checkpoints (of what changed) and their retention.
//!
//! Every source of randomness is a pure function of `(seed, phase, counters)`: the training
//! sample at stream position `i` of phase `p`, the dropout masks of global step `s`. So the
//! whole state of a run is its model, its phase state and its counters, which is what a
//! checkpoint holds. Building the run and evaluating a model are elsewhere (`build`, `eval`).

use super::batching::Insert;
use super::build::{build_model, model_tokenizer, Built, Tasks};
use super::checkpoint::{self, PhaseState, Restored, TrainerState, Weights, WeightsRef};
use super::config::{OptimizerStart, PhaseSpec, RunConfig, Trainable};
use super::eval::{eval_probes, eval_task, forgetting, sampling, steering_wrong_way, Adaptation, EvalSet};
use super::optimizer::Optimizer;
use super::regularizers::{self, Anchors};
use super::reinforce::{
    banned_tokens, completion_logprobs, conditioned_samples, environment, equal_groups, policy_gradient_samples,
    recorded, roll_out, step_prompts, Method, RlCfg, Rollouts, Source, BIN_SALT, ROLLOUT_SALT,
};
use super::run::{RunError, RunPaths, RunSummary};
use super::schedule::lr_at;
use super::shared_base::{self, SharedBase};
use super::trainable::{artifact, checkpoint_key, insertion, Fixed, MicroBatch, TrainableSet};
use crate::data::environment::{Environment, Verdict};
use crate::data::mixture::Mixture;
use crate::data::{mix, Sample};
use crate::engine::kernels::dropout::Dropout;
use crate::engine::model::{Model, Steer};
use crate::engine::shards::{zero_grads, ShardedPass};
use crate::store::{read_csv, write_sample_scores, CsvLog, MetricRow, Store};
use indicatif::{MultiProgress, ProgressBar, ProgressStyle};
use std::collections::BTreeMap;
use std::path::PathBuf;

/// The run stopped because the loss or gradients became NaN or infinite.
#[derive(Debug, thiserror::Error)]
#[error("run diverged at step {step} (phase {phase:?}): {what} is not finite; the last good checkpoint is kept in {checkpoints}")]
pub struct Diverged {
    pub step: u64,
    pub phase: String,
    pub what: String,
    pub checkpoints: PathBuf,
}

/// A run in progress.
pub(super) struct Runner {
    cfg: RunConfig,
    paths: RunPaths,
    tasks: Tasks,
    /// The `tokenizer.json` saved with every checkpoint's model, if the tasks share one.
    tokenizer: Option<PathBuf>,
    model: Model,
    /// The stored weights the model's equal; `None` once they changed, so that the next
    /// checkpoint stores them.
    stored: Option<WeightsRef>,
    state: TrainerState,
    store: Store,
    csv: CsvLog,
    /// The arenas of training passes.
    pass: ShardedPass,
    /// The model at the end of the phase named first, loaded when an eval measures forgetting.
    reference: Option<(String, Model)>,
    /// The shared first phase this run trains and then publishes (see [`shared_base`]).
    shared: Option<SharedBase>,
}

/// What a phase in progress works with.
struct Phase {
    spec: PhaseSpec,
    mixture: Mixture,
    /// The tokens prepended to the samples of the tasks `spec.prefix_from` names.
    prefix: Vec<u32>,
    /// What `spec.apply_from` carries over.
    fixed: Fixed,
    set: TrainableSet,
    opt: Optimizer,
    anchors: Anchors,
    grads: Vec<f32>,
    /// A sampling-based phase's environment.
    env: Option<Box<dyn Environment>>,
}

impl Runner {
    /// Opens the store and CSV, creating the run from `built` or resuming it from `resumed`.
    pub(super) fn start(
        cfg: RunConfig,
        built: Built,
        text: String,
        paths: RunPaths,
        resumed: Option<Restored>,
    ) -> Result<Self, RunError> {
        let Built { tasks, model: model_config } = built;
        let tokenizer = model_tokenizer(&paths.dir, &tasks.values().cloned().collect::<Vec<_>>());
        let store = Store::open(&paths.db)?;
        let hash = cfg.hash();
        // A run an older build recorded for this config resumes (see `RunConfig::legacy_hash`).
        store.rehash_run(&cfg.name, &cfg.legacy_hash(), &hash)?;
        store.begin_run(&cfg.name, &text, &hash)?;
        let mut csv = CsvLog::open(&paths.csv)?;
        let fresh = resumed.is_none();
        let shared = match (&paths.bases, fresh) {
            (Some(bases), true) => {
                shared_base::key(&cfg, &model_config).map(|k| SharedBase::lock(bases, k)).transpose()?
            }
            _ => None,
        };
        let (model, stored, state) = match resumed {
            Some(Restored { model, state, weights }) => {
                store.truncate_after(&cfg.name, state.global_step)?;
                roll_back_csv(&mut csv, &store, &cfg.name, &state)?;
                (model, Some(weights), state)
            }
            None => {
                store.truncate_after(&cfg.name, 0)?;
                csv.rewrite(&[])?;
                let (model, stored) = build_model(&cfg.model, model_config, cfg.seed)?;
                (model, stored, TrainerState { config_hash: hash, ..Default::default() })
            }
        };
        let mut runner = Runner {
            cfg,
            paths,
            tasks,
            tokenizer,
            model,
            stored,
            state,
            store,
            csv,
            pass: ShardedPass::default(),
            reference: None,
            shared: None,
        };
        if fresh {
            let state = runner.state.clone();
            runner.save(&state, false, Some("init"))?;
        }
        match shared {
            Some(base) if base.published() => runner.adopt(&base)?,
            other => runner.shared = other,
        }
        Ok(runner)
    }

    /// Starts from the published shared first phase `base`: its model, state and metric
    /// rows, and its end checkpoint pinned in this run, as if the run had trained it.
    fn adopt(&mut self, base: &SharedBase) -> Result<(), RunError> {
        let first = self.cfg.phases[0].name.clone();
        let (restored, rows) = base.adopt(&first, &self.cfg.hash(), &self.cfg.name)?;
        tracing::info!(run = %self.cfg.name, phase = %first, "adopting the shared base");
        self.store.record_phase(&self.cfg.name, 0, &first, 0)?;
        self.store.log_metrics(&rows)?;
        self.csv.append(&rows)?;
        (self.model, self.stored, self.state) = (restored.model, None, restored.state);
        let state = self.state.clone();
        self.save(&state, false, Some(&first))
    }

    /// Runs the remaining phases.
    pub(super) fn run(mut self) -> Result<RunSummary, RunError> {
        while self.state.phase < self.cfg.phases.len() {
            if let Err(e) = self.run_phase() {
                let status = match e {
                    RunError::Diverged(_) => "diverged".to_string(),
                    RunError::Interrupted(_) => "interrupted".to_string(),
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

    /// Sets up the current phase from the state saved with it (fresh at its start).
    fn begin_phase(&mut self) -> Result<Phase, RunError> {
        let i = self.state.phase;
        let spec = self.cfg.phases[i].clone();
        let saved = std::mem::take(&mut self.state.phase_state);
        let mixture = Mixture::new(spec.mixture.iter().map(|(t, w)| (self.tasks[t].clone(), *w)).collect());
        let seed = self.phase_seed(i);
        let saved_params = saved.trainable.map(|(_, params)| params);
        let set = TrainableSet::new(&spec, &mut self.model, &self.tasks, seed, saved_params);
        let n = set.len(&self.model);
        let opt = Optimizer::new(&spec.optimizer, n, saved.optimizer);
        let anchors = self.anchors(&spec, saved.anchors)?;
        let prefix = match &spec.prefix_from {
            Some(from) => self.found_prompt(&from.phase)?,
            None => Vec::new(),
        };
        let fixed = match &spec.apply_from {
            Some(from) => {
                let earlier = self.cfg.phases.iter().find(|q| &q.name == from).expect("validated: an earlier phase");
                Fixed::load(&self.paths.dir, earlier)?
            }
            None => Fixed::default(),
        };
        let env = spec.rl.as_ref().map(|rl| environment(rl, &self.cfg.tasks).expect("a validated environment"));
        Ok(Phase { spec, mixture, prefix, fixed, set, opt, anchors, grads: vec![0.0f32; n], env })
    }

    /// The discrete prompt phase `phase` of this run found (its saved tokens).
    fn found_prompt(&self, phase: &str) -> Result<Vec<u32>, RunError> {
        let path = artifact(&self.paths.dir, Trainable::Tokens, phase);
        let tensors = crate::hf::io::read_safetensors(&path)?;
        let name = checkpoint_key(Trainable::Tokens).expect("searched prompts have a name");
        let tokens = tensors.get(name).ok_or(RunError::NoPinned { name: phase.to_string(), key: "prefix_from" })?;
        Ok(tokens.data.iter().map(|&t| t as u32).collect())
    }

    /// Runs (the rest of) the current phase and saves its pinned end checkpoint.
    fn run_phase(&mut self) -> Result<(), RunError> {
        let i = self.state.phase;
        let phase_start = self.state.global_step - self.state.step_in_phase;
        self.store.record_phase(&self.cfg.name, i as u32, &self.cfg.phases[i].name, phase_start)?;
        let mut ph = self.begin_phase()?;
        let p = ph.spec.clone();
        let bar = progress(&p, self.state.step_in_phase);
        let (started, tokens_at_start) = (std::time::Instant::now(), self.state.tokens);
        tracing::info!(phase = %p.name, from_step = self.state.step_in_phase, steps = p.steps, "phase starts");
        if self.state.step_in_phase == 0 {
            self.evaluate(&p, &mut ph.set, &ph.fixed, ph.env.as_deref())?;
        }
        while self.state.step_in_phase < p.steps {
            let loss = match (ph.set.token_search(), &ph.spec.rl) {
                (Some(_), _) => self.search_step(&mut ph)?,
                (None, Some(_)) => self.rl_step(&mut ph)?,
                (None, None) => self.train_step(&mut ph)?,
            };
            bar.inc(1);
            let rate = (self.state.tokens - tokens_at_start) as f64 / started.elapsed().as_secs_f64().max(1e-9);
            bar.set_message(format!("loss {loss:.4} · {rate:.0} tok/s"));
            if eval_due(&p, self.state.step_in_phase) {
                self.evaluate(&p, &mut ph.set, &ph.fixed, ph.env.as_deref())?;
                if self.stop_met(&p)? {
                    let step = self.state.step_in_phase;
                    tracing::info!(phase = %p.name, step, "stop criterion met");
                    self.log(&[("stop".to_string(), "step", step as f64)])?;
                    break;
                }
            }
            let every = self.cfg.checkpoint.every;
            let stop = super::interrupt::requested();
            if (stop || every > 0 && self.state.global_step.is_multiple_of(every)) && self.state.step_in_phase < p.steps
            {
                self.checkpoint(&ph)?;
                if stop {
                    return Err(super::interrupt::Interrupted { step: self.state.global_step }.into());
                }
            }
        }
        bar.finish_and_clear();
        self.finish_phase(ph)?;
        tracing::info!(phase = %p.name, global_step = self.state.global_step, "phase done");
        Ok(())
    }

    /// One optimizer step of the phase's trainable set; logs and returns its loss.
    fn train_step(&mut self, ph: &mut Phase) -> Result<f32, RunError> {
        let p = ph.spec.clone();
        let lr = lr_at(&p.schedule, p.optimizer.lr, self.state.step_in_phase, p.steps);
        let loss = self.accumulate(ph);
        let (penalty, norm) = self.apply(ph, loss, lr)?;
        let train = |metric, value| ("train".to_string(), metric, value);
        self.log(&[train("loss", loss as f64 + penalty), train("lr", lr as f64), train("grad_norm", norm)])?;
        Ok(loss)
    }

    /// One step of a sampling-based phase (see [`super::reinforce`]): rollouts of the step's
    /// episodes, their weighted samples (and the prediction batch), one optimizer step. Logs
    /// the rollouts' mean proxy reward, true success, exploit rate and the fraction of
    /// episodes (and of whole batches) whose rewards were all equal; returns the loss.
    fn rl_step(&mut self, ph: &mut Phase) -> Result<f32, RunError> {
        let p = ph.spec.clone();
        let cfg = p.rl.as_ref().expect("a sampling-based phase");
        let env = ph.env.as_deref().expect("built with the phase");
        let (step, seed) = (self.state.step_in_phase, self.phase_seed(self.state.phase));
        let lr = lr_at(&p.schedule, p.optimizer.lr, step, p.steps);
        let key = mix(seed ^ mix(step + 1));
        let r = match cfg.source {
            Source::Samples => {
                let prompts = step_prompts(env, seed, step, cfg.prompts);
                let banned = banned_tokens(env, &self.model);
                roll_out(&self.model, env, &prompts, None, cfg.k, cfg.temperature, &banned, key ^ ROLLOUT_SALT)?
            }
            Source::Data => recorded(env, seed, step, cfg.prompts * cfg.k),
        };
        let mut forward = r.forward_tokens;
        let mut samples = match cfg.method {
            Method::Conditioning => conditioned_samples(&r, cfg, env.task().vocab_size() as u32, key ^ BIN_SALT),
            method => {
                let shaping = self.shaping(cfg, &r, &mut forward)?;
                let group = if method == Method::Rloo { cfg.k } else { r.completions.len() };
                policy_gradient_samples(&r, &shaping, group, cfg.weight)
            }
        };
        if cfg.prediction > 0.0 {
            let (_, mut predicted, _) = self.draw(ph, step, 0);
            let total: f32 = predicted.iter().flat_map(|s| &s.weights).map(|w| w.abs()).sum();
            for s in &mut predicted {
                s.weights.iter_mut().for_each(|w| *w *= cfg.prediction as f32 / total.max(1e-12));
            }
            samples.extend(predicted);
        }
        let trained: u64 = samples.iter().map(|s| s.tokens.len() as u64).sum();
        self.state.tokens += trained + forward.div_ceil(3);
        zero_grads(&mut ph.grads);
        let at = vec![0; samples.len()];
        let dseed = mix(self.cfg.seed ^ mix(self.state.global_step));
        let mb = MicroBatch {
            samples: &samples,
            task_ids: &vec![0; samples.len()],
            at: &at,
            grad_accum: 1,
            dropout: Dropout { attn: p.dropout_attn, resid: p.dropout_resid, seed: dseed },
            fixed: &ph.fixed,
            norm: Some(1.0),
        };
        let loss = ph.set.micro_batch(&self.model, &mut self.pass, &mb, &mut ph.grads);
        let (penalty, norm) = self.apply(ph, loss, lr)?;
        let returns: Vec<f64> = r.rewards.iter().map(|x| x.total).collect();
        let n = returns.len() as f64;
        let mean = |f: &dyn Fn(&Verdict) -> bool| r.verdicts.iter().filter(|v| f(v)).count() as f64 / n;
        let rows = [
            ("train".to_string(), "loss", loss as f64 + penalty),
            ("train".to_string(), "lr", lr as f64),
            ("train".to_string(), "grad_norm", norm),
            ("rl".to_string(), "reward", returns.iter().sum::<f64>() / n),
            ("rl".to_string(), "success", mean(&|v| v.success)),
            ("rl".to_string(), "exploit", mean(&|v| v.exploit())),
            ("rl".to_string(), "equal_episodes", equal_groups(&returns, cfg.k)),
            ("rl".to_string(), "equal_batch", equal_groups(&returns, returns.len())),
        ];
        self.log(&rows)?;
        Ok(loss)
    }

    /// Per completion token, the KL penalty and entropy bonus added to its reward:
    /// `−kl_coef · (log π − log π_ref) − entropy_coef · log π` (empty when both are 0). Adds
    /// the forward tokens it spends to `forward`.
    fn shaping(&mut self, cfg: &RlCfg, r: &Rollouts, forward: &mut u64) -> Result<Vec<Vec<f64>>, RunError> {
        if cfg.kl_coef == 0.0 && cfg.entropy_coef == 0.0 {
            return Ok(Vec::new());
        }
        let tokens: u64 = r.prompts.iter().zip(&r.completions).map(|(p, c)| (p.len() + c.len()) as u64).sum();
        let current = completion_logprobs(&self.model, r);
        *forward += tokens;
        let reference = match &cfg.kl_to {
            Some(anchor) if cfg.kl_coef > 0.0 => {
                self.load_reference(anchor)?;
                *forward += tokens;
                completion_logprobs(&self.reference.as_ref().expect("loaded").1, r)
            }
            _ => current.clone(),
        };
        Ok(current
            .iter()
            .zip(&reference)
            .map(|(c, q)| c.iter().zip(q).map(|(lc, lq)| -cfg.kl_coef * (lc - lq) - cfg.entropy_coef * lc).collect())
            .collect())
    }

    /// Adds the regularisers' gradients to the phase's, clips them, refuses a step whose loss,
    /// penalty or gradient norm is not finite, and takes it; returns the penalty and the norm.
    fn apply(&mut self, ph: &mut Phase, loss: f32, lr: f32) -> Result<(f64, f64), RunError> {
        let penalty = ph.anchors.apply(&self.model.weights, &mut ph.grads, &ph.spec);
        let norm = clip(&mut ph.grads, ph.spec.grad_clip);
        if !loss.is_finite() || !norm.is_finite() || !penalty.is_finite() {
            let what = if loss.is_finite() { "the gradient norm" } else { "the loss" };
            return Err(self.diverged(&ph.spec.name, what));
        }
        ph.set.update(&mut ph.opt, &mut self.model, &ph.grads, lr);
        self.state.step_in_phase += 1;
        self.state.global_step += 1;
        Ok((penalty, norm))
    }

    /// The run diverged in phase `phase`: `what` is not finite.
    fn diverged(&self, phase: &str, what: &str) -> RunError {
        Diverged {
            step: self.state.global_step,
            phase: phase.to_string(),
            what: what.into(),
            checkpoints: self.paths.checkpoints.clone(),
        }
        .into()
    }

    /// Micro-batch `micro` of step `step` of the phase: each sample's task index, the samples
    /// and their prompt insertion points.
    fn draw(&self, ph: &Phase, step: u64, micro: usize) -> (Vec<usize>, Vec<Sample>, Vec<usize>) {
        let p = &ph.spec;
        let seed = self.phase_seed(self.state.phase);
        let insert = insertion(p);
        let first = (step * p.grad_accum as u64 + micro as u64) * p.batch_size as u64;
        let (task_ids, mut samples): (Vec<usize>, Vec<_>) =
            (0..p.batch_size as u64).map(|r| ph.mixture.sample(seed, first + r)).unzip();
        if let Some(from) = &p.prefix_from {
            let names: Vec<&String> = p.mixture.keys().collect();
            for (s, &t) in samples.iter_mut().zip(&task_ids) {
                if from.tasks.contains(names[t]) {
                    *s = with_prefix(s, &ph.prefix);
                }
            }
        }
        let at = samples.iter().zip(first..).map(|(s, k)| insert.point(s.tokens.len(), mix(seed ^ k))).collect();
        (task_ids, samples, at)
    }

    /// One step of a discrete prompt search (see [`super::token_search`]) on the step's
    /// batch (exhaustive search: always the phase's first batch); logs the current prompt's
    /// loss, the best candidate's and whether the prompt changed, and returns the first.
    fn search_step(&mut self, ph: &mut Phase) -> Result<f32, RunError> {
        let step = self.state.step_in_phase;
        let key = self.phase_seed(self.state.phase) ^ 0x0067_6367;
        let fixed = ph.set.token_search().is_some_and(|(s, _)| s.fixed_batch());
        let (_, samples, at) = self.draw(ph, if fixed { 0 } else { step }, 0);
        let (search, rows) = ph.set.token_search().expect("a token-search phase");
        let report = search.step(&self.model, &mut self.pass, &samples, &at, step, key);
        *rows = search.rows(&self.model);
        let (forward_backward, forward) = search.cfg.passes();
        let width: u64 = samples.iter().map(|s| (s.tokens.len() + search.tokens.len()) as u64).sum();
        self.state.tokens += (forward_backward + forward) * width;
        self.state.step_in_phase += 1;
        self.state.global_step += 1;
        if !report.loss.is_finite() {
            return Err(self.diverged(&ph.spec.name, "the loss"));
        }
        let train = |metric, value| ("train".to_string(), metric, value);
        let best = if report.best_candidate.is_finite() { report.best_candidate } else { report.loss };
        self.log(&[
            train("loss", report.loss as f64),
            train("best_candidate", best as f64),
            train("accepted", report.accepted as u8 as f64),
        ])?;
        Ok(report.loss)
    }

    /// Gradients of `grad_accum` micro-batches into the phase's gradient buffer; returns
    /// their mean loss.
    fn accumulate(&mut self, ph: &mut Phase) -> f32 {
        zero_grads(&mut ph.grads);
        let mut loss = 0.0;
        for micro in 0..ph.spec.grad_accum {
            let (task_ids, samples, at) = self.draw(ph, self.state.step_in_phase, micro);
            let p = &ph.spec;
            let dseed = mix(self.cfg.seed ^ mix(self.state.global_step) ^ micro as u64);
            let dropout = Dropout { attn: p.dropout_attn, resid: p.dropout_resid, seed: dseed };
            self.state.tokens += samples.iter().map(|s| s.tokens.len() as u64).sum::<u64>();
            let mb = MicroBatch {
                samples: &samples,
                task_ids: &task_ids,
                at: &at,
                grad_accum: p.grad_accum,
                dropout,
                fixed: &ph.fixed,
                norm: None,
            };
            loss += ph.set.micro_batch(&self.model, &mut self.pass, &mb, &mut ph.grads);
        }
        loss
    }

    /// Regulariser anchors for the phase: `saved` ones on resume, else computed now.
    fn anchors(&mut self, p: &PhaseSpec, saved: Anchors) -> Result<Anchors, RunError> {
        let mut a = Anchors::default();
        if p.l2_coef > 0.0 {
            a.l2_ref = match saved.l2_ref {
                r if !r.is_empty() => r,
                _ => {
                    let name = p.l2_to.as_deref().unwrap_or("init");
                    checkpoint::load_model(&self.pinned(name, "l2_to")?)?.weights
                }
            };
        }
        if p.ewc_coef > 0.0 {
            (a.fisher, a.fisher_anchor) = if saved.fisher.is_empty() || saved.fisher_anchor.is_empty() {
                let names: &[String] = if p.ewc_tasks.is_empty() {
                    &self.cfg.phases[self.state.phase - 1].mixture.keys().cloned().collect::<Vec<_>>()
                } else {
                    &p.ewc_tasks
                };
                let tasks: Vec<_> = names.iter().map(|t| self.tasks[t].clone()).collect();
                let seed = self.phase_seed(self.state.phase) ^ 0xf15e;
                (regularizers::fisher(&self.model, &tasks, seed, p.ewc_samples), self.model.weights.clone())
            } else {
                (saved.fisher, saved.fisher_anchor)
            };
        }
        Ok(a)
    }

    /// The pinned checkpoint `name`, which `key` of the config names.
    fn pinned(&self, name: &str, key: &'static str) -> Result<PathBuf, RunError> {
        checkpoint::find_pinned(&self.paths.checkpoints, name)
            .ok_or_else(|| RunError::NoPinned { name: name.to_string(), key })
    }

    /// Held-out metrics of every eval task (see [`eval_task`]), and in a sampling-based phase
    /// the rollouts in its environment `env` (see [`super::reinforce::evaluate`]), logged at
    /// the current step.
    fn evaluate(
        &mut self,
        p: &PhaseSpec,
        set: &mut TrainableSet,
        fixed: &Fixed,
        env: Option<&dyn Environment>,
    ) -> Result<(), RunError> {
        let names: Vec<String> =
            if p.eval.tasks.is_empty() { p.mixture.keys().cloned().collect() } else { p.eval.tasks.clone() };
        if let Some(anchor) = &p.eval.kl_to {
            self.load_reference(anchor)?;
        }
        let mut rows = Vec::new();
        let generate = p.eval.exact_match.then(|| sampling(p.eval.temperature));
        let (seed, samples, insert) = (self.cfg.seed, p.eval.samples, insertion(p));
        let prompt = set.prompt_metrics(&self.model);
        let mut wrong_way: Vec<(String, String, f64)> = Vec::new();
        let steers: Vec<Steer> = set.steers().iter().chain(&fixed.steer).cloned().collect();
        rows.extend(prompt.iter().map(|(metric, value)| ("prompt".to_string(), metric.as_str(), *value)));
        let n_prompt = set.n_prompt().max(fixed.n_prompt(self.model.cfg.d_model));
        for name in names {
            let task = self.tasks[&name].as_ref();
            if p.eval.validation > 0 {
                let val = EvalSet::validation(p.eval.validation);
                let conditioned = set.conditioned_prompt(&name, task, seed, val, insert);
                let adapt = adaptation(set, fixed, &conditioned, n_prompt, &steers, insert);
                let metrics = eval_task(&self.model, task, seed, val, &adapt, None)?;
                rows.extend(
                    metrics
                        .metrics
                        .into_iter()
                        .filter(|(m, _)| *m == "loss")
                        .map(|(_, v)| (name.clone(), "val_loss", v)),
                );
            }
            let conditioned = set.conditioned_prompt(&name, task, seed, EvalSet::reported(samples), insert);
            let adapt = adaptation(set, fixed, &conditioned, n_prompt, &steers, insert);
            let evaluated = eval_task(&self.model, task, seed, EvalSet::reported(samples), &adapt, generate)?;
            rows.extend(evaluated.metrics.iter().map(|(metric, value)| (name.clone(), *metric, *value)));
            if !evaluated.per_sample.is_empty() {
                let path = sample_scores_path(&self.paths.dir, self.state.phase as u32, self.state.global_step, &name);
                write_sample_scores(&path, &evaluated.per_sample)?;
            }
            for (metric, value) in eval_probes(&self.model, task, seed, samples, &adapt)? {
                rows.push((name.clone(), metric, value));
            }
            wrong_way.extend(
                steering_wrong_way(&self.model, task, seed, samples, &adapt)
                    .into_iter()
                    .map(|(m, v)| (name.clone(), m, v)),
            );
            if let Some((_, reference)) = self.reference.as_ref().filter(|_| p.eval.kl_to.is_some()) {
                let (kl, ce) = forgetting(reference, &self.model, task, seed, samples, &adapt);
                rows.push((name.clone(), "forgetting_kl", kl));
                rows.push((name.clone(), "forgetting_ce", ce));
            }
        }
        rows.extend(wrong_way.iter().map(|(task, metric, value)| (task.clone(), metric.as_str(), *value)));
        let rollouts = match (&p.rl, env) {
            (Some(rl), Some(env)) => {
                let reference = self.reference.as_ref().filter(|_| p.eval.kl_to.is_some()).map(|(_, m)| m);
                let eval = super::reinforce::evaluate(&self.model, env, rl, seed, samples, reference)?;
                let path =
                    sample_scores_path(&self.paths.dir, self.state.phase as u32, self.state.global_step, "rollouts");
                write_sample_scores(&path, &eval.per_sample)?;
                eval.metrics
            }
            _ => Vec::new(),
        };
        rows.extend(rollouts.iter().map(|(metric, value)| ("rollouts".to_string(), metric.as_str(), *value)));
        self.log(&rows)
    }

    /// Whether the phase's stop criterion holds after its latest evaluation, judged on its
    /// evaluations logged so far (read back from the store, so a resumed run judges alike).
    fn stop_met(&self, p: &PhaseSpec) -> Result<bool, RunError> {
        let Some(stop) = &p.stop else { return Ok(false) };
        let phase = self.state.phase as u32;
        let rows: Vec<MetricRow> = self.store.metrics(&self.cfg.name)?;
        Ok(stop.task.names().iter().all(|task| {
            let mut mine: Vec<&MetricRow> =
                rows.iter().filter(|r| r.phase == phase && &r.task == task && r.metric == stop.metric).collect();
            mine.sort_by_key(|r| r.step);
            stop.met(&mine.iter().map(|r| r.value).collect::<Vec<_>>())
        }))
    }

    /// Loads the model saved at the end of phase `anchor` (once per run process).
    fn load_reference(&mut self, anchor: &str) -> Result<(), RunError> {
        if self.reference.as_ref().is_none_or(|(name, _)| name != anchor) {
            let model = checkpoint::load_model(&self.pinned(anchor, "eval.kl_to")?)?;
            self.reference = Some((anchor.to_string(), model));
        }
        Ok(())
    }

    /// Logs `(task, metric, value)` rows for the current phase and step.
    fn log(&mut self, rows: &[(String, &str, f64)]) -> Result<(), RunError> {
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
        self.store.log_metrics(&rows)?;
        self.csv.append(&rows)?;
        Ok(())
    }

    /// Saves a checkpoint of the phase in progress and prunes old ones.
    fn checkpoint(&mut self, ph: &Phase) -> Result<(), RunError> {
        let state = TrainerState {
            phase_state: PhaseState {
                trainable: ph.set.saved(&self.model),
                optimizer: ph.opt.state(),
                anchors: ph.anchors.clone(),
            },
            ..self.state.clone()
        };
        self.save(&state, ph.set.trains_weights(), None)?;
        checkpoint::prune(&self.paths.checkpoints, self.cfg.checkpoint.keep_last)?;
        Ok(())
    }

    /// Writes a checkpoint of `state` holding the model's weights when they changed since
    /// they were last stored (or `store_weights`), else a reference to the stored ones.
    fn save(&mut self, state: &TrainerState, store_weights: bool, pin: Option<&str>) -> Result<(), RunError> {
        let root = &self.paths.checkpoints;
        match self.stored.as_ref().filter(|_| !store_weights) {
            Some(stored) => drop(checkpoint::save(root, Weights::Reference(stored), state, pin)?),
            None => {
                let weights = Weights::Stored { model: &self.model, tokenizer: self.tokenizer.as_deref() };
                let dir = checkpoint::save(root, weights, state, pin)?;
                self.stored = Some(checkpoint::weights_of(&dir)?);
            }
        }
        Ok(())
    }

    /// Ends a phase: the trainable set finishes (merging LoRA adapters, saving a prompt or
    /// steering vector next to the checkpoints), and a pinned checkpoint named after the
    /// phase is written.
    fn finish_phase(&mut self, ph: Phase) -> Result<(), RunError> {
        if ph.set.finish(&mut self.model, &self.paths.dir, &ph.spec)? {
            self.stored = None;
        }
        let carried =
            self.cfg.phases.get(self.state.phase + 1).is_some_and(|q| q.optimizer_state == OptimizerStart::Carry);
        self.state.phase += 1;
        self.state.step_in_phase = 0;
        self.state.phase_state =
            PhaseState { optimizer: if carried { ph.opt.state() } else { Default::default() }, ..Default::default() };
        let state = self.state.clone();
        self.save(&state, false, Some(&ph.spec.name))?;
        checkpoint::prune(&self.paths.checkpoints, self.cfg.checkpoint.keep_last)?;
        if let Some(base) = self.shared.take() {
            let rows: Vec<MetricRow> =
                self.store.metrics(&self.cfg.name)?.into_iter().filter(|r| r.phase == 0).collect();
            base.publish(&ph.spec.name, &self.model, self.tokenizer.as_deref(), &state, &rows)?;
        }
        Ok(())
    }
}

/// `sample` with `prefix` before its first token, weighted 0 and part of its prompt.
fn with_prefix(sample: &Sample, prefix: &[u32]) -> Sample {
    let tokens = prefix.iter().chain(&sample.tokens).copied().collect();
    let weights = std::iter::repeat_n(0.0, prefix.len()).chain(sample.weights.iter().copied()).collect();
    Sample::new(tokens, weights, sample.prompt_len + prefix.len())
}

/// Rolls the CSV back to the checkpoint `state` was restored from: keeps the rows logged
/// before it, in the order they were logged, so the resumed run appends exactly what an
/// uninterrupted one would. A checkpoint at a phase start (step_in_phase 0) comes before
/// that phase's first evaluation, at the same step; a checkpoint within a phase comes after
/// every row of its step. When the CSV lacks rows the store has (deleted, or cut short), it
/// is rebuilt from the store, in the store's order.
fn roll_back_csv(csv: &mut CsvLog, store: &Store, run: &str, state: &TrainerState) -> Result<(), RunError> {
    let next =
        if state.step_in_phase == 0 { (state.global_step, state.phase as u32) } else { (state.global_step + 1, 0) };
    let before = |r: &MetricRow| (r.step, r.phase) < next;
    let stored: Vec<MetricRow> = store.metrics(run)?.into_iter().filter(before).collect();
    let logged = read_csv(csv.path()).map(|rows| rows.into_iter().filter(before).collect::<Vec<_>>());
    match logged {
        Ok(rows) if rows.len() == stored.len() => csv.rewrite(&rows)?,
        other => {
            let why = other.map_or_else(|e| e.to_string(), |rows| format!("{} of {} rows", rows.len(), stored.len()));
            tracing::warn!("{}: rebuilt from the run store ({why})", csv.path().display());
            csv.rewrite(&stored)?;
        }
    }
    Ok(())
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
fn log_points(steps: u64, n: usize) -> Vec<u64> {
    let mut v: Vec<u64> = (0..n)
        .map(|k| {
            let f = if n == 1 { 1.0 } else { k as f64 / (n - 1) as f64 };
            ((steps as f64).powf(f)).round().max(1.0) as u64
        })
        .collect();
    v.dedup();
    v
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

/// The adaptation an evaluation applies: the phase's own prompt (or an earlier phase's,
/// carried), or the per-sample `conditioned` one, and every steer.
fn adaptation<'a>(
    set: &'a TrainableSet,
    fixed: &'a Fixed,
    conditioned: &'a Option<(Vec<f32>, bool)>,
    n_prompt: usize,
    steers: &'a [Steer],
    insert: Insert,
) -> Adaptation<'a> {
    let own = if set.prompts().is_empty() { &fixed.prompt[..] } else { set.prompts() };
    let prompts = conditioned.as_ref().map_or(own, |(c, _)| c.as_slice());
    let per_sequence = conditioned.as_ref().is_some_and(|(_, per)| *per);
    Adaptation { prompts, n_prompt, steers, insert, per_sequence }
}

/// Where an evaluation's per-sample scores of `task` are kept in run folder `dir`.
pub fn sample_scores_path(dir: &std::path::Path, phase: u32, step: u64, task: &str) -> PathBuf {
    dir.join("samples").join(format!("phase{phase}-step{step:08}-{task}.csv"))
}
