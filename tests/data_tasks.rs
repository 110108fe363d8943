//! Tasks are deterministic in (seed, split, index), train and eval streams do not overlap,
//! only the answer is scored, and mixtures sample tasks in proportion to their weights.

use std::collections::HashSet;
use std::sync::Arc;
use vestige::data::mixture::Mixture;
use vestige::data::sequence::{SequenceTask, Transform, SEP};
use vestige::data::{Split, Task};

fn task(transform: Transform) -> SequenceTask {
    SequenceTask { name: format!("{transform:?}"), transform, length: 8, vocab: 32, marker: None }
}

#[test]
fn samples_are_deterministic_and_the_answer_is_the_transformed_input() {
    let t = task(Transform::Reverse);
    let s = t.sample(5, Split::Train, 17);
    assert_eq!(s, t.sample(5, Split::Train, 17));
    assert_ne!(s, t.sample(6, Split::Train, 17));
    assert_eq!(s.tokens[8], SEP);
    let mut input = s.tokens[..8].to_vec();
    input.reverse();
    assert_eq!(&s.tokens[9..], &input[..]);
    assert!(s.tokens.iter().all(|&x| (x as usize) < t.vocab_size()));
}

#[test]
fn only_answer_tokens_are_scored() {
    let s = task(Transform::Copy).sample(0, Split::Eval, 3);
    assert_eq!(s.prompt_len, 9);
    for (i, w) in s.weights.iter().enumerate() {
        assert_eq!(*w, if i >= 9 { 1.0 } else { 0.0 }, "weight of token {i}");
    }
}

#[test]
fn train_and_eval_streams_are_disjoint() {
    let t = task(Transform::Copy);
    let train: HashSet<Vec<u32>> = (0..2000).map(|i| t.sample(1, Split::Train, i).tokens).collect();
    let overlap = (0..2000).filter(|&i| train.contains(&t.sample(1, Split::Eval, i).tokens)).count();
    assert_eq!(overlap, 0);
}

#[test]
fn mixture_samples_tasks_in_proportion_to_weights() {
    let m = Mixture::new(vec![
        (Arc::new(task(Transform::Copy)) as Arc<dyn Task>, 3.0),
        (Arc::new(task(Transform::Reverse)) as Arc<dyn Task>, 1.0),
    ]);
    let n = 20_000;
    let copies = (0..n).filter(|&i| m.sample(9, i).0 == 0).count() as f64 / n as f64;
    assert!((copies - 0.75).abs() < 0.015, "copy fraction {copies}");
    assert_eq!(m.sample(9, 123), m.sample(9, 123));
}

#[test]
fn data_sample_prints_json_lines_with_pathfinding_fields_and_move_only_weights() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_vestige"))
        .args(["data", "sample", "{ kind = \"pathfinding\", width = 6, height = 5 }", "--n", "5", "--split", "eval"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let lines: Vec<serde_json::Value> =
        String::from_utf8_lossy(&out.stdout).lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(lines.len(), 5);
    for l in &lines {
        let f = &l["fields"];
        for key in ["rows", "start", "target", "moves", "extra_moves", "invalid_moves", "optimal_moves"] {
            assert!(!f[key].is_null(), "missing field {key}");
        }
        let moves = f["moves"].as_str().unwrap().split_whitespace().count() as f64;
        let weighted: f64 = l["weights"].as_array().unwrap().iter().map(|w| w.as_f64().unwrap()).sum();
        assert_eq!(weighted, moves, "one unit of loss weight per move token");
        assert!(l["text"].as_str().unwrap().contains("Moves:"));
    }
}

#[test]
fn a_bad_task_spec_lists_the_valid_kinds() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_vestige"))
        .args(["data", "sample", "{ kind = \"sort\" }"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("sort") && err.contains("copy, reverse, pathfinding"), "{err}");
}

#[test]
fn task_specs_parse_with_or_without_braces_and_keep_commas_inside_strings() {
    use vestige::data::sequence::SequenceSpec;
    use vestige::data::spec::{Kind, TaskSpec};
    let a = TaskSpec::parse_inline("{ name = \"a,b\", kind = \"reverse\", length = 3 }").unwrap();
    assert_eq!(
        a,
        TaskSpec { name: "a,b".into(), kind: Kind::Reverse(SequenceSpec { length: 3, vocab: 64, marker: None }) }
    );
    let b = TaskSpec::parse_inline("kind = \"copy\", vocab = 9").unwrap();
    assert_eq!(
        b,
        TaskSpec { name: "copy".into(), kind: Kind::Copy(SequenceSpec { length: 12, vocab: 9, marker: None }) }
    );
    assert!(TaskSpec::parse_inline("{ kind = \"copy\", colour = 1 }").unwrap_err().contains("colour"));
}
