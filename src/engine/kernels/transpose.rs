//! Out-of-place transposes of strided blocks: attention turns a head's key or value
//! columns (`[S, hd]` inside the fused qkv rows) into `[hd, S]` rows for `small_matmul`.
//!
//! With AVX-512, whole 16×16 tiles are loaded as 16 vectors and transposed in registers
//! (four rounds of lane permutes), so each source row is read 64 bytes at a time instead
//! of one float at a time; edges that do not fill a tile are copied element by element.
//! A transpose only moves values, so both paths give the same bits.

use super::matmul::{Mat, MatMut};

/// `dst = srcᵀ`: `dst[j][i] = src[i][j]` for every element of `src`, whose rows must be
/// contiguous (both views were bounds-checked when built).
pub fn transpose(dst: MatMut, src: Mat) {
    assert_eq!((dst.rows, dst.cols), (src.cols, src.rows), "transposed shapes differ");
    let ((src_stride, unit), dst_stride) = (src.strides(), dst.row_stride());
    assert!(unit == 1 && src.cols <= src_stride && dst.cols <= dst_stride, "a row overlaps the next");
    #[cfg(target_arch = "x86_64")]
    let done = if std::arch::is_x86_feature_detected!("avx512f") {
        // SAFETY: the CPU supports AVX-512F and both views were bounds-checked.
        unsafe { avx512::tiles(dst.data, dst_stride, src) }
    } else {
        (0, 0)
    };
    #[cfg(not(target_arch = "x86_64"))]
    let done = (0, 0);
    edges(dst.data, dst_stride, src, done);
}

/// Element-wise transpose of everything outside the `done.0 × done.1` corner of `src`.
fn edges(dst: &mut [f32], dst_stride: usize, src: Mat, done: (usize, usize)) {
    let stride = src.strides().0;
    for i in 0..src.rows {
        let from = if i < done.0 { done.1 } else { 0 };
        for j in from..src.cols {
            dst[j * dst_stride + i] = src.data[i * stride + j];
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod avx512 {
    use super::Mat;
    use std::arch::x86_64::*;

    /// Transposes every whole 16×16 tile of `src`; returns the `(rows, cols)` it covered.
    ///
    /// # Safety
    /// The CPU must support AVX-512F, `src`'s rows must be contiguous and `dst` (rows
    /// `dst_stride` apart) must hold `src`'s transpose.
    #[target_feature(enable = "avx512f")]
    pub unsafe fn tiles(dst: &mut [f32], dst_stride: usize, src: Mat) -> (usize, usize) {
        let (rows, cols, stride) = (src.rows / 16 * 16, src.cols / 16 * 16, src.strides().0);
        let (rounds, s, d) = (swap_rounds(), src.data.as_ptr(), dst.as_mut_ptr());
        for i0 in (0..rows).step_by(16) {
            for j0 in (0..cols).step_by(16) {
                let mut r = [_mm512_setzero_ps(); 16];
                for (i, r) in r.iter_mut().enumerate() {
                    *r = _mm512_loadu_ps(s.add((i0 + i) * stride + j0));
                }
                for (step, (keep, take)) in [8, 4, 2, 1].into_iter().zip(rounds) {
                    swap_blocks(&mut r, step, keep, take);
                }
                for (j, r) in r.iter().enumerate() {
                    _mm512_storeu_ps(d.add((j0 + j) * dst_stride + i0), *r);
                }
            }
        }
        (rows, cols)
    }

    /// Permute indices for each round, `step` = 8, 4, 2, 1: `keep` builds the upper row of
    /// a pair, `take` the lower (an index ≥ 16 picks from the second operand).
    #[target_feature(enable = "avx512f")]
    fn swap_rounds() -> [(__m512i, __m512i); 4] {
        [8, 4, 2, 1].map(|step: i32| {
            let keep: [i32; 16] = std::array::from_fn(|c| {
                let c = c as i32;
                if c & step == 0 {
                    c
                } else {
                    16 + c - step
                }
            });
            let take: [i32; 16] = std::array::from_fn(|c| {
                let c = c as i32;
                if c & step == 0 {
                    c + step
                } else {
                    16 + c
                }
            });
            // SAFETY: both arrays hold exactly 16 i32s, one vector's worth.
            unsafe { (_mm512_loadu_si512(keep.as_ptr().cast()), _mm512_loadu_si512(take.as_ptr().cast())) }
        })
    }

    /// One round: for each row pair `(i, i + step)` with `i & step == 0`, swaps the two
    /// off-diagonal `step`-wide sub-blocks. After rounds 8, 4, 2, 1 the tile is transposed.
    #[target_feature(enable = "avx512f")]
    fn swap_blocks(r: &mut [__m512; 16], step: usize, keep: __m512i, take: __m512i) {
        for i in (0..16).filter(|i| i & step == 0) {
            let (a, b) = (r[i], r[i + step]);
            r[i] = _mm512_permutex2var_ps(a, keep, b);
            r[i + step] = _mm512_permutex2var_ps(a, take, b);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transpose_matches_elementwise_definition_on_ragged_strided_blocks() {
        for (rows, cols) in [(0, 5), (1, 1), (16, 16), (128, 64), (37, 53), (15, 40), (33, 17)] {
            let (stride, dst_stride) = (cols + 7, rows + 3);
            let src: Vec<f32> = (0..rows * stride).map(|i| i as f32 * 0.5 - 3.0).collect();
            let mut dst = vec![f32::NAN; cols * dst_stride];
            let view = Mat::strided(&src, rows, cols, stride);
            transpose(MatMut::strided(&mut dst, cols, rows, dst_stride), view);
            for j in 0..cols {
                for i in 0..dst_stride {
                    let got = dst[j * dst_stride + i];
                    if i < rows {
                        assert_eq!(got, src[i * stride + j], "[{rows}x{cols}] element ({i}, {j})");
                    } else {
                        assert!(got.is_nan(), "[{rows}x{cols}] wrote past row {j}'s end");
                    }
                }
            }
        }
    }

    #[test]
    #[should_panic(expected = "matrix view [4x4] exceeds its buffer (15)")]
    fn transpose_source_shorter_than_its_block_is_refused() {
        let mut dst = [0.0; 16];
        transpose(MatMut::new(&mut dst, 4, 4), Mat::new(&[0.0; 15], 4, 4));
    }

    #[test]
    #[should_panic(expected = "transposed shapes differ")]
    fn transpose_rejects_a_destination_of_the_wrong_shape() {
        let (src, mut dst) = ([0.0; 12], [0.0; 12]);
        transpose(MatMut::new(&mut dst, 3, 4), Mat::new(&src, 3, 4));
    }

    #[test]
    #[should_panic(expected = "a row overlaps the next")]
    fn transpose_rejects_a_destination_whose_rows_overlap() {
        let (src, mut dst) = ([0.0; 12], [0.0; 12]);
        transpose(MatMut::strided(&mut dst, 4, 3, 2), Mat::new(&src, 3, 4));
    }
}
