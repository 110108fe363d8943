//! Scoring greedy answers: the shared per-sample metrics and the mean of [`Task::score`]
//! over an eval set. Task-specific metrics live with their tasks.

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

/// The mean of each metric of [`Task::score`] over `samples` and their greedy answers
/// `generated` (paired by position), in the order the task reports them.
pub fn score_all(task: &dyn Task, samples: &[Sample], generated: &[Vec<u32>]) -> Vec<(&'static str, f64)> {
    let mut sums: Vec<(&'static str, f64)> = Vec::new();
    for (s, g) in samples.iter().zip(generated) {
        for (name, value) in task.score(s, g) {
            match sums.iter_mut().find(|(n, _)| *n == name) {
                Some((_, sum)) => *sum += value,
                None => sums.push((name, value)),
            }
        }
    }
    let n = samples.len().min(generated.len()).max(1) as f64;
    sums.into_iter().map(|(name, sum)| (name, sum / n)).collect()
}
