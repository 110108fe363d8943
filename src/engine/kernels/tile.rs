//! Small products on one thread, `C (+)= α·A·B` with `B`'s rows contiguous: attention's
//! per-head blocks (tens of rows, inner dimension `head_dim` or a key block), where a
//! general GEMM spends more time packing and dispatching than multiplying.
//!
//! With AVX-512 the output is tiled in registers (`MR` rows × `NV` 16-float vectors,
//! 24 accumulators), `A` is broadcast straight from its strided view and `B` is read row by
//! row, so nothing is packed. Other CPUs, or a `B` with strided columns, use `matmul`.

use super::matmul::{matmul, Mat, MatMut, Threads};

/// `C = α·A·B`, or `C += α·A·B` when `accumulate`, on the calling thread.
pub fn small_matmul(c: MatMut, a: Mat, b: Mat, alpha: f32, accumulate: bool) {
    assert_eq!(a.cols, b.rows, "inner dimensions differ");
    assert_eq!((c.rows, c.cols), (a.rows, b.cols), "output shape differs");
    #[cfg(target_arch = "x86_64")]
    if a.cols > 0 && b.strides().1 == 1 && std::arch::is_x86_feature_detected!("avx512f") {
        // SAFETY: the CPU supports AVX-512F, and the views were bounds-checked when built.
        unsafe { avx512::product(c, a, b, alpha, accumulate) };
        return;
    }
    matmul(c, a, b, alpha, accumulate, Threads::One);
}

#[cfg(target_arch = "x86_64")]
pub(crate) mod avx512 {
    use super::super::matmul::{Mat, MatMut};
    use std::arch::x86_64::*;

    /// Output columns per tile (four 16-float vectors).
    const TILE_COLS: usize = 64;

    /// `C (+)= α·A·B` tile by tile; `B` must have unit column stride.
    ///
    /// # Safety
    /// The CPU must support AVX-512F; `b`'s column stride must be 1 and the inner dimension
    /// at least 1.
    #[target_feature(enable = "avx512f")]
    pub unsafe fn product(c: MatMut, a: Mat, b: Mat, alpha: f32, accumulate: bool) {
        let (m, n, k) = (c.rows, c.cols, a.cols);
        if m == 0 || n == 0 {
            return;
        }
        let ((a_rs, a_cs), (ldb, _), ldc) = (a.strides(), b.strides(), c.row_stride());
        let (a, b, c) = (a.data.as_ptr(), b.data.as_ptr(), c.data.as_mut_ptr());
        for j0 in (0..n).step_by(TILE_COLS) {
            let width = (n - j0).min(TILE_COLS);
            let tail = tail_mask(width);
            let job = Job { k, a_rs, a_cs, ldb, ldc, alpha, accumulate, tail };
            // SAFETY (all arms): rows [i0, i0+rows) and columns [j0, j0+width) lie inside
            // the views; reads and writes beyond `width` are masked off.
            let b = b.add(j0);
            match width.div_ceil(16) {
                1 => rows_of_tiles::<24, 1>(job, m, a, b, c.add(j0)),
                2 => rows_of_tiles::<12, 2>(job, m, a, b, c.add(j0)),
                3 => rows_of_tiles::<8, 3>(job, m, a, b, c.add(j0)),
                _ => rows_of_tiles::<6, 4>(job, m, a, b, c.add(j0)),
            }
        }
    }

    /// What every tile of one product shares.
    #[derive(Clone, Copy)]
    struct Job {
        k: usize,
        a_rs: usize,
        a_cs: usize,
        ldb: usize,
        ldc: usize,
        alpha: f32,
        accumulate: bool,
        /// Lanes of the last vector of each tile row that lie inside `C`.
        tail: __mmask16,
    }

    /// Lanes `0..width - 16·(vectors - 1)` of the last vector.
    fn tail_mask(width: usize) -> __mmask16 {
        let rem = width - 16 * ((width - 1) / 16);
        (((1u32 << rem) - 1) & 0xffff) as __mmask16
    }

    /// Every tile of one tile column: `MR`-row tiles while they fit, then the last rows in
    /// 4- and 2-row tiles, so that (for the even row counts attention uses) no padded row
    /// is multiplied.
    #[target_feature(enable = "avx512f")]
    #[inline]
    unsafe fn rows_of_tiles<const MR: usize, const NV: usize>(
        job: Job,
        m: usize,
        a: *const f32,
        b: *const f32,
        c: *mut f32,
    ) {
        let mut i0 = 0;
        while i0 < m {
            let rows = m - i0;
            let (a, c) = (a.add(i0 * job.a_rs), c.add(i0 * job.ldc));
            i0 += if rows >= MR {
                tile::<MR, NV>(job, MR, a, b, c);
                MR
            } else if rows > 2 {
                tile::<4, NV>(job, rows.min(4), a, b, c);
                rows.min(4)
            } else {
                tile::<2, NV>(job, rows, a, b, c);
                rows
            };
        }
    }

    /// One `rows × (16·NV, last vector masked)` tile: `MR·NV` accumulators over the inner
    /// dimension, then `C (+)= α·acc`. Rows past `rows` repeat the last one and are dropped.
    #[target_feature(enable = "avx512f")]
    #[inline]
    unsafe fn tile<const MR: usize, const NV: usize>(job: Job, rows: usize, a: *const f32, b: *const f32, c: *mut f32) {
        let mut masks = [0xffff as __mmask16; NV];
        masks[NV - 1] = job.tail;
        let mut acc = [[_mm512_setzero_ps(); NV]; MR];
        let mut a_row = [a; MR];
        for (r, row) in a_row.iter_mut().enumerate() {
            *row = a.add(r.min(rows - 1) * job.a_rs);
        }
        for p in 0..job.k {
            let b_row = b.add(p * job.ldb);
            let mut bv = [_mm512_setzero_ps(); NV];
            for v in 0..NV {
                bv[v] = _mm512_maskz_loadu_ps(masks[v], b_row.add(16 * v));
            }
            for r in 0..MR {
                let x = _mm512_set1_ps(*a_row[r].add(p * job.a_cs));
                for v in 0..NV {
                    acc[r][v] = _mm512_fmadd_ps(x, bv[v], acc[r][v]);
                }
            }
        }
        let alpha = _mm512_set1_ps(job.alpha);
        for (r, acc) in acc.iter().enumerate().take(rows) {
            for (v, acc) in acc.iter().enumerate() {
                let dst = c.add(r * job.ldc + 16 * v);
                let mut y = _mm512_mul_ps(*acc, alpha);
                if job.accumulate {
                    y = _mm512_add_ps(y, _mm512_maskz_loadu_ps(masks[v], dst));
                }
                _mm512_mask_storeu_ps(dst, masks[v], y);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `α·A·B (+ C)` in f64, with `A` given as `(data, rs, cs)`.
    fn reference(
        c0: &[f32],
        a: (&[f32], usize, usize),
        b: &[f32],
        (m, n, k): (usize, usize, usize),
        alpha: f32,
        acc: bool,
    ) -> Vec<f64> {
        (0..m * n)
            .map(|ij| {
                let (i, j) = (ij / n, ij % n);
                let dot: f64 = (0..k).map(|p| a.0[i * a.1 + p * a.2] as f64 * b[p * n + j] as f64).sum();
                alpha as f64 * dot + if acc { c0[ij] as f64 } else { 0.0 }
            })
            .collect()
    }

    #[test]
    fn small_matmul_matches_f64_reference_on_ragged_shapes_and_both_a_layouts() {
        let val = |i: usize, s: usize| ((i * 7919 + s) % 1000) as f32 / 500.0 - 1.0;
        for (m, n, k) in
            [(1, 1, 1), (5, 17, 3), (13, 64, 64), (10, 64, 5), (32, 100, 37), (7, 129, 0), (25, 48, 128), (6, 33, 9)]
        {
            for transposed in [false, true] {
                for (alpha, acc) in [(1.0, false), (0.125, true)] {
                    let a: Vec<f32> = (0..m * k).map(|i| val(i, 1)).collect();
                    let b: Vec<f32> = (0..k * n).map(|i| val(i, 2)).collect();
                    let c0: Vec<f32> = (0..m * n).map(|i| val(i, 3)).collect();
                    let (av, strides) =
                        if transposed { (Mat::new(&a, k, m).t(), (1, m)) } else { (Mat::new(&a, m, k), (k, 1)) };
                    let mut c = c0.clone();
                    small_matmul(MatMut::new(&mut c, m, n), av, Mat::new(&b, k, n), alpha, acc);
                    let want = reference(&c0, (&a, strides.0, strides.1), &b, (m, n, k), alpha, acc);
                    for (i, (got, want)) in c.iter().zip(&want).enumerate() {
                        let err = (*got as f64 - want).abs();
                        assert!(
                            err < 1e-5 * (1.0 + k as f64),
                            "[{m}x{n}x{k}] t={transposed} elem {i}: {got} vs {want}"
                        );
                    }
                }
            }
        }
    }

    #[test]
    fn small_matmul_leaves_columns_beyond_a_strided_output_untouched() {
        // C is a 3×20 window of a 3×24 buffer; the 4 columns past it must keep their values.
        let (a, b) = (vec![1.0f32; 3 * 2], vec![2.0f32; 2 * 20]);
        let mut c = vec![-7.0f32; 3 * 24];
        small_matmul(MatMut::strided(&mut c, 3, 20, 24), Mat::new(&a, 3, 2), Mat::new(&b, 2, 20), 1.0, false);
        for (i, v) in c.iter().enumerate() {
            let want = if i % 24 < 20 { 4.0 } else { -7.0 };
            assert_eq!(*v, want, "element {i}");
        }
    }
}
