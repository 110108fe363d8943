//! Forgetting measured against a reference model: how far the current model's next-token
//! distributions have moved from the reference's, on the same held-out inputs.

/// Mean over scored rows (`targets[r] ≥ 0`) of `KL(p_ref ‖ p_cur)` and of the cross-entropy
/// `−Σ p_ref · log p_cur`, in nats. `reference`, `current`: `[N, V]` logits; `targets`: `[N]`.
pub fn divergence(reference: &[f32], current: &[f32], targets: &[i32]) -> (f64, f64) {
    let v = reference.len() / targets.len().max(1);
    let (mut kl, mut ce, mut n) = (0.0, 0.0, 0usize);
    for (r, _) in targets.iter().enumerate().filter(|(_, t)| **t >= 0) {
        let (p, q) = (log_softmax(&reference[r * v..(r + 1) * v]), log_softmax(&current[r * v..(r + 1) * v]));
        let cross: f64 = p.iter().zip(&q).map(|(lp, lq)| -lp.exp() * lq).sum();
        let entropy: f64 = p.iter().map(|lp| -lp.exp() * lp).sum();
        kl += cross - entropy;
        ce += cross;
        n += 1;
    }
    let n = n.max(1) as f64;
    (kl / n, ce / n)
}

/// Log-probabilities of one row of logits, in f64.
fn log_softmax(row: &[f32]) -> Vec<f64> {
    let log_sum = log_sum_exp(row);
    row.iter().map(|&x| x as f64 - log_sum).collect()
}

/// `ln Σ exp(x)` of one row of logits, in f64 (stabilised by the row's maximum): a token's
/// log-probability is its logit minus this.
pub(super) fn log_sum_exp(row: &[f32]) -> f64 {
    let max = row.iter().fold(f32::NEG_INFINITY, |m, &x| m.max(x)) as f64;
    row.iter().map(|&x| (x as f64 - max).exp()).sum::<f64>().ln() + max
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identical_models_have_zero_kl_and_entropy_as_cross_entropy() {
        let logits = [1.0, 2.0, 0.5, -1.0, 0.0, 3.0];
        let (kl, ce) = divergence(&logits, &logits, &[0, 2]);
        assert!(kl.abs() < 1e-12);
        // Cross-entropy with itself is the entropy of each row, averaged.
        let h = |r: &[f32]| log_softmax(r).iter().map(|l| -l.exp() * l).sum::<f64>();
        assert!((ce - (h(&logits[..3]) + h(&logits[3..])) / 2.0).abs() < 1e-12);
    }

    #[test]
    fn kl_matches_the_closed_form_for_two_outcomes_and_skips_unscored_rows() {
        // p = (0.5, 0.5) from equal logits; q = (σ(2), 1 − σ(2)).
        let reference = [0.0, 0.0, 9.0, 9.0];
        let current = [2.0, 0.0, -5.0, 7.0];
        let q0 = 1.0 / (1.0 + (-2.0f64).exp());
        let expected = 0.5 * (0.5 / q0).ln() + 0.5 * (0.5 / (1.0 - q0)).ln();
        let (kl, _) = divergence(&reference, &current, &[1, -1]);
        assert!((kl - expected).abs() < 1e-9, "{kl} vs {expected}");
    }
}
