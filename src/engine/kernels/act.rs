//! MLP nonlinearities.
//!
//! Shapes: `pre: [N, fc]`, `out: [N, d_ff]`, where `fc = d_ff` for GELU and `fc = 2·d_ff`
//! for SwiGLU (each row is `[gate | up]`).

use super::fastmath::{erf, exp, sigmoid, tanh};
use super::ROW_CHUNK;
use crate::engine::config::Activation;
use rayon::prelude::*;

const SQRT_2_OVER_PI: f32 = 0.797_884_6;
const FRAC_1_SQRT_2: f32 = std::f32::consts::FRAC_1_SQRT_2;
const FRAC_1_SQRT_2PI: f32 = 0.398_942_3;

#[inline(always)]
fn gelu_exact(x: f32) -> f32 {
    0.5 * x * (1.0 + erf(x * FRAC_1_SQRT_2))
}

#[inline(always)]
fn gelu_exact_grad(x: f32) -> f32 {
    0.5 * (1.0 + erf(x * FRAC_1_SQRT_2)) + x * FRAC_1_SQRT_2PI * exp(-0.5 * x * x)
}

#[inline(always)]
fn gelu_tanh(x: f32) -> f32 {
    0.5 * x * (1.0 + tanh(SQRT_2_OVER_PI * (x + 0.044715 * x * x * x)))
}

#[inline(always)]
fn gelu_tanh_grad(x: f32) -> f32 {
    let t = tanh(SQRT_2_OVER_PI * (x + 0.044715 * x * x * x));
    0.5 * (1.0 + t) + 0.5 * x * (1.0 - t * t) * SQRT_2_OVER_PI * (1.0 + 3.0 * 0.044715 * x * x)
}

/// `out = act(pre)` row by row.
pub fn act_forward(out: &mut [f32], pre: &[f32], d_ff: usize, act: Activation) {
    let fc = pre.len() / (out.len() / d_ff).max(1);
    out.par_chunks_mut(d_ff * ROW_CHUNK).zip(pre.par_chunks(fc * ROW_CHUNK)).for_each(|(out, pre)| {
        for (o, p) in out.chunks_exact_mut(d_ff).zip(pre.chunks_exact(fc)) {
            act_row(o, p, act);
        }
    });
}

/// One row of the forward pass.
#[inline]
pub fn act_row(o: &mut [f32], p: &[f32], act: Activation) {
    match act {
        Activation::GeluExact => o.iter_mut().zip(p).for_each(|(o, &x)| *o = gelu_exact(x)),
        Activation::GeluTanh => o.iter_mut().zip(p).for_each(|(o, &x)| *o = gelu_tanh(x)),
        Activation::SwiGlu => {
            let (gate, up) = p.split_at(o.len());
            for i in 0..o.len() {
                o[i] = gate[i] * sigmoid(gate[i]) * up[i];
            }
        }
    }
}

/// `dpre = ∂L/∂pre` from `dout` (overwrites `dpre`).
pub fn act_backward(dpre: &mut [f32], dout: &[f32], pre: &[f32], d_ff: usize, act: Activation) {
    let fc = pre.len() / (dout.len() / d_ff).max(1);
    dpre.par_chunks_mut(fc * ROW_CHUNK)
        .zip(dout.par_chunks(d_ff * ROW_CHUNK))
        .zip(pre.par_chunks(fc * ROW_CHUNK))
        .for_each(|((dpre, dout), pre)| {
            for ((dp, d), p) in dpre.chunks_exact_mut(fc).zip(dout.chunks_exact(d_ff)).zip(pre.chunks_exact(fc)) {
                act_row_backward(dp, d, p, act);
            }
        });
}

#[inline]
fn act_row_backward(dp: &mut [f32], d: &[f32], p: &[f32], act: Activation) {
    match act {
        Activation::GeluExact => dp.iter_mut().zip(d).zip(p).for_each(|((dp, d), &x)| *dp = d * gelu_exact_grad(x)),
        Activation::GeluTanh => dp.iter_mut().zip(d).zip(p).for_each(|((dp, d), &x)| *dp = d * gelu_tanh_grad(x)),
        Activation::SwiGlu => {
            let n = d.len();
            let (gate, up) = p.split_at(n);
            let (dgate, dup) = dp.split_at_mut(n);
            for i in 0..n {
                let s = sigmoid(gate[i]);
                let silu = gate[i] * s;
                dup[i] = d[i] * silu;
                dgate[i] = d[i] * up[i] * s * (1.0 + gate[i] * (1.0 - s));
            }
        }
    }
}
