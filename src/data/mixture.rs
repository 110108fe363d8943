//! A weighted mixture of tasks as one resumable training stream: sample `i` picks its task
//! from a hash of `(seed, i)` and takes that task's `i`-th training sample, so the stream's
//! whole state is the position `i`.

use super::{mix, Sample, Split, Task};
use std::sync::Arc;

/// Tasks with sampling weights.
#[derive(Clone)]
pub struct Mixture {
    pub tasks: Vec<Arc<dyn Task>>,
    /// Cumulative normalised weights.
    cumulative: Vec<f64>,
}

impl Mixture {
    /// A mixture of `(task, weight)` pairs (weights need not sum to one).
    pub fn new(parts: Vec<(Arc<dyn Task>, f64)>) -> Self {
        let total: f64 = parts.iter().map(|(_, w)| w).sum();
        let mut acc = 0.0;
        let cumulative = parts
            .iter()
            .map(|(_, w)| {
                acc += w / total;
                acc
            })
            .collect();
        Mixture { tasks: parts.into_iter().map(|(t, _)| t).collect(), cumulative }
    }

    /// Training sample `position` of the stream and the task it came from.
    pub fn sample(&self, seed: u64, position: u64) -> (usize, Sample) {
        let k = self.pick(seed ^ mix(position));
        (k, self.tasks[k].sample(seed, Split::Train, position))
    }

    /// The task a uniform hash of `key` falls on, in proportion to the weights.
    pub fn pick(&self, key: u64) -> usize {
        let u = (mix(key) >> 11) as f64 / (1u64 << 53) as f64;
        self.cumulative.iter().position(|&c| u < c).unwrap_or(self.tasks.len() - 1)
    }
}
