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
pub struct TensorSpan {
    pub offset: usize,
    pub shape: Vec<usize>,
}

impl TensorSpan {
    /// Number of elements.
    pub fn len(&self) -> usize {
        self.shape.iter().product()
    }

    /// Whether the span holds no elements.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The span's range in the flat buffer.
    pub fn range(&self) -> Range<usize> {
        self.offset..self.offset + self.len()
    }
}

/// A normalisation layer's parameters (bias only for LayerNorm).
#[derive(Clone, Debug)]
pub struct NormSpans {
    pub weight: TensorSpan,
    pub bias: Option<TensorSpan>,
}

/// A linear layer's parameters.
#[derive(Clone, Debug)]
pub struct LinearSpans {
    pub weight: TensorSpan,
    pub bias: Option<TensorSpan>,
}

impl LinearSpans {
    /// Output and input widths.
    pub fn dims(&self) -> (usize, usize) {
        (self.weight.shape[0], self.weight.shape[1])
    }
}

/// One transformer block's parameters.
#[derive(Clone, Debug)]
pub struct BlockSpans {
    pub ln1: NormSpans,
    pub qkv: LinearSpans,
    pub attn_out: LinearSpans,
    pub ln2: NormSpans,
    pub fc: LinearSpans,
    pub down: LinearSpans,
}

/// The whole model's parameter layout.
#[derive(Clone, Debug)]
pub struct Layout {
    pub wte: TensorSpan,
    pub wpe: Option<TensorSpan>,
    pub blocks: Vec<BlockSpans>,
    pub ln_f: NormSpans,
    /// The output head; `None` when tied to `wte`.
    pub head: Option<TensorSpan>,
    pub total: usize,
}

/// Hands out consecutive spans.
struct Allocator {
    next: usize,
}

impl Allocator {
    fn span(&mut self, shape: &[usize]) -> TensorSpan {
        let span = TensorSpan { offset: self.next, shape: shape.to_vec() };
        self.next += span.len();
        span
    }

    fn norm(&mut self, cfg: &ModelConfig) -> NormSpans {
        let weight = self.span(&[cfg.d_model]);
        let bias = (cfg.norm == Norm::LayerNorm).then(|| self.span(&[cfg.d_model]));
        NormSpans { weight, bias }
    }

    fn linear(&mut self, out: usize, inp: usize, bias: bool) -> LinearSpans {
        let weight = self.span(&[out, inp]);
        let bias = bias.then(|| self.span(&[out]));
        LinearSpans { weight, bias }
    }
}

impl Layout {
    /// Lays out every parameter of `cfg` in a fixed order.
    pub fn new(cfg: &ModelConfig) -> Self {
        let mut a = Allocator { next: 0 };
        let wte = a.span(&[cfg.vocab_size, cfg.d_model]);
        let wpe = cfg.learned_positions.then(|| a.span(&[cfg.max_positions, cfg.d_model]));
        let blocks = (0..cfg.n_layers)
            .map(|_| BlockSpans {
                ln1: a.norm(cfg),
                qkv: a.linear(cfg.qkv_dim(), cfg.d_model, cfg.attn_bias),
                attn_out: a.linear(cfg.d_model, cfg.attn_dim(), cfg.attn_bias),
                ln2: a.norm(cfg),
                fc: a.linear(cfg.fc_dim(), cfg.d_model, cfg.mlp_bias),
                down: a.linear(cfg.d_model, cfg.d_ff, cfg.mlp_bias),
            })
            .collect();
        let ln_f = a.norm(cfg);
        let head = (!cfg.tied_embeddings).then(|| a.span(&[cfg.vocab_size, cfg.d_model]));
        Layout { wte, wpe, blocks, ln_f, head, total: a.next }
    }

    /// The span the output head reads (`wte` when tied).
    pub fn head_slot(&self) -> &TensorSpan {
        self.head.as_ref().unwrap_or(&self.wte)
    }
}
