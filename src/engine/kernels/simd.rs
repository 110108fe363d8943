//! The crate is built for x86-64-v3 (AVX2, eight float lanes). `widest` runs a closure
//! inside a function compiled with AVX-512 enabled when the CPU has it, so the element-wise
//! loops inlined into it use sixteen lanes. Both builds evaluate the same expressions in the
//! same order (Rust never contracts or reorders float operations), so they give the same bits.

/// Runs `f`, compiled for AVX-512 when this CPU supports it.
#[inline(always)]
pub fn widest<R>(f: impl FnOnce() -> R) -> R {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx512f") {
        // SAFETY: the CPU supports AVX-512F.
        return unsafe { avx512(f) };
    }
    f()
}

/// `f()` with AVX-512F enabled for everything inlined into it.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn avx512<R>(f: impl FnOnce() -> R) -> R {
    f()
}

#[cfg(all(test, target_arch = "x86_64"))]
mod tests {
    use super::widest;
    use crate::engine::config::Activation;
    use crate::engine::kernels::act::{act_row, act_row_backward};
    use crate::engine::kernels::attention::{softmax_causal_row, softmax_row_backward};
    use crate::engine::kernels::loss::ce_row;
    use crate::engine::kernels::norm::{norm_row, norm_row_backward, NormKind};

    /// Every row kernel that runs through `widest`, applied to `rows` (all of width 300);
    /// returns the bits of every value it writes.
    #[inline(always)]
    fn row_kernels(rows: &[Vec<f32>]) -> Vec<u32> {
        let (x, y, w) = (&rows[0], &rows[1], &rows[2]);
        let mut out: Vec<f32> = Vec::new();
        for act in [Activation::GeluExact, Activation::GeluTanh, Activation::SwiGlu] {
            let (mut o, mut p, mut dp) = (vec![0.0; 150], x.clone(), vec![0.0; 300]);
            act_row(&mut o, &mut p, act);
            act_row_backward(&mut dp, &y[..150], &p, act);
            out.extend(o.iter().chain(&p).chain(&dp));
        }
        for centred in [true, false] {
            let kind = NormKind { centred, eps: 1e-5 };
            let (mut n, mut dx, mut part) = (vec![0.0; 300], y.clone(), vec![0.0; 600]);
            let (m, r) = norm_row(&mut n, x, w, Some(y), kind);
            norm_row_backward(&mut dx, &mut part, y, x, m, r, w, kind);
            out.extend(n.iter().chain(&dx).chain(&part).chain([&m, &r]));
        }
        let (mut p, mut ds) = (x.clone(), y.clone());
        softmax_causal_row(&mut p, 250);
        softmax_row_backward(&mut ds, &p);
        let mut logits = x.clone();
        let loss = ce_row(&mut logits, 7, 0.5, true);
        out.extend(p.iter().chain(&ds).chain(&logits).chain([&loss]));
        out.iter().map(|v| v.to_bits()).collect()
    }

    #[test]
    fn avx512_build_of_the_row_kernels_gives_the_baseline_bits() {
        if !std::arch::is_x86_feature_detected!("avx512f") {
            eprintln!("skipped: this CPU has no AVX-512F, so only the baseline build runs");
            return;
        }
        let rows: Vec<Vec<f32>> =
            (0..3).map(|k| (0..300).map(|i| ((i * 37 + k * 101) % 211) as f32 / 40.0 - 2.6).collect()).collect();
        let baseline = row_kernels(&rows);
        let wide = widest(
            #[inline(always)]
            || row_kernels(&rows),
        );
        assert_eq!(baseline.len(), wide.len());
        let first = baseline.iter().zip(&wide).position(|(a, b)| a != b);
        assert_eq!(first, None, "first differing value at index {first:?}");
    }
}
