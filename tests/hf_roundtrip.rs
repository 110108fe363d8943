//! Saving and loading models in Hugging Face format: the round trip is bit-identical, the
//! saved file holds exactly the checkpoint's tensors, and bad checkpoints are refused with
//! errors that name the file and tensor.

mod common;

use common::fixtures;
use std::fs;
use std::path::{Path, PathBuf};
use vestige::engine::model::Model;
use vestige::hf::io::{read_safetensors, write_safetensors};

const CASES: [&str; 5] = ["gpt_neox_parallel", "gpt_neox_sequential", "gpt2", "llama_gqa", "llama_tied"];

fn fixture_dir(case: &str) -> PathBuf {
    fixtures().join("models").join(case).join("model")
}

/// Copies a fixture model dir so a test can damage it.
fn copy_fixture(case: &str, dst: &Path) {
    fs::create_dir_all(dst).unwrap();
    for f in ["config.json", "model.safetensors"] {
        fs::copy(fixture_dir(case).join(f), dst.join(f)).unwrap();
    }
}

fn load_err(dir: &Path) -> String {
    match Model::load(dir) {
        Ok(_) => panic!("{} loaded, but it is broken", dir.display()),
        Err(e) => e.to_string(),
    }
}

#[test]
fn save_then_load_is_bit_identical_for_every_architecture() {
    for case in CASES {
        let model = Model::load(&fixture_dir(case)).unwrap().model;
        let tmp = tempfile::tempdir().unwrap();
        model.save(tmp.path(), None).unwrap();
        let again = Model::load(tmp.path()).unwrap().model;
        let same_bits = model.weights.iter().zip(&again.weights).all(|(a, b)| a.to_bits() == b.to_bits());
        assert!(same_bits && model.weights.len() == again.weights.len(), "{case}: weights changed in the round trip");
        assert_eq!(model.cfg.hf, again.cfg.hf, "{case}: config.json changed in the round trip");
    }
}

#[test]
fn saved_checkpoint_holds_exactly_the_original_tensors() {
    for case in CASES {
        let original = read_safetensors(&fixture_dir(case).join("model.safetensors")).unwrap();
        let model = Model::load(&fixture_dir(case)).unwrap().model;
        let tmp = tempfile::tempdir().unwrap();
        model.save(tmp.path(), None).unwrap();
        let saved = read_safetensors(&tmp.path().join("model.safetensors")).unwrap();
        assert_eq!(saved.keys().collect::<Vec<_>>(), original.keys().collect::<Vec<_>>(), "{case}: tensor names");
        for (name, t) in &original {
            assert_eq!(saved[name], *t, "{case}: tensor {name} differs");
        }
    }
}

#[test]
fn truncated_checkpoint_is_refused_naming_the_file() {
    let tmp = tempfile::tempdir().unwrap();
    copy_fixture("gpt2", tmp.path());
    let file = tmp.path().join("model.safetensors");
    let bytes = fs::read(&file).unwrap();
    fs::write(&file, &bytes[..bytes.len() - 100]).unwrap();
    let err = load_err(tmp.path());
    assert!(err.contains("model.safetensors"), "{err}");
}

#[test]
fn missing_tensor_is_refused_naming_the_tensor() {
    let tmp = tempfile::tempdir().unwrap();
    copy_fixture("llama_gqa", tmp.path());
    let file = tmp.path().join("model.safetensors");
    let mut tensors = read_safetensors(&file).unwrap();
    tensors.remove("model.layers.1.self_attn.k_proj.weight").unwrap();
    write_safetensors(&file, &tensors, None).unwrap();
    let err = load_err(tmp.path());
    assert!(err.contains("model.layers.1.self_attn.k_proj.weight") && err.contains("missing"), "{err}");
}

#[test]
fn wrong_shape_is_refused_naming_the_tensor_and_both_shapes() {
    let tmp = tempfile::tempdir().unwrap();
    copy_fixture("gpt_neox_parallel", tmp.path());
    let file = tmp.path().join("model.safetensors");
    let mut tensors = read_safetensors(&file).unwrap();
    let t = tensors.get_mut("gpt_neox.layers.0.mlp.dense_h_to_4h.weight").unwrap();
    t.shape = vec![t.shape[1], t.shape[0]];
    write_safetensors(&file, &tensors, None).unwrap();
    let err = load_err(tmp.path());
    assert!(err.contains("dense_h_to_4h") && err.contains("[32, 80]") && err.contains("[80, 32]"), "{err}");
}

#[test]
fn unexpected_tensor_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    copy_fixture("gpt2", tmp.path());
    let file = tmp.path().join("model.safetensors");
    let mut tensors = read_safetensors(&file).unwrap();
    let extra = tensors["transformer.ln_f.bias"].clone();
    tensors.insert("transformer.h.7.ln_1.bias".into(), extra);
    write_safetensors(&file, &tensors, None).unwrap();
    let err = load_err(tmp.path());
    assert!(err.contains("transformer.h.7.ln_1.bias"), "{err}");
}

#[test]
fn unsupported_model_type_is_refused_listing_the_supported_ones() {
    let tmp = tempfile::tempdir().unwrap();
    copy_fixture("gpt2", tmp.path());
    let cfg = fs::read_to_string(tmp.path().join("config.json")).unwrap().replace("\"gpt2\"", "\"mamba\"");
    fs::write(tmp.path().join("config.json"), cfg).unwrap();
    let err = load_err(tmp.path());
    assert!(err.contains("config.json") && err.contains("mamba") && err.contains("gpt_neox"), "{err}");
}

#[test]
fn unsupported_rope_scaling_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    copy_fixture("llama_gqa", tmp.path());
    let path = tmp.path().join("config.json");
    let mut cfg: serde_json::Value = serde_json::from_str(&fs::read_to_string(&path).unwrap()).unwrap();
    cfg["rope_scaling"] = serde_json::json!({"rope_type": "yarn", "factor": 4.0});
    fs::write(&path, cfg.to_string()).unwrap();
    let err = load_err(tmp.path());
    assert!(err.contains("rope_scaling") && err.contains("yarn"), "{err}");
}
