//! A model: its configuration, parameter layout, flat weights and rotary tables.

use super::config::{ModelConfig, Norm};
use super::kernels::norm::NormKind;
use super::kernels::rope::RopeTable;
use super::layout::{Layout, LinearSpans, TensorSpan};
use super::lora::Lora;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// Weights plus everything derived from the configuration.
#[derive(Clone, Debug)]
pub struct Model {
    pub cfg: ModelConfig,
    pub layout: Layout,
    /// `[layout.total]` flat parameters.
    pub weights: Vec<f32>,
    pub rope: RopeTable,
    /// LoRA adapters applied on top of the (then usually frozen) weights.
    pub lora: Option<Lora>,
}

/// A vector added to the residual stream (the input of block `layer`, or the final norm's
/// input when `layer == n_layers`) at slots `start..end` of every sequence.
#[derive(Clone, Debug)]
pub struct Steer {
    pub layer: usize,
    pub coef: f32,
    pub start: usize,
    pub end: usize,
    /// `[d]`.
    pub vector: Vec<f32>,
    /// Ablation instead of addition: each row `x` becomes `x − coef · (x·u) u`, `u` the
    /// vector's direction (`coef = 1` projects the direction out). A projected vector is not
    /// trained.
    pub project: bool,
}

impl Model {
    /// A model with weights initialised as HF does: normal(0, `std`) matrices and
    /// embeddings, unit norm weights, zero biases; deterministic in `seed`.
    pub fn init(cfg: ModelConfig, std: f32, seed: u64) -> Self {
        let layout = Layout::new(&cfg);
        let mut weights = vec![0.0; layout.total];
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let mut normal = |slot: &TensorSpan, w: &mut [f32]| {
            for x in &mut w[slot.range()] {
                *x = std * standard_normal(&mut rng);
            }
        };
        normal(&layout.wte, &mut weights);
        if let Some(wpe) = &layout.wpe {
            normal(wpe, &mut weights);
        }
        for b in &layout.blocks {
            for lin in [&b.qkv, &b.attn_out, &b.fc, &b.down] {
                normal(&lin.weight, &mut weights);
            }
            for n in [&b.ln1, &b.ln2] {
                weights[n.weight.range()].fill(1.0);
            }
        }
        weights[layout.ln_f.weight.range()].fill(1.0);
        if let Some(head) = &layout.head {
            normal(head, &mut weights);
        }
        Self::from_weights(cfg, weights)
    }

    /// Wraps existing flat weights (which must match the layout of `cfg`).
    pub fn from_weights(cfg: ModelConfig, weights: Vec<f32>) -> Self {
        let layout = Layout::new(&cfg);
        assert_eq!(weights.len(), layout.total, "weights do not match the layout");
        let rope = RopeTable::new(cfg.rotary_dims, cfg.rope_base, cfg.max_positions.max(1));
        Model { cfg, layout, weights, rope, lora: None }
    }

    /// The weights of one slot.
    pub fn w(&self, slot: &TensorSpan) -> &[f32] {
        &self.weights[slot.range()]
    }

    /// A linear layer's weight and optional bias.
    pub fn lin(&self, slots: &LinearSpans) -> (&[f32], Option<&[f32]>) {
        (self.w(&slots.weight), slots.bias.as_ref().map(|b| self.w(b)))
    }

    /// The normalisation kind of this architecture.
    pub fn norm_kind(&self) -> NormKind {
        NormKind { centred: self.cfg.norm == Norm::LayerNorm, eps: self.cfg.norm_eps }
    }

    /// Number of parameters.
    pub fn n_params(&self) -> usize {
        self.layout.total
    }
}

/// One draw from N(0, 1) by Box–Muller.
pub fn standard_normal(rng: &mut impl Rng) -> f32 {
    let u1: f64 = rng.random::<f64>().max(1e-300);
    let u2: f64 = rng.random();
    ((-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos()) as f32
}
