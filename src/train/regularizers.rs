//! The penalties of a full-weight phase: an L2 pull towards earlier weights and an EWC
//! penalty weighted by a diagonal Fisher, with the anchors they keep in checkpoints. Where
//! the anchors come from (a pinned checkpoint, the weights at the phase start) is the step
//! loop's business; gradient clipping is there too.

use super::batching::batch_of;
use super::config::PhaseSpec;
use crate::data::{Split, Task};
use crate::engine::activations::Activations;
use crate::engine::backward::GradSinks;
use crate::engine::kernels::loss::default_norm;
use crate::engine::model::Model;
use std::collections::BTreeMap;
use std::sync::Arc;

/// Anchors of the L2-to-reference and diagonal-Fisher penalties (empty when unused).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Anchors {
    pub l2_ref: Vec<f32>,
    pub fisher: Vec<f32>,
    pub fisher_anchor: Vec<f32>,
}

/// The tensor name of each anchor in a checkpoint.
const L2_REF: &str = "l2.ref";
const FISHER: &str = "ewc.fisher";
const FISHER_ANCHOR: &str = "ewc.anchor";

impl Anchors {
    /// Adds the penalties' gradients to `grads`; returns the penalty value.
    pub fn apply(&self, weights: &[f32], grads: &mut [f32], p: &PhaseSpec) -> f64 {
        let mut penalty = 0.0f64;
        if !self.l2_ref.is_empty() {
            for ((g, w), r) in grads.iter_mut().zip(weights).zip(&self.l2_ref) {
                *g += p.l2_coef * (w - r);
                penalty += 0.5 * p.l2_coef as f64 * ((w - r) as f64).powi(2);
            }
        }
        if !self.fisher.is_empty() {
            for ((g, w), (f, a)) in grads.iter_mut().zip(weights).zip(self.fisher.iter().zip(&self.fisher_anchor)) {
                *g += p.ewc_coef * f * (w - a);
                penalty += 0.5 * (p.ewc_coef * f) as f64 * ((w - a) as f64).powi(2);
            }
        }
        penalty
    }

    /// The anchors in use, as named tensors.
    pub fn tensors(&self) -> Vec<(&'static str, &Vec<f32>)> {
        [(L2_REF, &self.l2_ref), (FISHER, &self.fisher), (FISHER_ANCHOR, &self.fisher_anchor)]
            .into_iter()
            .filter(|(_, v)| !v.is_empty())
            .collect()
    }

    /// The anchors [`Anchors::tensors`] named, taken out of `tensors`.
    pub fn from_tensors(tensors: &mut BTreeMap<String, Vec<f32>>) -> Self {
        let mut take = |name| tensors.remove(name).unwrap_or_default();
        Anchors { l2_ref: take(L2_REF), fisher: take(FISHER), fisher_anchor: take(FISHER_ANCHOR) }
    }
}

/// Diagonal empirical Fisher of `model`: the mean squared per-sample gradient over `samples`
/// training samples drawn in turn from `tasks` under `seed`.
pub fn fisher(model: &Model, tasks: &[Arc<dyn Task>], seed: u64, samples: usize) -> Vec<f32> {
    let n = model.n_params();
    let (mut fisher, mut g) = (vec![0.0f32; n], vec![0.0f32; n]);
    let mut acts = Activations::default();
    for k in 0..samples {
        let task = &tasks[k % tasks.len()];
        let batch = batch_of(&[task.sample(seed, Split::Train, k as u64)], 0);
        let norm = default_norm(&batch.targets, &batch.weights);
        model.forward(&mut acts, &batch, &[], &[], norm);
        g.fill(0.0);
        model.backward(&mut acts, &batch, &[], norm, GradSinks { weights: Some(&mut g), ..Default::default() });
        fisher.iter_mut().zip(&g).for_each(|(f, g)| *f += g * g / samples as f32);
    }
    fisher
}
