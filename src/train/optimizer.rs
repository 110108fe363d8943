//! The optimizer of a phase (AdamW or SGD, as configured) and the state a checkpoint keeps
//! of it: the step count and the moments, under their tensor names. The update rules
//! themselves are in `engine::optim`; schedules are in `schedule`.

use super::config::OptimizerCfg;
use crate::engine::optim::{AdamW, Sgd};
use std::collections::BTreeMap;

/// What a checkpoint keeps of an optimizer.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct OptimizerState {
    pub step: u64,
    pub moments: Moments,
}

/// An optimizer's moments.
#[derive(Clone, Debug, Default, PartialEq)]
pub enum Moments {
    /// None yet (a phase boundary).
    #[default]
    Fresh,
    /// AdamW's first and second moments (`opt.m`, `opt.v`).
    AdamW { m: Vec<f32>, v: Vec<f32> },
    /// SGD's momentum buffer (`opt.buf`).
    Sgd { buf: Vec<f32> },
}

impl OptimizerState {
    /// The moments as named tensors.
    pub fn tensors(&self) -> Vec<(&'static str, &Vec<f32>)> {
        match &self.moments {
            Moments::Fresh => Vec::new(),
            Moments::AdamW { m, v } => vec![("opt.m", m), ("opt.v", v)],
            Moments::Sgd { buf } => vec![("opt.buf", buf)],
        }
    }

    /// The state whose moments [`OptimizerState::tensors`] named, taken out of `tensors`,
    /// with step count `step`.
    pub fn from_tensors(tensors: &mut BTreeMap<String, Vec<f32>>, step: u64) -> Self {
        let moments = if let Some(buf) = tensors.remove("opt.buf") {
            Moments::Sgd { buf }
        } else if tensors.contains_key("opt.m") && tensors.contains_key("opt.v") {
            Moments::AdamW {
                m: tensors.remove("opt.m").unwrap_or_default(),
                v: tensors.remove("opt.v").unwrap_or_default(),
            }
        } else {
            Moments::Fresh
        };
        OptimizerState { step, moments }
    }
}

/// The optimizer of a phase.
pub enum Optimizer {
    AdamW(AdamW),
    Sgd(Sgd),
}

impl Optimizer {
    /// An optimizer configured by `cfg` for `n` parameters, continuing from `saved` (with
    /// zero moments when it holds none of its kind).
    pub fn new(cfg: &OptimizerCfg, n: usize, saved: OptimizerState) -> Self {
        if cfg.kind == "sgd" {
            let buf = match saved.moments {
                Moments::Sgd { buf } => buf,
                _ => vec![0.0; n],
            };
            Optimizer::Sgd(Sgd {
                momentum: cfg.momentum,
                weight_decay: cfg.weight_decay,
                nesterov: false,
                step: saved.step,
                buf,
            })
        } else {
            let (m, v) = match saved.moments {
                Moments::AdamW { m, v } => (m, v),
                _ => (vec![0.0; n], vec![0.0; n]),
            };
            Optimizer::AdamW(AdamW {
                beta1: cfg.betas[0],
                beta2: cfg.betas[1],
                eps: cfg.eps,
                weight_decay: cfg.weight_decay,
                step: saved.step,
                m,
                v,
            })
        }
    }

    /// One step on `params` with gradients `grads` at learning rate `lr`.
    pub fn update(&mut self, params: &mut [f32], grads: &[f32], lr: f32) {
        match self {
            Optimizer::AdamW(o) => o.update(params, grads, lr),
            Optimizer::Sgd(o) => o.update(params, grads, lr),
        }
    }

    /// Its step count and moments.
    pub fn state(&self) -> OptimizerState {
        match self {
            Optimizer::AdamW(o) => {
                OptimizerState { step: o.step, moments: Moments::AdamW { m: o.m.clone(), v: o.v.clone() } }
            }
            Optimizer::Sgd(o) => OptimizerState { step: o.step, moments: Moments::Sgd { buf: o.buf.clone() } },
        }
    }
}
