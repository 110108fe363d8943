//! Vectorisable reductions. A plain `iter().sum()` over f32 is a serial dependency chain
//! (the compiler may not reorder float additions); these keep `LANES` independent partial
//! results and combine them pairwise in a fixed order, so they are fast and still
//! deterministic.

/// Independent accumulators per reduction (two AVX-512 registers' worth).
const LANES: usize = 32;

/// Folds `f(x)` over `xs` lane-wise with `op`, then combines the lanes (`combine`).
#[inline(always)]
fn fold_lanes(xs: &[f32], init: f32, f: impl Fn(f32) -> f32, op: impl Fn(f32, f32) -> f32) -> f32 {
    let mut acc = [init; LANES];
    let mut chunks = xs.chunks_exact(LANES);
    for c in &mut chunks {
        for (a, &x) in acc.iter_mut().zip(c) {
            *a = op(*a, f(x));
        }
    }
    let total = combine(acc, &op);
    chunks.remainder().iter().fold(total, |t, &x| op(t, f(x)))
}

/// Folds `f(a, b)` over the pairs of `xs` and `ys` (as `fold_lanes`).
#[inline(always)]
fn fold_pairs(xs: &[f32], ys: &[f32], init: f32, f: impl Fn(f32, f32) -> f32, op: impl Fn(f32, f32) -> f32) -> f32 {
    let ys = &ys[..xs.len()];
    let mut acc = [init; LANES];
    let (mut cx, mut cy) = (xs.chunks_exact(LANES), ys.chunks_exact(LANES));
    for (a, b) in (&mut cx).zip(&mut cy) {
        for ((acc, &a), &b) in acc.iter_mut().zip(a).zip(b) {
            *acc = op(*acc, f(a, b));
        }
    }
    let total = combine(acc, &op);
    cx.remainder().iter().zip(cy.remainder()).fold(total, |t, (&a, &b)| op(t, f(a, b)))
}

/// Combines the lanes pairwise (lane `i` with lane `i + w/2`, halving `w`): a fixed order,
/// with a dependency chain of log₂ LANES operations instead of LANES.
/// `N` must be a power of two.
#[inline(always)]
pub fn combine<const N: usize>(mut acc: [f32; N], op: impl Fn(f32, f32) -> f32) -> f32 {
    const { assert!(N.is_power_of_two(), "combine halves the lanes, so N must be a power of two") };
    let mut w = N;
    while w > 1 {
        w /= 2;
        for i in 0..w {
            acc[i] = op(acc[i], acc[i + w]);
        }
    }
    acc[0]
}

/// `Σ x`.
#[inline(always)]
pub fn sum(x: &[f32]) -> f32 {
    fold_lanes(x, 0.0, |v| v, |a, b| a + b)
}

/// `Σ a·b`.
#[inline(always)]
pub fn dot(a: &[f32], b: &[f32]) -> f32 {
    fold_pairs(a, b, 0.0, |a, b| a * b, |x, y| x + y)
}

/// `max x` (−∞ for an empty slice).
#[inline(always)]
pub fn max(x: &[f32]) -> f32 {
    fold_lanes(x, f32::NEG_INFINITY, |v| v, |a, b| if b > a { b } else { a })
}

/// `Σ (x − c)²`.
#[inline(always)]
pub fn sum_sq_dev(x: &[f32], c: f32) -> f32 {
    fold_lanes(x, 0.0, |v| (v - c) * (v - c), |a, b| a + b)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reductions_match_f64_references_on_odd_lengths() {
        for len in [0usize, 1, 31, 32, 33, 100, 1000] {
            let x: Vec<f32> = (0..len).map(|i| ((i * 37 % 101) as f32 - 50.0) / 7.0).collect();
            let y: Vec<f32> = (0..len).map(|i| ((i * 11 % 13) as f32 - 6.0) / 3.0).collect();
            let s64: f64 = x.iter().map(|&v| v as f64).sum();
            let d64: f64 = x.iter().zip(&y).map(|(&a, &b)| a as f64 * b as f64).sum();
            assert!((sum(&x) as f64 - s64).abs() < 1e-3, "sum len {len}");
            assert!((dot(&x, &y) as f64 - d64).abs() < 1e-3, "dot len {len}");
            let m = x.iter().copied().fold(f32::NEG_INFINITY, f32::max);
            assert_eq!(max(&x), m, "max len {len}");
            let q64: f64 = x.iter().map(|&v| (v as f64 - 1.5).powi(2)).sum();
            assert!((sum_sq_dev(&x, 1.5) as f64 - q64).abs() < 1e-2 * (1.0 + q64 * 1e-4), "sum_sq_dev len {len}");
        }
    }
}
