//! Integration tests for `vestige::hf::io`: model-directory resolution (plain, sharded and
//! Hugging Face cache layouts), dtype conversion, corruption detection and atomic writes.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};

use safetensors::tensor::TensorView;
use safetensors::Dtype;
use serde_json::json;
use vestige::fs::write_atomic;
use vestige::hf::io::*;

fn tensor(shape: &[usize], data: &[f32]) -> HfTensor {
    HfTensor { shape: shape.to_vec(), data: data.to_vec() }
}

fn f32_bytes(values: &[f32]) -> Vec<u8> {
    values.iter().flat_map(|v| v.to_le_bytes()).collect()
}

/// Writes a safetensors file with the safetensors crate directly (any dtype).
fn write_raw(path: &Path, tensors: &[(&str, Dtype, Vec<usize>, Vec<u8>)]) {
    let views: Vec<(&str, TensorView<'_>)> = tensors
        .iter()
        .map(|(name, dtype, shape, bytes)| (*name, TensorView::new(*dtype, shape.clone(), bytes).unwrap()))
        .collect();
    safetensors::serialize_to_file(views, None, path).unwrap();
}

/// Writes a minimal `config.json` into `dir`.
fn write_config(dir: &Path) {
    fs::write(dir.join("config.json"), r#"{"model_type": "test", "hidden_size": 4}"#).unwrap();
}

/// Writes a two-shard checkpoint: `a` and `b` in shard 1, `c` in shard 2.
fn write_sharded(dir: &Path) -> (PathBuf, PathBuf) {
    write_config(dir);
    let shard1 = dir.join("model-00001-of-00002.safetensors");
    let shard2 = dir.join("model-00002-of-00002.safetensors");
    write_raw(
        &shard1,
        &[("a", Dtype::F32, vec![2], f32_bytes(&[1.0, 2.0])), ("b", Dtype::F32, vec![1], f32_bytes(&[3.0]))],
    );
    write_raw(&shard2, &[("c", Dtype::F32, vec![1, 2], f32_bytes(&[4.0, 5.0]))]);
    let index = json!({
        "metadata": {"total_size": 20},
        "weight_map": {
            "a": "model-00001-of-00002.safetensors",
            "b": "model-00001-of-00002.safetensors",
            "c": "model-00002-of-00002.safetensors"
        }
    });
    fs::write(dir.join("model.safetensors.index.json"), index.to_string()).unwrap();
    (shard1, shard2)
}

fn assert_mentions(err: &HfError, what: &Path) {
    let msg = err.to_string();
    assert!(msg.contains(&what.display().to_string()), "error {msg:?} should name {}", what.display());
}

#[test]
fn write_then_read_round_trip_is_bit_identical_including_metadata() {
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("model.safetensors");
    let special = [
        0.0,
        -0.0,
        1.5,
        f32::MIN_POSITIVE / 2.0,
        f32::INFINITY,
        f32::NEG_INFINITY,
        f32::from_bits(0x7fc0_0001),
        f32::MAX,
    ];
    let mut tensors = TensorMap::new();
    tensors.insert("layer.weight".into(), tensor(&[2, 4], &special));
    tensors.insert("scalar".into(), tensor(&[], &[7.25]));
    tensors.insert("empty".into(), tensor(&[0, 3], &[]));
    let metadata = BTreeMap::from([("step".to_string(), "42".to_string())]);

    write_safetensors(&path, &tensors, Some(&metadata)).unwrap();
    let back = read_safetensors(&path).unwrap();

    assert_eq!(back.keys().collect::<Vec<_>>(), tensors.keys().collect::<Vec<_>>());
    for (name, t) in &tensors {
        assert_eq!(back[name].shape, t.shape, "{name}");
        let bits = |d: &[f32]| d.iter().map(|v| v.to_bits()).collect::<Vec<_>>();
        assert_eq!(bits(&back[name].data), bits(&t.data), "{name}");
    }
    let mut expected_meta = metadata.clone();
    expected_meta.insert("format".into(), "pt".into());
    assert_eq!(read_safetensors_metadata(&path).unwrap(), expected_meta);

    // Writing what was read reproduces the file byte for byte (with at most one metadata
    // entry: the safetensors crate orders `__metadata__` keys by a randomly seeded hash).
    let (first, again) = (tmp.path().join("first.safetensors"), tmp.path().join("again.safetensors"));
    write_safetensors(&first, &tensors, None).unwrap();
    write_safetensors(&again, &read_safetensors(&first).unwrap(), None).unwrap();
    assert_eq!(fs::read(&first).unwrap(), fs::read(&again).unwrap());
}

#[test]
fn write_adds_format_pt_by_default_but_keeps_a_callers_format() {
    let tmp = tempfile::tempdir().unwrap();
    let tensors = TensorMap::from([("w".to_string(), tensor(&[1], &[1.0]))]);
    let default = tmp.path().join("default.safetensors");
    write_safetensors(&default, &tensors, None).unwrap();
    assert_eq!(read_safetensors_metadata(&default).unwrap()["format"], "pt");

    let custom = tmp.path().join("custom.safetensors");
    let meta = BTreeMap::from([("format".to_string(), "np".to_string())]);
    write_safetensors(&custom, &tensors, Some(&meta)).unwrap();
    assert_eq!(read_safetensors_metadata(&custom).unwrap(), meta);
}

#[test]
fn write_rejects_data_length_that_does_not_match_shape() {
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("bad.safetensors");
    let tensors = TensorMap::from([("w".to_string(), tensor(&[2, 2], &[1.0, 2.0, 3.0]))]);
    let err = write_safetensors(&path, &tensors, None).unwrap_err();
    assert!(matches!(err, HfError::ShapeMismatch { ref tensor, expected: 4, actual: 3, .. } if tensor == "w"), "{err}");
    assert!(!path.exists());
}

#[test]
fn f16_bf16_and_f64_tensors_load_as_the_right_f32_values() {
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("mixed.safetensors");
    let values = [1.0f32, -2.5, 0.1, 65504.0, 1e-3];
    let f16: Vec<u8> = values.iter().flat_map(|&v| half::f16::from_f32(v).to_le_bytes()).collect();
    let bf16: Vec<u8> = values.iter().flat_map(|&v| half::bf16::from_f32(v).to_le_bytes()).collect();
    let f64: Vec<u8> = [0.1f64, -1e10, 3.0].iter().flat_map(|v| v.to_le_bytes()).collect();
    write_raw(
        &path,
        &[("h", Dtype::F16, vec![5], f16), ("b", Dtype::BF16, vec![5], bf16), ("d", Dtype::F64, vec![3, 1], f64)],
    );

    let t = read_safetensors(&path).unwrap();
    let want_f16: Vec<f32> = values.iter().map(|&v| half::f16::from_f32(v).to_f32()).collect();
    let want_bf16: Vec<f32> = values.iter().map(|&v| half::bf16::from_f32(v).to_f32()).collect();
    assert_eq!(t["h"], tensor(&[5], &want_f16));
    assert_eq!(t["b"], tensor(&[5], &want_bf16));
    assert_eq!(t["d"], tensor(&[3, 1], &[0.1, -1e10, 3.0]));
    assert_eq!(t["h"].data[1], -2.5);
    assert_eq!(t["b"].data[0], 1.0);
}

#[test]
fn integer_and_bool_buffers_are_skipped() {
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("buffers.safetensors");
    write_raw(
        &path,
        &[
            ("w", Dtype::F32, vec![1], f32_bytes(&[1.0])),
            ("position_ids", Dtype::I64, vec![2], [0i64, 1].iter().flat_map(|v| v.to_le_bytes()).collect()),
            ("mask", Dtype::BOOL, vec![2], vec![1, 0]),
        ],
    );
    let t = read_safetensors(&path).unwrap();
    assert_eq!(t.keys().collect::<Vec<_>>(), ["w"]);
}

#[test]
fn unsupported_float_dtype_is_an_error_naming_file_and_tensor() {
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("fp8.safetensors");
    write_raw(&path, &[("q", Dtype::F8_E4M3, vec![2], vec![0x38, 0x40])]);
    let err = read_safetensors(&path).unwrap_err();
    assert!(matches!(err, HfError::UnsupportedDtype { ref tensor, .. } if tensor == "q"), "{err}");
    assert_mentions(&err, &path);
    assert!(err.to_string().contains("F8_E4M3"), "{err}");
}

#[test]
fn single_file_model_dir_resolves_config_weights_and_tokenizer() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    write_config(dir);
    write_raw(&dir.join("model.safetensors"), &[("w", Dtype::F32, vec![1], f32_bytes(&[2.0]))]);
    fs::write(dir.join("tokenizer.json"), "{}").unwrap();

    let md = resolve_model_dir(dir).unwrap();
    assert_eq!(md.root, dir);
    assert_eq!(md.config, dir.join("config.json"));
    assert_eq!(md.weights, [dir.join("model.safetensors")]);
    assert_eq!(md.tokenizer, Some(dir.join("tokenizer.json")));
    assert_eq!(read_config(&md).unwrap()["hidden_size"], 4);
    assert_eq!(load_tensors(&md).unwrap()["w"], tensor(&[1], &[2.0]));
}

#[test]
fn sharded_checkpoint_loads_the_union_of_its_shards() {
    let tmp = tempfile::tempdir().unwrap();
    let (shard1, shard2) = write_sharded(tmp.path());
    let md = resolve_model_dir(tmp.path()).unwrap();
    assert_eq!(md.weights, [shard1, shard2]);
    assert_eq!(md.tokenizer, None);
    let t = load_tensors(&md).unwrap();
    assert_eq!(t.len(), 3);
    assert_eq!(t["a"], tensor(&[2], &[1.0, 2.0]));
    assert_eq!(t["b"], tensor(&[1], &[3.0]));
    assert_eq!(t["c"], tensor(&[1, 2], &[4.0, 5.0]));
}

#[test]
fn sharded_checkpoint_with_a_shard_missing_from_disk_errors_naming_it() {
    let tmp = tempfile::tempdir().unwrap();
    let (_, shard2) = write_sharded(tmp.path());
    fs::remove_file(&shard2).unwrap();
    let err = resolve_model_dir(tmp.path()).unwrap_err();
    assert!(matches!(err, HfError::MissingShard { .. }), "{err}");
    assert_mentions(&err, &shard2);
}

#[test]
fn duplicate_tensor_names_across_shards_are_an_error() {
    let tmp = tempfile::tempdir().unwrap();
    let (shard1, shard2) = write_sharded(tmp.path());
    write_raw(
        &shard2,
        &[("a", Dtype::F32, vec![1], f32_bytes(&[9.0])), ("c", Dtype::F32, vec![1, 2], f32_bytes(&[4.0, 5.0]))],
    );
    let md = resolve_model_dir(tmp.path()).unwrap();
    let err = load_tensors(&md).unwrap_err();
    assert!(matches!(err, HfError::DuplicateTensor { ref tensor, .. } if tensor == "a"), "{err}");
    assert_mentions(&err, &shard1);
    assert_mentions(&err, &shard2);
}

#[test]
fn tensor_listed_in_weight_map_but_absent_from_its_shard_is_an_error() {
    let tmp = tempfile::tempdir().unwrap();
    let (_, shard2) = write_sharded(tmp.path());
    write_raw(&shard2, &[("other", Dtype::F32, vec![1], f32_bytes(&[0.0]))]);
    let md = resolve_model_dir(tmp.path()).unwrap();
    let err = load_tensors(&md).unwrap_err();
    assert!(matches!(err, HfError::MissingTensor { ref tensor, .. } if tensor == "c"), "{err}");
    assert_mentions(&err, &shard2);
}

#[test]
fn shard_index_without_weight_map_is_an_error_naming_it() {
    let tmp = tempfile::tempdir().unwrap();
    write_sharded(tmp.path());
    let index = tmp.path().join("model.safetensors.index.json");
    fs::write(&index, r#"{"metadata": {}}"#).unwrap();
    let err = resolve_model_dir(tmp.path()).unwrap_err();
    assert!(matches!(err, HfError::Invalid { .. }), "{err}");
    assert_mentions(&err, &index);
}

/// Builds `models--org--name/{refs/main, snapshots/abc/, blobs/}` with the snapshot's
/// files symlinked into `blobs/`, as `huggingface_hub` does. Returns the repo folder.
#[cfg(unix)]
fn write_hf_cache(cache: &Path, with_refs_main: bool) -> PathBuf {
    use std::os::unix::fs::symlink;
    let repo = cache.join("models--org--name");
    let blobs = repo.join("blobs");
    let snapshot = repo.join("snapshots").join("abc");
    fs::create_dir_all(&blobs).unwrap();
    fs::create_dir_all(&snapshot).unwrap();
    if with_refs_main {
        fs::create_dir_all(repo.join("refs")).unwrap();
        fs::write(repo.join("refs").join("main"), "abc\n").unwrap();
    }
    fs::write(blobs.join("1111"), r#"{"hidden_size": 8}"#).unwrap();
    write_raw(
        &blobs.join("2222"),
        &[(
            "w",
            Dtype::BF16,
            vec![2],
            [half::bf16::from_f32(0.5), half::bf16::from_f32(-4.0)].iter().flat_map(|v| v.to_le_bytes()).collect(),
        )],
    );
    fs::write(blobs.join("3333"), "{}").unwrap();
    symlink("../../blobs/1111", snapshot.join("config.json")).unwrap();
    symlink("../../blobs/2222", snapshot.join("model.safetensors")).unwrap();
    symlink("../../blobs/3333", snapshot.join("tokenizer.json")).unwrap();
    repo
}

#[cfg(unix)]
#[test]
fn hf_cache_layout_resolves_via_models_folder_and_via_snapshot_folder() {
    let tmp = tempfile::tempdir().unwrap();
    let repo = write_hf_cache(tmp.path(), true);
    let snapshot = repo.join("snapshots").join("abc");
    for given in [&repo, &snapshot] {
        let md = resolve_model_dir(given).unwrap();
        assert_eq!(md.root, snapshot, "resolving {}", given.display());
        assert_eq!(md.tokenizer, Some(snapshot.join("tokenizer.json")));
        assert_eq!(read_config(&md).unwrap()["hidden_size"], 8);
        assert_eq!(load_tensors(&md).unwrap()["w"], tensor(&[2], &[0.5, -4.0]));
    }
}

#[cfg(unix)]
#[test]
fn hf_cache_without_refs_main_uses_its_only_snapshot() {
    let tmp = tempfile::tempdir().unwrap();
    let repo = write_hf_cache(tmp.path(), false);
    assert_eq!(resolve_model_dir(&repo).unwrap().root, repo.join("snapshots").join("abc"));

    // With two snapshots and no refs/main the choice is ambiguous.
    fs::create_dir_all(repo.join("snapshots").join("def")).unwrap();
    let err = resolve_model_dir(&repo).unwrap_err();
    assert!(matches!(err, HfError::NoSnapshot { .. }), "{err}");
    assert_mentions(&err, &repo);
}

#[cfg(unix)]
#[test]
fn hf_cache_refs_main_naming_a_missing_snapshot_is_an_error() {
    let tmp = tempfile::tempdir().unwrap();
    let repo = write_hf_cache(tmp.path(), true);
    fs::write(repo.join("refs").join("main"), "fff").unwrap();
    let err = resolve_model_dir(&repo).unwrap_err();
    assert!(matches!(err, HfError::NoSnapshot { .. }), "{err}");
    assert!(err.to_string().contains("fff"), "{err}");
}

#[cfg(unix)]
#[test]
fn hf_cache_snapshot_link_to_a_missing_blob_is_an_error_naming_the_link() {
    let tmp = tempfile::tempdir().unwrap();
    let repo = write_hf_cache(tmp.path(), true);
    fs::remove_file(repo.join("blobs").join("2222")).unwrap();
    let err = resolve_model_dir(&repo).unwrap_err();
    assert!(matches!(err, HfError::BrokenLink { .. }), "{err}");
    assert_mentions(&err, &repo.join("snapshots").join("abc").join("model.safetensors"));
}

/// Writes a valid one-tensor file and returns its bytes.
fn valid_file_bytes(dir: &Path) -> Vec<u8> {
    let path = dir.join("valid.safetensors");
    write_raw(&path, &[("w", Dtype::F32, vec![4], f32_bytes(&[1.0, 2.0, 3.0, 4.0]))]);
    fs::read(path).unwrap()
}

/// Reading `bytes` both directly and as a model directory fails with a corruption error
/// naming the file.
fn assert_corrupt(bytes: &[u8], expect_in_reason: &str) {
    let tmp = tempfile::tempdir().unwrap();
    write_config(tmp.path());
    let path = tmp.path().join("model.safetensors");
    fs::write(&path, bytes).unwrap();
    let direct = read_safetensors(&path).unwrap_err();
    let via_dir = load_tensors(&resolve_model_dir(tmp.path()).unwrap()).unwrap_err();
    for err in [direct, via_dir] {
        assert!(matches!(err, HfError::Corrupt { .. }), "{err}");
        assert_mentions(&err, &path);
        assert!(err.to_string().contains(expect_in_reason), "{err:?} should contain {expect_in_reason:?}");
    }
}

#[test]
fn file_truncated_by_a_few_bytes_is_an_error_naming_the_file() {
    let tmp = tempfile::tempdir().unwrap();
    let bytes = valid_file_bytes(tmp.path());
    let len = bytes.len();
    assert_corrupt(&bytes[..len - 3], &format!("describes a {len}-byte file but the file is {} bytes", len - 3));
}

#[test]
fn file_with_trailing_bytes_is_an_error_naming_the_file() {
    let tmp = tempfile::tempdir().unwrap();
    let mut bytes = valid_file_bytes(tmp.path());
    bytes.extend_from_slice(&[0; 4]);
    assert_corrupt(&bytes, "but the file is");
}

#[test]
fn file_with_a_garbage_header_is_an_error_naming_the_file() {
    let garbage = b"this is not json";
    let mut bytes = (garbage.len() as u64).to_le_bytes().to_vec();
    bytes.extend_from_slice(garbage);
    assert_corrupt(&bytes, "not valid safetensors JSON");
}

#[test]
fn header_length_bigger_than_the_file_is_an_error_naming_the_file() {
    let tmp = tempfile::tempdir().unwrap();
    let mut bytes = valid_file_bytes(tmp.path());
    bytes[..8].copy_from_slice(&10_000u64.to_le_bytes());
    assert_corrupt(&bytes, &format!("says 10000 bytes but the whole file is {} bytes", bytes.len()));
}

#[test]
fn file_shorter_than_the_length_prefix_is_an_error_naming_the_file() {
    assert_corrupt(&[1, 2, 3], "shorter than the 8-byte");
    assert_corrupt(&[], "shorter than the 8-byte");
}

#[test]
fn out_of_range_offsets_are_an_error_naming_the_file() {
    let header = br#"{"w":{"dtype":"F32","shape":[2],"data_offsets":[0,64]}}"#;
    let mut bytes = (header.len() as u64).to_le_bytes().to_vec();
    bytes.extend_from_slice(header);
    bytes.extend_from_slice(&f32_bytes(&[1.0, 2.0]));
    assert_corrupt(&bytes, "safetensors file");
}

#[test]
fn missing_config_is_an_error_naming_the_directory() {
    let tmp = tempfile::tempdir().unwrap();
    write_raw(&tmp.path().join("model.safetensors"), &[("w", Dtype::F32, vec![1], f32_bytes(&[1.0]))]);
    let err = resolve_model_dir(tmp.path()).unwrap_err();
    assert!(matches!(err, HfError::MissingConfig { .. }), "{err}");
    assert_mentions(&err, tmp.path());
    assert!(err.to_string().contains("config.json"), "{err}");
}

#[test]
fn missing_weights_is_an_error_naming_the_directory_and_what_was_looked_for() {
    let tmp = tempfile::tempdir().unwrap();
    write_config(tmp.path());
    let err = resolve_model_dir(tmp.path()).unwrap_err();
    assert!(matches!(err, HfError::MissingWeights { .. }), "{err}");
    assert_mentions(&err, tmp.path());
    let msg = err.to_string();
    assert!(msg.contains("model.safetensors") && msg.contains("model.safetensors.index.json"), "{msg}");
}

#[test]
fn resolving_a_path_that_is_not_a_directory_is_an_error_naming_it() {
    let tmp = tempfile::tempdir().unwrap();
    let missing = tmp.path().join("nope");
    let err = resolve_model_dir(&missing).unwrap_err();
    assert!(matches!(err, HfError::NotADirectory { .. }), "{err}");
    assert_mentions(&err, &missing);
}

/// Names in `dir` other than those in `expected`.
fn extra_files(dir: &Path, expected: &[&str]) -> Vec<String> {
    fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|name| !expected.contains(&name.as_str()))
        .collect()
}

#[test]
fn atomic_write_replaces_an_existing_file_and_leaves_no_temp_file() {
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("data.bin");
    fs::write(&path, b"old contents that are longer").unwrap();
    write_atomic(&path, b"new").unwrap();
    assert_eq!(fs::read(&path).unwrap(), b"new");
    write_safetensors(&tmp.path().join("w.safetensors"), &TensorMap::new(), None).unwrap();
    assert_eq!(extra_files(tmp.path(), &["data.bin", "w.safetensors"]), Vec::<String>::new());
}

#[test]
fn failed_atomic_write_leaves_the_old_file_and_no_temp_file() {
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("w.safetensors");
    write_atomic(&path, b"old").unwrap();
    let bad = TensorMap::from([("w".to_string(), tensor(&[3], &[1.0]))]);
    assert!(write_safetensors(&path, &bad, None).is_err());
    // Renaming a file over a non-empty directory fails after the temp file was written.
    let dir_target = tmp.path().join("sub");
    fs::create_dir(&dir_target).unwrap();
    fs::write(dir_target.join("x"), b"x").unwrap();
    assert!(write_atomic(&dir_target, b"data").is_err());
    assert_eq!(fs::read(&path).unwrap(), b"old");
    assert_eq!(extra_files(tmp.path(), &["w.safetensors", "sub"]), Vec::<String>::new());
}

#[test]
fn save_model_dir_writes_a_directory_that_resolves_and_loads_back() {
    let tmp = tempfile::tempdir().unwrap();
    let tokenizer_src = tmp.path().join("tok.json");
    fs::write(&tokenizer_src, r#"{"version": "1.0"}"#).unwrap();
    let out = tmp.path().join("nested").join("out");
    let config = json!({"model_type": "test", "hidden_size": 4});
    let tensors = TensorMap::from([("w".to_string(), tensor(&[2, 2], &[1.0, -2.0, 3.5, 0.0]))]);

    save_model_dir(&out, &config, &tensors, Some(&tokenizer_src)).unwrap();

    let md = resolve_model_dir(&out).unwrap();
    assert_eq!(read_config(&md).unwrap(), config);
    assert!(fs::read_to_string(&md.config).unwrap().contains("\n  \"hidden_size\""), "config.json is pretty-printed");
    assert_eq!(load_tensors(&md).unwrap(), tensors);
    assert_eq!(fs::read(md.tokenizer.unwrap()).unwrap(), fs::read(&tokenizer_src).unwrap());
    assert_eq!(read_safetensors_metadata(&md.weights[0]).unwrap()["format"], "pt");
    let expected = ["config.json", "model.safetensors", "tokenizer.json"];
    assert_eq!(extra_files(&out, &expected), Vec::<String>::new());
}
