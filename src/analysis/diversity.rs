//! Diversity of a set of sampled solutions to one problem: how many distinct ones, the
//! entropy of their empirical distribution, and a self-BLEU-style overlap (Zhu et al. 2018's
//! Self-BLEU, here with bigrams only, suited to short move sequences).

use std::collections::BTreeMap;

/// Distinct solutions among `solutions`.
pub fn distinct<T: Ord>(solutions: &[T]) -> usize {
    solutions.iter().collect::<std::collections::BTreeSet<_>>().len()
}

/// Entropy (nats) of the empirical distribution of `solutions`: 0 when all are equal,
/// `ln n` when all `n` differ.
pub fn entropy<T: Ord>(solutions: &[T]) -> f64 {
    let mut counts: BTreeMap<&T, usize> = BTreeMap::new();
    for s in solutions {
        *counts.entry(s).or_default() += 1;
    }
    let n = solutions.len() as f64;
    counts.values().map(|&c| c as f64 / n).map(|p| -p * p.ln()).sum()
}

/// Mean over ordered pairs `(i, j ≠ i)` of the clipped bigram precision of `solutions[i]`
/// against `solutions[j]`, each sequence read with a start marker (so a one-token sequence
/// has a bigram): 1 when all solutions are equal, lower the less they share. `NaN` for
/// fewer than two solutions.
pub fn overlap(solutions: &[Vec<u32>]) -> f64 {
    let bigrams = |s: &Vec<u32>| -> BTreeMap<(Option<u32>, u32), usize> {
        let mut m = BTreeMap::new();
        let starts = std::iter::once(None).chain(s.iter().map(|&t| Some(t)));
        for (a, &b) in starts.zip(s) {
            *m.entry((a, b)).or_default() += 1;
        }
        m
    };
    let grams: Vec<_> = solutions.iter().map(bigrams).collect();
    let (mut sum, mut pairs) = (0.0, 0usize);
    for (i, gi) in grams.iter().enumerate() {
        let total: usize = gi.values().sum();
        for (_, gj) in grams.iter().enumerate().filter(|(j, _)| *j != i) {
            let hit: usize = gi.iter().map(|(g, &c)| c.min(gj.get(g).copied().unwrap_or(0))).sum();
            sum += if total == 0 { 1.0 } else { hit as f64 / total as f64 };
            pairs += 1;
        }
    }
    if pairs == 0 {
        f64::NAN
    } else {
        sum / pairs as f64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn equal_solutions_have_one_distinct_zero_entropy_full_overlap() {
        let s = vec![vec![7, 8], vec![7, 8], vec![7, 8]];
        assert_eq!(distinct(&s), 1);
        assert_eq!(entropy(&s), 0.0);
        assert_eq!(overlap(&s), 1.0);
    }

    #[test]
    fn all_different_solutions_have_log_n_entropy_and_hand_computed_overlap() {
        // Bigrams with the start marker: [7, 8] → (^,7), (7,8); [7, 9] → (^,7), (7,9); [9] → (^,9).
        let s = vec![vec![7, 8], vec![7, 9], vec![9]];
        assert_eq!(distinct(&s), 3);
        assert!((entropy(&s) - 3f64.ln()).abs() < 1e-12);
        // Precisions: 0→1 1/2, 0→2 0, 1→0 1/2, 1→2 0, 2→0 0, 2→1 0; mean 1/6.
        assert!((overlap(&s) - 1.0 / 6.0).abs() < 1e-12);
        assert!(overlap(&s[..1]).is_nan());
    }
}
