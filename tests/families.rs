//! Family tasks and overlap pairs: samples are deterministic, split by input, scored on the
//! answer only and answer what an independent re-implementation of the primitives says;
//! pairs share exactly what the overlap construction documents; exact vocabularies
//! round-trip through the `tokenizers` crate; scorers and spec errors behave.

mod common;

use common::RunToml;
use std::collections::HashSet;
use std::sync::Arc;
use vestige::data::family::{Family, MarkerPlacement, COUNT0, EVEN, MARKERS, ODD, QUERY};
use vestige::data::pair::{pipelines, Knobs, Pair};
use vestige::data::pathfinding::Pathfinding;
use vestige::data::primitives::{Primitive, ALL};
use vestige::data::score::score_all;
use vestige::data::sequence::{SequenceTask, Transform};
use vestige::data::spec::{Kind, TaskSpec};
use vestige::data::vocab::{write_tokenizer, VocabError};
use vestige::data::{split_of, Sample, Split, Task};
use vestige::hf::tokenizer::Tokenizer;
use vestige::train::config::RunConfig;

/// The family task, or pair member, an inline spec describes.
fn family(spec: &str) -> Family {
    let spec = TaskSpec::parse_inline(spec).unwrap();
    match &spec.kind {
        Kind::Family(f) => f.build(&spec.name).unwrap(),
        Kind::Pair(p) => p.build(&spec.name).unwrap(),
        _ => panic!("{spec:?} is neither a family nor a pair"),
    }
}

/// Every primitive alone, and pipelines of two and three stages with and without a read-out.
fn families() -> Vec<Family> {
    let mut out: Vec<Family> = ALL
        .iter()
        .map(|p| {
            family(&format!("{{ name = \"{0}\", kind = \"family\", primitives = [\"{0}\"], length = 7 }}", p.name()))
        })
        .collect();
    for (i, stages) in [
        "\"sort\", \"shift\"",
        "\"duplicate\", \"permute\", \"count\"",
        "\"add\", \"reverse\", \"lookup\"",
        "\"permute\", \"add\", \"parity\"",
        "\"shift\", \"duplicate\", \"sort\"",
    ]
    .iter()
    .enumerate()
    {
        let spec =
            format!("{{ name = \"p{i}\", kind = \"family\", primitives = [{stages}], length = 6, task_seed = {i} }}");
        out.push(family(&spec));
    }
    out.extend([0.0, 0.5, 1.0].into_iter().flat_map(|o| {
        ["a", "b"].map(|m| {
            let spec = format!("{{ name = \"{m}{o}\", kind = \"pair\", overlap = {o}, member = \"{m}\", depth = 3 }}");
            family(&spec)
        })
    }));
    out
}

/// What a straightforward reading of the primitives' definitions answers.
enum Expected {
    Symbols(Vec<usize>),
    Symbol(usize),
    Parity(bool),
    Count(usize),
}

fn reference(f: &Family, x: &[usize], q: Option<usize>) -> Expected {
    let n = f.alphabet.len();
    let mut y = x.to_vec();
    for p in &f.stages {
        match p.name() {
            "reverse" => y.reverse(),
            "sort" => y.sort(),
            "shift" => y = y.iter().map(|v| (v + f.params.shift) % n).collect(),
            "permute" => y = y.iter().map(|&v| f.params.perm[v]).collect(),
            "duplicate" => {
                let mut d = Vec::new();
                for &v in &y {
                    d.push(v);
                    d.push(v);
                }
                y = d;
            }
            "add" => {
                let mut sum = 0;
                for v in y.iter_mut() {
                    sum = (sum + *v) % n;
                    *v = sum;
                }
            }
            "lookup" => {
                let mut i = 0;
                while y[i] != q.unwrap() {
                    i += 2;
                }
                return Expected::Symbol(y[i + 1]);
            }
            "parity" => return Expected::Parity(y.iter().filter(|&&v| Some(v) == q).count() % 2 == 1),
            "count" => return Expected::Count(y.iter().filter(|&&v| Some(v) == q).count()),
            other => panic!("unknown primitive {other}"),
        }
    }
    Expected::Symbols(y)
}

/// The input values and query read back from a prompt.
fn parse_prompt(f: &Family, prompt: &[u32]) -> (Vec<usize>, Option<usize>) {
    let body = match f.format {
        MarkerPlacement::Prefix => &prompt[1..prompt.len() - 1],
        MarkerPlacement::Suffix => &prompt[..prompt.len() - 2],
    };
    let value = |t: &u32| f.alphabet.iter().position(|a| a == t).expect("a symbol of the alphabet");
    match body.iter().position(|&t| t == QUERY) {
        Some(at) => (body[..at].iter().map(value).collect(), Some(value(&body[at + 1]))),
        None => (body.iter().map(value).collect(), None),
    }
}

#[test]
fn every_family_is_deterministic_in_seed_split_and_index() {
    for f in families() {
        for i in 0..20 {
            assert_eq!(f.sample(4, Split::Train, i), f.sample(4, Split::Train, i), "{}", f.name);
            assert_eq!(f.sample(4, Split::Eval, i), f.sample(4, Split::Eval, i), "{}", f.name);
        }
        let differs = |a: Split, b: Split, sa: u64, sb: u64| (0..20).any(|i| f.sample(sa, a, i) != f.sample(sb, b, i));
        assert!(differs(Split::Train, Split::Train, 4, 5), "{}: the seed changes nothing", f.name);
        assert!(differs(Split::Train, Split::Eval, 4, 4), "{}: the split changes nothing", f.name);
    }
}

#[test]
fn every_family_keeps_train_and_eval_inputs_disjoint() {
    for f in families() {
        let train: HashSet<Vec<u32>> = (0..500).map(|i| f.sample(1, Split::Train, i).input().to_vec()).collect();
        let eval: Vec<Vec<u32>> = (0..500).map(|i| f.sample(1, Split::Eval, i).input().to_vec()).collect();
        assert!(eval.iter().all(|e| !train.contains(e)), "{}", f.name);
        assert!(eval.iter().all(|e| split_of(e) == Split::Eval), "{}", f.name);
    }
}

#[test]
fn loss_weights_lie_exactly_on_the_answer_span() {
    for f in families() {
        let answer_len = match f.readout() {
            Some(_) => 1,
            None => f.length << f.stages.iter().filter(|p| **p == Primitive::Duplicate).count(),
        };
        for i in 0..50 {
            let s = f.sample(2, Split::Train, i);
            assert_eq!(s.tokens.len(), f.seq_len(), "{}", f.name);
            assert_eq!(s.tokens.len() - s.prompt_len, answer_len, "{}", f.name);
            for (t, w) in s.weights.iter().enumerate() {
                assert_eq!(*w, if t >= s.prompt_len { 1.0 } else { 0.0 }, "{}: weight of token {t}", f.name);
            }
        }
    }
}

#[test]
fn answers_equal_an_independent_reimplementation_of_the_pipeline() {
    for f in families() {
        for i in 0..200 {
            let s = f.sample(3, if i % 2 == 0 { Split::Train } else { Split::Eval }, i);
            let (x, q) = parse_prompt(&f, s.input());
            assert_eq!(x.len(), f.length);
            assert_eq!(q.is_some(), f.readout().is_some(), "{}", f.name);
            let want: Vec<u32> = match reference(&f, &x, q) {
                Expected::Symbols(y) => y.iter().map(|&v| f.alphabet[v]).collect(),
                Expected::Symbol(v) => vec![f.alphabet[v]],
                Expected::Parity(odd) => vec![if odd { ODD } else { EVEN }],
                Expected::Count(k) => {
                    assert!(k >= 1, "the query is a symbol of the sequence");
                    vec![COUNT0 + k as u32]
                }
            };
            assert_eq!(s.answer(), want, "{}: {}", f.name, f.render(&s));
        }
    }
}

#[test]
fn tokens_stay_within_the_vocabulary_and_markers_lead_the_prefix_format() {
    for f in families() {
        for i in 0..100 {
            let s = f.sample(0, Split::Train, i);
            assert!(s.tokens.iter().all(|&t| (t as usize) < f.vocab_size()), "{}", f.name);
            let marker_at = if f.format == MarkerPlacement::Prefix { 0 } else { s.prompt_len - 2 };
            assert_eq!(s.tokens[marker_at], f.marker, "{}", f.name);
        }
    }
}

#[test]
fn a_tiny_input_space_still_splits_train_and_eval_without_overlap() {
    // Length 2 over 3 symbols: 9 inputs, so independent hash streams would collide at once.
    // (With 9 inputs the 1/8 eval partition can be empty — it is for the family alphabets
    // [41, 44] and [42, 45] — which the next test covers; [43, 46] has eval inputs.)
    let copy: Arc<dyn Task> =
        Arc::new(SequenceTask { name: "tiny".into(), transform: Transform::Copy, length: 2, vocab: 5, marker: None });
    let fam: Arc<dyn Task> =
        Arc::new(family("{ kind = \"family\", primitives = [\"reverse\"], length = 2, alphabet = [43, 46] }"));
    let board: Arc<dyn Task> =
        Arc::new(Pathfinding { name: "tiny-board".into(), width: 2, height: 2, max_moves: 4, ..Default::default() });
    for task in [copy, fam, board] {
        let inputs = |split| (0..2000).map(|i| task.sample(7, split, i).input().to_vec()).collect::<HashSet<_>>();
        let (train, eval) = (inputs(Split::Train), inputs(Split::Eval));
        assert!(train.len() > 1 && !eval.is_empty(), "{}", task.name());
        assert_eq!(train.intersection(&eval).count(), 0, "{}", task.name());
    }
}

#[test]
#[should_panic(expected = "too small to split")]
fn a_single_input_cannot_serve_both_splits_and_sampling_says_so() {
    let one = SequenceTask { name: "one".into(), transform: Transform::Copy, length: 1, vocab: 3, marker: None };
    for split in [Split::Train, Split::Eval] {
        one.sample(0, split, 0);
    }
}

/// The primitives two pipelines have in common, counted with multiplicity.
fn shared_primitives(a: &[Primitive], b: &[Primitive]) -> usize {
    let mut rest = b.to_vec();
    a.iter().filter(|p| rest.iter().position(|q| q == *p).map(|i| rest.remove(i)).is_some()).count()
}

fn pair(overlap: f64, depth: usize, seed: u64) -> Pair {
    Pair::new(&Knobs::from_overlap(overlap, depth), depth, 41..57, 8, seed).unwrap()
}

#[test]
fn overlap_zero_shares_no_primitive_alphabet_token_or_marker() {
    for depth in 1..=3 {
        for seed in 0..30 {
            let p = pair(0.0, depth, seed);
            assert_eq!(shared_primitives(&p.a.stages, &p.b.stages), 0, "depth {depth} seed {seed}");
            assert!(p.a.alphabet.iter().all(|t| !p.b.alphabet.contains(t)));
            assert_ne!(p.a.marker, p.b.marker);
            assert_ne!(p.a.format, p.b.format);
            let tokens =
                |f: &Family| (0..200).flat_map(|i| f.sample(0, Split::Train, i).tokens).collect::<HashSet<_>>();
            let (ta, tb) = (tokens(&p.a), tokens(&p.b));
            let common: HashSet<u32> = ta.intersection(&tb).copied().collect();
            // Only the prefix/suffix separators and read-out answers could coincide; neither
            // symbols nor markers do.
            assert!(common.iter().all(|t| !MARKERS.contains(t) && !p.a.alphabet.contains(t)), "{common:?}");
        }
    }
}

#[test]
fn overlap_one_gives_the_same_mechanism_twice() {
    for depth in 1..=3 {
        for seed in 0..30 {
            let p = pair(1.0, depth, seed);
            let b = Family { name: p.a.name.clone(), ..p.b.clone() };
            assert_eq!(p.a, b, "depth {depth} seed {seed}");
            assert_eq!(p.a.sample(3, Split::Eval, 9), b.sample(3, Split::Eval, 9));
        }
    }
}

#[test]
fn intermediate_overlaps_follow_the_documented_construction() {
    for depth in 1..=3 {
        for seed in 0..20 {
            let a0 = pair(0.0, depth, seed).a;
            for overlap in [0.25, 0.4, 0.5, 0.75, 0.9] {
                let p = pair(overlap, depth, seed);
                let k = (overlap * depth as f64).round() as usize;
                assert_eq!(shared_primitives(&p.a.stages, &p.b.stages), k, "overlap {overlap} depth {depth}");
                let shared_tokens = p.a.alphabet.iter().filter(|t| p.b.alphabet.contains(t)).count();
                assert_eq!(shared_tokens, (overlap * 16.0).round() as usize);
                assert_eq!(p.b.alphabet.len(), 16);
                assert_eq!(p.a.format == p.b.format, overlap >= 0.5);
                assert_ne!(p.a.marker, p.b.marker);
                assert_eq!(p.a, a0, "member a must not depend on the overlap");
                assert_eq!((p.a.vocab_size(), p.b.vocab_size()), (57 + 16, 57 + 16));
                assert!(p.b.alphabet.iter().all(|&t| (t as usize) < p.b.vocab_size()));
            }
        }
    }
    let k = Knobs::from_overlap(0.5, 3);
    assert_eq!((k.primitives, k.alphabet, k.format, k.marker), (2, 0.5, true, false));
}

#[test]
fn pairs_are_deterministic_in_the_task_seed() {
    assert_eq!(pair(0.5, 2, 7), pair(0.5, 2, 7));
    let distinct: HashSet<Vec<Primitive>> = (0..20).map(|s| pair(0.5, 2, s).a.stages).collect();
    assert!(distinct.len() > 5, "the task seed barely changes the pipelines");
    for seed in 0..50 {
        let (a, b) = pipelines(3, 1, seed);
        for stages in [a, b] {
            let readouts = stages.iter().filter(|p| p.is_scalar()).count();
            assert!(readouts <= 1 && stages[..2].iter().all(|p| !p.is_scalar()), "{stages:?}");
        }
    }
}

fn tokenizer_for(tasks: &[Arc<dyn Task>]) -> (tempfile::TempDir, Tokenizer) {
    let dir = tempfile::tempdir().unwrap();
    let path = write_tokenizer(&dir.path().join("tok"), tasks).unwrap();
    let tok = Tokenizer::from_file(&path).unwrap();
    (dir, tok)
}

#[test]
fn rendered_samples_round_trip_through_the_written_tokenizer() {
    let copy = SequenceTask { name: "copy".into(), transform: Transform::Copy, length: 6, vocab: 20, marker: None };
    let reverse =
        SequenceTask { name: "reverse".into(), transform: Transform::Reverse, length: 6, vocab: 40, marker: None };
    let seq: Vec<Arc<dyn Task>> = vec![Arc::new(copy), Arc::new(reverse)];
    let fams: Vec<Arc<dyn Task>> = families().into_iter().map(|f| Arc::new(f) as Arc<dyn Task>).collect();
    for tasks in [seq, fams] {
        let (_dir, tok) = tokenizer_for(&tasks);
        assert_eq!(tok.vocab_size(), tasks.iter().map(|t| t.vocab_size()).max().unwrap());
        assert_eq!(tok.token_to_id("<pad>"), Some(0));
        for t in &tasks {
            for i in 0..30 {
                let s = t.sample(1, Split::Train, i);
                assert_eq!(t.render(&s), t.words(&s.tokens), "{}", t.name());
                assert_eq!(tok.encode(&t.render(&s)).unwrap(), s.tokens, "{}: {}", t.name(), t.render(&s));
            }
        }
        assert!(tok.encode("no-such-word").is_err(), "unknown words must not become a token");
    }
}

#[test]
fn pathfinding_words_round_trip_though_its_render_keeps_newlines() {
    let task: Arc<dyn Task> = Arc::new(Pathfinding::default());
    let (_dir, tok) = tokenizer_for(std::slice::from_ref(&task));
    let s = task.sample(0, Split::Eval, 0);
    assert_eq!(tok.encode(&task.words(&s.tokens)).unwrap(), s.tokens);
    assert!(task.render(&s).contains('\n'));
}

#[test]
fn tasks_that_name_an_id_differently_cannot_share_a_tokenizer() {
    let copy: Arc<dyn Task> =
        Arc::new(SequenceTask { name: "copy".into(), transform: Transform::Copy, length: 4, vocab: 9, marker: None });
    let fam: Arc<dyn Task> = Arc::new(family("{ kind = \"family\", primitives = [\"sort\"] }"));
    let dir = tempfile::tempdir().unwrap();
    match write_tokenizer(dir.path(), &[copy, fam]) {
        Err(e @ VocabError::Conflict { id: 2, .. }) => assert!(e.to_string().contains("\"=\""), "{e}"),
        other => panic!("expected a conflict at id 2, got {other:?}"),
    }
}

/// `sample`'s answer with its first answer token replaced by another valid one.
fn corrupt(f: &Family, s: &Sample) -> Vec<u32> {
    let mut g = s.answer();
    g[0] = if g[0] == EVEN {
        ODD
    } else if g[0] == ODD {
        EVEN
    } else {
        g[0] + 1
    };
    if !f.alphabet.contains(&g[0]) && g[0] >= f.alphabet[0] {
        g[0] = f.alphabet[0];
    }
    g
}

#[test]
fn family_scorer_gives_a_perfect_answer_one_and_a_wrong_one_less() {
    for f in families() {
        let samples: Vec<Sample> = (0..40).map(|i| f.sample(5, Split::Eval, i)).collect();
        let perfect: Vec<Vec<u32>> = samples.iter().map(Sample::answer).collect();
        for (name, v) in score_all(&f, &samples, &perfect) {
            assert_eq!(v, 1.0, "{}: {name}", f.name);
        }
        let wrong: Vec<Vec<u32>> = samples.iter().map(|s| corrupt(&f, s)).collect();
        let scores = score_all(&f, &samples, &wrong);
        let get = |k: &str| scores.iter().find(|(n, _)| *n == k).unwrap().1;
        assert!(get("exact_match") < 1.0 && get("token_accuracy") < 1.0, "{}: {scores:?}", f.name);
        let junk: Vec<Vec<u32>> = samples.iter().map(|s| vec![QUERY; s.answer().len()]).collect();
        let junk_scores = score_all(&f, &samples, &junk);
        assert_eq!(junk_scores.iter().find(|(n, _)| *n == "valid_tokens").unwrap().1, 0.0);
    }
}

#[test]
fn the_default_scorer_is_answer_token_accuracy() {
    let t = SequenceTask { name: "r".into(), transform: Transform::Reverse, length: 4, vocab: 12, marker: None };
    let s = t.sample(0, Split::Eval, 0);
    assert_eq!(t.score(&s, &s.answer()), vec![("token_accuracy", 1.0)]);
    let mut half = s.answer();
    half[0] = 0;
    half[1] = 0;
    assert_eq!(t.score(&s, &half), vec![("token_accuracy", 0.5)]);
    assert_eq!(t.score(&s, &[]), vec![("token_accuracy", 0.0)]);
}

fn spec_err(spec: &str) -> String {
    TaskSpec::parse_inline(spec).unwrap_err()
}

#[test]
fn bad_family_and_pair_specs_name_the_key_and_what_is_valid() {
    let e = spec_err("{ kind = \"family\", primitives = [\"sort\", \"rotate\"] }");
    assert!(e.contains("primitives[1]") && e.contains("rotate") && e.contains("reverse, sort, shift"), "{e}");
    let e = spec_err("{ kind = \"family\", primitives = [\"count\", \"sort\"] }");
    assert!(e.contains("primitives[0]") && e.contains("last stage"), "{e}");
    let e = spec_err("{ kind = \"family\", primitives = [] }");
    assert!(e.contains("primitives") && e.contains("1 to 3"), "{e}");
    let e = spec_err("{ kind = \"family\", primitives = [\"duplicate\", \"count\"], length = 20 }");
    assert!(e.contains("length") && e.contains("32"), "{e}");
    let e = spec_err("{ kind = \"family\", primitives = [\"sort\"], alphabet = [3, 9] }");
    assert!(e.contains("alphabet") && e.contains("41"), "{e}");
    let e = spec_err("{ kind = \"pair\", overlap = 1.5 }");
    assert!(e.contains("overlap") && e.contains("[0, 1]"), "{e}");
    let e = spec_err("{ kind = \"pair\" }");
    assert!(e.contains("overlap"), "{e}");
    let e = spec_err("{ kind = \"pair\", overlap = 0.5, member = \"c\" }");
    assert!(e.contains("member") && e.contains("\"a\", \"b\""), "{e}");
    let e = spec_err("{ kind = \"pair\", overlap = 0.5, depth = 4 }");
    assert!(e.contains("depth") && e.contains("1, 2 or 3"), "{e}");
    let e = spec_err("{ kind = \"famly\" }");
    assert!(e.contains("family, pair"), "{e}");
}

#[test]
fn run_configs_report_bad_family_keys_with_file_line_and_key_path() {
    let config = |task: &str| RunToml::one_task("t", task).to_string();
    let err = |task: &str| RunConfig::from_toml(&config(task), "exp.toml").unwrap_err().to_string();
    let e = err("kind = \"pair\"\nmember = \"a\"\noverlap = -0.5");
    assert!(e.starts_with("exp.toml:7: tasks[0].overlap:") && e.contains("[0, 1]"), "{e}");
    let e = err("kind = \"family\"\nprimitives = [\"sort\", \"spin\"]");
    assert!(e.starts_with("exp.toml:6: tasks[0].primitives[1]:") && e.contains("valid primitives"), "{e}");
    let e = err("kind = \"pair\"\noverlap = 0.5\nmember = \"z\"");
    assert!(e.starts_with("exp.toml:7: tasks[0].member:"), "{e}");
    let ok = RunConfig::from_toml(&config("kind = \"pair\"\noverlap = 0.5\nmember = \"b\""), "exp.toml").unwrap();
    assert_eq!(ok.tasks[0].build().unwrap().vocab_size(), 57 + 16);
}
