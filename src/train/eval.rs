//! Evaluation of a model on held-out samples: loss, teacher-forced accuracy, generated
//! answers and their scores, probe hit rates, and forgetting against a reference model,
//! under an optional adaptation (soft prompt, steering). Which evaluations a phase runs and
//! when is the step loop's business; `vestige eval` on a checkpoint is in `run`.

use super::batching::{batch_at, batch_of, Insert};
use super::forgetting::divergence;
use crate::data::score::{self, mean_scores, score_samples, SampleScores};
use crate::data::{mix, Sample, Split, Task, SELECTION_OFFSET};
use crate::engine::activations::Activations;
use crate::engine::batch::Batch;
use crate::engine::generate::{GenerateError, GenerateRequest, InputSlot, Sampling};
use crate::engine::kernels::loss::default_norm;
use crate::engine::model::{Model, Steer};

/// How evaluations generate: greedy at temperature 0, else plain sampling.
pub(super) fn sampling(temperature: f32) -> Sampling {
    if temperature > 0.0 {
        Sampling::TopP { temperature, top_p: 1.0 }
    } else {
        Sampling::Greedy
    }
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

/// A set of held-out samples: eval-split indices `from..from + n`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EvalSet {
    pub from: u64,
    pub n: usize,
}

impl EvalSet {
    /// The reported set: the first `n` eval samples.
    pub fn reported(n: usize) -> EvalSet {
        EvalSet { from: 0, n }
    }

    /// The validation set, for choosing (learning rate, restart, stopping step) apart from
    /// what is reported: `n` eval samples from [`SELECTION_OFFSET`], disjoint from the
    /// reported set.
    pub fn validation(n: usize) -> EvalSet {
        EvalSet { from: SELECTION_OFFSET, n }
    }
}

/// The held-out samples of `set` of `task` under `seed` and their insertion points: the
/// same for every prompt length.
pub fn held_out(task: &dyn Task, seed: u64, set: EvalSet, insert: Insert) -> (Vec<Sample>, Vec<usize>) {
    let indices = set.from..set.from + set.n as u64;
    let samples: Vec<Sample> = indices.clone().map(|k| task.sample(seed, Split::Eval, k)).collect();
    let at =
        indices.zip(&samples).map(|(k, s)| insert.point(s.tokens.len(), mix(seed ^ EVAL_POINTS ^ mix(k)))).collect();
    (samples, at)
}

/// Salt of the held-out insertion points.
const EVAL_POINTS: u64 = 0x1e5e_7a11;

/// Held-out metrics of `task` on the samples of `set` under `adapt`: `loss`; for
/// samples with explicit targets, the teacher-forced `target_accuracy`; otherwise, with
/// `generate`, `exact_match` and the task's scorers (their means over the samples that define
/// them, and each sample's value) of answers generated so (seeded by `seed`). Answers run to
/// the reference answer's length, or, for a task with conditions (path quality), to the
/// longest answer the task can have, so that a longer generated path is scored whole.
pub fn eval_task(
    model: &Model,
    task: &dyn Task,
    seed: u64,
    set: EvalSet,
    adapt: &Adaptation,
    generate: Option<Sampling>,
) -> Result<TaskEval, GenerateError> {
    let (samples, at) = held_out(task, seed, set, adapt.insert);
    let mut batch = batch_at(&samples, adapt.n_prompt, &at);
    if adapt.per_sequence {
        batch = batch.per_sequence_prompts(adapt.n_prompt);
    }
    let norm = default_norm(&batch.targets, &batch.weights);
    let mut acts = Activations::default();
    let loss = model.forward(&mut acts, &batch, adapt.prompts, adapt.steers, norm);
    let mut out = vec![("loss", loss as f64)];
    let mut per_sample = SampleScores::new();
    if samples.iter().any(|s| s.targets.is_some()) {
        out.push(("target_accuracy", teacher_forced_accuracy(&acts.logits, &batch)));
    } else if let Some(sampling) = generate {
        let answer_len = match task.condition_width() {
            0 => samples.iter().map(|s| s.tokens.len() - s.prompt_len).max().unwrap_or(0),
            _ => task.max_answer_len().min(task.seq_len() - samples.iter().map(|s| s.prompt_len).min().unwrap_or(0)),
        };
        let answers = generated_answers(model, &samples, &at, adapt, answer_len, sampling, seed)?;
        let hits: f64 = samples.iter().zip(&answers).map(|(s, a)| score::exact_match(s, a)).sum();
        out.push(("exact_match", hits / samples.len().max(1) as f64));
        per_sample = score_samples(task, &samples, &answers);
        out.extend(mean_scores(&per_sample).into_iter().filter(|(metric, _)| *metric != "exact_match"));
    }
    Ok(TaskEval { metrics: out, per_sample })
}

/// What [`eval_task`] measured: the metrics, and each generated answer's scores (empty
/// without generation).
#[derive(Clone, Debug, Default)]
pub struct TaskEval {
    pub metrics: Vec<(&'static str, f64)>,
    pub per_sample: SampleScores,
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
) -> Result<Vec<(&'static str, f64)>, GenerateError> {
    let mut out = Vec::new();
    if adapt.per_sequence {
        return Ok(out);
    }
    for probe in task.probes(seed, samples) {
        if let Some(hits) = probe.hits {
            let prepended = vec![0; probe.samples.len()];
            let n = probe.max_target_len();
            let generated = generated_answers(model, &probe.samples, &prepended, adapt, n, Sampling::Greedy, 0)?;
            out.push((hits, probe.hit_rate(&generated)));
        }
        if let Some(metric) = probe.loss {
            out.push((metric, mean_loss(model, &probe.samples, adapt)));
        }
    }
    Ok(out)
}

/// Under steering, the fraction of each loss probe's samples whose loss the steering lowers
/// (`<loss metric>_wrong_way`, e.g. `triggered_loss_wrong_way`: the inputs on which a vector
/// meant to suppress the backdoor makes its response more likely); none without steering.
pub fn steering_wrong_way(
    model: &Model,
    task: &dyn Task,
    seed: u64,
    samples: usize,
    adapt: &Adaptation,
) -> Vec<(String, f64)> {
    if adapt.steers.is_empty() || adapt.per_sequence {
        return Vec::new();
    }
    let plain = Adaptation { steers: &[], ..*adapt };
    let mut out = Vec::new();
    for probe in task.probes(seed, samples) {
        let Some(metric) = probe.loss else { continue };
        let (with, without) =
            (sample_losses(model, &probe.samples, adapt), sample_losses(model, &probe.samples, &plain));
        let lowered = with.iter().zip(&without).filter(|(w, o)| w < o).count();
        out.push((format!("{metric}_wrong_way"), lowered as f64 / with.len().max(1) as f64));
    }
    out
}

/// Each sample's mean weighted loss under `adapt` (a soft prompt prepended).
fn sample_losses(model: &Model, samples: &[Sample], adapt: &Adaptation) -> Vec<f64> {
    let batch = batch_of(samples, adapt.n_prompt);
    let mut acts = Activations::default();
    model.forward(&mut acts, &batch, adapt.prompts, adapt.steers, 1.0);
    (0..samples.len())
        .map(|b| {
            let rows = b * batch.seq..(b + 1) * batch.seq;
            let scored = rows.filter(|&r| batch.targets[r] >= 0);
            let (sum, weight) = scored.fold((0.0, 0.0), |(s, w), r| {
                (s + (batch.weights[r] * acts.row_loss[r]) as f64, w + batch.weights[r] as f64)
            });
            sum / weight.max(1e-12)
        })
        .collect()
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
pub(super) fn forgetting(
    reference: &Model,
    current: &Model,
    task: &dyn Task,
    seed: u64,
    samples: usize,
    adapt: &Adaptation,
) -> (f64, f64) {
    let (samples, at) = held_out(task, seed, EvalSet::reported(samples), adapt.insert);
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
) -> Result<Vec<Vec<u32>>, GenerateError> {
    let n = adapt.n_prompt as u32;
    let inputs: Vec<Vec<InputSlot>> = (0..)
        .zip(samples.iter().zip(at))
        .map(|(b, (s, &a))| {
            let (before, after) = s.tokens[..s.prompt_len].split_at(a.min(s.prompt_len));
            let token = |t: &u32| InputSlot::Token(*t);
            let first = if adapt.per_sequence { b * n } else { 0 };
            before
                .iter()
                .map(token)
                .chain((first..first + n).map(InputSlot::Prompt))
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
        banned: &[],
        seed,
    };
    model.generate(&req)
}
