//! Tokenizer parity with Hugging Face `transformers`.
//!
//! Fixtures come from `scripts/fixtures/make_tokenizer_fixtures.py`: a small byte-level BPE
//! `tokenizer.json` and `cases.json`, the ids `PreTrainedTokenizerFast` produced for a set of
//! texts (no special tokens added).

use std::path::{Path, PathBuf};

use vestige::hf::tokenizer::{Tokenizer, TokenizerError};

const SPECIAL: &str = "<|endoftext|>";

fn fixture_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/tokenizer")
}

#[derive(serde::Deserialize)]
struct Case {
    text: String,
    ids: Vec<u32>,
}

fn load_cases() -> Vec<Case> {
    let path = fixture_dir().join("cases.json");
    let raw = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    let cases: Vec<Case> = serde_json::from_str(&raw).expect("cases.json is valid");
    assert!(cases.len() >= 5, "expected several cases, got {}", cases.len());
    cases
}

fn load_tokenizer() -> Tokenizer {
    Tokenizer::from_file(&fixture_dir().join("tokenizer.json")).expect("fixture tokenizer loads")
}

#[test]
fn encode_matches_transformers() {
    let tok = load_tokenizer();
    for case in load_cases() {
        let ids = tok.encode(&case.text).expect("encode");
        assert_eq!(ids, case.ids, "ids differ from transformers for {:?}", case.text);
    }
}

#[test]
fn decode_roundtrips_plain_text() {
    let tok = load_tokenizer();
    let mut checked = 0;
    for case in load_cases() {
        if case.text.contains(SPECIAL) {
            continue;
        }
        let ids = tok.encode(&case.text).expect("encode");
        let back = tok.decode(&ids).expect("decode");
        assert_eq!(back, case.text, "decode(encode(text)) != text");
        checked += 1;
    }
    assert!(checked >= 5);
}

#[test]
fn special_token_is_a_single_id() {
    let tok = load_tokenizer();
    let id = tok.token_to_id(SPECIAL).expect("special token present");
    assert_eq!(tok.encode(SPECIAL).unwrap(), vec![id]);
    assert_eq!(tok.decode(&[id]).unwrap(), SPECIAL);
    assert!((id as usize) < tok.vocab_size());
    assert_eq!(tok.token_to_id("definitely not a token \u{1F980}"), None);
}

#[test]
fn save_then_load_is_identical() {
    let tok = load_tokenizer();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("tokenizer.json");
    tok.save(&path).expect("save");
    // No temporary files are left behind.
    let names: Vec<_> = std::fs::read_dir(dir.path()).unwrap().map(|e| e.unwrap().file_name()).collect();
    assert_eq!(names, vec![std::ffi::OsString::from("tokenizer.json")]);
    let again = Tokenizer::from_file(&path).expect("reload");
    assert_eq!(again.vocab_size(), tok.vocab_size());
    for case in load_cases() {
        assert_eq!(again.encode(&case.text).unwrap(), case.ids);
    }
}

#[test]
fn missing_file_error_names_the_path() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("no_such_tokenizer.json");
    let err = Tokenizer::from_file(&path).unwrap_err();
    assert!(matches!(err, TokenizerError::Read { .. }), "{err:?}");
    let msg = err.to_string();
    assert!(msg.contains(&path.display().to_string()), "message lacks path: {msg}");
}

#[test]
fn corrupt_file_error_names_the_path() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("corrupt_tokenizer.json");
    std::fs::write(&path, b"{ \"model\": [1, 2, ").unwrap();
    let err = Tokenizer::from_file(&path).unwrap_err();
    assert!(matches!(err, TokenizerError::Parse { .. }), "{err:?}");
    let msg = err.to_string();
    assert!(msg.contains(&path.display().to_string()), "message lacks path: {msg}");
}
