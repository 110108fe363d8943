//! One model configuration type for every supported architecture, read straight from a
//! Hugging Face `config.json` (`gpt_neox`, `gpt2`, `llama`) and written back unchanged.

use serde_json::{Map, Value};
use std::path::Path;

/// The architecture families the engine implements.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Arch {
    /// GPT-NeoX / Pythia: LayerNorm, (optionally) parallel residual, partial rotary.
    GptNeox,
    /// GPT-2: learned positions, tanh-GELU, tied embeddings, Conv1D layout on disk.
    Gpt2,
    /// Llama: RMSNorm, SwiGLU, full rotary, grouped-query attention.
    Llama,
}

/// The normalisation layer kind.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Norm {
    /// LayerNorm with weight and bias.
    LayerNorm,
    /// RMSNorm with weight only.
    RmsNorm,
}

/// The MLP nonlinearity.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Activation {
    /// GELU with the exact erf form (`gelu` in HF).
    GeluExact,
    /// GELU with the tanh approximation (`gelu_new`, `gelu_pytorch_tanh`).
    GeluTanh,
    /// SwiGLU: `silu(gate) * up` over a fused `[gate; up]` projection.
    SwiGlu,
}

/// Every architectural fact the engine needs, plus the original `config.json`.
#[derive(Clone, Debug)]
pub struct ModelConfig {
    pub arch: Arch,
    pub vocab_size: usize,
    pub d_model: usize,
    pub n_layers: usize,
    pub n_heads: usize,
    pub n_kv_heads: usize,
    pub head_dim: usize,
    pub d_ff: usize,
    pub max_positions: usize,
    pub norm: Norm,
    pub norm_eps: f32,
    pub activation: Activation,
    /// Number of leading dimensions of each head that rotary embeddings rotate (0: none).
    pub rotary_dims: usize,
    pub rope_base: f32,
    pub parallel_residual: bool,
    pub attn_bias: bool,
    pub mlp_bias: bool,
    pub tied_embeddings: bool,
    pub learned_positions: bool,
    /// The `config.json` this was read from (or generated), saved back verbatim.
    pub hf: Value,
}

/// A `config.json` that the engine cannot use, with the file and key at fault.
#[derive(Debug, thiserror::Error)]
#[error("{file}: {message}")]
pub struct ModelConfigError {
    pub file: String,
    pub message: String,
}

/// Typed look-ups into one JSON object, with errors naming the file and key.
struct Fields<'a> {
    map: &'a Map<String, Value>,
    file: &'a str,
}

impl Fields<'_> {
    fn err(&self, message: String) -> ModelConfigError {
        ModelConfigError { file: self.file.to_string(), message }
    }

    fn present(&self, key: &str) -> Option<&Value> {
        self.map.get(key).filter(|v| !v.is_null())
    }

    fn usize_or(&self, key: &str, default: Option<usize>) -> Result<usize, ModelConfigError> {
        match self.present(key) {
            Some(v) => v
                .as_u64()
                .map(|x| x as usize)
                .ok_or_else(|| self.err(format!("key `{key}` must be a non-negative integer, found {v}"))),
            None => default.ok_or_else(|| self.err(format!("missing required key `{key}`"))),
        }
    }

    fn f64_or(&self, key: &str, default: f64) -> Result<f64, ModelConfigError> {
        match self.present(key) {
            Some(v) => v.as_f64().ok_or_else(|| self.err(format!("key `{key}` must be a number, found {v}"))),
            None => Ok(default),
        }
    }

    fn bool_or(&self, key: &str, default: bool) -> Result<bool, ModelConfigError> {
        match self.present(key) {
            Some(v) => v.as_bool().ok_or_else(|| self.err(format!("key `{key}` must be true or false, found {v}"))),
            None => Ok(default),
        }
    }

    fn str_or<'v>(&'v self, key: &str, default: &'v str) -> Result<&'v str, ModelConfigError> {
        match self.present(key) {
            Some(v) => v.as_str().ok_or_else(|| self.err(format!("key `{key}` must be a string, found {v}"))),
            None => Ok(default),
        }
    }

    /// A rope field that newer `transformers` nests under `rope_parameters`.
    fn rope_f64(&self, key: &str, default: f64) -> Result<f64, ModelConfigError> {
        if let Some(Value::Object(rope)) = self.present("rope_parameters") {
            let nested = Fields { map: rope, file: self.file };
            if nested.present(key).is_some() {
                return nested.f64_or(key, default);
            }
        }
        self.f64_or(key, default)
    }

    /// Rejects rope scaling variants the engine does not implement.
    fn require_default_rope(&self) -> Result<(), ModelConfigError> {
        for key in ["rope_scaling", "rope_parameters"] {
            if let Some(Value::Object(rope)) = self.present(key) {
                let kind = rope.get("rope_type").or_else(|| rope.get("type")).and_then(Value::as_str);
                if !matches!(kind, None | Some("default")) {
                    return Err(
                        self.err(format!("`{key}` type {kind:?} is not supported; only default rotary embeddings are"))
                    );
                }
            }
        }
        Ok(())
    }
}

impl ModelConfig {
    /// Reads and validates a Hugging Face `config.json`.
    pub fn from_file(path: &Path) -> Result<Self, ModelConfigError> {
        let file = path.display().to_string();
        let text = std::fs::read_to_string(path)
            .map_err(|e| ModelConfigError { file: file.clone(), message: format!("cannot read: {e}") })?;
        let value: Value = serde_json::from_str(&text).map_err(|e| ModelConfigError {
            file: file.clone(),
            message: format!("invalid JSON at line {}: {e}", e.line()),
        })?;
        Self::from_json(value, &file)
    }

    /// Validates a parsed `config.json`; `file` names it in errors.
    pub fn from_json(hf: Value, file: &str) -> Result<Self, ModelConfigError> {
        let map = hf.as_object().ok_or_else(|| ModelConfigError {
            file: file.to_string(),
            message: "top level must be a JSON object".into(),
        })?;
        let f = Fields { map, file };
        let model_type = f.str_or("model_type", "")?;
        let cfg = match model_type {
            "gpt_neox" => Self::gpt_neox(&f)?,
            "gpt2" => Self::gpt2(&f)?,
            "llama" => Self::llama(&f)?,
            other => {
                return Err(f.err(format!(
                    "unsupported model_type {other:?}; supported: \"gpt_neox\" (Pythia), \"gpt2\", \"llama\""
                )))
            }
        };
        cfg.check(file)?;
        Ok(ModelConfig { hf, ..cfg })
    }

    fn gpt_neox(f: &Fields) -> Result<Self, ModelConfigError> {
        let d_model = f.usize_or("hidden_size", None)?;
        let n_heads = f.usize_or("num_attention_heads", None)?;
        let head_dim = d_model / n_heads.max(1);
        let pct = f.rope_f64("partial_rotary_factor", f.f64_or("rotary_pct", 0.25)?)?;
        Ok(ModelConfig {
            arch: Arch::GptNeox,
            vocab_size: f.usize_or("vocab_size", None)?,
            d_model,
            n_layers: f.usize_or("num_hidden_layers", None)?,
            n_heads,
            n_kv_heads: n_heads,
            head_dim,
            d_ff: f.usize_or("intermediate_size", Some(4 * d_model))?,
            max_positions: f.usize_or("max_position_embeddings", Some(2048))?,
            norm: Norm::LayerNorm,
            norm_eps: f.f64_or("layer_norm_eps", 1e-5)? as f32,
            activation: gelu_kind(f, "hidden_act", "gelu")?,
            rotary_dims: (head_dim as f64 * pct) as usize,
            rope_base: f.rope_f64("rope_theta", f.f64_or("rotary_emb_base", 10000.0)?)? as f32,
            parallel_residual: f.bool_or("use_parallel_residual", true)?,
            attn_bias: f.bool_or("attention_bias", true)?,
            mlp_bias: true,
            tied_embeddings: f.bool_or("tie_word_embeddings", false)?,
            learned_positions: false,
            hf: Value::Null,
        })
    }

    fn gpt2(f: &Fields) -> Result<Self, ModelConfigError> {
        let d_model = f.usize_or("n_embd", None)?;
        let n_heads = f.usize_or("n_head", None)?;
        for key in ["scale_attn_by_inverse_layer_idx"] {
            if f.bool_or(key, false)? {
                return Err(f.err(format!("`{key}: true` is not supported")));
            }
        }
        if !f.bool_or("scale_attn_weights", true)? {
            return Err(f.err("`scale_attn_weights: false` is not supported".into()));
        }
        Ok(ModelConfig {
            arch: Arch::Gpt2,
            vocab_size: f.usize_or("vocab_size", None)?,
            d_model,
            n_layers: f.usize_or("n_layer", None)?,
            n_heads,
            n_kv_heads: n_heads,
            head_dim: d_model / n_heads.max(1),
            d_ff: f.usize_or("n_inner", Some(4 * d_model))?,
            max_positions: f.usize_or("n_positions", Some(1024))?,
            norm: Norm::LayerNorm,
            norm_eps: f.f64_or("layer_norm_epsilon", 1e-5)? as f32,
            activation: gelu_kind(f, "activation_function", "gelu_new")?,
            rotary_dims: 0,
            rope_base: 0.0,
            parallel_residual: false,
            attn_bias: true,
            mlp_bias: true,
            tied_embeddings: f.bool_or("tie_word_embeddings", true)?,
            learned_positions: true,
            hf: Value::Null,
        })
    }

    fn llama(f: &Fields) -> Result<Self, ModelConfigError> {
        f.require_default_rope()?;
        let d_model = f.usize_or("hidden_size", None)?;
        let n_heads = f.usize_or("num_attention_heads", None)?;
        let head_dim = f.usize_or("head_dim", Some(d_model / n_heads.max(1)))?;
        let act = f.str_or("hidden_act", "silu")?;
        if act != "silu" {
            return Err(f.err(format!("`hidden_act` {act:?} is not supported for llama; expected \"silu\"")));
        }
        Ok(ModelConfig {
            arch: Arch::Llama,
            vocab_size: f.usize_or("vocab_size", None)?,
            d_model,
            n_layers: f.usize_or("num_hidden_layers", None)?,
            n_heads,
            n_kv_heads: f.usize_or("num_key_value_heads", Some(n_heads))?,
            head_dim,
            d_ff: f.usize_or("intermediate_size", None)?,
            max_positions: f.usize_or("max_position_embeddings", Some(2048))?,
            norm: Norm::RmsNorm,
            norm_eps: f.f64_or("rms_norm_eps", 1e-6)? as f32,
            activation: Activation::SwiGlu,
            rotary_dims: head_dim,
            rope_base: f.rope_f64("rope_theta", 10000.0)? as f32,
            parallel_residual: false,
            attn_bias: f.bool_or("attention_bias", false)?,
            mlp_bias: f.bool_or("mlp_bias", false)?,
            tied_embeddings: f.bool_or("tie_word_embeddings", false)?,
            learned_positions: false,
            hf: Value::Null,
        })
    }

    /// Range checks that every architecture shares; `file` names the configuration in errors.
    pub fn check(&self, file: &str) -> Result<(), ModelConfigError> {
        let err = |message: String| ModelConfigError { file: file.to_string(), message };
        let positive = [
            ("vocab size", self.vocab_size),
            ("hidden size", self.d_model),
            ("layer count", self.n_layers),
            ("head count", self.n_heads),
            ("key/value head count", self.n_kv_heads),
            ("intermediate size", self.d_ff),
        ];
        if let Some((what, _)) = positive.iter().find(|(_, v)| *v == 0) {
            return Err(err(format!("{what} must be positive")));
        }
        if self.arch != Arch::Llama && !self.d_model.is_multiple_of(self.n_heads) {
            return Err(err(format!("hidden size {} is not divisible by {} heads", self.d_model, self.n_heads)));
        }
        if !self.n_heads.is_multiple_of(self.n_kv_heads) {
            return Err(err(format!(
                "{} heads are not divisible into {} key/value heads",
                self.n_heads, self.n_kv_heads
            )));
        }
        if !self.rotary_dims.is_multiple_of(2) || self.rotary_dims > self.head_dim {
            return Err(err(format!(
                "rotary dims {} must be even and at most head dim {}",
                self.rotary_dims, self.head_dim
            )));
        }
        Ok(())
    }

    /// Width of the fused query/key/value projection output.
    pub fn qkv_dim(&self) -> usize {
        (self.n_heads + 2 * self.n_kv_heads) * self.head_dim
    }

    /// Width of the attention output before the output projection.
    pub fn attn_dim(&self) -> usize {
        self.n_heads * self.head_dim
    }

    /// Rows of the fused up projection: `[gate; up]` for SwiGLU, `up` otherwise.
    pub fn fc_dim(&self) -> usize {
        if self.activation == Activation::SwiGlu {
            2 * self.d_ff
        } else {
            self.d_ff
        }
    }
}

/// Maps an HF activation name to a GELU kind.
fn gelu_kind(f: &Fields, key: &str, default: &str) -> Result<Activation, ModelConfigError> {
    match f.str_or(key, default)? {
        "gelu" => Ok(Activation::GeluExact),
        "gelu_new" | "gelu_pytorch_tanh" | "gelu_fast" => Ok(Activation::GeluTanh),
        other => Err(f.err(format!("`{key}` {other:?} is not supported; expected \"gelu\" or \"gelu_new\""))),
    }
}
