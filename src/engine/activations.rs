//! The preallocated arena of one forward/backward pass. Buffers are sized for a
//! `(batch, seq)` shape on first use and reused while the shape fits, so the training step
//! allocates nothing in steady state.

use super::config::ModelConfig;
use super::kernels::dropout::Dropout;
use super::kernels::embed::InputSlot;
use super::kernels::norm::partials_len;
use super::lora::Proj;
use super::model::Model;

/// What one block keeps from its forward pass for the backward pass.
#[derive(Default)]
pub struct BlockActs {
    /// `[N, d]` LayerNorm/RMSNorm outputs and their row statistics `[N]`.
    pub ln1: Vec<f32>,
    pub ln1_mean: Vec<f32>,
    pub ln1_rstd: Vec<f32>,
    /// `[N, qkv]` after rotary embedding.
    pub qkv: Vec<f32>,
    /// `[B, H, S, S]` attention probabilities.
    pub probs: Vec<f32>,
    /// `[N, H·hd]` attention output before its projection.
    pub attn: Vec<f32>,
    /// `[N, d]` residual after attention (sequential blocks only).
    pub mid: Vec<f32>,
    pub ln2: Vec<f32>,
    pub ln2_mean: Vec<f32>,
    pub ln2_rstd: Vec<f32>,
    /// `[N, fc]` MLP pre-activation and `[N, d_ff]` activation.
    pub fc: Vec<f32>,
    pub act: Vec<f32>,
    /// `[N, r]` LoRA inputs `x·Aᵀ`, per projection (empty without an adapter).
    pub lora_xa: [Vec<f32>; 4],
}

impl BlockActs {
    /// Every buffer of `n` rows of `cfg` but the LoRA inputs and `probs`, with its length.
    pub(crate) fn row_buffers(&mut self, cfg: &ModelConfig, n: usize) -> [(&mut Vec<f32>, usize); 11] {
        let d = cfg.d_model;
        [
            (&mut self.ln1, n * d),
            (&mut self.ln1_mean, n),
            (&mut self.ln1_rstd, n),
            (&mut self.qkv, n * cfg.qkv_dim()),
            (&mut self.attn, n * cfg.attn_dim()),
            (&mut self.mid, if cfg.parallel_residual { 0 } else { n * d }),
            (&mut self.ln2, n * d),
            (&mut self.ln2_mean, n),
            (&mut self.ln2_rstd, n),
            (&mut self.fc, n * cfg.fc_dim()),
            (&mut self.act, n * cfg.d_ff),
        ]
    }
}

/// Gradient scratch shared by all blocks in the backward pass.
#[derive(Default)]
pub struct GradScratch {
    /// `[N, d]` gradient of the residual stream.
    pub dres: Vec<f32>,
    /// `[N, d]` gradients of the two norm outputs.
    pub dln1: Vec<f32>,
    pub dln2: Vec<f32>,
    pub dqkv: Vec<f32>,
    pub dattn: Vec<f32>,
    pub dfc: Vec<f32>,
    pub dact: Vec<f32>,
    /// `[N, d]` gradient of a residual branch after dropout.
    pub dbranch: Vec<f32>,
    pub norm_partials: Vec<f32>,
    /// `[N, r]` LoRA scratch.
    pub dxa: Vec<f32>,
}

/// The slots whose input gradient a prompt-only backward pass needs: their row indices
/// (ascending), what occupies each, and each one's position in its sequence.
#[derive(Default)]
pub struct PromptRows {
    pub rows: Vec<usize>,
    pub slots: Vec<InputSlot>,
    pub positions: Vec<usize>,
}

impl PromptRows {
    /// Selects the prompt slots of `slots: [B·seq]` (reusing the buffers).
    pub fn select(&mut self, slots: &[InputSlot], seq: usize) {
        self.rows.clear();
        self.slots.clear();
        self.positions.clear();
        for (r, slot) in slots.iter().enumerate().filter(|(_, s)| matches!(s, InputSlot::Prompt(_))) {
            self.rows.push(r);
            self.slots.push(*slot);
            self.positions.push(r % seq);
        }
    }
}

/// All buffers of one pass.
#[derive(Default)]
pub struct Activations {
    pub batch: usize,
    pub seq: usize,
    /// LoRA rank the buffers were sized for (0: none).
    pub lora_rank: usize,
    /// Dropout of passes through this arena (zero for evaluation arenas).
    pub dropout: Dropout,
    /// Attention scratch (`AttnShape::scratch_len`).
    pub attn_scratch: Vec<f32>,
    /// `L + 1` residual streams `[N, d]`: the input of each block, then the final output.
    pub resid: Vec<Vec<f32>>,
    pub blocks: Vec<BlockActs>,
    /// `[N, d]` scratch for branch outputs.
    pub branch: Vec<f32>,
    pub branch2: Vec<f32>,
    pub lnf: Vec<f32>,
    pub lnf_mean: Vec<f32>,
    pub lnf_rstd: Vec<f32>,
    /// `[N, V]` logits (turned into their gradient by the backward pass).
    pub logits: Vec<f32>,
    pub row_loss: Vec<f32>,
    pub grad: GradScratch,
    pub prompt_rows: PromptRows,
}

/// Resizes `v` to `n` zeroed floats only when its length differs.
fn fit(v: &mut Vec<f32>, n: usize) {
    if v.len() != n {
        *v = vec![0.0; n];
    }
}

impl Activations {
    /// Tap: residual stream `layer` of the last forward pass, `[batch·seq, d]` — the input
    /// of block `layer` after steering, or the final norm's input for `layer == n_layers`.
    pub fn residual(&self, layer: usize) -> &[f32] {
        &self.resid[layer]
    }

    /// Makes every buffer fit `batch × seq` for `model` (a no-op when it already does).
    pub fn prepare(&mut self, model: &Model, batch: usize, seq: usize) {
        let cfg = &model.cfg;
        let rank = model.lora.as_ref().map_or(0, |l| l.spec.rank);
        if self.batch == batch && self.seq == seq && self.lora_rank == rank && self.resid.len() == cfg.n_layers + 1 {
            return;
        }
        self.lora_rank = rank;
        let n = batch * seq;
        let (d, h) = (cfg.d_model, cfg.n_heads);
        self.batch = batch;
        self.seq = seq;
        self.resid.resize_with(cfg.n_layers + 1, Vec::new);
        self.resid.iter_mut().for_each(|r| fit(r, n * d));
        self.blocks.resize_with(cfg.n_layers, BlockActs::default);
        for (l, b) in self.blocks.iter_mut().enumerate() {
            for p in Proj::ALL {
                let has = model.lora.as_ref().is_some_and(|lora| lora.adapter(l, p).is_some());
                fit(&mut b.lora_xa[p.index()], if has { n * rank } else { 0 });
            }
            fit(&mut b.probs, batch * h * seq * seq);
            for (v, len) in b.row_buffers(cfg, n) {
                fit(v, len);
            }
        }
        let g = &mut self.grad;
        for (v, len) in [
            (&mut self.branch, n * d),
            (&mut self.branch2, n * d),
            (&mut self.lnf, n * d),
            (&mut self.lnf_mean, n),
            (&mut self.lnf_rstd, n),
            (&mut self.logits, n * cfg.vocab_size),
            (&mut self.row_loss, n),
            (&mut g.dres, n * d),
            (&mut g.dln1, n * d),
            (&mut g.dln2, n * d),
            (&mut g.dqkv, n * cfg.qkv_dim()),
            (&mut g.dattn, n * cfg.attn_dim()),
            (&mut g.dfc, n * cfg.fc_dim()),
            (&mut g.dact, n * cfg.d_ff),
            (&mut self.attn_scratch, model.attn_shape(batch, seq).scratch_len()),
            (&mut g.dbranch, n * d),
            (&mut g.norm_partials, partials_len(n, d)),
            (&mut g.dxa, n * rank),
        ] {
            fit(v, len);
        }
    }
}
