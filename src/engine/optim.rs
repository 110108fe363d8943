//! Optimizers over flat parameter buffers, with PyTorch's semantics and defaults.
//! Their state is plain public data so checkpoints can save and restore it exactly.

use rayon::prelude::*;

/// Elements per parallel work item (fixed, so results never depend on scheduling).
const CHUNK: usize = 1 << 14;

/// AdamW with decoupled weight decay (`torch.optim.AdamW`).
#[derive(Clone, Debug, PartialEq)]
pub struct AdamW {
    pub beta1: f32,
    pub beta2: f32,
    pub eps: f32,
    pub weight_decay: f32,
    /// Steps taken so far.
    pub step: u64,
    /// First and second moments, one per parameter.
    pub m: Vec<f32>,
    pub v: Vec<f32>,
}

impl AdamW {
    /// PyTorch defaults: betas (0.9, 0.999), eps 1e-8, weight decay 0.01.
    pub fn new(n_params: usize) -> Self {
        AdamW {
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
            weight_decay: 0.01,
            step: 0,
            m: vec![0.0; n_params],
            v: vec![0.0; n_params],
        }
    }

    /// One update of `params` with `grads` at learning rate `lr`.
    pub fn update(&mut self, params: &mut [f32], grads: &[f32], lr: f32) {
        assert_eq!(params.len(), self.m.len(), "optimizer state does not match the parameters");
        self.step += 1;
        let (b1, b2, eps) = (self.beta1, self.beta2, self.eps);
        let bc1 = 1.0 - (b1 as f64).powi(self.step as i32);
        let bc2_sqrt = (1.0 - (b2 as f64).powi(self.step as i32)).sqrt();
        let step_size = (lr as f64 / bc1) as f32;
        let (decay, inv_bc2_sqrt) = (1.0 - lr * self.weight_decay, (1.0 / bc2_sqrt) as f32);
        params
            .par_chunks_mut(CHUNK)
            .zip(grads.par_chunks(CHUNK))
            .zip(self.m.par_chunks_mut(CHUNK).zip(self.v.par_chunks_mut(CHUNK)))
            .for_each(|((p, g), (m, v))| {
                for (((p, g), m), v) in p.iter_mut().zip(g).zip(m.iter_mut()).zip(v.iter_mut()) {
                    *p *= decay;
                    *m = b1 * *m + (1.0 - b1) * g;
                    *v = b2 * *v + (1.0 - b2) * g * g;
                    *p -= step_size * *m / (v.sqrt() * inv_bc2_sqrt + eps);
                }
            });
    }
}

/// SGD with momentum and (coupled) weight decay (`torch.optim.SGD`, no dampening).
#[derive(Clone, Debug, PartialEq)]
pub struct Sgd {
    pub momentum: f32,
    pub weight_decay: f32,
    pub nesterov: bool,
    pub step: u64,
    /// The momentum buffer, one per parameter.
    pub buf: Vec<f32>,
}

impl Sgd {
    /// Plain SGD with momentum 0.9, no weight decay.
    pub fn new(n_params: usize) -> Self {
        Sgd { momentum: 0.9, weight_decay: 0.0, nesterov: false, step: 0, buf: vec![0.0; n_params] }
    }

    /// One update of `params` with `grads` at learning rate `lr`.
    pub fn update(&mut self, params: &mut [f32], grads: &[f32], lr: f32) {
        assert_eq!(params.len(), self.buf.len(), "optimizer state does not match the parameters");
        let first = self.step == 0;
        self.step += 1;
        let (mu, wd, nesterov) = (self.momentum, self.weight_decay, self.nesterov);
        params.par_chunks_mut(CHUNK).zip(grads.par_chunks(CHUNK)).zip(self.buf.par_chunks_mut(CHUNK)).for_each(
            |((p, g), buf)| {
                for ((p, g), buf) in p.iter_mut().zip(g).zip(buf.iter_mut()) {
                    let d = g + wd * *p;
                    *buf = if first { d } else { mu * *buf + d };
                    let step = if nesterov { d + mu * *buf } else { *buf };
                    *p -= lr * step;
                }
            },
        );
    }
}
