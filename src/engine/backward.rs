//! The backward pass, block by block in reverse, computing only requested gradients:
//! a frozen weight costs no weight-gradient product, and blocks below the lowest
//! trainable input are skipped entirely.

use super::activations::{Activations, BlockActs, GradScratch, PromptRows};
use super::batch::Batch;
use super::forward::{project_out, unit, Positions};
use super::kernels::act::act_backward;
use super::kernels::attention::attention_backward;
use super::kernels::dropout::{masked_copy, Dropout, Mask, Site};
use super::kernels::embed::embed_backward;
use super::kernels::linear::{linear_backward_input, linear_backward_params};
use super::kernels::loss::cross_entropy;
use super::kernels::norm::norm_backward;
use super::layout::{LinearSpans, NormSpans, TensorSpan};
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
    /// The same sinks, borrowed for a shorter time.
    pub fn reborrow(&mut self) -> GradSinks<'_> {
        GradSinks {
            weights: self.weights.as_deref_mut(),
            prompts: self.prompts.as_deref_mut(),
            steers: self.steers.as_deref_mut(),
            lora: self.lora.as_deref_mut(),
        }
    }

    /// Number of values that receive gradients.
    pub fn trained_values(&self) -> usize {
        let flat =
            [&self.weights, &self.prompts, &self.lora].iter().map(|g| g.as_ref().map_or(0, |g| g.len())).sum::<usize>();
        flat + self.steers.as_ref().map_or(0, |s| s.iter().map(Vec::len).sum())
    }

    /// The lowest residual stream whose gradient is needed, if any.
    fn lowest_layer(&self, steers: &[Steer]) -> Option<usize> {
        if self.weights.is_some() || self.prompts.is_some() || self.lora.is_some() {
            return Some(0);
        }
        self.steers.as_ref().and_then(|_| steers.iter().map(|s| s.layer).min())
    }

    /// Only prompt vectors train, so the input gradient is needed at prompt slots alone.
    fn prompts_only(&self) -> bool {
        self.prompts.is_some() && self.weights.is_none() && self.lora.is_none() && self.steers.is_none()
    }
}

/// Splits a flat gradient buffer into the part one slot owns.
fn slot_mut<'a>(g: &'a mut Option<&mut [f32]>, slot: &TensorSpan) -> Option<&'a mut [f32]> {
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
        steer_grads(&mut sinks, steers, last, &mut g.dres, s, d);
        // A projection at layer 0 needs every row's gradient there.
        let prompt_rows = self.lora.is_none() && sinks.prompts_only() && !steers.iter().any(|st| st.project);
        if prompt_rows {
            acts.prompt_rows.select(&batch.slots, s);
        }
        for l in (lowest..last).rev() {
            let rows = (prompt_rows && l == 0).then_some(&acts.prompt_rows);
            self.block_backward(
                l,
                &mut acts.blocks[l],
                (g, &mut acts.attn_scratch),
                &acts.resid[l],
                &mut sinks,
                batch,
                &acts.dropout,
                rows,
            );
            steer_grads(&mut sinks, steers, l, &mut g.dres, s, d);
        }
        if lowest == 0 {
            let dwte = slot_mut(&mut sinks.weights, &self.layout.wte);
            let slots = if prompt_rows { &acts.prompt_rows.slots } else { &batch.slots };
            embed_backward(dwte, sinks.prompts.as_deref_mut(), None, &g.dres[..slots.len() * d], slots, s);
            if let Some(wpe) = &self.layout.wpe {
                embed_backward(None, None, slot_mut(&mut sinks.weights, wpe), &g.dres, &batch.slots, s);
            }
        }
    }

    /// One block in reverse: `g.dres` goes from `∂L/∂out` to `∂L/∂x`. With `rows`, only
    /// those rows of `∂L/∂x` are computed, left compacted at the front of `g.dres`; the
    /// block's saved activations are then consumed.
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
        rows: Option<&PromptRows>,
    ) {
        let (c, p, n) = (&self.cfg, &self.layout.blocks[l], batch.rows());
        let mlp_mask = drop.mask(drop.resid, l, Site::MlpBranch);
        if !c.parallel_residual {
            let dy = branch_grad(&mut g.dbranch, &g.dres, mlp_mask);
            self.mlp_backward(l, a, sinks, (&mut g.dact, &mut g.dfc, &mut g.dln2, &mut g.dxa), dy, n);
            self.norm_back(&p.ln2, &mut sinks.weights, g, Dln::Two, &a.mid, &a.ln2_mean, &a.ln2_rstd);
        }
        // Attention branch, over every row (later queries read earlier rows' keys and
        // values): dropout ← out ← attention.
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
        // Each row is independent from here on: qkv ← ln1, and the MLP of parallel blocks.
        let (x, m) = match rows {
            Some(r) => {
                self.keep_rows(r, a, g, x, mlp_mask);
                (&a.ln1[..], r.rows.len())
            }
            None => {
                self.rope_rows(&mut g.dqkv, Positions::Periodic(batch.seq), true, None);
                (x, n)
            }
        };
        self.lin_back(l, Proj::Qkv, sinks, (&mut g.dln1, &mut g.dxa), &g.dqkv, &a.ln1, &a.lora_xa[0], m);
        if c.parallel_residual {
            let dy = match rows {
                Some(_) => &a.ln2[..],
                None => branch_grad(&mut g.dbranch, &g.dres, mlp_mask),
            };
            self.mlp_backward(l, a, sinks, (&mut g.dact, &mut g.dfc, &mut g.dln2, &mut g.dxa), dy, m);
            self.norm_back(&p.ln2, &mut sinks.weights, g, Dln::Two, x, &a.ln2_mean[..m], &a.ln2_rstd[..m]);
        }
        self.norm_back(&p.ln1, &mut sinks.weights, g, Dln::One, x, &a.ln1_mean[..m], &a.ln1_rstd[..m]);
    }

    /// MLP branch of `m` rows in reverse, from the branch gradient `dy` to `dln2`:
    /// down ← act ← fc.
    #[allow(clippy::too_many_arguments)]
    fn mlp_backward(
        &self,
        l: usize,
        a: &BlockActs,
        sinks: &mut GradSinks,
        (dact, dfc, dln2, dxa): (&mut [f32], &mut [f32], &mut [f32], &mut [f32]),
        dy: &[f32],
        m: usize,
    ) {
        let c = &self.cfg;
        self.lin_back(l, Proj::Down, sinks, (dact, dxa), dy, &a.act, &a.lora_xa[3], m);
        let fc = m * c.fc_dim();
        act_backward(&mut dfc[..fc], &dact[..m * c.d_ff], &a.fc[..fc], c.d_ff, c.activation);
        self.lin_back(l, Proj::Fc, sinks, (dln2, dxa), dfc, &a.ln2, &a.lora_xa[2], m);
    }

    /// Prepares the row-independent tail of `block_backward` for `rows` alone: their
    /// gradients, statistics and pre-activations are compacted to the front of their
    /// buffers and `g.dqkv`'s rows are un-rotated. The block input's rows are gathered into
    /// `a.ln1` and (parallel blocks) the MLP branch gradient's into `a.ln2`, which no longer
    /// hold norm outputs: only weight and LoRA gradients read those, and neither is
    /// computed when `rows` is given.
    fn keep_rows(&self, rows: &PromptRows, a: &mut BlockActs, g: &mut GradScratch, x: &[f32], mlp_mask: Option<Mask>) {
        let (c, d, r) = (&self.cfg, self.cfg.d_model, &rows.rows[..]);
        if c.parallel_residual {
            gather_rows(&mut a.ln2, branch_grad(&mut g.dbranch, &g.dres, mlp_mask), d, r);
            compact_rows(&mut a.fc, c.fc_dim(), r);
        }
        gather_rows(&mut a.ln1, x, d, r);
        for (buf, width) in [(&mut g.dqkv, c.qkv_dim()), (&mut g.dres, d)] {
            compact_rows(buf, width, r);
        }
        for buf in [&mut a.ln1_mean, &mut a.ln1_rstd, &mut a.ln2_mean, &mut a.ln2_rstd] {
            compact_rows(buf, 1, r);
        }
        let dqkv = &mut g.dqkv[..r.len() * c.qkv_dim()];
        self.rope_rows(dqkv, Positions::Listed(&rows.positions), true, None);
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
        p: &NormSpans,
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

/// Copies rows `rows` of `src` (`width` floats each) to the front of `dst`, in order.
fn gather_rows(dst: &mut [f32], src: &[f32], width: usize, rows: &[usize]) {
    for (k, &r) in rows.iter().enumerate() {
        dst[k * width..(k + 1) * width].copy_from_slice(&src[r * width..(r + 1) * width]);
    }
}

/// Moves rows `rows` (ascending) of `buf` to its front, in order.
fn compact_rows(buf: &mut [f32], width: usize, rows: &[usize]) {
    for (k, &r) in rows.iter().enumerate() {
        buf.copy_within(r * width..(r + 1) * width, k * width);
    }
}

/// Which norm-output gradient buffer to read.
#[derive(Clone, Copy)]
enum Dln {
    One,
    Two,
}

/// The gradient slices of a linear layer's weight and bias.
fn split_weight_bias<'a>(g: &'a mut [f32], p: &LinearSpans) -> (&'a mut [f32], Option<&'a mut [f32]>) {
    split_pair(g, &p.weight, p.bias.as_ref())
}

/// The gradient slices of a norm layer's weight and bias.
fn split_norm<'a>(g: &'a mut [f32], p: &NormSpans) -> (&'a mut [f32], Option<&'a mut [f32]>) {
    split_pair(g, &p.weight, p.bias.as_ref())
}

/// Two disjoint slots of one buffer, the second optional and laid out after the first.
fn split_pair<'a>(g: &'a mut [f32], a: &TensorSpan, b: Option<&TensorSpan>) -> (&'a mut [f32], Option<&'a mut [f32]>) {
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
fn steer_grads(sinks: &mut GradSinks, steers: &[Steer], layer: usize, dres: &mut [f32], seq: usize, d: usize) {
    for st in steers.iter().filter(|st| st.project && st.layer == layer) {
        let u = unit(&st.vector);
        for (r, row) in dres.chunks_exact_mut(d).enumerate() {
            if (st.start..st.end).contains(&(r % seq)) {
                project_out(row, &u, st.coef);
            }
        }
    }
    let Some(grads) = sinks.steers.as_deref_mut() else { return };
    for (st, grad) in steers.iter().zip(grads.iter_mut()).filter(|(st, _)| !st.project && st.layer == layer) {
        for (r, row) in dres.chunks_exact(d).enumerate() {
            if (st.start..st.end).contains(&(r % seq)) {
                grad.iter_mut().zip(row).for_each(|(g, x)| *g += st.coef * x);
            }
        }
    }
}
