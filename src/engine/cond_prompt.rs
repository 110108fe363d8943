//! Conditional soft prompts: a small MLP maps a condition vector `c: [k]` to `n` prompt
//! vectors, token by token as in the reference study:
//! `h = mish(W1·c + b1): [n·w]`, then prompt token `t` is `W2[t]·h[t] + b2[t]: [d]`.
//!
//! Parameters live in one flat buffer: `W1 [n·w, k] | b1 [n·w] | W2 [n, d, w] | b2 [n, d]`.

use super::kernels::fastmath::{exp, sigmoid, tanh};
use super::kernels::linear::{column_sums_into, linear_backward_input, linear_backward_params, linear_forward};
use super::model::standard_normal;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

/// Shape of a conditional prompt MLP.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CondPromptShape {
    /// Condition vector width `k`.
    pub conditions: usize,
    /// Prompt tokens `n`.
    pub tokens: usize,
    /// Hidden width per token `w`.
    pub hidden: usize,
    /// Model width `d`.
    pub d_model: usize,
}

/// The MLP's parameters plus its forward cache for the last batch.
#[derive(Clone, Debug)]
pub struct CondPrompt {
    pub shape: CondPromptShape,
    pub params: Vec<f32>,
    /// `[B, n·w]` pre-activations, activations and scratch gradient of the last batch.
    pre: Vec<f32>,
    hid: Vec<f32>,
    dpre: Vec<f32>,
}

/// `x · tanh(softplus(x))`.
#[inline]
fn mish(x: f32) -> f32 {
    x * tanh(softplus(x))
}

/// `d mish / dx = tanh(sp) + x·(1 − tanh²(sp))·σ(x)` with `sp = softplus(x)`.
#[inline]
fn mish_grad(x: f32) -> f32 {
    let t = tanh(softplus(x));
    t + x * (1.0 - t * t) * sigmoid(x)
}

/// `ln(1 + eˣ)`, stable for large `x`.
#[inline]
fn softplus(x: f32) -> f32 {
    if x > 20.0 {
        x
    } else {
        (1.0 + exp(x)).ln()
    }
}

impl CondPromptShape {
    fn nw(&self) -> usize {
        self.tokens * self.hidden
    }
    /// Offsets of `W1, b1, W2, b2` and the total size.
    fn offsets(&self) -> [usize; 5] {
        let (k, nw, n, d, w) = (self.conditions, self.nw(), self.tokens, self.d_model, self.hidden);
        let w1 = 0;
        let b1 = w1 + nw * k;
        let w2 = b1 + nw;
        let b2 = w2 + n * d * w;
        [w1, b1, w2, b2, b2 + n * d]
    }
}

impl CondPrompt {
    /// A fresh MLP with PyTorch-like init: weights `N(0, 1/fan_in)`-scaled, zero biases.
    pub fn new(shape: CondPromptShape, seed: u64) -> Self {
        let o = shape.offsets();
        let mut params = vec![0.0; o[4]];
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let s1 = 1.0 / (shape.conditions as f32).sqrt();
        params[o[0]..o[1]].iter_mut().for_each(|x| *x = s1 * standard_normal(&mut rng));
        let s2 = 1.0 / (shape.hidden as f32).sqrt();
        params[o[2]..o[3]].iter_mut().for_each(|x| *x = s2 * standard_normal(&mut rng));
        CondPrompt { shape, params, pre: Vec::new(), hid: Vec::new(), dpre: Vec::new() }
    }

    /// Prompt vectors `[B·n, d]` for conditions `[B, k]` (row `b·n + t` is token `t` of
    /// sequence `b`); caches what `backward` needs.
    pub fn forward(&mut self, conditions: &[f32], out: &mut [f32]) {
        let sh = self.shape;
        let (k, nw, n, d, w) = (sh.conditions, sh.nw(), sh.tokens, sh.d_model, sh.hidden);
        let b = conditions.len() / k;
        let o = sh.offsets();
        self.pre.resize(b * nw, 0.0);
        self.hid.resize(b * nw, 0.0);
        linear_forward(&mut self.pre, conditions, &self.params[o[0]..o[1]], Some(&self.params[o[1]..o[2]]), b, k, nw);
        self.hid.iter_mut().zip(&self.pre).for_each(|(h, p)| *h = mish(*p));
        for bi in 0..b {
            for t in 0..n {
                let y = &mut out[(bi * n + t) * d..(bi * n + t + 1) * d];
                let w2 = &self.params[o[2] + t * d * w..o[2] + (t + 1) * d * w];
                let b2 = &self.params[o[3] + t * d..o[3] + (t + 1) * d];
                let h = &self.hid[bi * nw + t * w..bi * nw + (t + 1) * w];
                for (j, yj) in y.iter_mut().enumerate() {
                    *yj = b2[j] + w2[j * w..(j + 1) * w].iter().zip(h).map(|(a, b)| a * b).sum::<f32>();
                }
            }
        }
    }

    /// Accumulates parameter gradients into `grads` from `dout: [B·n, d]` of the last
    /// `forward` on `conditions`.
    pub fn backward(&mut self, conditions: &[f32], dout: &[f32], grads: &mut [f32]) {
        let sh = self.shape;
        let (k, nw, n, d, w) = (sh.conditions, sh.nw(), sh.tokens, sh.d_model, sh.hidden);
        let b = conditions.len() / k;
        let o = sh.offsets();
        let mut dpre = std::mem::take(&mut self.dpre);
        dpre.resize(b * nw, 0.0);
        for bi in 0..b {
            for t in 0..n {
                let dy = &dout[(bi * n + t) * d..(bi * n + t + 1) * d];
                let h = &self.hid[bi * nw + t * w..bi * nw + (t + 1) * w];
                // Token t's linear layer: dW2[t] += dyᵀ·h, db2[t] += dy, dh = W2[t]ᵀ·dy.
                linear_backward_params(&mut grads[o[2] + t * d * w..o[2] + (t + 1) * d * w], None, dy, h, 1, w, d, 1.0);
                grads[o[3] + t * d..o[3] + (t + 1) * d].iter_mut().zip(dy).for_each(|(g, v)| *g += v);
                let dh = &mut dpre[bi * nw + t * w..bi * nw + (t + 1) * w];
                linear_backward_input(
                    dh,
                    dy,
                    &self.params[o[2] + t * d * w..o[2] + (t + 1) * d * w],
                    1,
                    w,
                    d,
                    1.0,
                    false,
                );
            }
        }
        dpre.iter_mut().zip(&self.pre).for_each(|(g, p)| *g *= mish_grad(*p));
        let (gw1, rest) = grads[o[0]..o[2]].split_at_mut(o[1] - o[0]);
        linear_backward_params(gw1, None, &dpre, conditions, b, k, nw, 1.0);
        column_sums_into(rest, &dpre, nw);
        self.dpre = dpre;
    }

    /// Number of trainable parameters.
    pub fn n_params(&self) -> usize {
        self.params.len()
    }
}
