//! The forward pass, block by block, saving what the backward pass needs. The block itself
//! (`Model::block_forward`) also serves KV-cached generation, which supplies its own
//! `Attention`.

use super::activations::{Activations, BlockActs};
use super::batch::Batch;
use super::kernels::act::act_forward;
use super::kernels::attention::{attention_forward, AttnShape};
use super::kernels::dropout::{mask_in_place, Dropout, Mask, Site};
use super::kernels::embed::embed_forward;
use super::kernels::linear::linear_forward;
use super::kernels::loss::cross_entropy;
use super::kernels::norm::norm_forward;
use super::kernels::rope::rope_row;
use super::layout::NormSpans;
use super::lora::Proj;
use super::model::{Model, Steer};
use rayon::prelude::*;

/// Where each row of a block's input sits in its sequence: the rotary angle it gets.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Positions<'a> {
    /// `[B, S]` rows: row `r` is at position `r mod S`.
    Periodic(usize),
    /// Packed rows: row `r` is at position `pos[r]`.
    Listed(&'a [usize]),
}

impl Positions<'_> {
    /// The position of row `r`.
    fn of(&self, r: usize) -> usize {
        match self {
            Positions::Periodic(seq) => r % seq,
            Positions::Listed(pos) => pos[r],
        }
    }
}

/// The part of a block that differs between a training pass and a generation step: where
/// its rows sit, and how their attention reads the block's rotated `qkv: [N, (H+2G)·hd]`.
pub(crate) trait Attention {
    /// The position of each row, for rotary.
    fn positions(&self) -> Positions<'_>;
    /// `a.attn: [N, H·hd]` from the rotated `a.qkv` of block `l`, dropping probabilities by
    /// `mask` when given.
    fn attend(&mut self, l: usize, a: &mut BlockActs, mask: Option<Mask>);
}

/// Causal attention within each sequence of a `[B, S]` batch, keeping `a.probs` for the
/// backward pass; `scratch: [shape.scratch_len()]`.
struct BatchAttention<'a> {
    shape: AttnShape,
    scratch: &'a mut [f32],
}

impl Attention for BatchAttention<'_> {
    fn positions(&self) -> Positions<'_> {
        Positions::Periodic(self.shape.seq)
    }

    fn attend(&mut self, _l: usize, a: &mut BlockActs, mask: Option<Mask>) {
        attention_forward(&mut a.attn, &mut a.probs, self.scratch, &a.qkv, self.shape, mask);
    }
}

impl Model {
    /// Attention geometry for a batch shape.
    pub fn attn_shape(&self, batch: usize, seq: usize) -> AttnShape {
        let c = &self.cfg;
        AttnShape { batch, seq, heads: c.n_heads, kv_heads: c.n_kv_heads, head_dim: c.head_dim }
    }

    /// Runs the model on `batch` (prompt slots read rows of `prompts: [P, d]`), leaving
    /// logits and everything the backward pass needs in `acts`. Returns the weighted loss
    /// `Σ w·CE / norm`.
    pub fn forward(&self, acts: &mut Activations, batch: &Batch, prompts: &[f32], steers: &[Steer], norm: f32) -> f32 {
        let (n, d, s) = (batch.rows(), self.cfg.d_model, batch.seq);
        assert!(
            s <= self.cfg.max_positions,
            "sequence of {s} slots exceeds max_position_embeddings {}",
            self.cfg.max_positions
        );
        acts.prepare(self, batch.batch, s);
        let wpe = self.layout.wpe.as_ref().map(|p| self.w(p));
        embed_forward(&mut acts.resid[0][..n * d], &batch.slots, self.w(&self.layout.wte), prompts, wpe, s);
        for l in 0..self.cfg.n_layers {
            apply_steers(&mut acts.resid[l], steers, l, Positions::Periodic(s), d);
            let (inp, out) = acts.resid.split_at_mut(l + 1);
            let mut attention =
                BatchAttention { shape: self.attn_shape(batch.batch, s), scratch: &mut acts.attn_scratch };
            let branches = (&mut acts.branch[..], &mut acts.branch2[..]);
            let io = (&inp[l][..], &mut out[0][..]);
            self.block_forward(l, &mut acts.blocks[l], branches, io, &mut attention, &acts.dropout);
        }
        let last = self.cfg.n_layers;
        apply_steers(&mut acts.resid[last], steers, last, Positions::Periodic(s), d);
        self.norm(&self.layout.ln_f, &mut acts.lnf, &mut acts.lnf_mean, &mut acts.lnf_rstd, &acts.resid[last]);
        let head = self.w(self.layout.head_slot());
        linear_forward(&mut acts.logits, &acts.lnf, head, None, n, d, self.cfg.vocab_size);
        cross_entropy(&mut acts.logits, &mut acts.row_loss, &batch.targets, &batch.weights, norm, false)
    }

    /// Applies one normalisation layer.
    pub(crate) fn norm(&self, slots: &NormSpans, y: &mut [f32], mean: &mut [f32], rstd: &mut [f32], x: &[f32]) {
        let b = slots.bias.as_ref().map(|b| self.w(b));
        norm_forward(y, mean, rstd, x, self.w(&slots.weight), b, self.norm_kind());
    }

    /// One transformer block, `out = block(x)` over `x, out: [N, d]`, keeping in `a` what
    /// the backward pass reads; `attention` supplies the rows' positions and their attention.
    pub(crate) fn block_forward(
        &self,
        l: usize,
        a: &mut BlockActs,
        (branch, branch2): (&mut [f32], &mut [f32]),
        (x, out): (&[f32], &mut [f32]),
        attention: &mut impl Attention,
        drop: &Dropout,
    ) {
        let c = &self.cfg;
        let (p, n) = (&self.layout.blocks[l], x.len() / c.d_model);
        self.norm(&p.ln1, &mut a.ln1, &mut a.ln1_mean, &mut a.ln1_rstd, x);
        let xa = &mut a.lora_xa;
        let qkv_bias = self.project_deferring_bias(l, Proj::Qkv, &mut a.qkv, &a.ln1, &mut xa[0], n);
        self.rope_rows(&mut a.qkv, attention.positions(), false, qkv_bias);
        attention.attend(l, a, drop.mask(drop.attn, l, Site::AttnProbs));
        let xa = &mut a.lora_xa;
        let out_bias = self.project_deferring_bias(l, Proj::AttnOut, branch, &a.attn, &mut xa[1], n);
        let out_bias = finish_branch(branch, out_bias, drop.mask(drop.resid, l, Site::AttnBranch));
        let mlp_in: &[f32] = if c.parallel_residual {
            x
        } else {
            residual_add(&mut a.mid, x, &[(branch, out_bias)]);
            &a.mid
        };
        self.norm(&p.ln2, &mut a.ln2, &mut a.ln2_mean, &mut a.ln2_rstd, mlp_in);
        let fc_bias = self.project_deferring_bias(l, Proj::Fc, &mut a.fc, &a.ln2, &mut xa[2], n);
        act_forward(&mut a.act, &mut a.fc, fc_bias, c.d_ff, c.activation);
        let down_bias = self.project_deferring_bias(l, Proj::Down, branch2, &a.act, &mut xa[3], n);
        let down_bias = finish_branch(branch2, down_bias, drop.mask(drop.resid, l, Site::MlpBranch));
        if c.parallel_residual {
            residual_add(out, x, &[(branch, out_bias), (branch2, down_bias)]);
        } else {
            residual_add(out, &a.mid, &[(branch2, down_bias)]);
        }
    }

    /// `y = x·Wᵀ` for projection `proj` of block `l`, plus its LoRA term (keeping `x·Aᵀ`
    /// in `xa`) when an adapter is attached; returns the bias `b`, left for the caller to
    /// fuse into the pass that next reads `y`.
    fn project_deferring_bias(
        &self,
        l: usize,
        proj: Proj,
        y: &mut [f32],
        x: &[f32],
        xa: &mut [f32],
        n: usize,
    ) -> Option<&[f32]> {
        let slots = proj.of(&self.layout.blocks[l]);
        let (out, inp) = slots.dims();
        let (w, b) = self.lin(slots);
        linear_forward(y, x, w, None, n, inp, out);
        if let Some((lora, ad)) = self.lora.as_ref().and_then(|lo| lo.adapter(l, proj).map(|ad| (lo, ad))) {
            lora.forward(ad, y, x, xa, n);
        }
        b
    }

    /// Adds `bias` (when given) to every fused qkv row, then rotates (or, with `inverse`,
    /// un-rotates) its query and key heads at the row's position in `pos`.
    pub(crate) fn rope_rows(&self, qkv: &mut [f32], pos: Positions, inverse: bool, bias: Option<&[f32]>) {
        let c = &self.cfg;
        if c.rotary_dims == 0 && bias.is_none() {
            return;
        }
        qkv.par_chunks_mut(c.qkv_dim()).enumerate().for_each(|(r, row)| {
            if let Some(b) = bias {
                row.iter_mut().zip(b).for_each(|(x, b)| *x += b);
            }
            if c.rotary_dims > 0 {
                rope_row(row, &self.rope, pos.of(r), c.n_heads + c.n_kv_heads, c.head_dim, inverse);
            }
        });
    }
}

/// Adds a residual branch's deferred `bias` now when dropout must act on `branch + bias`
/// (returning `None`); otherwise leaves it for `residual_add` to fuse.
fn finish_branch<'a>(branch: &mut [f32], bias: Option<&'a [f32]>, mask: Option<Mask>) -> Option<&'a [f32]> {
    let Some(m) = mask else { return bias };
    if let Some(b) = bias {
        branch.chunks_exact_mut(b.len()).for_each(|row| row.iter_mut().zip(b).for_each(|(x, b)| *x += b));
    }
    mask_in_place(branch, m);
    None
}

/// `out = x + Σₖ (branchₖ + biasₖ)`, summed left to right; a bias is one row, broadcast
/// over all rows of its branch.
fn residual_add(out: &mut [f32], x: &[f32], branches: &[(&[f32], Option<&[f32]>)]) {
    const CHUNK: usize = 1 << 14;
    let width = branches.iter().find_map(|(_, b)| b.map(|b| b.len())).unwrap_or(1);
    let chunk = (CHUNK / width).max(1) * width;
    out.par_chunks_mut(chunk).zip(x.par_chunks(chunk)).enumerate().for_each(|(i, (o, x))| {
        o.copy_from_slice(x);
        for (branch, bias) in branches {
            let br = &branch[i * chunk..i * chunk + o.len()];
            match bias {
                Some(b) => o.chunks_exact_mut(b.len()).zip(br.chunks_exact(b.len())).for_each(|(o, br)| {
                    o.iter_mut().zip(br).zip(*b).for_each(|((o, r), b)| *o += r + b);
                }),
                None => o.iter_mut().zip(br).for_each(|(o, r)| *o += r),
            }
        }
    });
}

/// Adds every steering vector that targets residual stream `layer` to the rows whose
/// position is in its `start..end`.
pub(crate) fn apply_steers(resid: &mut [f32], steers: &[Steer], layer: usize, positions: Positions, d: usize) {
    for st in steers.iter().filter(|st| st.layer == layer) {
        let unit = st.project.then(|| unit(&st.vector));
        for (r, row) in resid.chunks_exact_mut(d).enumerate() {
            if (st.start..st.end).contains(&positions.of(r)) {
                match &unit {
                    Some(u) => project_out(row, u, st.coef),
                    None => row.iter_mut().zip(&st.vector).for_each(|(x, v)| *x += st.coef * v),
                }
            }
        }
    }
}

/// `v / |v|` (zeros for a zero vector).
pub(crate) fn unit(v: &[f32]) -> Vec<f32> {
    let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt();
    v.iter().map(|x| if norm > 0.0 { x / norm } else { 0.0 }).collect()
}

/// `x ← x − coef · (x·u) u`: the component of `x` along the unit vector `u` scaled by `1 − coef`.
/// Its own transpose, so the backward pass applies it to the gradient.
pub(crate) fn project_out(x: &mut [f32], u: &[f32], coef: f32) {
    let along = coef * x.iter().zip(u).map(|(a, b)| a * b).sum::<f32>();
    x.iter_mut().zip(u).for_each(|(a, b)| *a -= along * b);
}
