//! Where each weight lives in the flat parameter buffer. Weights, gradients and optimizer
//! moments share one layout, so an optimizer step is a loop over flat slices.
//!
//! Internal conventions (HF names are mapped in `hf_names`):
//! - every linear weight is `[out, in]` row-major (`y = x · Wᵀ + b`);
//! - the query/key/value projection is fused as `[Q heads | K heads | V heads]`;
//! - the MLP up projection is fused as `[gate; up]` for SwiGLU.

use super::config::{ModelConfig, Norm};
use std::ops::Range;

/// A contiguous tensor inside the flat buffer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Slot {
    pub offset: usize,
    pub shape: Vec<usize>,
}

impl Slot {
    /// Number of elements.
    pub fn len(&self) -> usize {
        self.shape.iter().product()
    }

    /// Whether the slot holds no elements.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The slot's range in the flat buffer.
    pub fn range(&self) -> Range<usize> {
        self.offset..self.offset + self.len()
    }
}

/// A normalisation layer's parameters (bias only for LayerNorm).
#[derive(Clone, Debug)]
pub struct NormSlots {
    pub weight: Slot,
    pub bias: Option<Slot>,
}

/// A linear layer's parameters.
#[derive(Clone, Debug)]
pub struct LinearSlots {
    pub weight: Slot,
    pub bias: Option<Slot>,
}

impl LinearSlots {
    /// Output and input widths.
    pub fn dims(&self) -> (usize, usize) {
        (self.weight.shape[0], self.weight.shape[1])
    }
}

/// One transformer block's parameters.
#[derive(Clone, Debug)]
pub struct BlockSlots {
    pub ln1: NormSlots,
    pub qkv: LinearSlots,
    pub attn_out: LinearSlots,
    pub ln2: NormSlots,
    pub fc: LinearSlots,
    pub down: LinearSlots,
}

/// The whole model's parameter layout.
#[derive(Clone, Debug)]
pub struct Layout {
    pub wte: Slot,
    pub wpe: Option<Slot>,
    pub blocks: Vec<BlockSlots>,
    pub ln_f: NormSlots,
    /// The output head; `None` when tied to `wte`.
    pub head: Option<Slot>,
    pub total: usize,
}

/// Hands out consecutive slots.
struct Allocator {
    next: usize,
}

impl Allocator {
    fn slot(&mut self, shape: &[usize]) -> Slot {
        let slot = Slot { offset: self.next, shape: shape.to_vec() };
        self.next += slot.len();
        slot
    }

    fn norm(&mut self, cfg: &ModelConfig) -> NormSlots {
        let weight = self.slot(&[cfg.d_model]);
        let bias = (cfg.norm == Norm::LayerNorm).then(|| self.slot(&[cfg.d_model]));
        NormSlots { weight, bias }
    }

    fn linear(&mut self, out: usize, inp: usize, bias: bool) -> LinearSlots {
        let weight = self.slot(&[out, inp]);
        let bias = bias.then(|| self.slot(&[out]));
        LinearSlots { weight, bias }
    }
}

impl Layout {
    /// Lays out every parameter of `cfg` in a fixed order.
    pub fn new(cfg: &ModelConfig) -> Self {
        let mut a = Allocator { next: 0 };
        let wte = a.slot(&[cfg.vocab_size, cfg.d_model]);
        let wpe = cfg.learned_positions.then(|| a.slot(&[cfg.max_positions, cfg.d_model]));
        let blocks = (0..cfg.n_layers)
            .map(|_| BlockSlots {
                ln1: a.norm(cfg),
                qkv: a.linear(cfg.qkv_dim(), cfg.d_model, cfg.attn_bias),
                attn_out: a.linear(cfg.d_model, cfg.attn_dim(), cfg.attn_bias),
                ln2: a.norm(cfg),
                fc: a.linear(cfg.fc_dim(), cfg.d_model, cfg.mlp_bias),
                down: a.linear(cfg.d_model, cfg.d_ff, cfg.mlp_bias),
            })
            .collect();
        let ln_f = a.norm(cfg);
        let head = (!cfg.tied_embeddings).then(|| a.slot(&[cfg.vocab_size, cfg.d_model]));
        Layout { wte, wpe, blocks, ln_f, head, total: a.next }
    }

    /// The slot the output head reads (`wte` when tied).
    pub fn head_slot(&self) -> &Slot {
        self.head.as_ref().unwrap_or(&self.wte)
    }
}
