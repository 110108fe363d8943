//! Turns task samples into engine batches: right-padded to a common length (padding has
//! weight 0, and causal attention never lets it affect real positions), optionally with
//! soft-prompt slots prepended.

use crate::data::Sample;
use crate::engine::batch::Batch;

/// Padding token.
pub const PAD: u32 = 0;

/// A batch of `samples` with `n_prompt` prompt slots prepended to each; each token slot
/// predicts the next token with that token's sample weight.
pub fn batch_of(samples: &[Sample], n_prompt: usize) -> Batch {
    let seq = samples.iter().map(|s| s.tokens.len()).max().unwrap_or(0);
    let mut ids = Vec::with_capacity(samples.len() * seq);
    for s in samples {
        ids.extend(&s.tokens);
        ids.extend(std::iter::repeat_n(PAD, seq - s.tokens.len()));
    }
    let mut batch = Batch::with_prompt(&ids, samples.len(), seq, n_prompt, &vec![0; samples.len()]);
    let total = batch.seq;
    for (b, s) in samples.iter().enumerate() {
        for t in 0..seq {
            let slot = b * total + n_prompt + t;
            let w = s.weights.get(t + 1).copied().unwrap_or(0.0);
            batch.weights[slot] = w;
            if w == 0.0 {
                batch.targets[slot] = -1;
            } else if s.targets.is_some() {
                batch.targets[slot] = s.label(t + 1) as i32;
            }
        }
    }
    batch
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::kernels::embed::Slot;

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
        assert_eq!(batch.slots[11], Slot::Token(PAD));
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
