//! Scoring greedy answers: the shared per-sample metrics, the mean of [`Task::score`] over
//! an eval set, and probe sets ([`Probe`]) scored by their hit rate. Task-specific metrics
//! live with their tasks.

use super::{Sample, Task};

/// Fraction of answer positions where `generated` holds the label (missing positions are
/// wrong; an empty answer scores 1).
pub fn token_accuracy(sample: &Sample, generated: &[u32]) -> f64 {
    let answer = sample.answer();
    if answer.is_empty() {
        return 1.0;
    }
    let hits = answer.iter().zip(generated).filter(|(a, g)| a == g).count();
    hits as f64 / answer.len() as f64
}

/// 1 if `generated` starts with the whole answer, else 0.
pub fn exact_match(sample: &Sample, generated: &[u32]) -> f64 {
    let answer = sample.answer();
    f64::from(u8::from(generated.len() >= answer.len() && generated[..answer.len()] == answer[..]))
}

/// The mean of each metric of [`Task::score`] over the samples (paired with their greedy
/// answers `generated` by position) that report it — a metric defined for some samples only,
/// such as a reached path's extra moves, is averaged over those — in the order the task
/// reports them.
pub fn score_all(task: &dyn Task, samples: &[Sample], generated: &[Vec<u32>]) -> Vec<(&'static str, f64)> {
    mean_scores(&score_samples(task, samples, generated))
}

/// Each metric of [`Task::score`] per sample (paired with `generated` by position), NaN
/// where a sample does not report it, in the order the task reports them.
pub fn score_samples(task: &dyn Task, samples: &[Sample], generated: &[Vec<u32>]) -> SampleScores {
    let mut out: SampleScores = Vec::new();
    for (k, (s, g)) in samples.iter().zip(generated).enumerate() {
        for (name, value) in task.score(s, g) {
            let column = match out.iter().position(|(n, _)| *n == name) {
                Some(i) => i,
                None => {
                    out.push((name, vec![f64::NAN; samples.len()]));
                    out.len() - 1
                }
            };
            out[column].1[k] = value;
        }
    }
    out
}

/// Per metric, one value per sample (NaN: not defined for that sample).
pub type SampleScores = Vec<(&'static str, Vec<f64>)>;

/// The mean of each metric over the samples that define it.
pub fn mean_scores(scores: &SampleScores) -> Vec<(&'static str, f64)> {
    scores
        .iter()
        .map(|(name, values)| {
            let (sum, count) = values.iter().filter(|v| !v.is_nan()).fold((0.0, 0usize), |(s, c), v| (s + v, c + 1));
            (*name, sum / count as f64)
        })
        .collect()
}

/// A held-out probe set a task adds to its evaluations (see [`Task::probes`]): the fraction
/// of samples whose greedy continuation of the prompt starts with its target, and optionally
/// the samples' loss.
#[derive(Clone, Debug, PartialEq)]
pub struct Probe {
    /// The hit-rate metric's name; `None` for a probe that only measures its loss.
    pub hits: Option<&'static str>,
    /// The loss metric's name, when the probe's loss is logged too.
    pub loss: Option<&'static str>,
    pub samples: Vec<Sample>,
    /// Per sample: the tokens whose generation counts as a hit.
    pub targets: Vec<Vec<u32>>,
}

impl Probe {
    /// The fraction of `generated` answers (paired with the samples) that start with their target.
    pub fn hit_rate(&self, generated: &[Vec<u32>]) -> f64 {
        let hits = self.targets.iter().zip(generated).filter(|(t, g)| g.len() >= t.len() && g[..t.len()] == t[..]);
        hits.count() as f64 / self.targets.len().max(1) as f64
    }

    /// The longest target: how many tokens to generate.
    pub fn max_target_len(&self) -> usize {
        self.targets.iter().map(Vec::len).max().unwrap_or(0)
    }
}
