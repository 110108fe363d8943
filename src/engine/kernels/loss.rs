//! Weighted softmax cross-entropy over the vocabulary.
//!
//! Shapes: `logits: [N, V]`, `targets: [N]` (−1: no target), `weights: [N]`.
//! `loss = Σᵢ wᵢ · CEᵢ / norm`. A weight of 0 masks a row; negative weights give
//! REINFORCE-style losses. The same buffer is turned into `∂loss/∂logits` in place.

use super::fastmath::exp;
use super::reduce;
use super::simd::widest;
use super::ROW_CHUNK;
use rayon::prelude::*;

/// Per-row cross-entropy into `row_loss` (0 where there is no target); returns the loss.
/// With `grad`, `logits` is overwritten by `∂loss/∂logits`.
pub fn cross_entropy(
    logits: &mut [f32],
    row_loss: &mut [f32],
    targets: &[i32],
    weights: &[f32],
    norm: f32,
    grad: bool,
) -> f32 {
    let v = logits.len() / targets.len().max(1);
    logits
        .par_chunks_mut(v * ROW_CHUNK)
        .zip(row_loss.par_chunks_mut(ROW_CHUNK))
        .zip(targets.par_chunks(ROW_CHUNK).zip(weights.par_chunks(ROW_CHUNK)))
        .for_each(|((logits, row_loss), (targets, weights))| {
            widest(
                #[inline(always)]
                || {
                    for (r, row) in logits.chunks_exact_mut(v).enumerate() {
                        row_loss[r] = ce_row(row, targets[r], weights[r] / norm, grad);
                    }
                },
            )
        });
    targets
        .iter()
        .zip(weights)
        .zip(row_loss.iter())
        .filter(|((t, _), _)| **t >= 0)
        .map(|((_, w), l)| w * l)
        .sum::<f32>()
        / norm
}

/// Cross-entropy of one row; with `grad`, the row becomes `scale · (softmax − onehot)`.
#[inline(always)]
pub(crate) fn ce_row(row: &mut [f32], target: i32, scale: f32, grad: bool) -> f32 {
    if target < 0 {
        if grad {
            row.fill(0.0);
        }
        return 0.0;
    }
    let max = reduce::max(row);
    let logit = row[target as usize];
    if grad {
        // Exponentiate once in place, then normalise.
        row.iter_mut().for_each(|x| *x = exp(*x - max));
        let sum = reduce::sum(row);
        let k = scale / sum;
        row.iter_mut().for_each(|x| *x *= k);
        row[target as usize] -= scale;
        max + sum.ln() - logit
    } else {
        let sum = fold_exp_sum(row, max);
        max + sum.ln() - logit
    }
}

/// `Σ exp(x − max)` without writing (lane-wise, deterministic).
#[inline]
fn fold_exp_sum(row: &[f32], max: f32) -> f32 {
    let mut lanes = [0.0f32; 16];
    let mut chunks = row.chunks_exact(16);
    for c in &mut chunks {
        lanes.iter_mut().zip(c).for_each(|(a, &x)| *a += exp(x - max));
    }
    let tail: f32 = chunks.remainder().iter().map(|&x| exp(x - max)).sum();
    reduce::sum(&lanes) + tail
}

/// The usual normaliser: `Σ |w|` over rows with a target (at least 1e-12).
pub fn default_norm(targets: &[i32], weights: &[f32]) -> f32 {
    let s: f32 = targets.iter().zip(weights).filter(|(t, _)| **t >= 0).map(|(_, w)| w.abs()).sum();
    s.max(1e-12)
}
