//! Helpers shared by the integration tests: reading reference fixtures of any dtype and
//! comparing tensors at a tolerance relative to the reference's scale.
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
