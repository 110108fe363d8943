//! Vectorisable reductions. A plain `iter().sum()` over f32 is a serial dependency chain
//! (the compiler may not reorder float additions); these keep `LANES` independent partial
//! results and combine them in a fixed order, so they are fast and still deterministic.

/// Independent accumulators per reduction (two AVX-512 registers' worth).
const LANES: usize = 32;

/// Folds `f(i)` over `0..len` lane-wise with `op`, then combines the lanes in order.
#[inline(always)]
fn fold_lanes(len: usize, init: f32, f: impl Fn(usize) -> f32, op: impl Fn(f32, f32) -> f32) -> f32 {
    let mut acc = [init; LANES];
    let full = len / LANES * LANES;
    for base in (0..full).step_by(LANES) {
        for (l, a) in acc.iter_mut().enumerate() {
            *a = op(*a, f(base + l));
        }
    }
    let mut total = acc.iter().copied().fold(init, &op);
    for i in full..len {
        total = op(total, f(i));
    }
    total
}

/// `Σ x`.
#[inline]
pub fn sum(x: &[f32]) -> f32 {
    fold_lanes(x.len(), 0.0, |i| x[i], |a, b| a + b)
}

/// `Σ a·b`.
#[inline]
pub fn dot(a: &[f32], b: &[f32]) -> f32 {
    let b = &b[..a.len()];
    fold_lanes(a.len(), 0.0, |i| a[i] * b[i], |x, y| x + y)
}

/// `max x` (−∞ for an empty slice).
#[inline]
pub fn max(x: &[f32]) -> f32 {
    fold_lanes(x.len(), f32::NEG_INFINITY, |i| x[i], |a, b| if b > a { b } else { a })
}

/// `Σ (x − c)²`.
#[inline]
pub fn sum_sq_dev(x: &[f32], c: f32) -> f32 {
    fold_lanes(x.len(), 0.0, |i| (x[i] - c) * (x[i] - c), |a, b| a + b)
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
