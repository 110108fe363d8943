//! LayerNorm and RMSNorm over the last dimension.
//!
//! Shapes: `x, y: [N, d]`, `mean, rstd: [N]`, `w, b: [d]`. RMSNorm is LayerNorm without
//! centring and bias; both save `mean` (0 for RMSNorm) and `rstd` for the backward pass.

use super::reduce;
use super::simd::widest;
use super::ROW_CHUNK;
use rayon::prelude::*;

/// Which normalisation, with its epsilon.
#[derive(Clone, Copy, Debug)]
pub struct NormKind {
    pub centred: bool,
    pub eps: f32,
}

/// `y = (x - mean) · rstd · w (+ b)` row by row.
#[allow(clippy::too_many_arguments)]
pub fn norm_forward(
    y: &mut [f32],
    mean: &mut [f32],
    rstd: &mut [f32],
    x: &[f32],
    w: &[f32],
    b: Option<&[f32]>,
    kind: NormKind,
) {
    let d = w.len();
    y.par_chunks_mut(d * ROW_CHUNK)
        .zip(mean.par_chunks_mut(ROW_CHUNK))
        .zip(rstd.par_chunks_mut(ROW_CHUNK))
        .zip(x.par_chunks(d * ROW_CHUNK))
        .for_each(|(((y, mean), rstd), x)| {
            widest(
                #[inline(always)]
                || {
                    for (r, (y, x)) in y.chunks_exact_mut(d).zip(x.chunks_exact(d)).enumerate() {
                        (mean[r], rstd[r]) = norm_row(y, x, w, b, kind);
                    }
                },
            )
        });
}

/// Normalises one row; returns its (mean, rstd).
#[inline(always)]
pub fn norm_row(y: &mut [f32], x: &[f32], w: &[f32], b: Option<&[f32]>, kind: NormKind) -> (f32, f32) {
    let d = x.len() as f32;
    let m = if kind.centred { reduce::sum(x) / d } else { 0.0 };
    let var = reduce::sum_sq_dev(x, m) / d;
    let r = 1.0 / (var + kind.eps).sqrt();
    let scaled = y.iter_mut().zip(x).zip(w).map(|((y, x), w)| (y, (x - m) * r * w));
    match b {
        Some(b) => scaled.zip(b).for_each(|((y, v), b)| *y = v + b),
        None => scaled.for_each(|(y, v)| *y = v + 0.0),
    }
    (m, r)
}

/// `dx += ∂L/∂x`; and, when given, `dw += Σ dy·x̂`, `db += Σ dy` (fixed-order reduction).
#[allow(clippy::too_many_arguments)]
pub fn norm_backward(
    dx: &mut [f32],
    dwb: Option<(&mut [f32], Option<&mut [f32]>)>,
    partials: &mut [f32],
    dy: &[f32],
    x: &[f32],
    mean: &[f32],
    rstd: &[f32],
    w: &[f32],
    kind: NormKind,
) {
    let d = w.len();
    let want_params = dwb.is_some();
    let partials = &mut partials[..partials_len(mean.len(), d)];
    dx.par_chunks_mut(d * ROW_CHUNK)
        .zip(dy.par_chunks(d * ROW_CHUNK))
        .zip(x.par_chunks(d * ROW_CHUNK))
        .zip(mean.par_chunks(ROW_CHUNK).zip(rstd.par_chunks(ROW_CHUNK)))
        .zip(partials.par_chunks_mut(2 * d))
        .for_each(|((((dx, dy), x), (mean, rstd)), part)| {
            part.fill(0.0);
            let part = if want_params { part } else { &mut [][..] };
            widest(
                #[inline(always)]
                || {
                    for r in 0..mean.len() {
                        let rows = r * d..(r + 1) * d;
                        norm_row_backward(
                            &mut dx[rows.clone()],
                            part,
                            &dy[rows.clone()],
                            &x[rows],
                            mean[r],
                            rstd[r],
                            w,
                            kind,
                        );
                    }
                },
            )
        });
    if let Some((dw, db)) = dwb {
        let mut db = db;
        for part in partials.chunks_exact(2 * d) {
            dw.iter_mut().zip(&part[..d]).for_each(|(a, b)| *a += b);
            if let Some(db) = db.as_deref_mut() {
                db.iter_mut().zip(&part[d..]).for_each(|(a, b)| *a += b);
            }
        }
    }
}

/// One row of the backward pass; `part` is `[dw; db]` partial sums or empty.
#[allow(clippy::too_many_arguments)]
#[inline(always)]
pub(crate) fn norm_row_backward(
    dx: &mut [f32],
    part: &mut [f32],
    dy: &[f32],
    x: &[f32],
    m: f32,
    r: f32,
    w: &[f32],
    kind: NormKind,
) {
    let d = x.len();
    // mean(dy·w) and mean(dy·w·x̂), with x̂ = (x − m)·r: 16 lanes combined pairwise, then
    // the tail in order.
    let (mut lanes_g, mut lanes_gx) = ([0.0f32; 16], [0.0f32; 16]);
    let (mut cdy, mut cw, mut cx) = (dy.chunks_exact(16), w.chunks_exact(16), x.chunks_exact(16));
    for ((dy, w), x) in (&mut cdy).zip(&mut cw).zip(&mut cx) {
        for i in 0..16 {
            let g = dy[i] * w[i];
            lanes_g[i] += g;
            lanes_gx[i] += g * (x[i] - m);
        }
    }
    let add = |a: f32, b: f32| a + b;
    let (mut sg, mut sgx) = (reduce::combine(lanes_g, add), reduce::combine(lanes_gx, add));
    for ((dy, w), x) in cdy.remainder().iter().zip(cw.remainder()).zip(cx.remainder()) {
        let g = dy * w;
        sg += g;
        sgx += g * (x - m);
    }
    let mean_g = if kind.centred { sg / d as f32 } else { 0.0 };
    let mean_gx = sgx * r / d as f32;
    for (((dx, dy), x), w) in dx.iter_mut().zip(dy).zip(x).zip(w) {
        let xhat = (x - m) * r;
        *dx += r * (dy * w - mean_g - xhat * mean_gx);
    }
    if !part.is_empty() {
        let (pw, pb) = part.split_at_mut(d);
        for (((pw, pb), dy), x) in pw.iter_mut().zip(pb.iter_mut()).zip(dy).zip(x) {
            *pw += dy * (x - m) * r;
            *pb += dy;
        }
    }
}

/// Scratch floats `norm_backward` needs for `n` rows of width `d`.
pub fn partials_len(n: usize, d: usize) -> usize {
    n.div_ceil(ROW_CHUNK) * 2 * d
}
