//! Tasks are deterministic in (seed, split, index), train and eval streams do not overlap,
//! only the answer is scored, and mixtures sample tasks in proportion to their weights.

use std::collections::HashSet;
use std::sync::Arc;
use vestige::data::mixture::Mixture;
use vestige::data::sequence::{SequenceTask, Transform, SEP};
use vestige::data::{Split, Task};

fn task(transform: Transform) -> SequenceTask {
    SequenceTask { name: format!("{transform:?}"), transform, length: 8, vocab: 32 }
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
