//! Out-of-place transposes of strided blocks: attention turns a head's key or value
//! columns (`[S, hd]` inside the fused qkv rows) into `[hd, S]` rows for `small_matmul`.
//!
//! With AVX-512, whole 16×16 tiles are loaded as 16 vectors and transposed in registers
//! (four rounds of lane permutes), so each source row is read 64 bytes at a time instead
//! of one float at a time; edges that do not fill a tile are copied element by element.
//! A transpose only moves values, so both paths give the same bits.

/// A row-major block: `rows × cols` floats whose rows start `stride` apart.
#[derive(Clone, Copy, Debug)]
pub struct Block {
    pub rows: usize,
    pub cols: usize,
    pub stride: usize,
}

impl Block {
    /// Floats a buffer needs to hold the block.
    fn span(&self) -> usize {
        if self.rows == 0 || self.cols == 0 {
            0
        } else {
            (self.rows - 1) * self.stride + self.cols
        }
    }
}

/// `dst[j·dst_stride + i] = src[i·src.stride + j]` for every `(i, j)` of the `src` block.
pub fn transpose(dst: &mut [f32], dst_stride: usize, src: &[f32], shape: Block) {
    let out = Block { rows: shape.cols, cols: shape.rows, stride: dst_stride };
    assert!(shape.cols <= shape.stride && out.cols <= dst_stride, "a row overlaps the next");
    assert!(src.len() >= shape.span() && dst.len() >= out.span(), "block exceeds its buffer");
    #[cfg(target_arch = "x86_64")]
    let done = if std::arch::is_x86_feature_detected!("avx512f") {
        // SAFETY: the CPU supports AVX-512F and both blocks were bounds-checked above.
        unsafe { avx512::tiles(dst, dst_stride, src, shape) }
    } else {
        (0, 0)
    };
    #[cfg(not(target_arch = "x86_64"))]
    let done = (0, 0);
    edges(dst, dst_stride, src, shape, done);
}

/// Element-wise transpose of everything outside the `done.0 × done.1` corner of `src`.
fn edges(dst: &mut [f32], dst_stride: usize, src: &[f32], shape: Block, done: (usize, usize)) {
    for i in 0..shape.rows {
        let from = if i < done.0 { done.1 } else { 0 };
        for j in from..shape.cols {
            dst[j * dst_stride + i] = src[i * shape.stride + j];
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod avx512 {
    use super::Block;
    use std::arch::x86_64::*;

    /// Transposes every whole 16×16 tile of `src`; returns the `(rows, cols)` it covered.
    ///
    /// # Safety
    /// The CPU must support AVX-512F and both buffers must hold their blocks.
    #[target_feature(enable = "avx512f")]
    pub unsafe fn tiles(dst: &mut [f32], dst_stride: usize, src: &[f32], shape: Block) -> (usize, usize) {
        let (rows, cols) = (shape.rows / 16 * 16, shape.cols / 16 * 16);
        let (rounds, s, d) = (swap_rounds(), src.as_ptr(), dst.as_mut_ptr());
        for i0 in (0..rows).step_by(16) {
            for j0 in (0..cols).step_by(16) {
                let mut r = [_mm512_setzero_ps(); 16];
                for (i, r) in r.iter_mut().enumerate() {
                    *r = _mm512_loadu_ps(s.add((i0 + i) * shape.stride + j0));
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
            transpose(&mut dst, dst_stride, &src, Block { rows, cols, stride });
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
    #[should_panic(expected = "block exceeds its buffer")]
    fn transpose_rejects_a_source_shorter_than_its_block() {
        transpose(&mut [0.0; 16], 4, &[0.0; 15], Block { rows: 4, cols: 4, stride: 4 });
    }
}
