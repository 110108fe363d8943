//! Data-parallel training passes. A batch is split into shards of whole sequences that run
//! forward and backward at once, each over its own activation arena. Every kernel inside a
//! shard still splits its work over the thread pool, but a thread that would wait at a
//! kernel's join (or through a serial stretch of the other shard) takes the other shard's
//! work instead of idling.
//!
//! Shard 0 accumulates into the caller's gradient buffers, shard 1 into its own, added
//! afterwards. The split depends only on the batch's shape and the trained set's size,
//! never on the thread count, so a pass gives the same bits on any number of threads.

use super::activations::Activations;
use super::backward::GradSinks;
use super::batch::Batch;
use super::kernels::dropout::Dropout;
use super::model::{Model, Steer};
use rayon::prelude::*;

/// Shards a batch is split into when it is split at all. The gradient sum after a split
/// pass (`add_and_clear`) assumes exactly one extra shard.
const SHARDS: usize = 2;
const _: () = assert!(SHARDS == 2);
/// Fewest rows worth a shard of their own.
const MIN_SHARD_ROWS: usize = 256;
/// Most trained values for which each extra shard keeps its own gradient copy (64 MiB);
/// larger trained sets run as one shard.
const MAX_SHARD_GRADS: usize = 1 << 24;
/// Values per parallel work item of the gradient sum.
const SUM_CHUNK: usize = 1 << 14;

/// The arenas of a (possibly split) forward and backward pass, reused across steps.
#[derive(Default)]
pub struct ShardedPass {
    shards: Vec<Shard>,
}

/// One shard: its sequences, arena, gradient buffers (unused by shard 0) and loss.
#[derive(Default)]
struct Shard {
    batch: Batch,
    acts: Activations,
    grads: OwnedGrads,
    loss: f32,
}

/// Gradient buffers of a shard, shaped like the caller's `GradSinks`.
#[derive(Default)]
struct OwnedGrads {
    weights: Option<Vec<f32>>,
    prompts: Option<Vec<f32>>,
    steers: Option<Vec<Vec<f32>>>,
    lora: Option<Vec<f32>>,
    /// The flat buffers hold only zeros (`add_and_clear` leaves them so), so the next pass
    /// need not clear them.
    zero: bool,
}

/// How many shards `batch` is split into when `trained` values receive gradients.
pub fn shard_count(batch: &Batch, trained: usize) -> usize {
    let split = batch.batch >= SHARDS && batch.rows() >= SHARDS * MIN_SHARD_ROWS && trained <= MAX_SHARD_GRADS;
    if split {
        SHARDS
    } else {
        1
    }
}

/// Sequences `start..end` of shard `i` of `k` over `b` sequences (the first `b mod k`
/// shards take one more).
fn shard_sequences(b: usize, k: usize, i: usize) -> std::ops::Range<usize> {
    let (base, extra) = (b / k, b % k);
    let start = i * base + i.min(extra);
    start..start + base + usize::from(i < extra)
}

impl ShardedPass {
    /// Forward and backward of `batch` (as `Model::forward` then `Model::backward`),
    /// accumulating gradients into `sinks` and returning the loss. `dropout` is the pass's;
    /// each shard draws its masks from its own seed (`Dropout::for_shard`).
    #[allow(clippy::too_many_arguments)]
    pub fn run(
        &mut self,
        model: &Model,
        batch: &Batch,
        prompts: &[f32],
        steers: &[Steer],
        norm: f32,
        dropout: Dropout,
        mut sinks: GradSinks,
    ) -> f32 {
        let k = shard_count(batch, sinks.trained_values());
        self.shards.resize_with(k.max(self.shards.len()), Shard::default);
        if k == 1 {
            let s = &mut self.shards[0];
            s.acts.dropout = dropout;
            return pass(model, &mut s.acts, batch, (prompts, steers, norm), sinks);
        }
        for (i, s) in self.shards[..k].iter_mut().enumerate() {
            let seqs = shard_sequences(batch.batch, k, i);
            s.acts.dropout = dropout.for_shard(seqs.start);
            batch.sequences_into(seqs, &mut s.batch);
            if i > 0 {
                s.grads.zeroed_like(&sinks);
            }
        }
        let (first, rest) = self.shards[..k].split_at_mut(1);
        let inputs = (prompts, steers, norm);
        let (s0, own) = (&mut first[0], sinks.reborrow());
        rayon::join(
            || s0.loss = pass(model, &mut s0.acts, &s0.batch, inputs, own),
            || {
                rest.par_iter_mut().for_each(|s| {
                    s.loss = pass(model, &mut s.acts, &s.batch, inputs, s.grads.sinks());
                })
            },
        );
        for s in rest.iter() {
            s.grads.add_to_steers(&mut sinks);
        }
        let extra = &mut rest[0].grads;
        add_and_clear(&mut sinks.weights, &mut extra.weights);
        add_and_clear(&mut sinks.prompts, &mut extra.prompts);
        add_and_clear(&mut sinks.lora, &mut extra.lora);
        extra.zero = true;
        self.shards[..k].iter().map(|s| s.loss).sum()
    }
}

/// One unsplit forward and backward pass over `acts`.
fn pass(
    model: &Model,
    acts: &mut Activations,
    batch: &Batch,
    (prompts, steers, norm): (&[f32], &[Steer], f32),
    sinks: GradSinks,
) -> f32 {
    let loss = model.forward(acts, batch, prompts, steers, norm);
    model.backward(acts, batch, steers, norm, sinks);
    loss
}

/// Zeroes a gradient buffer across the thread pool before a step accumulates into it.
pub fn zero_grads(g: &mut [f32]) {
    g.par_chunks_mut(SUM_CHUNK).for_each(|c| c.fill(0.0));
}

/// `dst += src`, then `src = 0` (ready for the next pass), in one sweep.
fn add_and_clear(dst: &mut Option<&mut [f32]>, src: &mut Option<Vec<f32>>) {
    let (Some(dst), Some(src)) = (dst.as_deref_mut(), src.as_deref_mut()) else { return };
    dst.par_chunks_mut(SUM_CHUNK).zip(src.par_chunks_mut(SUM_CHUNK)).for_each(|(out, g)| {
        out.iter_mut().zip(g.iter_mut()).for_each(|(o, g)| {
            *o += *g;
            *g = 0.0;
        });
    });
}

/// Zeroed `v`, resized to `len` (keeping its allocation when it fits).
fn zeroed(v: &mut Option<Vec<f32>>, len: Option<usize>) {
    match len {
        Some(len) => {
            let v = v.get_or_insert_with(Vec::new);
            v.clear();
            v.resize(len, 0.0);
        }
        None => *v = None,
    }
}

impl OwnedGrads {
    /// Zeroed buffers for exactly the gradients `sinks` requests, with its lengths.
    fn zeroed_like(&mut self, sinks: &GradSinks) {
        let len = |g: &Option<&mut [f32]>| g.as_ref().map(|g| g.len());
        let lens = [len(&sinks.weights), len(&sinks.prompts), len(&sinks.lora)];
        let have = [&self.weights, &self.prompts, &self.lora].map(|v| v.as_ref().map(Vec::len));
        if !(self.zero && lens == have) {
            zeroed(&mut self.weights, lens[0]);
            zeroed(&mut self.prompts, lens[1]);
            zeroed(&mut self.lora, lens[2]);
        }
        self.zero = false;
        let Some(src) = sinks.steers.as_deref() else {
            self.steers = None;
            return;
        };
        let own = self.steers.get_or_insert_with(Vec::new);
        own.resize_with(src.len(), Vec::new);
        for (o, s) in own.iter_mut().zip(src) {
            o.clear();
            o.resize(s.len(), 0.0);
        }
    }

    /// These buffers as gradient sinks.
    fn sinks(&mut self) -> GradSinks<'_> {
        GradSinks {
            weights: self.weights.as_deref_mut(),
            prompts: self.prompts.as_deref_mut(),
            steers: self.steers.as_deref_mut(),
            lora: self.lora.as_deref_mut(),
        }
    }

    /// `sinks.steers += self.steers`.
    fn add_to_steers(&self, sinks: &mut GradSinks) {
        if let (Some(dst), Some(src)) = (sinks.steers.as_deref_mut(), &self.steers) {
            for (d, s) in dst.iter_mut().zip(src) {
                d.iter_mut().zip(s).for_each(|(d, s)| *d += s);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::config::ModelConfig;

    /// The address of a few buffers of every shard: its arena, split batch and gradients.
    fn addresses(pass: &ShardedPass) -> Vec<usize> {
        let mut v = Vec::new();
        for s in &pass.shards {
            v.extend([s.acts.resid[0].as_ptr() as usize, s.acts.blocks[0].qkv.as_ptr() as usize]);
            v.extend([s.acts.logits.as_ptr() as usize, s.batch.slots.as_ptr() as usize]);
            v.push(s.grads.weights.as_ref().map_or(0, |g| g.as_ptr() as usize));
        }
        v
    }

    #[test]
    fn shards_reuse_their_arenas_batches_and_gradient_copies_across_steps() {
        let json = serde_json::json!({
            "model_type": "gpt_neox", "vocab_size": 32, "hidden_size": 16, "num_hidden_layers": 1,
            "num_attention_heads": 2, "intermediate_size": 32, "max_position_embeddings": 64,
            "rotary_pct": 0.5, "use_parallel_residual": true, "hidden_act": "gelu",
        });
        let model = Model::init(ModelConfig::from_json(json, "<test>").unwrap(), 0.1, 1);
        let ids: Vec<u32> = (0..12 * 48).map(|i| (i * 7 % 32) as u32).collect();
        let batch = Batch::language_model(&ids, 12, 48);
        assert_eq!(shard_count(&batch, model.n_params()), 2);
        let (mut pass, mut grads) = (ShardedPass::default(), vec![0.0; model.n_params()]);
        let mut seen = None;
        for _ in 0..3 {
            let sinks = GradSinks { weights: Some(&mut grads), ..Default::default() };
            pass.run(&model, &batch, &[], &[], 1.0, Dropout::default(), sinks);
            let now = addresses(&pass);
            assert!(pass.shards[1].grads.weights.is_some(), "shard 1 keeps a gradient copy");
            if let Some(before) = &seen {
                assert_eq!(before, &now, "a shard buffer was reallocated");
            }
            seen = Some(now);
        }
    }
}
