//! What one forward pass consumes: per slot, what occupies it (token or prompt vector),
//! what it should predict and with what loss weight.

use super::kernels::embed::InputSlot;

/// A rectangular batch of `batch` sequences of `seq` slots each.
#[derive(Clone, Debug, Default)]
pub struct Batch {
    pub batch: usize,
    pub seq: usize,
    /// `[batch · seq]`: the content of each slot.
    pub slots: Vec<InputSlot>,
    /// `[batch · seq]`: the token each slot predicts, or −1.
    pub targets: Vec<i32>,
    /// `[batch · seq]`: the loss weight of each slot's prediction.
    pub weights: Vec<f32>,
}

impl Batch {
    /// Plain language modelling on `ids: [batch, seq]`: token `t` predicts token `t+1`.
    pub fn language_model(ids: &[u32], batch: usize, seq: usize) -> Self {
        Self::with_prompt(ids, batch, seq, 0, &vec![0; batch])
    }

    /// `ids: [batch, seq]` with `n_prompt` prompt slots inserted before token
    /// `insert_at[b]` of sequence `b`. Every token position predicts the next token; prompt
    /// slots predict nothing, and neither does the token just before a mid-sequence prompt
    /// (its successor is a prompt slot). Prompt slot `j` reads prompt row `j`.
    pub fn with_prompt(ids: &[u32], batch: usize, seq: usize, n_prompt: usize, insert_at: &[usize]) -> Self {
        assert_eq!(ids.len(), batch * seq, "ids must be [batch, seq]");
        let total = seq + n_prompt;
        let mut out = Batch { batch, seq: total, ..Default::default() };
        for (b, row) in ids.chunks_exact(seq).enumerate() {
            let at = insert_at[b].min(seq);
            let mut slots: Vec<InputSlot> = row[..at].iter().map(|&t| InputSlot::Token(t)).collect();
            slots.extend((0..n_prompt as u32).map(InputSlot::Prompt));
            slots.extend(row[at..].iter().map(|&t| InputSlot::Token(t)));
            for i in 0..total {
                let next = match (slots[i], slots.get(i + 1)) {
                    (InputSlot::Token(_), Some(InputSlot::Token(t))) => *t as i32,
                    _ => -1,
                };
                out.targets.push(next);
                out.weights.push(if next >= 0 { 1.0 } else { 0.0 });
            }
            out.slots.extend(slots);
        }
        out
    }

    /// Gives each sequence its own prompt rows: prompt slot `j` of sequence `b` reads row
    /// `b·n + j` (for conditional prompts, which differ per sequence).
    pub fn per_sequence_prompts(mut self, n_prompt: usize) -> Self {
        for (r, slot) in self.slots.iter_mut().enumerate() {
            if let InputSlot::Prompt(j) = slot {
                *j += ((r / self.seq) * n_prompt) as u32;
            }
        }
        self
    }

    /// Sequences `seqs` of this batch into `out` (reusing its buffers).
    pub fn sequences_into(&self, seqs: std::ops::Range<usize>, out: &mut Batch) {
        let rows = seqs.start * self.seq..seqs.end * self.seq;
        (out.batch, out.seq) = (seqs.len(), self.seq);
        out.slots.clear();
        out.slots.extend_from_slice(&self.slots[rows.clone()]);
        out.targets.clear();
        out.targets.extend_from_slice(&self.targets[rows.clone()]);
        out.weights.clear();
        out.weights.extend_from_slice(&self.weights[rows]);
    }

    /// Number of slots, `batch · seq`.
    pub fn rows(&self) -> usize {
        self.batch * self.seq
    }
}
