//! The backward pass, block by block in reverse, computing only requested gradients:
//! a frozen weight costs no weight-gradient product, and blocks below the lowest
//! trainable input are skipped entirely.

use super::activations::{Activations, BlockActs, GradScratch};
use super::batch::Batch;
use super::kernels::act::act_backward;
use super::kernels::attention::attention_backward;
use super::kernels::dropout::{masked_copy, Dropout, Mask, Site};
use super::kernels::embed::embed_backward;
use super::kernels::linear::{linear_backward_input, linear_backward_params};
use super::kernels::loss::cross_entropy;
use super::kernels::norm::norm_backward;
use super::layout::{LinearSlots, NormSlots, Slot};
use super::lora::Proj;
use super::model::{Model, Steer};

/// Where gradients go; `None` means "not trained, do not compute".
#[derive(Default)]
pub struct GradSinks<'a> {
    /// `[layout.total]`, accumulated.
    pub weights: Option<&'a mut [f32]>,
    /// `[P, d]`, accumulated, for the rows that prompt slots read.
    pub prompts: Option<&'a mut [f32]>,
    /// One `[d]` gradient per steering vector, accumulated.
    pub steers: Option<&'a mut [Vec<f32>]>,
    /// `[lora.params]`, accumulated.
    pub lora: Option<&'a mut [f32]>,
}

impl GradSinks<'_> {
    /// The lowest residual stream whose gradient is needed, if any.
    fn lowest_layer(&self, steers: &[Steer]) -> Option<usize> {
        if self.weights.is_some() || self.prompts.is_some() || self.lora.is_some() {
            return Some(0);
        }
        self.steers.as_ref().and_then(|_| steers.iter().map(|s| s.layer).min())
    }
}

/// Splits a flat gradient buffer into the part one slot owns.
fn slot_mut<'a>(g: &'a mut Option<&mut [f32]>, slot: &Slot) -> Option<&'a mut [f32]> {
    g.as_deref_mut().map(|g| &mut g[slot.range()])
}

impl Model {
    /// Back-propagates the loss of the last `forward` (same `batch`, `steers`, `norm`).
    /// The logits in `acts` are consumed.
    pub fn backward(&self, acts: &mut Activations, batch: &Batch, steers: &[Steer], norm: f32, mut sinks: GradSinks) {
        let Some(lowest) = sinks.lowest_layer(steers) else { return };
        let (n, d, s, v) = (batch.rows(), self.cfg.d_model, batch.seq, self.cfg.vocab_size);
        cross_entropy(&mut acts.logits, &mut acts.row_loss, &batch.targets, &batch.weights, norm, true);
        let g = &mut acts.grad;
        let head = self.layout.head_slot();
        linear_backward_input(&mut g.dln1, &acts.logits, self.w(head), n, d, v, 1.0, false);
        if let Some(dw) = slot_mut(&mut sinks.weights, head) {
            linear_backward_params(dw, None, &acts.logits, &acts.lnf, n, d, v, 1.0);
        }
        g.dres.fill(0.0);
        let last = self.cfg.n_layers;
        self.norm_back(
            &self.layout.ln_f,
            &mut sinks.weights,
            g,
            Dln::One,
            &acts.resid[last],
            &acts.lnf_mean,
            &acts.lnf_rstd,
        );
        steer_grads(&mut sinks, steers, last, &g.dres, s, d);
        for l in (lowest..last).rev() {
            self.block_backward(
                l,
                &mut acts.blocks[l],
                (g, &mut acts.attn_scratch),
                &acts.resid[l],
                &mut sinks,
                batch,
                &acts.dropout,
            );
            steer_grads(&mut sinks, steers, l, &g.dres, s, d);
        }
        if lowest == 0 {
            let dwte = slot_mut(&mut sinks.weights, &self.layout.wte);
            embed_backward(dwte, sinks.prompts.as_deref_mut(), None, &g.dres, &batch.slots, s);
            if let Some(wpe) = &self.layout.wpe {
                embed_backward(None, None, slot_mut(&mut sinks.weights, wpe), &g.dres, &batch.slots, s);
            }
        }
    }

    /// One block in reverse: `g.dres` goes from `∂L/∂out` to `∂L/∂x`.
    #[allow(clippy::too_many_arguments)]
    fn block_backward(
        &self,
        l: usize,
        a: &mut BlockActs,
        (g, scratch): (&mut GradScratch, &mut [f32]),
        x: &[f32],
        sinks: &mut GradSinks,
        batch: &Batch,
        drop: &Dropout,
    ) {
        let (c, p, n) = (&self.cfg, &self.layout.blocks[l], batch.rows());
        let xa = &a.lora_xa;
        // MLP branch: dropout ← down ← act ← fc ← ln2.
        let dy = branch_grad(&mut g.dbranch, &g.dres, drop.mask(drop.resid, l, Site::MlpBranch));
        self.lin_back(l, Proj::Down, sinks, (&mut g.dact, &mut g.dxa), dy, &a.act, &xa[3], n);
        act_backward(&mut g.dfc, &g.dact, &a.fc, c.d_ff, c.activation);
        self.lin_back(l, Proj::Fc, sinks, (&mut g.dln2, &mut g.dxa), &g.dfc, &a.ln2, &xa[2], n);
        if !c.parallel_residual {
            self.norm_back(&p.ln2, &mut sinks.weights, g, Dln::Two, &a.mid, &a.ln2_mean, &a.ln2_rstd);
        }
        // Attention branch: dropout ← out ← attention ← qkv ← ln1.
        let dy = branch_grad(&mut g.dbranch, &g.dres, drop.mask(drop.resid, l, Site::AttnBranch));
        self.lin_back(l, Proj::AttnOut, sinks, (&mut g.dattn, &mut g.dxa), dy, &a.attn, &a.lora_xa[1], n);
        let attn_mask = drop.mask(drop.attn, l, Site::AttnProbs);
        attention_backward(
            &mut g.dqkv,
            &mut a.probs,
            scratch,
            &g.dattn,
            &a.qkv,
            self.attn_shape(batch.batch, batch.seq),
            attn_mask,
        );
        self.rope_rows(&mut g.dqkv, batch.seq, true, None);
        self.lin_back(l, Proj::Qkv, sinks, (&mut g.dln1, &mut g.dxa), &g.dqkv, &a.ln1, &a.lora_xa[0], n);
        if c.parallel_residual {
            self.norm_back(&p.ln2, &mut sinks.weights, g, Dln::Two, x, &a.ln2_mean, &a.ln2_rstd);
        }
        self.norm_back(&p.ln1, &mut sinks.weights, g, Dln::One, x, &a.ln1_mean, &a.ln1_rstd);
    }

    /// `dx = dy · W` and, when weights train, `dW += dyᵀ · x`, `db += Σ dy`; plus the
    /// LoRA adapter's share of `dx` (and its gradients) when one is attached.
    #[allow(clippy::too_many_arguments)]
    fn lin_back(
        &self,
        l: usize,
        proj: Proj,
        sinks: &mut GradSinks,
        (dx, dxa): (&mut [f32], &mut [f32]),
        dy: &[f32],
        x: &[f32],
        xa: &[f32],
        n: usize,
    ) {
        let p = proj.of(&self.layout.blocks[l]);
        let (out, inp) = p.dims();
        linear_backward_input(dx, dy, self.w(&p.weight), n, inp, out, 1.0, false);
        if let Some(gw) = sinks.weights.as_deref_mut() {
            let (dw, db) = split_weight_bias(gw, p);
            linear_backward_params(dw, db, dy, x, n, inp, out, 1.0);
        }
        if let Some((lora, ad)) = self.lora.as_ref().and_then(|lo| lo.adapter(l, proj).map(|ad| (lo, ad))) {
            lora.backward(ad, dx, sinks.lora.as_deref_mut(), dy, x, xa, dxa, n);
        }
    }

    /// `g.dres += ∂L/∂x` through a norm layer whose output gradient is in `g.dln1`/`g.dln2`.
    #[allow(clippy::too_many_arguments)]
    fn norm_back(
        &self,
        p: &NormSlots,
        weights: &mut Option<&mut [f32]>,
        g: &mut GradScratch,
        which: Dln,
        x: &[f32],
        mean: &[f32],
        rstd: &[f32],
    ) {
        let dy = match which {
            Dln::One => &g.dln1,
            Dln::Two => &g.dln2,
        };
        let dwb = weights.as_deref_mut().map(|gw| split_norm(gw, p));
        norm_backward(&mut g.dres, dwb, &mut g.norm_partials, dy, x, mean, rstd, self.w(&p.weight), self.norm_kind());
    }
}

/// The gradient reaching a residual branch before its dropout: `dres ⊙ mask` (written to
/// `buf`), or `dres` itself without dropout.
fn branch_grad<'a>(buf: &'a mut [f32], dres: &'a [f32], mask: Option<Mask>) -> &'a [f32] {
    match mask {
        Some(m) => {
            masked_copy(buf, dres, m);
            buf
        }
        None => dres,
    }
}

/// Which norm-output gradient buffer to read.
#[derive(Clone, Copy)]
enum Dln {
    One,
    Two,
}

/// The gradient slices of a linear layer's weight and bias.
fn split_weight_bias<'a>(g: &'a mut [f32], p: &LinearSlots) -> (&'a mut [f32], Option<&'a mut [f32]>) {
    split_pair(g, &p.weight, p.bias.as_ref())
}

/// The gradient slices of a norm layer's weight and bias.
fn split_norm<'a>(g: &'a mut [f32], p: &NormSlots) -> (&'a mut [f32], Option<&'a mut [f32]>) {
    split_pair(g, &p.weight, p.bias.as_ref())
}

/// Two disjoint slots of one buffer, the second optional and laid out after the first.
fn split_pair<'a>(g: &'a mut [f32], a: &Slot, b: Option<&Slot>) -> (&'a mut [f32], Option<&'a mut [f32]>) {
    match b {
        None => (&mut g[a.range()], None),
        Some(b) => {
            assert!(b.offset >= a.offset + a.len(), "bias must follow its weight");
            let (lo, hi) = g.split_at_mut(b.offset);
            (&mut lo[a.range()], Some(&mut hi[..b.len()]))
        }
    }
}

/// Accumulates `coef · Σ dres` over the steered slots into each steering gradient.
fn steer_grads(sinks: &mut GradSinks, steers: &[Steer], layer: usize, dres: &[f32], seq: usize, d: usize) {
    let Some(grads) = sinks.steers.as_deref_mut() else { return };
    for (st, grad) in steers.iter().zip(grads.iter_mut()).filter(|(st, _)| st.layer == layer) {
        for (r, row) in dres.chunks_exact(d).enumerate() {
            if (st.start..st.end).contains(&(r % seq)) {
                grad.iter_mut().zip(row).for_each(|(g, x)| *g += st.coef * x);
            }
        }
    }
}
