//! Turns task samples into engine batches: right-padded to a common length (padding has
//! weight 0, and causal attention never lets it affect real positions), optionally with
//! soft-prompt slots prepended or spliced in at a random position.
//!
//! Masking with a prompt inserted before token `a` of a sample (the reference study's rule):
//! labels before `a` are ignored, prompt slots predict nothing except the last, which
//! predicts token `a`, and every token from `a` on predicts its successor. Token 0 is never
//! scored (no 0-token baseline could predict it), so every prompt length, 0 included, scores
//! exactly the labels `max(a, 1)..` of each sample. A repetition sample's string restarts at
//! the first scored label ([`Sample::label_from`]).

use crate::data::{mix, Sample};
use crate::engine::batch::Batch;
use serde::{Deserialize, Serialize};

/// Padding token.
pub const PAD: u32 = 0;

/// Where a soft prompt goes in each sample.
#[derive(Clone, Copy, Debug, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum Insert {
    /// Before the first token.
    #[default]
    Prepend,
    /// Before token `floor(U · max(0, len − 4))` for a uniform `U` drawn per sample.
    Random,
}

impl Insert {
    /// The insertion point of a sample of `len` tokens, drawn from `key` (0 when prepending).
    pub fn point(self, len: usize, key: u64) -> usize {
        match self {
            Insert::Prepend => 0,
            Insert::Random => ((mix(key) >> 11) as f64 / (1u64 << 53) as f64 * len.saturating_sub(4) as f64) as usize,
        }
    }
}

/// A batch of `samples` with `n_prompt` prompt slots prepended to each; each token slot
/// predicts the next token with that token's sample weight.
pub fn batch_of(samples: &[Sample], n_prompt: usize) -> Batch {
    batch_at(samples, n_prompt, &vec![0; samples.len()])
}

/// A batch of `samples` with `n_prompt` prompt slots inserted before token `at[b]` of sample
/// `b`, masked as the module describes.
pub fn batch_at(samples: &[Sample], n_prompt: usize, at: &[usize]) -> Batch {
    let seq = samples.iter().map(|s| s.tokens.len()).max().unwrap_or(0);
    let mut ids = Vec::with_capacity(samples.len() * seq);
    for s in samples {
        ids.extend(&s.tokens);
        ids.extend(std::iter::repeat_n(PAD, seq - s.tokens.len()));
    }
    let mut batch = Batch::with_prompt(&ids, samples.len(), seq, n_prompt, at);
    let total = batch.seq;
    batch.targets.fill(-1);
    batch.weights.fill(0.0);
    for (b, s) in samples.iter().enumerate() {
        let a = at[b].min(seq);
        for label in a.max(1)..s.tokens.len() {
            // Token `label` sits at slot `label + n_prompt`; the slot before it predicts it
            // (the last prompt slot when `label == a`).
            let before = b * total + label + n_prompt - 1;
            if s.weights[label] != 0.0 {
                batch.weights[before] = s.weights[label];
                batch.targets[before] = s.label_from(label, a) as i32;
            }
        }
    }
    batch
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::kernels::embed::InputSlot;

    #[test]
    fn weights_follow_the_sample_and_padding_and_prompt_slots_are_never_scored() {
        let a = Sample::new(vec![5, 6, 7, 8], vec![0.0, 0.0, 1.0, 1.0], 2);
        let b = Sample::new(vec![9, 10, 11], vec![0.0, 1.0, 0.5], 1);
        let batch = batch_of(&[a, b], 2);
        assert_eq!(batch.seq, 6);
        // Sequence 0: slots P P 5 6 7 8 — token 5 predicts 6 (weight 0), 6→7 and 7→8 scored.
        assert_eq!(&batch.targets[..6], &[-1, -1, -1, 7, 8, -1]);
        assert_eq!(&batch.weights[..6], &[0.0, 0.0, 0.0, 1.0, 1.0, 0.0]);
        // Sequence 1: P P 9 10 11 PAD — 9→10 (1.0), 10→11 (0.5), then padding is unscored.
        assert_eq!(&batch.targets[6..], &[-1, -1, 10, 11, -1, -1]);
        assert_eq!(&batch.weights[6..], &[0.0, 0.0, 1.0, 0.5, 0.0, 0.0]);
        assert_eq!(batch.slots[11], InputSlot::Token(PAD));
    }

    #[test]
    fn explicit_targets_replace_the_next_token_as_labels() {
        let mut s = Sample::new(vec![5, 6, 7, 8], vec![0.0, 1.0, 1.0, 0.0], 1);
        s.targets = Some(vec![0, 20, 21, 22]);
        let batch = batch_of(&[s], 0);
        // Token 5 predicts label 20 (not 6), token 6 predicts 21; the last weight is 0.
        assert_eq!(batch.targets, vec![20, 21, -1, -1]);
    }
}
