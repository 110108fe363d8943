//! KV-cached, batched autoregressive generation.
//!
//! Two levels:
//! - [`Decoder`] owns a [`KvCache`] (per layer, post-rotary keys and values
//!   `[B, G, capacity, hd]`) and the scratch of an incremental forward pass. Its
//!   [`Decoder::step`] appends, per sequence, a chunk of new slots (the whole input first —
//!   the prefill — then one token at a time, or any other chunking) and returns the logits
//!   of each sequence's last cached slot. The result equals [`Model::forward`] on the
//!   concatenated sequence at that position, up to float rounding.
//! - [`Model::generate`] / [`Decoder::generate`] run prefill, sampling and decoding for a
//!   [`GenerateRequest`] and return the new tokens of each sequence.
//!
//! Conventions, identical to [`Model::forward`]:
//! - the slot at index `p` of a sequence has absolute position `p`, which selects its
//!   rotary angle or learned position (`wpe`) and decides which [`Steer`]s reach it; a
//!   query at position `p` attends to positions `0..=p` of its own sequence;
//! - `InputSlot::Prompt(i)` reads row `i` of the caller's `prompts: [P, d]` buffer.
//!
//! Sequences are ragged: each keeps its own length and nothing is padded. A step packs
//! only the non-empty chunks into its rows, so a sequence with an empty chunk (one that
//! stopped, say) costs nothing and its cache and logits are left as they were.

pub use super::kernels::embed::InputSlot;

use super::activations::BlockActs;
use super::config::ModelConfig;
use super::forward::{apply_steers, Attention, Positions};
use super::kernels::attention::{softmax_causal_row, BLOCK};
use super::kernels::dropout::{Dropout, Mask};
use super::kernels::embed::embed_forward;
use super::kernels::fastmath::exp;
use super::kernels::linear::linear_forward;
use super::kernels::matmul::{matmul, Mat, MatMut, Threads};
use super::kernels::tile::small_matmul;
use super::model::{Model, Steer};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rayon::prelude::*;

/// How the next token is chosen from a row of logits.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Sampling {
    /// The most likely token (the lowest id among exact ties).
    Greedy,
    /// Nucleus sampling: softmax of `logits / temperature`, restricted to the smallest set
    /// of most likely tokens whose probability reaches `top_p` (at least one token),
    /// renormalised. `temperature > 0`, `0 < top_p ≤ 1`.
    TopP { temperature: f32, top_p: f32 },
}

/// One batched generation request.
#[derive(Clone, Copy, Debug)]
pub struct GenerateRequest<'a> {
    /// Per sequence, its non-empty input slots (tokens and soft-prompt slots in any order,
    /// e.g. the slots of one row of [`Batch::with_prompt`](super::batch::Batch::with_prompt)).
    /// Lengths may differ.
    pub inputs: &'a [Vec<InputSlot>],
    /// `[P, d]` soft-prompt vectors read by `InputSlot::Prompt` (may be empty if none is used).
    pub prompt_vectors: &'a [f32],
    /// Residual-stream steering, applied by absolute position to input and generated slots.
    pub steers: &'a [Steer],
    /// Tokens to generate per sequence (fewer for a sequence that emits `eos`).
    pub max_new_tokens: usize,
    pub sampling: Sampling,
    /// A token that ends a sequence; it is kept as that sequence's last output token.
    pub eos: Option<u32>,
    /// Tokens never generated (their logits are set to −∞ before choosing): e.g. condition
    /// tokens that only a prompt may hold.
    pub banned: &'a [u32],
    /// Seeds the sampler: sequence `b` draws from `ChaCha8Rng::seed_from_u64(seed)` on
    /// stream `b`, so its samples depend only on `(seed, b)` and its own logits.
    pub seed: u64,
}

/// Why a generation request or a decoder step was rejected.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum GenerateError {
    #[error(
        "sequence {seq}: {prompt} input slots + {new_tokens} new tokens = {needed} positions exceed the model's \
         max_position_embeddings of {max}"
    )]
    TooLong { seq: usize, prompt: usize, new_tokens: usize, needed: usize, max: usize },
    #[error("sequence {seq}: the input is empty; generation needs at least one slot to predict from")]
    EmptyInput { seq: usize },
    #[error("cache capacity {capacity} exceeds the model's max_position_embeddings of {max}")]
    CapacityTooLarge { capacity: usize, max: usize },
    #[error("sequence {seq}: {len} cached + {chunk} new slots exceed the cache capacity of {capacity}")]
    CacheFull { seq: usize, len: usize, chunk: usize, capacity: usize },
    #[error("{got} input chunks given to a decoder of {batch} sequences")]
    BatchMismatch { got: usize, batch: usize },
    #[error("sequence {seq}: token id {token} is outside the vocabulary of {vocab} tokens")]
    TokenOutOfRange { seq: usize, token: u32, vocab: usize },
    #[error("sequence {seq}: slot Prompt({row}) but the prompt-vector buffer holds {rows} rows")]
    PromptRowOutOfRange { seq: usize, row: u32, rows: usize },
    #[error("the prompt-vector buffer of {len} floats is not a whole number of rows of width {d}")]
    PromptBufferShape { len: usize, d: usize },
    #[error("steer {index}: {message}")]
    BadSteer { index: usize, message: String },
    #[error("invalid sampling settings: {0}")]
    BadSampling(String),
}

/// One layer's cache: `keys`, `values: [B, G, capacity, hd]`, keys after rotary.
#[derive(Clone, Debug, Default)]
struct LayerKv {
    keys: Vec<f32>,
    values: Vec<f32>,
}

/// Keys and values of every layer for `batch` sequences of up to `capacity` slots.
#[derive(Clone, Debug)]
pub struct KvCache {
    batch: usize,
    capacity: usize,
    kv_heads: usize,
    head_dim: usize,
    layers: Vec<LayerKv>,
    /// `[B]` cached slots per sequence (positions `0..len` are valid).
    lens: Vec<usize>,
}

impl KvCache {
    /// An empty cache for `batch` sequences of up to `capacity` slots of `cfg`.
    pub fn new(cfg: &ModelConfig, batch: usize, capacity: usize) -> Self {
        let per_layer = batch * cfg.n_kv_heads * capacity * cfg.head_dim;
        let layer = LayerKv { keys: vec![0.0; per_layer], values: vec![0.0; per_layer] };
        KvCache {
            batch,
            capacity,
            kv_heads: cfg.n_kv_heads,
            head_dim: cfg.head_dim,
            layers: vec![layer; cfg.n_layers],
            lens: vec![0; batch],
        }
    }

    /// Number of sequences.
    pub fn batch(&self) -> usize {
        self.batch
    }

    /// Slots each sequence can hold.
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// `[B]` slots cached per sequence; the next slot of sequence `b` has position `lens()[b]`.
    pub fn lens(&self) -> &[usize] {
        &self.lens
    }

    /// Forgets every sequence (keeps the memory).
    pub fn clear(&mut self) {
        self.lens.fill(0);
    }

    /// Offset of `[seq, group, pos, :]` in a layer buffer.
    fn offset(&self, seq: usize, group: usize, pos: usize) -> usize {
        ((seq * self.kv_heads + group) * self.capacity + pos) * self.head_dim
    }

    /// Copies the key and value heads of packed `qkv: [N, (H+2G)·hd]` rows into layer `l`.
    fn write(&mut self, l: usize, qkv: &[f32], spans: &[Span], n_heads: usize) {
        let (g_n, hd) = (self.kv_heads, self.head_dim);
        let w = (n_heads + 2 * g_n) * hd;
        for s in spans {
            for i in 0..s.rows() {
                let row = &qkv[(s.r0 + i) * w..(s.r0 + i + 1) * w];
                for g in 0..g_n {
                    let at = self.offset(s.seq, g, s.p0 + i);
                    let k = &row[(n_heads + g) * hd..(n_heads + g + 1) * hd];
                    let v = &row[(n_heads + g_n + g) * hd..(n_heads + g_n + g + 1) * hd];
                    self.layers[l].keys[at..at + hd].copy_from_slice(k);
                    self.layers[l].values[at..at + hd].copy_from_slice(v);
                }
            }
        }
    }
}

/// The packed rows `r0..r1` of one step belong to sequence `seq` at positions `p0..`.
#[derive(Clone, Copy, Debug)]
struct Span {
    seq: usize,
    r0: usize,
    r1: usize,
    p0: usize,
}

impl Span {
    fn rows(&self) -> usize {
        self.r1 - self.r0
    }
}

/// Scratch of one step, sized to its rows; memory is kept when a step has fewer.
/// `N` = packed rows, `A` = spans.
#[derive(Default)]
struct StepBuffers {
    spans: Vec<Span>,
    /// `[N]` absolute position of each packed row.
    row_pos: Vec<usize>,
    /// `[N, d]` residual stream: a block reads `x`, writes `out`, and the two swap.
    x: Vec<f32>,
    out: Vec<f32>,
    /// One block's buffers, reused by every block (`probs` stays empty).
    block: BlockActs,
    /// `[N, d]` branch outputs.
    branch: Vec<f32>,
    branch2: Vec<f32>,
    /// `[N·H·hd]` attention output, head-major per span (`[H, rows, hd]` at `r0·H·hd`).
    ctx: Vec<f32>,
    /// `[H, BLOCK, capacity]` attention scores.
    scores: Vec<f32>,
    /// `[A, d]` last row of each span, its final norm and `[A]` statistics; `[A, V]` logits.
    last: Vec<f32>,
    lnf: Vec<f32>,
    lnf_mean: Vec<f32>,
    lnf_rstd: Vec<f32>,
    head: Vec<f32>,
}

/// Makes `v` hold `n` floats, reusing its memory.
fn fit(v: &mut Vec<f32>, n: usize) {
    v.resize(n, 0.0);
}

impl StepBuffers {
    /// Makes every buffer hold `n` packed rows and `spans` spans for a cache of `capacity`.
    fn prepare(&mut self, model: &Model, n: usize, spans: usize, capacity: usize) {
        let c = &model.cfg;
        let d = c.d_model;
        let rank = model.lora.as_ref().map_or(0, |l| l.spec.rank);
        for (v, len) in self.block.row_buffers(c, n) {
            fit(v, len);
        }
        self.block.lora_xa.iter_mut().for_each(|xa| fit(xa, n * rank));
        for (v, len) in [
            (&mut self.x, n * d),
            (&mut self.out, n * d),
            (&mut self.branch, n * d),
            (&mut self.branch2, n * d),
            (&mut self.ctx, n * c.attn_dim()),
            (&mut self.scores, c.n_heads * BLOCK * capacity),
            (&mut self.last, spans * d),
            (&mut self.lnf, spans * d),
            (&mut self.lnf_mean, spans),
            (&mut self.lnf_rstd, spans),
            (&mut self.head, spans * c.vocab_size),
        ] {
            fit(v, len);
        }
    }
}

/// An incremental forward pass over a [`KvCache`], plus the sampler's scratch.
pub struct Decoder<'m> {
    model: &'m Model,
    cache: KvCache,
    bufs: StepBuffers,
    /// `[B, V]` next-token logits of each sequence (zeros before its first slot).
    logits: Vec<f32>,
    /// `[V]` sampler scratch: unnormalised probabilities and a token order.
    probs: Vec<f32>,
    order: Vec<u32>,
    /// Residual stream read by the tap (see [`Decoder::set_tap`]) and `[B, d]` readings.
    tap_layer: Option<usize>,
    tapped: Vec<f32>,
}

impl<'m> Decoder<'m> {
    /// A decoder for `batch` sequences of up to `capacity ≤ max_position_embeddings` slots.
    pub fn new(model: &'m Model, batch: usize, capacity: usize) -> Result<Self, GenerateError> {
        let max = model.cfg.max_positions;
        if capacity > max {
            return Err(GenerateError::CapacityTooLarge { capacity, max });
        }
        let mut bufs = StepBuffers::default();
        bufs.prepare(model, batch, batch, capacity);
        Ok(Decoder {
            model,
            cache: KvCache::new(&model.cfg, batch, capacity),
            bufs,
            logits: vec![0.0; batch * model.cfg.vocab_size],
            probs: Vec::new(),
            order: Vec::new(),
            tap_layer: None,
            tapped: vec![0.0; batch * model.cfg.d_model],
        })
    }

    /// Reads residual stream `layer` (the input of block `layer`, after steering; `n_layers`
    /// is the final norm's input) at each sequence's last slot on every step; `None` stops.
    pub fn set_tap(&mut self, layer: Option<usize>) {
        self.tap_layer = layer.map(|l| l.min(self.model.cfg.n_layers));
    }

    /// `[B, d]`: the tapped residual of each sequence's last slot so far (zeros before).
    pub fn tapped(&self) -> &[f32] {
        &self.tapped
    }

    /// Copies the last row of every span of residual `x` into the tap readings.
    fn read_tap(&mut self, layer: usize) {
        if self.tap_layer != Some(layer) {
            return;
        }
        let d = self.model.cfg.d_model;
        for s in &self.bufs.spans {
            let row = &self.bufs.x[(s.r1 - 1) * d..s.r1 * d];
            self.tapped[s.seq * d..(s.seq + 1) * d].copy_from_slice(row);
        }
    }

    /// The cache (its `lens()` are the sequence lengths so far).
    pub fn cache(&self) -> &KvCache {
        &self.cache
    }

    /// `[B, V]`: row `b` is the next-token logits after sequence `b`'s last cached slot.
    pub fn logits(&self) -> &[f32] {
        &self.logits
    }

    /// Forgets every sequence; memory is kept for the next one.
    pub fn reset(&mut self) {
        self.cache.clear();
        self.logits.fill(0.0);
        self.tapped.fill(0.0);
    }

    /// Appends `chunks[b]` to sequence `b` (an empty chunk leaves it untouched) and returns
    /// the `[B, V]` logits: for each sequence with a non-empty chunk, those of the chunk's
    /// last slot — the slot at position `lens()[b] − 1` afterwards, whether it holds a token
    /// or a soft-prompt vector; other rows keep their previous values. Slots at positions
    /// `p0..` (`p0` = the cached length) are embedded, steered and attended exactly as
    /// `Model::forward` treats the same positions of the concatenated sequence.
    pub fn step(
        &mut self,
        chunks: &[&[InputSlot]],
        prompts: &[f32],
        steers: &[Steer],
    ) -> Result<&[f32], GenerateError> {
        self.validate(chunks, prompts, steers)?;
        let n = self.plan(chunks);
        if n == 0 {
            return Ok(&self.logits);
        }
        let (model, d) = (self.model, self.model.cfg.d_model);
        embed(model, &mut self.bufs, chunks, prompts);
        for l in 0..model.cfg.n_layers {
            apply_steers(&mut self.bufs.x, steers, l, Positions::Listed(&self.bufs.row_pos), d);
            self.read_tap(l);
            block_step(model, &mut self.bufs, &mut self.cache, l);
        }
        apply_steers(&mut self.bufs.x, steers, model.cfg.n_layers, Positions::Listed(&self.bufs.row_pos), d);
        self.read_tap(model.cfg.n_layers);
        head(model, &mut self.bufs, &mut self.logits);
        for s in &self.bufs.spans {
            self.cache.lens[s.seq] = s.p0 + s.rows();
        }
        Ok(&self.logits)
    }

    /// Checks a step's chunks, prompt buffer and steers before anything is written.
    fn validate(&self, chunks: &[&[InputSlot]], prompts: &[f32], steers: &[Steer]) -> Result<(), GenerateError> {
        let c = &self.model.cfg;
        let batch = self.cache.batch;
        if chunks.len() != batch {
            return Err(GenerateError::BatchMismatch { got: chunks.len(), batch });
        }
        check_prompt_buffer(prompts, c.d_model)?;
        check_steers(steers, c)?;
        for (seq, chunk) in chunks.iter().enumerate() {
            let (len, capacity) = (self.cache.lens[seq], self.cache.capacity);
            if len + chunk.len() > capacity {
                return Err(GenerateError::CacheFull { seq, len, chunk: chunk.len(), capacity });
            }
            check_slots(seq, chunk, prompts.len() / c.d_model, c.vocab_size)?;
        }
        Ok(())
    }

    /// Packs the non-empty chunks into rows (spans and positions); returns the row count.
    fn plan(&mut self, chunks: &[&[InputSlot]]) -> usize {
        let b = &mut self.bufs;
        b.spans.clear();
        b.row_pos.clear();
        for (seq, chunk) in chunks.iter().enumerate().filter(|(_, c)| !c.is_empty()) {
            let (r0, p0) = (b.row_pos.len(), self.cache.lens[seq]);
            b.row_pos.extend(p0..p0 + chunk.len());
            b.spans.push(Span { seq, r0, r1: r0 + chunk.len(), p0 });
        }
        let (n, spans) = (b.row_pos.len(), b.spans.len());
        b.prepare(self.model, n, spans, self.cache.capacity);
        n
    }

    /// Runs a whole request on this decoder and returns the new tokens of each sequence
    /// (see [`Model::generate`]). The cache is reused when its batch matches and its
    /// capacity suffices, and reallocated otherwise.
    pub fn generate(&mut self, req: &GenerateRequest) -> Result<Vec<Vec<u32>>, GenerateError> {
        let capacity = check_request(&self.model.cfg, req)?;
        let batch = req.inputs.len();
        let mut out = vec![Vec::with_capacity(req.max_new_tokens); batch];
        if req.max_new_tokens == 0 || batch == 0 {
            return Ok(out);
        }
        if self.cache.batch != batch || self.cache.capacity < capacity {
            *self = Decoder::new(self.model, batch, capacity)?;
        }
        self.reset();
        let mut rngs: Vec<ChaCha8Rng> = (0..batch).map(|b| sequence_rng(req.seed, b)).collect();
        let chunks: Vec<&[InputSlot]> = req.inputs.iter().map(Vec::as_slice).collect();
        self.step(&chunks, req.prompt_vectors, req.steers)?;
        let mut next = vec![InputSlot::Token(0); batch];
        let mut active = vec![true; batch];
        loop {
            for b in 0..batch {
                if !active[b] {
                    continue;
                }
                let token = self.sample(b, req.sampling, req.banned, &mut rngs[b]);
                out[b].push(token);
                next[b] = InputSlot::Token(token);
                active[b] = Some(token) != req.eos && out[b].len() < req.max_new_tokens;
            }
            if !active.contains(&true) {
                return Ok(out);
            }
            let chunks: Vec<&[InputSlot]> =
                (0..batch).map(|b| if active[b] { std::slice::from_ref(&next[b]) } else { &[][..] }).collect();
            self.step(&chunks, req.prompt_vectors, req.steers)?;
        }
    }

    /// Draws the next token of sequence `b` from its logits row.
    fn sample(&mut self, b: usize, sampling: Sampling, banned: &[u32], rng: &mut ChaCha8Rng) -> u32 {
        let v = self.model.cfg.vocab_size;
        let row = &mut self.logits[b * v..(b + 1) * v];
        for &t in banned.iter().filter(|&&t| (t as usize) < v) {
            row[t as usize] = f32::NEG_INFINITY;
        }
        let row = &self.logits[b * v..(b + 1) * v];
        match sampling {
            Sampling::Greedy => argmax(row),
            Sampling::TopP { temperature, top_p } => {
                sample_top_p(row, temperature, top_p, rng, &mut self.probs, &mut self.order)
            }
        }
    }
}

impl Model {
    /// Generates up to `req.max_new_tokens` tokens after each of `req.inputs` and returns
    /// them per sequence (each ends early at its first `eos`, which is included).
    ///
    /// The first new token of sequence `b` is drawn from the logits at the **last slot of
    /// `inputs[b]`** (position `inputs[b].len() − 1`), whatever that slot holds: a token,
    /// or a soft-prompt vector when the prompt is placed at the very end. It is never drawn
    /// from an earlier slot (such as the last slot of a prepended or mid-sequence soft
    /// prompt) nor from another sequence's or a padding position: there is no padding, each
    /// sequence runs at its own length. Token `t + 1` comes from the logits at the slot of
    /// token `t`. Steers apply by absolute position to input and generated slots alike.
    ///
    /// Errors if an input is empty, if `inputs[b].len() + max_new_tokens` exceeds
    /// `max_position_embeddings`, or on an invalid token, prompt row, steer or sampling.
    pub fn generate(&self, req: &GenerateRequest) -> Result<Vec<Vec<u32>>, GenerateError> {
        let capacity = check_request(&self.cfg, req)?;
        Decoder::new(self, req.inputs.len(), capacity)?.generate(req)
    }
}

/// The sampler of sequence `b`: ChaCha8 seeded with `seed`, on stream `b`.
fn sequence_rng(seed: u64, b: usize) -> ChaCha8Rng {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    rng.set_stream(b as u64);
    rng
}

/// Validates a request; returns the cache capacity it needs, `max_b(len_b + T − 1)`.
fn check_request(cfg: &ModelConfig, req: &GenerateRequest) -> Result<usize, GenerateError> {
    if let Sampling::TopP { temperature, top_p } = req.sampling {
        if !(temperature > 0.0 && temperature.is_finite()) {
            return Err(GenerateError::BadSampling(format!(
                "temperature must be positive and finite, got {temperature}"
            )));
        }
        if !(top_p > 0.0 && top_p <= 1.0) {
            return Err(GenerateError::BadSampling(format!("top_p must be in (0, 1], got {top_p}")));
        }
    }
    let mut capacity = 0;
    for (seq, input) in req.inputs.iter().enumerate() {
        if input.is_empty() {
            return Err(GenerateError::EmptyInput { seq });
        }
        let needed = input.len() + req.max_new_tokens;
        if needed > cfg.max_positions {
            let (prompt, new_tokens, max) = (input.len(), req.max_new_tokens, cfg.max_positions);
            return Err(GenerateError::TooLong { seq, prompt, new_tokens, needed, max });
        }
        capacity = capacity.max(needed.saturating_sub(1).max(input.len()));
    }
    Ok(capacity)
}

/// `prompts` must be `[P, d]`.
fn check_prompt_buffer(prompts: &[f32], d: usize) -> Result<(), GenerateError> {
    if !prompts.len().is_multiple_of(d) {
        return Err(GenerateError::PromptBufferShape { len: prompts.len(), d });
    }
    Ok(())
}

/// Every steer must target a residual stream `0..=n_layers` with a `[d]` vector.
fn check_steers(steers: &[Steer], c: &ModelConfig) -> Result<(), GenerateError> {
    for (index, st) in steers.iter().enumerate() {
        let message = if st.layer > c.n_layers {
            format!("layer {} is past the final norm's input (layer {})", st.layer, c.n_layers)
        } else if st.vector.len() != c.d_model {
            format!("vector has {} entries, the model width is {}", st.vector.len(), c.d_model)
        } else {
            continue;
        };
        return Err(GenerateError::BadSteer { index, message });
    }
    Ok(())
}

/// Every token must be in the vocabulary and every prompt row in the buffer.
fn check_slots(seq: usize, slots: &[InputSlot], rows: usize, vocab: usize) -> Result<(), GenerateError> {
    for slot in slots {
        match *slot {
            InputSlot::Token(token) if token as usize >= vocab => {
                return Err(GenerateError::TokenOutOfRange { seq, token, vocab })
            }
            InputSlot::Prompt(row) if row as usize >= rows => {
                return Err(GenerateError::PromptRowOutOfRange { seq, row, rows })
            }
            _ => {}
        }
    }
    Ok(())
}

/// `x[span] = embed(chunk)`, with learned positions starting at the span's `p0`.
fn embed(model: &Model, b: &mut StepBuffers, chunks: &[&[InputSlot]], prompts: &[f32]) {
    let d = model.cfg.d_model;
    let wte = model.w(&model.layout.wte);
    let wpe = model.layout.wpe.as_ref().map(|p| model.w(p));
    for s in &b.spans {
        // `embed_forward` adds `wpe[row mod seq]`; with `seq` = chunk length and `wpe`
        // offset by `p0`, row `i` gets `wpe[p0 + i]`.
        let wpe = wpe.map(|w| &w[s.p0 * d..]);
        embed_forward(&mut b.x[s.r0 * d..s.r1 * d], chunks[s.seq], wte, prompts, wpe, s.rows());
    }
}

/// Block `l` on the packed rows: `x ← block(x)`, appending their keys and values.
fn block_step(model: &Model, b: &mut StepBuffers, cache: &mut KvCache, l: usize) {
    let (spans, row_pos) = (&b.spans[..], &b.row_pos[..]);
    let mut attention =
        CachedAttention { cfg: &model.cfg, cache, spans, row_pos, ctx: &mut b.ctx, scores: &mut b.scores };
    let branches = (&mut b.branch[..], &mut b.branch2[..]);
    model.block_forward(l, &mut b.block, branches, (&b.x, &mut b.out), &mut attention, &Dropout::default());
    std::mem::swap(&mut b.x, &mut b.out);
}

/// Attention of packed rows over their sequences' KV cache, at their absolute positions.
struct CachedAttention<'a> {
    cfg: &'a ModelConfig,
    cache: &'a mut KvCache,
    spans: &'a [Span],
    row_pos: &'a [usize],
    /// `[N·H·hd]` head-major attention output and `[H, BLOCK, capacity]` scores.
    ctx: &'a mut [f32],
    scores: &'a mut [f32],
}

impl Attention for CachedAttention<'_> {
    fn positions(&self) -> Positions<'_> {
        Positions::Listed(self.row_pos)
    }

    /// Caches the new keys and values, then attends over the cache (generation has no
    /// dropout, so `mask` is always `None`).
    fn attend(&mut self, l: usize, a: &mut BlockActs, mask: Option<Mask>) {
        debug_assert!(mask.is_none(), "generation runs without dropout");
        self.cache.write(l, &a.qkv, self.spans, self.cfg.n_heads);
        attend(self.cfg, self.cache, l, self.spans, &a.qkv, self.ctx, self.scores);
        gather_heads(self.cfg, self.spans, self.ctx, &mut a.attn);
    }
}

/// Causal attention of each span's new queries over its cached keys and values of layer
/// `l`: the query at position `p` sees positions `0..=p`. Writes `ctx` head-major per span
/// (`[H, rows, hd]` at `r0·H·hd`); `scores: [H, BLOCK, capacity]` is scratch.
fn attend(
    c: &ModelConfig,
    cache: &KvCache,
    l: usize,
    spans: &[Span],
    qkv: &[f32],
    ctx: &mut [f32],
    scores: &mut [f32],
) {
    let (hd, w, a, cap) = (c.head_dim, c.qkv_dim(), c.attn_dim(), cache.capacity);
    let (group, scale) = (c.n_heads / c.n_kv_heads, 1.0 / (c.head_dim as f32).sqrt());
    let kv = &cache.layers[l];
    for s in spans {
        let (rows, queries) = (s.rows(), &qkv[s.r0 * w..s.r1 * w]);
        let out = &mut ctx[s.r0 * a..s.r1 * a];
        out.par_chunks_mut(rows * hd).zip(scores.par_chunks_mut(BLOCK * cap)).enumerate().for_each(|(h, (out, sc))| {
            let base = cache.offset(s.seq, h / group, 0);
            let (keys, values) = (&kv.keys[base..base + cap * hd], &kv.values[base..base + cap * hd]);
            for i0 in (0..rows).step_by(BLOCK) {
                let (m, kl) = ((i0 + BLOCK).min(rows) - i0, s.p0 + (i0 + BLOCK).min(rows));
                let q = Mat::strided(&queries[i0 * w + h * hd..], m, hd, w);
                let k = Mat::new(&keys[..kl * hd], kl, hd);
                matmul(MatMut::strided(sc, m, kl, cap), q, k.t(), scale, false, Threads::One);
                for i in 0..m {
                    softmax_causal_row(&mut sc[i * cap..i * cap + kl], s.p0 + i0 + i);
                }
                let v = Mat::new(&values[..kl * hd], kl, hd);
                let (dst, p) = (MatMut::new(&mut out[i0 * hd..(i0 + m) * hd], m, hd), Mat::strided(sc, m, kl, cap));
                small_matmul(dst, p, v, 1.0, false);
            }
        });
    }
}

/// `attn[r, h·hd..] = ctx[head h of r's span, row r]`: head-major to row-major.
fn gather_heads(c: &ModelConfig, spans: &[Span], ctx: &[f32], attn: &mut [f32]) {
    let (hd, a) = (c.head_dim, c.attn_dim());
    for s in spans {
        let (rows, src) = (s.rows(), &ctx[s.r0 * a..s.r1 * a]);
        attn[s.r0 * a..s.r1 * a].par_chunks_mut(a).enumerate().for_each(|(i, row)| {
            for (h, dst) in row.chunks_exact_mut(hd).enumerate() {
                dst.copy_from_slice(&src[(h * rows + i) * hd..(h * rows + i + 1) * hd]);
            }
        });
    }
}

/// Final norm and output head on the last row of each span, into `logits[seq]: [V]`.
fn head(model: &Model, b: &mut StepBuffers, logits: &mut [f32]) {
    let (d, v, k) = (model.cfg.d_model, model.cfg.vocab_size, b.spans.len());
    for (j, s) in b.spans.iter().enumerate() {
        b.last[j * d..(j + 1) * d].copy_from_slice(&b.x[(s.r1 - 1) * d..s.r1 * d]);
    }
    let (last, lnf) = (&b.last[..k * d], &mut b.lnf[..k * d]);
    model.norm(&model.layout.ln_f, lnf, &mut b.lnf_mean[..k], &mut b.lnf_rstd[..k], last);
    linear_forward(&mut b.head[..k * v], lnf, model.w(model.layout.head_slot()), None, k, d, v);
    for (j, s) in b.spans.iter().enumerate() {
        logits[s.seq * v..(s.seq + 1) * v].copy_from_slice(&b.head[j * v..(j + 1) * v]);
    }
}

/// Index of the largest logit (the first among ties).
fn argmax(row: &[f32]) -> u32 {
    let mut best = 0;
    for (i, &x) in row.iter().enumerate() {
        if x > row[best] {
            best = i;
        }
    }
    best as u32
}

/// Nucleus sampling from `row: [V]` (see [`Sampling::TopP`]); `probs`, `order` are scratch.
/// Ties in probability are ordered by token id, so a vanishing `top_p` gives [`argmax`].
fn sample_top_p(
    row: &[f32],
    temperature: f32,
    top_p: f32,
    rng: &mut impl Rng,
    probs: &mut Vec<f32>,
    order: &mut Vec<u32>,
) -> u32 {
    let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    probs.clear();
    probs.extend(row.iter().map(|&x| exp((x - max) / temperature)));
    order.clear();
    order.extend(0..row.len() as u32);
    order.sort_unstable_by(|&i, &j| probs[j as usize].total_cmp(&probs[i as usize]).then(i.cmp(&j)));
    let total: f64 = probs.iter().map(|&p| p as f64).sum();
    let (mut kept, mut mass) = (0, 0.0f64);
    for &i in order.iter() {
        mass += probs[i as usize] as f64;
        kept += 1;
        if mass >= top_p as f64 * total {
            break;
        }
    }
    let u = rng.random::<f64>() * mass;
    let mut acc = 0.0f64;
    for &i in &order[..kept] {
        acc += probs[i as usize] as f64;
        if u < acc {
            return i;
        }
    }
    order[kept - 1]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn top_p_keeps_the_smallest_nucleus() {
        // Probabilities ∝ e^0, e^-1, e^-2, ...: the top token holds ~63% of the mass.
        let row: Vec<f32> = (0..8).map(|i| -(i as f32)).collect();
        let (mut probs, mut order) = (Vec::new(), Vec::new());
        let mut rng = ChaCha8Rng::seed_from_u64(0);
        for _ in 0..200 {
            assert_eq!(sample_top_p(&row, 1.0, 0.6, &mut rng, &mut probs, &mut order), 0);
            assert!(sample_top_p(&row, 1.0, 0.8, &mut rng, &mut probs, &mut order) <= 1);
        }
        let seen: std::collections::BTreeSet<u32> =
            (0..2000).map(|_| sample_top_p(&row, 1.0, 1.0, &mut rng, &mut probs, &mut order)).collect();
        assert!(seen.len() >= 5, "full nucleus draws many tokens: {seen:?}");
    }

    #[test]
    fn argmax_takes_the_first_of_ties() {
        assert_eq!(argmax(&[0.0, 2.0, 1.0, 2.0]), 1);
    }
}
