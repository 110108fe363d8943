//! LoRA adapters: a frozen linear layer `y = x·Wᵀ + b` gains `s·(x·Aᵀ)·Bᵀ` with
//! `A: [r, in]`, `B: [out, r]`, `s = alpha / r`. `B` starts at zero, so a fresh adapter
//! leaves the model unchanged.

use super::kernels::linear::{linear_accumulate, linear_backward_input, linear_backward_params, linear_forward};
use super::layout::{BlockSpans, LinearSpans, TensorSpan};
use super::model::Model;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// The four projections of a block, in a fixed order.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Proj {
    /// The fused query/key/value projection.
    Qkv,
    /// The attention output projection.
    AttnOut,
    /// The MLP up (and gate) projection.
    Fc,
    /// The MLP down projection.
    Down,
}

impl Proj {
    /// All projections, in index order.
    pub const ALL: [Proj; 4] = [Proj::Qkv, Proj::AttnOut, Proj::Fc, Proj::Down];

    /// Position in `ALL`.
    pub fn index(self) -> usize {
        self as usize
    }

    /// The linear layer this names in a block.
    pub fn of(self, b: &BlockSpans) -> &LinearSpans {
        match self {
            Proj::Qkv => &b.qkv,
            Proj::AttnOut => &b.attn_out,
            Proj::Fc => &b.fc,
            Proj::Down => &b.down,
        }
    }
}

/// Which projections get adapters, and their rank and alpha.
#[derive(Clone, Debug, PartialEq)]
pub struct LoraSpec {
    pub rank: usize,
    pub alpha: f32,
    pub targets: Vec<Proj>,
}

/// One adapter's factors inside `Lora::params`.
#[derive(Clone, Debug)]
pub struct Adapter {
    /// `[r, in]`.
    pub a: TensorSpan,
    /// `[out, r]`.
    pub b: TensorSpan,
}

/// All adapters of a model, with their parameters in one flat buffer.
#[derive(Clone, Debug)]
pub struct Lora {
    pub spec: LoraSpec,
    /// `[layer][proj]`.
    pub adapters: Vec<[Option<Adapter>; 4]>,
    pub params: Vec<f32>,
}

impl Lora {
    /// Fresh adapters: `A ~ U(−1/√in, 1/√in)` (as PEFT's Kaiming init), `B = 0`.
    pub fn new(model: &Model, spec: LoraSpec, seed: u64) -> Self {
        let mut next = 0;
        let mut slot = |shape: [usize; 2]| {
            let s = TensorSpan { offset: next, shape: shape.to_vec() };
            next += s.len();
            s
        };
        let adapters: Vec<[Option<Adapter>; 4]> = model
            .layout
            .blocks
            .iter()
            .map(|b| {
                Proj::ALL.map(|p| {
                    spec.targets.contains(&p).then(|| {
                        let (out, inp) = p.of(b).dims();
                        Adapter { a: slot([spec.rank, inp]), b: slot([out, spec.rank]) }
                    })
                })
            })
            .collect();
        let mut params = vec![0.0; next];
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        for ad in adapters.iter().flatten().flatten() {
            let bound = 1.0 / (ad.a.shape[1] as f32).sqrt();
            params[ad.a.range()].iter_mut().for_each(|x| *x = rng.random_range(-bound..bound));
        }
        Lora { spec, adapters, params }
    }

    /// The scaling `alpha / rank`.
    pub fn scale(&self) -> f32 {
        self.spec.alpha / self.spec.rank as f32
    }

    /// The adapter on projection `p` of block `l`, if any.
    pub fn adapter(&self, l: usize, p: Proj) -> Option<&Adapter> {
        self.adapters[l][p.index()].as_ref()
    }

    /// `y += s·(x·Aᵀ)·Bᵀ` over `n` rows, keeping `xa = x·Aᵀ: [n, r]`.
    pub fn forward(&self, ad: &Adapter, y: &mut [f32], x: &[f32], xa: &mut [f32], n: usize) {
        let (r, inp, out) = (self.spec.rank, ad.a.shape[1], ad.b.shape[0]);
        linear_forward(xa, x, &self.params[ad.a.range()], None, n, inp, r);
        linear_accumulate(y, xa, &self.params[ad.b.range()], n, r, out, self.scale(), true);
    }

    /// `dx += ∂/∂x` of the adapter term and, with `grads`, `dA`, `dB` accumulated.
    #[allow(clippy::too_many_arguments)]
    pub fn backward(
        &self,
        ad: &Adapter,
        dx: &mut [f32],
        grads: Option<&mut [f32]>,
        dy: &[f32],
        x: &[f32],
        xa: &[f32],
        dxa: &mut [f32],
        n: usize,
    ) {
        let (r, inp, out, s) = (self.spec.rank, ad.a.shape[1], ad.b.shape[0], self.scale());
        linear_backward_input(dxa, dy, &self.params[ad.b.range()], n, r, out, s, false);
        if let Some(g) = grads {
            linear_backward_params(&mut g[ad.b.range()], None, dy, xa, n, r, out, s);
            linear_backward_params(&mut g[ad.a.range()], None, dxa, x, n, inp, r, 1.0);
        }
        linear_backward_input(dx, dxa, &self.params[ad.a.range()], n, inp, r, 1.0, true);
    }

    /// Folds every adapter into the base weights: `W += s·B·A`.
    pub fn merge_into(&self, model: &mut Model) {
        let s = self.scale();
        for (l, ads) in self.adapters.iter().enumerate() {
            for (p, ad) in Proj::ALL.iter().zip(ads) {
                let Some(ad) = ad else { continue };
                let w = p.of(&model.layout.blocks[l]).weight.clone();
                let (out, inp) = (w.shape[0], w.shape[1]);
                let (a, b) = (&self.params[ad.a.range()], &self.params[ad.b.range()]);
                let r = self.spec.rank;
                let dst = &mut model.weights[w.range()];
                for o in 0..out {
                    for k in 0..r {
                        let bk = s * b[o * r + k];
                        dst[o * inp..(o + 1) * inp]
                            .iter_mut()
                            .zip(&a[k * inp..(k + 1) * inp])
                            .for_each(|(d, a)| *d += bk * a);
                    }
                }
            }
        }
    }

    /// Number of trainable parameters.
    pub fn n_params(&self) -> usize {
        self.params.len()
    }
}
