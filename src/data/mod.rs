//! Tasks: deterministic maps from `(seed, split, index)` to samples (tokens plus per-token
//! loss weights), and mixtures of tasks as resumable streams.
//!
//! Train and eval samples come from disjoint hash streams (the split is part of the key),
//! so a held-out set never overlaps training, and any position of a stream can be
//! regenerated from its index alone — which is what makes checkpoints resumable.

pub mod backdoor;
pub mod corpus;
pub mod grammar;
pub mod mixture;
pub mod pathfinding;
pub mod sequence;
pub mod spec;
pub mod targets;

/// Which stream a sample comes from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Split {
    Train,
    Eval,
}

/// One sample: `tokens[t]` and the loss weight of predicting it (`weights[0]` is unused);
/// `prompt_len` tokens form the input, the rest the answer.
#[derive(Clone, Debug, PartialEq)]
pub struct Sample {
    pub tokens: Vec<u32>,
    pub weights: Vec<f32>,
    pub prompt_len: usize,
    /// Explicit labels, when position `t - 1` must predict `targets[t]` rather than the next
    /// token `tokens[t]` (skip-k, repetition); same length as `tokens`.
    pub targets: Option<Vec<u32>>,
}

impl Sample {
    /// A next-token sample: position `t - 1` predicts `tokens[t]` with weight `weights[t]`.
    pub fn new(tokens: Vec<u32>, weights: Vec<f32>, prompt_len: usize) -> Sample {
        Sample { tokens, weights, prompt_len, targets: None }
    }

    /// The label scored at token `t` (`targets[t]`, or `tokens[t]` without explicit targets).
    pub fn label(&self, t: usize) -> u32 {
        self.targets.as_ref().map_or(self.tokens[t], |l| l[t])
    }
}

/// A task: deterministic in `(seed, split, index)`.
pub trait Task: Send + Sync {
    /// The task's name in configs and metrics.
    fn name(&self) -> &str;
    /// Smallest vocabulary that holds every token.
    fn vocab_size(&self) -> usize;
    /// Length of every sample.
    fn seq_len(&self) -> usize;
    /// Sample `index` of `split` under `seed`.
    fn sample(&self, seed: u64, split: Split, index: u64) -> Sample;

    /// Task-specific fields of a sample for inspection (default: none).
    fn fields(&self, _seed: u64, _split: Split, _index: u64) -> serde_json::Value {
        serde_json::Value::Null
    }

    /// Human-readable text of a sample (default: its token ids).
    fn render(&self, sample: &Sample) -> String {
        sample.tokens.iter().map(u32::to_string).collect::<Vec<_>>().join(" ")
    }
}

/// SplitMix64: a well-mixed hash used to derive independent random streams.
pub fn mix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// The seed of sample `index` of `split` under `seed` for the task named `name`.
pub fn sample_key(seed: u64, name: &str, split: Split, index: u64) -> u64 {
    let name_hash = name.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| (h ^ b as u64).wrapping_mul(0x100_0000_01b3));
    mix(mix(mix(seed ^ name_hash) ^ (split as u64 + 1)) ^ index)
}
