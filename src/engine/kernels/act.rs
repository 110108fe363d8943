//! MLP nonlinearities.
//!
//! Shapes: `pre: [N, fc]`, `out: [N, d_ff]`, where `fc = d_ff` for GELU and `fc = 2·d_ff`
//! for SwiGLU (each row is `[gate | up]`).

use super::fastmath::{erf, exp, sigmoid, tanh};
use super::simd::widest;
use super::ROW_CHUNK;
use crate::engine::config::Activation;
use rayon::prelude::*;

const SQRT_2_OVER_PI: f32 = 0.797_884_6;
const FRAC_1_SQRT_2: f32 = std::f32::consts::FRAC_1_SQRT_2;
const FRAC_1_SQRT_2PI: f32 = 0.398_942_3;

/// GELU (erf form) and its derivative, sharing one `erf`.
#[inline(always)]
fn gelu_exact(x: f32) -> (f32, f32) {
    let cdf2 = 1.0 + erf(x * FRAC_1_SQRT_2);
    (0.5 * x * cdf2, 0.5 * cdf2 + x * FRAC_1_SQRT_2PI * exp(-0.5 * x * x))
}

/// GELU (tanh approximation) and its derivative, sharing one `tanh`.
#[inline(always)]
fn gelu_tanh(x: f32) -> (f32, f32) {
    let t = tanh(SQRT_2_OVER_PI * (x + 0.044715 * x * x * x));
    let grad = 0.5 * (1.0 + t) + 0.5 * x * (1.0 - t * t) * SQRT_2_OVER_PI * (1.0 + 3.0 * 0.044715 * x * x);
    (0.5 * x * (1.0 + t), grad)
}

/// `out = act(pre + bias)` row by row (`bias: [fc]`, broadcast over rows). `pre` is then
/// overwritten with what `act_backward` reads: the derivative `act'(pre + bias)` for the
/// GELUs, the biased `[gate | up]` for SwiGLU.
pub fn act_forward(out: &mut [f32], pre: &mut [f32], bias: Option<&[f32]>, d_ff: usize, act: Activation) {
    let fc = pre.len() / (out.len() / d_ff).max(1);
    out.par_chunks_mut(d_ff * ROW_CHUNK).zip(pre.par_chunks_mut(fc * ROW_CHUNK)).for_each(|(out, pre)| {
        widest(
            #[inline(always)]
            || {
                for (o, p) in out.chunks_exact_mut(d_ff).zip(pre.chunks_exact_mut(fc)) {
                    if let Some(b) = bias {
                        p.iter_mut().zip(b).for_each(|(p, b)| *p += b);
                    }
                    act_row(o, p, act);
                }
            },
        )
    });
}

/// One row of the forward pass, leaving the backward pass's input in `p`.
#[inline(always)]
pub(crate) fn act_row(o: &mut [f32], p: &mut [f32], act: Activation) {
    match act {
        Activation::GeluExact => o.iter_mut().zip(p).for_each(|(o, x)| (*o, *x) = gelu_exact(*x)),
        Activation::GeluTanh => o.iter_mut().zip(p).for_each(|(o, x)| (*o, *x) = gelu_tanh(*x)),
        Activation::SwiGlu => {
            let (gate, up) = p.split_at(o.len());
            o.iter_mut().zip(gate).zip(up).for_each(|((o, g), u)| *o = g * sigmoid(*g) * u);
        }
    }
}

/// `dpre = ∂L/∂pre` from `dout` and the buffer `act_forward` left (overwrites `dpre`).
pub fn act_backward(dpre: &mut [f32], dout: &[f32], saved: &[f32], d_ff: usize, act: Activation) {
    let fc = saved.len() / (dout.len() / d_ff).max(1);
    dpre.par_chunks_mut(fc * ROW_CHUNK)
        .zip(dout.par_chunks(d_ff * ROW_CHUNK))
        .zip(saved.par_chunks(fc * ROW_CHUNK))
        .for_each(|((dpre, dout), saved)| {
            widest(
                #[inline(always)]
                || {
                    for ((dp, d), p) in
                        dpre.chunks_exact_mut(fc).zip(dout.chunks_exact(d_ff)).zip(saved.chunks_exact(fc))
                    {
                        act_row_backward(dp, d, p, act);
                    }
                },
            )
        });
}

#[inline(always)]
pub(crate) fn act_row_backward(dp: &mut [f32], d: &[f32], p: &[f32], act: Activation) {
    match act {
        Activation::GeluExact | Activation::GeluTanh => {
            dp.iter_mut().zip(d).zip(p).for_each(|((dp, d), g)| *dp = d * g)
        }
        Activation::SwiGlu => {
            let n = d.len();
            let (gate, up) = p.split_at(n);
            let (dgate, dup) = dp.split_at_mut(n);
            for ((((dg, du), d), g), u) in dgate.iter_mut().zip(dup.iter_mut()).zip(d).zip(gate).zip(up) {
                let s = sigmoid(*g);
                *du = d * (g * s);
                *dg = d * u * s * (1.0 + g * (1.0 - s));
            }
        }
    }
}
