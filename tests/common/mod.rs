//! Helpers shared by the integration tests: reading reference fixtures of any dtype,
//! comparing tensors at a tolerance relative to the reference's scale, and a tiny decay
//! experiment for the scheduler's tests.
#![allow(dead_code)]

use safetensors::{Dtype, SafeTensors};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// A reference tensor as f64 values (integers included) with its shape.
pub struct RefTensor {
    pub shape: Vec<usize>,
    pub data: Vec<f64>,
}

/// Every tensor in a safetensors fixture, converted to f64.
pub fn read_reference(path: &Path) -> BTreeMap<String, RefTensor> {
    let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let st = SafeTensors::deserialize(&bytes).unwrap();
    st.tensors()
        .into_iter()
        .map(|(name, view)| {
            let raw = view.data();
            let data: Vec<f64> = match view.dtype() {
                Dtype::F32 => raw.chunks_exact(4).map(|b| f32::from_le_bytes(b.try_into().unwrap()) as f64).collect(),
                Dtype::F64 => raw.chunks_exact(8).map(|b| f64::from_le_bytes(b.try_into().unwrap())).collect(),
                Dtype::I64 => raw.chunks_exact(8).map(|b| i64::from_le_bytes(b.try_into().unwrap()) as f64).collect(),
                other => panic!("unsupported fixture dtype {other:?}"),
            };
            (name, RefTensor { shape: view.shape().to_vec(), data })
        })
        .collect()
}

/// The fixture directory of the repository.
pub fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

/// `max |a − b| / max(max |b|, floor)`.
pub fn rel_err(actual: &[f32], reference: &[f64], floor: f64) -> f64 {
    assert_eq!(actual.len(), reference.len(), "length mismatch");
    let scale = reference.iter().fold(floor, |m, v| m.max(v.abs()));
    actual.iter().zip(reference).map(|(a, b)| (*a as f64 - b).abs()).fold(0.0, f64::max) / scale
}

/// Asserts `rel_err ≤ tol`, naming the tensor.
#[track_caller]
pub fn assert_close(name: &str, actual: &[f32], reference: &[f64], tol: f64) {
    let e = rel_err(actual, reference, 1e-12);
    assert!(e <= tol, "{name}: relative max error {e:.3e} exceeds {tol:.0e}");
}

/// A tiny decay experiment named `name` (seeds `seeds`, e.g. `[0, 1]`; `steps` steps in its
/// first phase; a checkpoint every 100 steps), written to `dir/<name>.toml` and recording
/// under `dir`; returns its path.
pub fn tiny_decay_experiment(dir: &Path, name: &str, seeds: &str, steps: u64) -> PathBuf {
    let text = format!(
        r#"name = "{name}"
template = "decay"
threads = 2
out_dir = "{out}"

[model]
scale = "100k"
max_positions = 16

[[tasks]]
name = "copy"
kind = "copy"
length = 4
vocab = 12

[[tasks]]
name = "reverse"
kind = "reverse"
length = 4
vocab = 12

[checkpoint]
every = 100

[decay]
a = "copy"
b = "reverse"
together_steps = {steps}
after_steps = 20
after_evals = 4
eval_samples = 8
batch_size = 8

[sweep]
seed = {seeds}
"#,
        out = dir.display()
    );
    std::fs::create_dir_all(dir).unwrap();
    let path = dir.join(format!("{name}.toml"));
    std::fs::write(&path, text).unwrap();
    path
}

/// A finished command's standard output and error, as text.
pub fn output_text(out: &std::process::Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr))
}
