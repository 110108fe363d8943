//! Dropout masks that are a pure function of `(seed, stream, index)`: no RNG state, so
//! forward and backward regenerate the same mask, in parallel, bit-identically.
//!
//! Kept elements are scaled by `1/(1−p)` (inverted dropout, as PyTorch).

use super::ROW_CHUNK;
use rayon::prelude::*;

/// Dropout probabilities for one training pass, and the seed of its masks.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Dropout {
    /// On attention probabilities.
    pub attn: f32,
    /// On each residual branch output (attention and MLP), before it joins the stream.
    pub resid: f32,
    /// Mask seed; vary it every step.
    pub seed: u64,
}

/// Independent mask streams: one per layer and site.
#[derive(Clone, Copy, Debug)]
pub enum Site {
    AttnProbs,
    AttnBranch,
    MlpBranch,
}

/// The stream id of a site in layer `l`.
pub fn stream(l: usize, site: Site) -> u64 {
    (l as u64) * 4 + site as u64
}

/// SplitMix64 finaliser: a well-mixed 64-bit hash.
#[inline(always)]
fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// A mask generator for one stream.
#[derive(Clone, Copy, Debug)]
pub struct Mask {
    key: u64,
    threshold: u32,
    scale: f32,
}

impl Mask {
    /// The mask of `stream` under probability `p` and `seed`.
    pub fn new(p: f32, seed: u64, stream: u64) -> Self {
        let threshold = (p as f64 * 4_294_967_296.0).min(u32::MAX as f64) as u32;
        Mask { key: mix(seed ^ mix(stream.wrapping_add(0x9e37_79b9_7f4a_7c15))), threshold, scale: 1.0 / (1.0 - p) }
    }

    /// `0` (dropped) or `1/(1−p)` (kept) for element `idx`.
    #[inline(always)]
    pub fn factor(&self, idx: u64) -> f32 {
        let r = (mix(self.key ^ idx.wrapping_mul(0x9e37_79b9_7f4a_7c15)) >> 32) as u32;
        if r >= self.threshold {
            self.scale
        } else {
            0.0
        }
    }

    /// `x[i] *= factor(offset + i)`.
    #[inline]
    pub fn apply(&self, x: &mut [f32], offset: u64) {
        x.iter_mut().enumerate().for_each(|(i, v)| *v *= self.factor(offset + i as u64));
    }
}

/// Elements per parallel work item.
const CHUNK: usize = ROW_CHUNK * 64;

/// `x ⊙= mask` over a whole buffer (parallel, deterministic).
pub fn mask_in_place(x: &mut [f32], mask: Mask) {
    x.par_chunks_mut(CHUNK).enumerate().for_each(|(c, x)| mask.apply(x, (c * CHUNK) as u64));
}

/// `dst = src ⊙ mask` over a whole buffer (parallel, deterministic).
pub fn masked_copy(dst: &mut [f32], src: &[f32], mask: Mask) {
    dst.par_chunks_mut(CHUNK).zip(src.par_chunks(CHUNK)).enumerate().for_each(|(c, (d, s))| {
        d.copy_from_slice(s);
        mask.apply(d, (c * CHUNK) as u64);
    });
}

impl Dropout {
    /// The dropout of a shard of a batch whose first sequence is `first_seq`: the same
    /// probabilities, with masks from a seed of its own.
    pub fn for_shard(&self, first_seq: usize) -> Dropout {
        Dropout { seed: mix(self.seed ^ mix(first_seq as u64)), ..*self }
    }

    /// The mask of `site` in layer `l` at probability `p`, or `None` when `p` is 0.
    pub fn mask(&self, p: f32, l: usize, site: Site) -> Option<Mask> {
        (p > 0.0).then(|| Mask::new(p, self.seed, stream(l, site)))
    }
}
