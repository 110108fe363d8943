//! Contrastive steering vectors (CAA, Rimsky et al. 2023): the mean difference of one residual
//! stream between two sets of inputs, read at their answer positions. Where a vector was read
//! and where it is applied are [`crate::engine::model::Steer`]'s layer and rows.

use super::batching::batch_of;
use crate::data::Sample;
use crate::engine::activations::Activations;
use crate::engine::kernels::loss::default_norm;
use crate::engine::model::Model;

/// The mean of residual stream `layer` (the input of block `layer`; `n_layers` is the final
/// norm's input) over the answer positions of `samples`: in each sample, the rows
/// `prompt_len − 1 .. len − 1`, whose predictions are its answer tokens.
pub fn answer_mean(model: &Model, samples: &[Sample], layer: usize) -> Vec<f32> {
    let d = model.cfg.d_model;
    let batch = batch_of(samples, 0);
    let mut acts = Activations::default();
    model.forward(&mut acts, &batch, &[], &[], default_norm(&batch.targets, &batch.weights));
    let resid = acts.residual(layer);
    let mut sum = vec![0.0f64; d];
    let mut count = 0usize;
    for (b, s) in samples.iter().enumerate() {
        for t in s.prompt_len.saturating_sub(1)..s.tokens.len().saturating_sub(1) {
            let row = &resid[(b * batch.seq + t) * d..(b * batch.seq + t + 1) * d];
            sum.iter_mut().zip(row).for_each(|(acc, x)| *acc += *x as f64);
            count += 1;
        }
    }
    sum.into_iter().map(|x| (x / count.max(1) as f64) as f32).collect()
}

/// `answer_mean(with) − answer_mean(without)` at `layer`: the direction the behaviour of
/// `with` (e.g. triggered inputs) adds to the residual stream over `without` (clean inputs).
pub fn mean_difference(model: &Model, with: &[Sample], without: &[Sample], layer: usize) -> Vec<f32> {
    let (a, b) = (answer_mean(model, with, layer), answer_mean(model, without, layer));
    a.iter().zip(&b).map(|(x, y)| x - y).collect()
}
