//! The `vestige forward` contract, end to end through the binary: logits, loss and the
//! soft-prompt gradient match the transformers reference for a prepended soft prompt.

mod common;

use common::{assert_close, fixtures, read_reference};
use safetensors::{serialize_to_file, Dtype};
use std::collections::HashMap;
use std::process::Command;
use vestige::hf::io::{read_safetensors, write_safetensors, HfTensor, TensorMap};

/// Writes `input_ids` as an i64 safetensors file.
fn write_ids(path: &std::path::Path, ids: &[i64], shape: Vec<usize>) {
    let bytes: Vec<u8> = ids.iter().flat_map(|v| v.to_le_bytes()).collect();
    let view = safetensors::tensor::TensorView::new(Dtype::I64, shape, &bytes).unwrap();
    serialize_to_file(HashMap::from([("input_ids", view)]), None, path).unwrap();
}

#[test]
fn forward_with_soft_prompt_matches_the_transformers_reference() {
    for case in ["gpt_neox_parallel", "gpt2", "llama_gqa"] {
        let dir = fixtures().join("models").join(case);
        let reference = read_reference(&dir.join("reference.safetensors"));
        let tmp = tempfile::tempdir().unwrap();
        let ids = &reference["input_ids"];
        write_ids(
            &tmp.path().join("in.safetensors"),
            &ids.data.iter().map(|&x| x as i64).collect::<Vec<_>>(),
            ids.shape.clone(),
        );
        let sp = &reference["soft_prompt"];
        let mut t = TensorMap::new();
        t.insert(
            "soft_prompt".into(),
            HfTensor { shape: sp.shape.clone(), data: sp.data.iter().map(|&x| x as f32).collect() },
        );
        write_safetensors(&tmp.path().join("sp.safetensors"), &t, None).unwrap();
        let out = tmp.path().join("out.safetensors");
        let status = Command::new(env!("CARGO_BIN_EXE_vestige"))
            .args(["--threads", "1", "forward", "--model"])
            .arg(dir.join("model"))
            .arg("--input")
            .arg(tmp.path().join("in.safetensors"))
            .arg("--out")
            .arg(&out)
            .arg("--soft-prompt")
            .arg(tmp.path().join("sp.safetensors"))
            .output()
            .unwrap();
        assert!(status.status.success(), "{case}: {}", String::from_utf8_lossy(&status.stderr));
        assert!(String::from_utf8_lossy(&status.stdout).contains("loss"), "the command prints the loss");
        let got = read_safetensors(&out).unwrap();
        assert_close(&format!("{case} logits"), &got["logits"].data, &reference["sp_logits"].data, 1e-4);
        assert_close(&format!("{case} loss"), &got["loss"].data, &reference["sp_loss"].data, 1e-4);
        assert_close(&format!("{case} grad"), &got["soft_prompt_grad"].data, &reference["sp_grad"].data, 1e-4);
        assert_eq!(got["logits"].shape, reference["sp_logits"].shape);
    }
}

#[test]
fn forward_rejects_out_of_vocabulary_ids_with_a_clear_error() {
    let tmp = tempfile::tempdir().unwrap();
    write_ids(&tmp.path().join("in.safetensors"), &[1, 2, 999, 3], vec![1, 4]);
    let output = Command::new(env!("CARGO_BIN_EXE_vestige"))
        .args(["forward", "--model"])
        .arg(fixtures().join("models/gpt2/model"))
        .arg("--input")
        .arg(tmp.path().join("in.safetensors"))
        .arg("--out")
        .arg(tmp.path().join("out.safetensors"))
        .output()
        .unwrap();
    assert!(!output.status.success());
    let err = String::from_utf8_lossy(&output.stderr);
    assert!(err.contains("999") && err.contains("vocabulary"), "{err}");
    assert!(!tmp.path().join("out.safetensors").exists(), "no output on failure");
}
