//! The bridge between Hugging Face tensor names and layouts and the internal flat layout,
//! per architecture. Import and export are exact inverses (a pure permutation of floats).

use super::config::{Arch, ModelConfig};
use super::layout::{Layout, LinearSpans, NormSpans, TensorSpan};
use crate::hf::io::{HfTensor, TensorMap};

/// How an HF tensor's floats map onto an internal slot.
#[derive(Clone, Copy, Debug)]
enum Placement {
    /// Same shape and order.
    Same,
    /// HF stores `[in, out]` (GPT-2 Conv1D); internally `[out, in]`.
    Transposed,
    /// HF tensor fills rows `start..` of a fused internal tensor.
    Rows { start: usize },
    /// GPT-NeoX fused qkv: HF rows go per head `[q_h; k_h; v_h]`, internal rows `[Q; K; V]`.
    NeoxQkv { heads: usize, head_dim: usize },
}

/// One HF tensor and where it goes.
#[derive(Clone, Debug)]
pub struct TensorSpec {
    pub name: String,
    pub hf_shape: Vec<usize>,
    slot: TensorSpan,
    placement: Placement,
}

/// Names of non-parameter tensors that checkpoints may carry and loading ignores.
const IGNORED_SUFFIXES: [&str; 5] =
    [".attn.bias", ".attn.masked_bias", ".attention.bias", ".attention.masked_bias", "rotary_emb.inv_freq"];

/// Whether a tensor found in a checkpoint can be ignored for this config.
pub fn is_ignorable(cfg: &ModelConfig, name: &str) -> bool {
    IGNORED_SUFFIXES.iter().any(|s| name.ends_with(s)) || (cfg.tied_embeddings && name == "lm_head.weight")
}

/// Collects specs while walking the layout.
struct Specs<'a> {
    cfg: &'a ModelConfig,
    out: Vec<TensorSpec>,
}

impl Specs<'_> {
    fn push(&mut self, name: String, hf_shape: Vec<usize>, slot: &TensorSpan, placement: Placement) {
        self.out.push(TensorSpec { name, hf_shape, slot: slot.clone(), placement });
    }

    fn same(&mut self, name: String, slot: &TensorSpan) {
        self.push(name, slot.shape.clone(), slot, Placement::Same);
    }

    fn norm(&mut self, prefix: &str, n: &NormSpans) {
        self.same(format!("{prefix}.weight"), &n.weight);
        if let Some(b) = &n.bias {
            self.same(format!("{prefix}.bias"), b);
        }
    }

    fn linear(&mut self, prefix: &str, l: &LinearSpans) {
        self.same(format!("{prefix}.weight"), &l.weight);
        if let Some(b) = &l.bias {
            self.same(format!("{prefix}.bias"), b);
        }
    }

    fn conv1d(&mut self, prefix: &str, l: &LinearSpans) {
        let (out, inp) = l.dims();
        self.push(format!("{prefix}.weight"), vec![inp, out], &l.weight, Placement::Transposed);
        if let Some(b) = &l.bias {
            self.same(format!("{prefix}.bias"), b);
        }
    }

    /// Rows `[start, start+rows)` of a fused linear layer, as a separate HF linear layer.
    fn linear_rows(&mut self, prefix: &str, l: &LinearSpans, start: usize, rows: usize) {
        let inp = l.dims().1;
        self.push(format!("{prefix}.weight"), vec![rows, inp], &l.weight, Placement::Rows { start });
        if let Some(b) = &l.bias {
            self.push(format!("{prefix}.bias"), vec![rows], b, Placement::Rows { start });
        }
    }

    fn neox_qkv(&mut self, prefix: &str, l: &LinearSpans) {
        let placement = Placement::NeoxQkv { heads: self.cfg.n_heads, head_dim: self.cfg.head_dim };
        self.push(format!("{prefix}.weight"), l.weight.shape.clone(), &l.weight, placement);
        if let Some(b) = &l.bias {
            self.push(format!("{prefix}.bias"), b.shape.clone(), b, placement);
        }
    }
}

/// Every HF tensor of `cfg`, in HF naming, with where it lives internally.
pub fn tensor_specs(cfg: &ModelConfig, layout: &Layout) -> Vec<TensorSpec> {
    let mut s = Specs { cfg, out: Vec::new() };
    match cfg.arch {
        Arch::GptNeox => {
            s.same("gpt_neox.embed_in.weight".into(), &layout.wte);
            for (i, b) in layout.blocks.iter().enumerate() {
                let p = format!("gpt_neox.layers.{i}");
                s.norm(&format!("{p}.input_layernorm"), &b.ln1);
                s.neox_qkv(&format!("{p}.attention.query_key_value"), &b.qkv);
                s.linear(&format!("{p}.attention.dense"), &b.attn_out);
                s.norm(&format!("{p}.post_attention_layernorm"), &b.ln2);
                s.linear(&format!("{p}.mlp.dense_h_to_4h"), &b.fc);
                s.linear(&format!("{p}.mlp.dense_4h_to_h"), &b.down);
            }
            s.norm("gpt_neox.final_layer_norm", &layout.ln_f);
            if let Some(h) = &layout.head {
                s.same("embed_out.weight".into(), h);
            }
        }
        Arch::Gpt2 => {
            s.same("transformer.wte.weight".into(), &layout.wte);
            s.same("transformer.wpe.weight".into(), layout.wpe.as_ref().expect("gpt2 has learned positions"));
            for (i, b) in layout.blocks.iter().enumerate() {
                let p = format!("transformer.h.{i}");
                s.norm(&format!("{p}.ln_1"), &b.ln1);
                s.conv1d(&format!("{p}.attn.c_attn"), &b.qkv);
                s.conv1d(&format!("{p}.attn.c_proj"), &b.attn_out);
                s.norm(&format!("{p}.ln_2"), &b.ln2);
                s.conv1d(&format!("{p}.mlp.c_fc"), &b.fc);
                s.conv1d(&format!("{p}.mlp.c_proj"), &b.down);
            }
            s.norm("transformer.ln_f", &layout.ln_f);
            if let Some(h) = &layout.head {
                s.same("lm_head.weight".into(), h);
            }
        }
        Arch::Llama => {
            let (q, kv, ff) = (cfg.n_heads * cfg.head_dim, cfg.n_kv_heads * cfg.head_dim, cfg.d_ff);
            s.same("model.embed_tokens.weight".into(), &layout.wte);
            for (i, b) in layout.blocks.iter().enumerate() {
                let p = format!("model.layers.{i}");
                s.norm(&format!("{p}.input_layernorm"), &b.ln1);
                s.linear_rows(&format!("{p}.self_attn.q_proj"), &b.qkv, 0, q);
                s.linear_rows(&format!("{p}.self_attn.k_proj"), &b.qkv, q, kv);
                s.linear_rows(&format!("{p}.self_attn.v_proj"), &b.qkv, q + kv, kv);
                s.linear(&format!("{p}.self_attn.o_proj"), &b.attn_out);
                s.norm(&format!("{p}.post_attention_layernorm"), &b.ln2);
                s.linear_rows(&format!("{p}.mlp.gate_proj"), &b.fc, 0, ff);
                s.linear_rows(&format!("{p}.mlp.up_proj"), &b.fc, ff, ff);
                s.linear(&format!("{p}.mlp.down_proj"), &b.down);
            }
            s.norm("model.norm", &layout.ln_f);
            if let Some(h) = &layout.head {
                s.same("lm_head.weight".into(), h);
            }
        }
    }
    s.out
}

impl TensorSpec {
    /// Width of one row (the product of all but the first HF dimension).
    fn row_width(&self) -> usize {
        self.hf_shape.iter().skip(1).product()
    }

    /// Internal flat index of HF element `k`.
    fn internal_index(&self, k: usize) -> usize {
        let base = self.slot.offset;
        match self.placement {
            Placement::Same => base + k,
            Placement::Transposed => {
                let (inp, out) = (self.hf_shape[0], self.hf_shape[1]);
                let (i, o) = (k / out, k % out);
                base + o * inp + i
            }
            Placement::Rows { start } => base + start * self.row_width() + k,
            Placement::NeoxQkv { heads, head_dim } => {
                let w = self.row_width();
                let (row, col) = (k / w, k % w);
                let (h, rest) = (row / (3 * head_dim), row % (3 * head_dim));
                let (part, i) = (rest / head_dim, rest % head_dim);
                base + ((part * heads + h) * head_dim + i) * w + col
            }
        }
    }

    /// Copies this tensor's floats from `flat` into HF layout.
    pub fn export(&self, flat: &[f32]) -> HfTensor {
        let len: usize = self.hf_shape.iter().product();
        let data = match self.placement {
            Placement::Same => flat[self.slot.offset..self.slot.offset + len].to_vec(),
            _ => (0..len).map(|k| flat[self.internal_index(k)]).collect(),
        };
        HfTensor { shape: self.hf_shape.clone(), data }
    }

    /// Copies HF-layout floats into `flat`.
    pub fn import(&self, data: &[f32], flat: &mut [f32]) {
        for (k, &x) in data.iter().enumerate() {
            flat[self.internal_index(k)] = x;
        }
    }
}

/// Every parameter (or gradient) of a flat buffer, in HF naming and layout.
pub fn export_all(cfg: &ModelConfig, layout: &Layout, flat: &[f32]) -> TensorMap {
    tensor_specs(cfg, layout).iter().map(|s| (s.name.clone(), s.export(flat))).collect()
}
