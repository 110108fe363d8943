//! Causal multi-head attention with grouped key/value heads, over the fused qkv buffer.
//!
//! Shapes: `qkv: [B·S, (H + 2·G)·hd]` laid out `[Q heads | K heads | V heads]`,
//! `probs: [B, H, S, S]` (only `j ≤ i` is meaningful), `out: [B·S, H·hd]`.
//! Query rows are processed in blocks of `BLOCK`; a block only ever touches keys up to its
//! last row, so fully masked blocks are never computed (only the diagonal block is masked).

use super::dropout::Mask;
use super::fastmath::exp;
use super::matmul::{Mat, MatMut};
use super::reduce;
use super::simd::widest;
use super::tile::small_matmul;
use super::transpose::transpose;
use rayon::prelude::*;

/// Query rows per block.
pub const BLOCK: usize = 32;

/// Attention geometry.
#[derive(Clone, Copy, Debug)]
pub struct AttnShape {
    pub batch: usize,
    pub seq: usize,
    pub heads: usize,
    pub kv_heads: usize,
    pub head_dim: usize,
}

impl AttnShape {
    fn width(&self) -> usize {
        (self.heads + 2 * self.kv_heads) * self.head_dim
    }
    fn q_col(&self, h: usize) -> usize {
        h * self.head_dim
    }
    fn k_col(&self, h: usize) -> usize {
        (self.heads + h / (self.heads / self.kv_heads)) * self.head_dim
    }
    fn v_col(&self, h: usize) -> usize {
        self.k_col(h) + self.kv_heads * self.head_dim
    }
    fn scale(&self) -> f32 {
        1.0 / (self.head_dim as f32).sqrt()
    }
    /// Scratch floats per sequence: two `[BLOCK, S]` blocks and one `[hd, S]` transpose.
    fn seq_scratch(&self) -> usize {
        (2 * BLOCK + self.head_dim) * self.seq
    }
    /// Scratch floats the forward and backward passes need.
    pub fn scratch_len(&self) -> usize {
        self.batch * self.seq_scratch()
    }
    /// Index of probability `(b, h, i, 0)` in `[B, H, S, S]`, which keys dropout masks.
    fn prob_index(&self, b: usize, h: usize, i: usize) -> u64 {
        (((b * self.heads + h) * self.seq + i) * self.seq) as u64
    }
}

/// Query-row blocks `[i0, i1)`.
fn blocks(seq: usize) -> impl DoubleEndedIterator<Item = (usize, usize)> {
    (0..seq).step_by(BLOCK).map(move |i0| (i0, (i0 + BLOCK).min(seq)))
}

/// Columns `[col, col+hd)` of rows `[r0, r1)` of a row-major buffer of width `w`.
fn cols(buf: &[f32], w: usize, col: usize, r0: usize, r1: usize, hd: usize) -> Mat<'_> {
    Mat::strided(&buf[r0 * w + col..], r1 - r0, hd, w)
}

/// Same, mutably.
fn cols_mut(buf: &mut [f32], w: usize, col: usize, r0: usize, r1: usize, hd: usize) -> MatMut<'_> {
    MatMut::strided(&mut buf[r0 * w + col..], r1 - r0, hd, w)
}

/// Writes the transpose of columns `[col, col+hd)` of a sequence's `[seq, w]` rows into
/// `dst` as `[hd, seq]`, so keys or values run along contiguous rows for `small_matmul`.
fn transpose_head<'a>(dst: &'a mut [f32], buf: &[f32], w: usize, col: usize, hd: usize, seq: usize) -> &'a [f32] {
    transpose(MatMut::new(&mut dst[..hd * seq], hd, seq), cols(buf, w, col, 0, seq, hd));
    dst
}

/// Copies rows `i0..i1` (first `width` columns) of `p` into `dst` with the dropout mask
/// of sequence `b`, head `h` applied; returns the copy as a matrix.
fn dropped_rows<'a>(
    dst: &'a mut [f32],
    p: &[f32],
    mask: &Mask,
    sh: &AttnShape,
    (b, h): (usize, usize),
    (i0, i1): (usize, usize),
    width: usize,
) -> Mat<'a> {
    let s = sh.seq;
    for i in i0..i1 {
        let row = &mut dst[(i - i0) * s..(i - i0) * s + width];
        row.copy_from_slice(&p[i * s..i * s + width]);
        mask.apply(row, sh.prob_index(b, h, i));
    }
    Mat::strided(dst, i1 - i0, width, s)
}

/// `probs = softmax(q·kᵀ·scale)` (causal) and `out = dropout(probs) · v`; `probs` keeps the
/// probabilities before dropout. `scratch` holds `scratch_len()` floats.
pub fn attention_forward(
    out: &mut [f32],
    probs: &mut [f32],
    scratch: &mut [f32],
    qkv: &[f32],
    sh: AttnShape,
    mask: Option<Mask>,
) {
    let (s, w, a) = (sh.seq, sh.width(), sh.heads * sh.head_dim);
    out.par_chunks_mut(s * a)
        .zip(probs.par_chunks_mut(sh.heads * s * s))
        .zip(scratch.par_chunks_mut(sh.seq_scratch()))
        .zip(qkv.par_chunks(s * w))
        .enumerate()
        .for_each(|(b, (((out, probs), scratch), qkv))| {
            widest(
                #[inline(always)]
                || forward_sequence(out, probs, scratch, qkv, &sh, (b, mask.as_ref())),
            )
        });
}

/// The forward pass of sequence `b`: `out: [S, H·hd]`, `probs: [H, S, S]`,
/// `scratch: [seq_scratch()]`, `qkv: [S, width()]`.
#[inline(always)]
fn forward_sequence(
    out: &mut [f32],
    probs: &mut [f32],
    scratch: &mut [f32],
    qkv: &[f32],
    sh: &AttnShape,
    (b, mask): (usize, Option<&Mask>),
) {
    let (s, w, hd, a) = (sh.seq, sh.width(), sh.head_dim, sh.heads * sh.head_dim);
    let (dropped, kt) = scratch.split_at_mut(2 * BLOCK * s);
    for h in 0..sh.heads {
        let p = &mut probs[h * s * s..(h + 1) * s * s];
        let kt = transpose_head(kt, qkv, w, sh.k_col(h), hd, s);
        for (i0, i1) in blocks(s) {
            let q = cols(qkv, w, sh.q_col(h), i0, i1, hd);
            let scores = MatMut::strided(&mut p[i0 * s..], i1 - i0, i1, s);
            small_matmul(scores, q, Mat::strided(kt, hd, i1, s), sh.scale(), false);
            for i in i0..i1 {
                softmax_causal_row(&mut p[i * s..i * s + i1], i);
            }
            let pb = match mask {
                Some(m) => dropped_rows(dropped, p, m, sh, (b, h), (i0, i1), i1),
                None => Mat::strided(&p[i0 * s..], i1 - i0, i1, s),
            };
            let v = cols(qkv, w, sh.v_col(h), 0, i1, hd);
            small_matmul(cols_mut(out, a, h * hd, i0, i1, hd), pb, v, 1.0, false);
        }
    }
}

/// Softmax over `row[..=i]`; zeroes `row[i+1..]` so block products ignore them. Every pass
/// runs over the whole row (the tail is set to −∞ before the exponential and zeroed after
/// it), so the rows of a block share one vectorised length instead of each ending in a
/// scalar remainder.
#[inline(always)]
pub(crate) fn softmax_causal_row(row: &mut [f32], i: usize) {
    row[i + 1..].fill(f32::NEG_INFINITY);
    let max = reduce::max(row);
    row.iter_mut().for_each(|v| *v = exp(*v - max));
    row[i + 1..].fill(0.0);
    let inv = 1.0 / reduce::sum(row);
    row.iter_mut().for_each(|v| *v *= inv);
}

/// `dqkv = ∂L/∂qkv` (overwritten) from `dout`, with the same dropout `mask` as the
/// forward pass; `probs` is consumed (overwritten with the score gradients) and `scratch`
/// holds `scratch_len()` floats.
#[allow(clippy::too_many_arguments)]
pub fn attention_backward(
    dqkv: &mut [f32],
    probs: &mut [f32],
    scratch: &mut [f32],
    dout: &[f32],
    qkv: &[f32],
    sh: AttnShape,
    mask: Option<Mask>,
) {
    let (s, w, a) = (sh.seq, sh.width(), sh.heads * sh.head_dim);
    dqkv.par_chunks_mut(s * w)
        .zip(probs.par_chunks_mut(sh.heads * s * s))
        .zip(scratch.par_chunks_mut(sh.seq_scratch()))
        .zip(dout.par_chunks(s * a).zip(qkv.par_chunks(s * w)))
        .enumerate()
        .for_each(|(b, (((dqkv, probs), scratch), (dout, qkv)))| {
            widest(
                #[inline(always)]
                || backward_sequence(dqkv, probs, scratch, (dout, qkv), &sh, (b, mask.as_ref())),
            )
        });
}

/// The backward pass of sequence `b`: `dqkv, qkv: [S, width()]`, `probs: [H, S, S]`,
/// `scratch: [seq_scratch()]`, `dout: [S, H·hd]`.
#[inline(always)]
fn backward_sequence(
    dqkv: &mut [f32],
    probs: &mut [f32],
    scratch: &mut [f32],
    (dout, qkv): (&[f32], &[f32]),
    sh: &AttnShape,
    (b, mask): (usize, Option<&Mask>),
) {
    let (s, w, hd, a) = (sh.seq, sh.width(), sh.head_dim, sh.heads * sh.head_dim);
    let (dropped, rest) = scratch.split_at_mut(BLOCK * s);
    let (dp, vt) = rest.split_at_mut(BLOCK * s);
    for h in 0..sh.heads {
        let p = &mut probs[h * s * s..(h + 1) * s * s];
        let vt = transpose_head(vt, qkv, w, sh.v_col(h), hd, s);
        // Last block first: it spans every key, so for the first query head of a
        // key/value group its dK and dV products overwrite the whole head and
        // everything after adds to it; nothing needs zeroing beforehand.
        let group_start = h % (sh.heads / sh.kv_heads) == 0;
        for (i0, i1) in blocks(s).rev() {
            let (rows, pw, first) = (i1 - i0, i1, group_start && i1 == s);
            let dout_b = cols(dout, a, h * hd, i0, i1, hd);
            // dV[0..i1] += dropout(P)ᵀ · dout
            let pb = match mask {
                Some(m) => dropped_rows(dropped, p, m, sh, (b, h), (i0, i1), pw),
                None => Mat::strided(&p[i0 * s..], rows, pw, s),
            };
            small_matmul(cols_mut(dqkv, w, sh.v_col(h), 0, i1, hd), pb.t(), dout_b, 1.0, !first);
            // dP = (dout · Vᵀ) ⊙ mask
            small_matmul(MatMut::strided(dp, rows, pw, s), dout_b, Mat::strided(vt, hd, pw, s), 1.0, false);
            for i in i0..i1 {
                let dp_row = &mut dp[(i - i0) * s..(i - i0) * s + pw];
                if let Some(m) = mask {
                    m.apply(dp_row, sh.prob_index(b, h, i));
                }
                softmax_row_backward(&mut p[i * s..i * s + pw], dp_row);
            }
            let ds = Mat::strided(&p[i0 * s..], rows, pw, s);
            // dQ = dS · K · scale ; dK[0..i1] += dSᵀ · Q · scale
            let k = cols(qkv, w, sh.k_col(h), 0, i1, hd);
            small_matmul(cols_mut(dqkv, w, sh.q_col(h), i0, i1, hd), ds, k, sh.scale(), false);
            let q = cols(qkv, w, sh.q_col(h), i0, i1, hd);
            small_matmul(cols_mut(dqkv, w, sh.k_col(h), 0, i1, hd), ds.t(), q, sh.scale(), !first);
        }
    }
}

/// `p ← p ⊙ (dp − Σ p·dp)` over a whole block row: `p` is zero past the causal edge, so
/// that tail adds nothing to the sum and stays zero.
#[inline(always)]
pub(crate) fn softmax_row_backward(p: &mut [f32], dp: &[f32]) {
    let dot = reduce::dot(p, dp);
    p.iter_mut().zip(dp).for_each(|(p, d)| *p *= d - dot);
}
