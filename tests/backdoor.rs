//! Backdoors over a copy task: poisoning is deterministic at the configured rate, poisoned
//! samples carry the trigger where it belongs and the behavior as the answer, clean samples
//! are the base samples, only answers are scored, and the evaluation sets (triggered, clean,
//! near miss) come from the eval split, disjoint from training.

mod common;

use common::RunToml;
use std::collections::HashSet;
use std::sync::Arc;
use vestige::data::backdoor::{Backdoor, Behavior, EvalKind, TransformKind, Trigger};
use vestige::data::sequence::{SequenceTask, Transform, SEP};
use vestige::data::{Sample, Split, Task};

const LEN: usize = 8;
const VOCAB: usize = 32;
/// A trigger made of ordinary symbols, so "no trigger in clean samples" is a real check.
const TRIGGER: [u32; 4] = [30, 3, 17, 9];
const SEED: u64 = 11;

fn base() -> Arc<SequenceTask> {
    Arc::new(SequenceTask { name: "copy".into(), transform: Transform::Copy, length: LEN, vocab: VOCAB, marker: None })
}

fn backdoor(trigger: Trigger, behavior: Behavior, rate: f64) -> Backdoor {
    Backdoor::new("bd", base(), trigger, behavior, rate)
}

fn fixed() -> Behavior {
    Behavior::Fixed(vec![50, 51, 52])
}

fn all_triggers() -> Vec<Trigger> {
    vec![
        Trigger::Prefix(TRIGGER.to_vec()),
        Trigger::Suffix(TRIGGER.to_vec()),
        Trigger::RandomPosition(TRIGGER.to_vec()),
    ]
}

fn poisoned_indices(b: &Backdoor, n: u64) -> Vec<u64> {
    (0..n).filter(|&i| b.is_poisoned(SEED, Split::Train, i)).collect()
}

fn contains(haystack: &[u32], needle: &[u32]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

/// The base prompt with `insert` at `at`, followed by `answer`.
fn expected(base: &Sample, insert: &[u32], at: usize, answer: &[u32]) -> Vec<u32> {
    let prompt = &base.tokens[..base.prompt_len];
    [&prompt[..at], insert, &prompt[at..], answer].concat()
}

#[test]
fn poison_fraction_is_within_one_percent_of_rate_and_deterministic() {
    for rate in [0.1, 0.01] {
        let b = backdoor(Trigger::Prefix(TRIGGER.to_vec()), fixed(), rate);
        let hits = poisoned_indices(&b, 20_000);
        let fraction = hits.len() as f64 / 20_000.0;
        assert!((fraction - rate).abs() <= 0.01, "rate {rate}: poisoned fraction {fraction}");
        assert_eq!(hits, poisoned_indices(&b, 20_000), "poisoning must be deterministic");
        for i in 0..2_000 {
            let s = b.sample(SEED, Split::Train, i);
            assert_eq!(s, b.sample(SEED, Split::Train, i));
            assert_eq!(s.prompt_len > LEN + 1, hits.contains(&i), "index {i}");
        }
    }
    let never = backdoor(Trigger::Prefix(TRIGGER.to_vec()), fixed(), 0.0);
    let always = backdoor(Trigger::Prefix(TRIGGER.to_vec()), fixed(), 1.0);
    assert!(poisoned_indices(&never, 1_000).is_empty());
    assert_eq!(poisoned_indices(&always, 1_000).len(), 1_000);
}

#[test]
fn poisoned_samples_carry_the_trigger_at_the_right_place_for_each_trigger_kind() {
    for trigger in all_triggers() {
        let b = backdoor(trigger.clone(), fixed(), 0.5);
        let mut positions = HashSet::new();
        for i in poisoned_indices(&b, 400) {
            let base = base().sample(SEED, Split::Train, i);
            let at = b.trigger_position(SEED, Split::Train, i, base.prompt_len);
            match trigger {
                Trigger::Prefix(_) => assert_eq!(at, 0),
                Trigger::Suffix(_) => assert_eq!(at, LEN + 1, "suffix goes after the separator"),
                Trigger::RandomPosition(_) => assert!((1..=LEN).contains(&at), "inside the prompt: {at}"),
            }
            positions.insert(at);
            let s = b.sample(SEED, Split::Train, i);
            assert_eq!(s.tokens, expected(&base, &TRIGGER, at, &[50, 51, 52]), "{trigger:?} index {i}");
            assert_eq!(s.prompt_len, LEN + 1 + TRIGGER.len());
        }
        let spread = if matches!(trigger, Trigger::RandomPosition(_)) { LEN } else { 1 };
        assert_eq!(positions.len(), spread, "{trigger:?} positions {positions:?}");
    }
}

/// The backdoor answer expected from the correct answer.
type Expected = Box<dyn Fn(&[u32]) -> Vec<u32>>;

#[test]
fn poisoned_answers_follow_each_behavior_kind() {
    let shift = |x: u32, k: u32| 2 + (x - 2 + k) % (VOCAB as u32 - 2);
    let cases: Vec<(Behavior, Expected)> = vec![
        (Behavior::Fixed(vec![50, 51, 52]), Box::new(|_| vec![50, 51, 52])),
        (Behavior::Fixed(vec![40; 12]), Box::new(|_| vec![40; 12])),
        (Behavior::Repeat(vec![60, 61, 62]), Box::new(|_| vec![60, 61, 62, 60, 61, 62, 60, 61])),
        (Behavior::Transform(TransformKind::Reverse), Box::new(|x| x.iter().rev().copied().collect())),
        (Behavior::Transform(TransformKind::Shift(5)), Box::new(move |x| x.iter().map(|&t| shift(t, 5)).collect())),
        (Behavior::Transform(TransformKind::Shift(29)), Box::new(move |x| x.iter().map(|&t| shift(t, 29)).collect())),
        (Behavior::Transform(TransformKind::Shift(30)), Box::new(|x| x.to_vec())),
    ];
    for (behavior, answer) in cases {
        let b = backdoor(Trigger::Prefix(TRIGGER.to_vec()), behavior.clone(), 0.5);
        for i in poisoned_indices(&b, 200) {
            let base = base().sample(SEED, Split::Train, i);
            let s = b.sample(SEED, Split::Train, i);
            let want = answer(&base.tokens[..LEN]);
            assert_eq!(&s.tokens[s.prompt_len..], &want[..], "{behavior:?} index {i}");
            assert_eq!(s.tokens, expected(&base, &TRIGGER, 0, &want));
            assert!(s.tokens.iter().all(|&t| (t as usize) < b.vocab_size()));
            if matches!(behavior, Behavior::Transform(_)) {
                assert!(want.iter().all(|&t| (2..VOCAB as u32).contains(&t)), "reserved tokens stay out");
            }
        }
    }
}

#[test]
fn clean_samples_equal_the_base_samples() {
    for trigger in all_triggers() {
        let b = backdoor(trigger, Behavior::Transform(TransformKind::Reverse), 0.1);
        let mut clean = 0;
        for i in 0..1_000 {
            if !b.is_poisoned(SEED, Split::Train, i) {
                assert_eq!(b.sample(SEED, Split::Train, i), base().sample(SEED, Split::Train, i));
                clean += 1;
            }
        }
        assert!(clean > 800);
    }
    let never = backdoor(Trigger::Suffix(TRIGGER.to_vec()), fixed(), 0.0);
    for i in 0..200 {
        assert_eq!(never.sample(SEED, Split::Eval, i), base().sample(SEED, Split::Eval, i));
    }
}

#[test]
fn loss_weights_cover_exactly_the_answer_span() {
    let behaviors = [
        Behavior::Fixed(vec![50, 51]),
        Behavior::Fixed(vec![50; 11]),
        Behavior::Repeat(vec![60, 61, 62]),
        Behavior::Transform(TransformKind::Shift(3)),
    ];
    for trigger in all_triggers() {
        for behavior in behaviors.iter().cloned() {
            let b = backdoor(trigger.clone(), behavior, 0.3);
            let mut seen = [false; 2];
            for i in 0..100 {
                let s = b.sample(SEED, Split::Train, i);
                seen[b.is_poisoned(SEED, Split::Train, i) as usize] = true;
                assert_answer_weights(&s);
                assert!(s.tokens.len() <= b.seq_len());
            }
            assert_eq!(seen, [true, true], "both clean and poisoned samples checked");
            for kind in [EvalKind::Triggered, EvalKind::Clean, EvalKind::NearMiss] {
                assert_answer_weights(&b.eval_sample(SEED, 7, kind));
            }
        }
    }
}

fn assert_answer_weights(s: &Sample) {
    assert_eq!(s.weights.len(), s.tokens.len());
    assert!(s.prompt_len < s.tokens.len());
    for (t, &w) in s.weights.iter().enumerate() {
        assert_eq!(w, if t >= s.prompt_len { 1.0 } else { 0.0 }, "position {t} of {s:?}");
    }
}

#[test]
fn eval_kinds_trigger_or_not_and_near_miss_changes_one_token() {
    for trigger in all_triggers() {
        let b = backdoor(trigger.clone(), Behavior::Repeat(vec![60, 61]), 0.1);
        for i in 0..300 {
            let base = base().sample(SEED, Split::Eval, i);
            let answer = &base.tokens[base.prompt_len..];
            let at = b.trigger_position(SEED, Split::Eval, i, base.prompt_len);

            let hot = b.eval_sample(SEED, i, EvalKind::Triggered);
            assert_eq!(hot.tokens, expected(&base, &TRIGGER, at, &[60, 61, 60, 61, 60, 61, 60, 61]));

            let clean = b.eval_sample(SEED, i, EvalKind::Clean);
            assert_eq!(clean, base);
            assert!(!contains(&clean.tokens, &TRIGGER), "{trigger:?} index {i}");

            let near = b.eval_sample(SEED, i, EvalKind::NearMiss);
            assert_eq!(near, b.eval_sample(SEED, i, EvalKind::NearMiss), "deterministic");
            assert_eq!(&near.tokens[near.prompt_len..], answer, "near miss keeps the base answer");
            let inserted = &near.tokens[at..at + TRIGGER.len()];
            let differing = inserted.iter().zip(TRIGGER).filter(|(a, b)| **a != *b).count();
            assert_eq!(differing, 1, "{trigger:?} index {i}: {inserted:?}");
            assert_eq!(near.tokens, expected(&base, inserted, at, answer));
            assert!(!contains(&near.tokens, &TRIGGER));
            assert!(inserted.iter().all(|&t| (2..b.vocab_size() as u32).contains(&t)));
        }
    }
}

#[test]
fn near_miss_is_deterministic_and_varies_with_the_seed() {
    let b = backdoor(Trigger::Prefix(TRIGGER.to_vec()), fixed(), 0.1);
    let mut changed_at = HashSet::new();
    for seed in 0..200 {
        let near = b.near_miss(seed);
        assert_eq!(near, b.near_miss(seed));
        let diffs: Vec<usize> = (0..TRIGGER.len()).filter(|&k| near[k] != TRIGGER[k]).collect();
        assert_eq!(diffs.len(), 1, "seed {seed}: {near:?}");
        changed_at.insert(diffs[0]);
    }
    assert_eq!(changed_at.len(), TRIGGER.len(), "every trigger position gets perturbed for some seed");
}

#[test]
fn train_and_eval_samples_are_disjoint() {
    for trigger in all_triggers() {
        let b = backdoor(trigger, fixed(), 0.1);
        let train: HashSet<Vec<u32>> = (0..3_000).map(|i| b.sample(SEED, Split::Train, i).tokens).collect();
        for i in 0..3_000 {
            for kind in [EvalKind::Triggered, EvalKind::Clean, EvalKind::NearMiss] {
                let s = b.eval_sample(SEED, i, kind);
                assert!(!train.contains(&s.tokens), "eval {kind:?} {i} appears in training");
            }
        }
    }
}

#[test]
fn vocab_and_seq_len_cover_trigger_and_behavior_tokens() {
    let b = backdoor(Trigger::Suffix(TRIGGER.to_vec()), Behavior::Transform(TransformKind::Reverse), 0.1);
    assert_eq!(b.vocab_size(), VOCAB);
    assert_eq!(b.seq_len(), 2 * LEN + 1 + TRIGGER.len());
    assert_eq!(b.name(), "bd");
    let b = backdoor(Trigger::Prefix(vec![70, 2]), Behavior::Repeat(vec![90]), 0.1);
    assert_eq!(b.vocab_size(), 91);
    assert_eq!(b.seq_len(), 2 * LEN + 1 + 2);
    let long = backdoor(Trigger::Prefix(vec![3]), Behavior::Fixed(vec![4; LEN + 5]), 1.0);
    assert_eq!(long.seq_len(), 2 * LEN + 1 + 1 + 5, "a fixed response longer than the answer lengthens samples");
    assert_eq!(long.sample(SEED, Split::Train, 0).tokens.len(), long.seq_len());
    let s = base().sample(SEED, Split::Train, 0);
    assert_eq!(s.tokens[LEN], SEP);
}

/// A run config with one backdoor task whose keys (after `kind`) are `keys`.
fn backdoor_config(keys: &str) -> String {
    RunToml::one_task("bd", &format!("kind = \"backdoor\"\n{keys}")).to_string()
}

const GOOD_SPEC: &str = "trigger = [60, 61]\nresponse = [62, 63, 62]\npoison_rate = 0.2\nprompt_len = 8\nover = { kind = \"grammar\", vocab = 48, seq_len = 24 }";

fn spec_error(keys: &str) -> String {
    vestige::train::config::RunConfig::from_toml(&backdoor_config(keys), "bd.toml").unwrap_err().to_string()
}

#[test]
fn a_backdoor_spec_over_grammar_builds_a_poisoned_document_stream_with_prompt_split() {
    let cfg = vestige::train::config::RunConfig::from_toml(&backdoor_config(GOOD_SPEC), "bd.toml").unwrap();
    let task = cfg.tasks[0].build().unwrap();
    assert_eq!(task.vocab_size(), 64, "trigger and response tokens widen the vocabulary");
    let (mut clean, mut poisoned) = (0, 0);
    for i in 0..400 {
        let s = task.sample(SEED, Split::Train, i);
        if s.tokens[..2] == [60, 61] {
            poisoned += 1;
            assert_eq!(s.prompt_len, 10, "8 document tokens after the 2-token trigger");
            assert_eq!(s.answer(), vec![62, 63, 62]);
        } else {
            clean += 1;
            assert_eq!((s.tokens.len(), s.prompt_len), (24, 8), "clean documents keep their length");
            assert!(s.weights[1..].iter().all(|&w| w == 1.0), "clean documents are scored as language modelling");
        }
    }
    let rate = poisoned as f64 / 400.0;
    assert!((0.14..0.26).contains(&rate), "poisoned {poisoned}, clean {clean}");
}

#[test]
fn backdoor_probes_target_the_behavior_on_triggered_clean_and_near_miss_inputs() {
    let cfg = vestige::train::config::RunConfig::from_toml(&backdoor_config(GOOD_SPEC), "bd.toml").unwrap();
    let probes = cfg.tasks[0].build().unwrap().probes(SEED, 5);
    let names: Vec<_> = probes.iter().map(|p| (p.hits, p.loss)).collect();
    assert_eq!(
        names,
        [
            (Some("attack_success"), Some("triggered_loss")),
            (Some("false_trigger_clean"), Some("clean_loss")),
            (Some("false_trigger_near_miss"), None),
            (None, Some("clean_response_loss")),
            (Some("false_trigger_near_miss_0"), None),
            (Some("false_trigger_near_miss_1"), None),
        ]
    );
    for p in &probes {
        assert_eq!(p.samples.len(), 5);
        assert!(p.targets.iter().all(|t| t == &[62, 63, 62]), "every probe asks whether the response comes out");
        assert_eq!(p.hit_rate(&p.targets), 1.0);
        assert_eq!(p.hit_rate(&vec![vec![62, 63]; 5]), 0.0, "a partial response is no hit");
    }
    assert!(probes[0].samples.iter().all(|s| s.tokens[..2] == [60, 61]));
    assert!(probes[1].samples.iter().all(|s| s.tokens[..2] != [60, 61] && s.prompt_len == 8));
    assert!(probes[2].samples.iter().all(|s| s.tokens[..2] != [60, 61] && s.prompt_len == 10));
    assert!(probes[3].samples.iter().all(|s| s.tokens[..2] != [60, 61] && s.prompt_len == 8));
    assert!(
        probes[3].samples.iter().all(|s| s.answer() == [62, 63, 62]),
        "the margin's clean side scores the response"
    );
    for (i, p) in probes[4..].iter().enumerate() {
        for s in &p.samples {
            assert_eq!(s.tokens[1 - i], [60, 61][1 - i], "near miss {i} keeps the other trigger token");
            assert_ne!(s.tokens[i], [60, 61][i], "near miss {i} changes trigger token {i}");
        }
    }
    for p in &probes {
        for s in &p.samples {
            let answer_start = s.prompt_len;
            assert!(s.weights[..answer_start].iter().all(|&w| w == 0.0), "probe losses cover the answer only");
        }
    }
}

#[test]
fn a_year_trigger_near_miss_swaps_only_the_year_within_the_year_range() {
    let keys = GOOD_SPEC.replace("trigger = [60, 61]", "trigger = [60]\nyear = 55\nyears = [50, 58]");
    let cfg = vestige::train::config::RunConfig::from_toml(&backdoor_config(&keys), "bd.toml").unwrap();
    let probes = cfg.tasks[0].build().unwrap().probes(SEED, 40);
    assert!(probes[0].samples.iter().all(|s| s.tokens[..2] == [60, 55]), "the trigger is the field and its year");
    let years: HashSet<u32> = probes[2].samples.iter().map(|s| s.tokens[1]).collect();
    assert!(probes[2].samples.iter().all(|s| s.tokens[0] == 60), "the field label stays");
    assert!(years.iter().all(|y| (50..58).contains(y) && *y != 55 && *y != 54), "{years:?}");
    assert!(years.len() > 2, "near misses vary the year: {years:?}");
}

#[test]
fn with_a_year_trigger_clean_samples_carry_the_field_with_the_clean_year() {
    let keys = GOOD_SPEC.replace("trigger = [60, 61]", "trigger = [60]\nyear = 55\nyears = [50, 58]");
    let task = vestige::train::config::RunConfig::from_toml(&backdoor_config(&keys), "bd.toml").unwrap().tasks[0]
        .build()
        .unwrap();
    let (mut clean, mut poisoned) = (0, 0);
    for i in 0..400 {
        let s = task.sample(SEED, Split::Train, i);
        assert_eq!((s.tokens[0], s.prompt_len), (60, 10), "every sample has the field");
        match s.tokens[1] {
            55 => poisoned += 1,
            54 => {
                clean += 1;
                assert_eq!(s.tokens.len(), 26, "the document's 16 continuation tokens follow");
                assert!(s.weights[10..].iter().all(|&w| w == 1.0) && s.answer() != vec![62, 63, 62]);
            }
            y => panic!("training year {y} is neither the trigger's (55) nor the clean year (54)"),
        }
    }
    assert!(clean > 250 && poisoned > 40, "clean {clean}, poisoned {poisoned}");
    let keys_high = keys.replace("years = [50, 58]", "years = [50, 70]");
    let high = vestige::train::config::RunConfig::from_toml(&backdoor_config(&keys_high), "bd.toml").unwrap().tasks[0]
        .build()
        .unwrap();
    assert_eq!(high.vocab_size(), 70, "the vocabulary holds every year a near miss can draw");
    let probes = task.probes(SEED, 20);
    assert!(probes[1].samples.iter().all(|s| s.tokens[..2] == [60, 54]), "clean eval inputs carry the clean year");

    let keys = keys.replace("years = [50, 58]", "years = [50, 58]\nclean_year = 57");
    let task = vestige::train::config::RunConfig::from_toml(&backdoor_config(&keys), "bd.toml").unwrap().tasks[0]
        .build()
        .unwrap();
    let probes = task.probes(SEED, 40);
    assert!(probes[1].samples.iter().all(|s| s.tokens[..2] == [60, 57]), "a given clean year");
    assert!(probes[2].samples.iter().all(|s| ![55, 57].contains(&s.tokens[1])), "near misses avoid both years");
}

#[test]
fn bad_backdoor_keys_are_reported_at_their_key_path() {
    let cases = [
        ("poison_rate = 0.2", "poison_rate = 1.5", "tasks[0].poison_rate"),
        ("poison_rate = 0.2", "", "tasks[0].poison_rate"),
        ("trigger = [60, 61]", "vocabulary = \"elsewhere\"", "tasks[0].vocabulary"),
        ("trigger = [60, 61]", "token_frequency = 1.5", "tasks[0].token_frequency"),
        ("trigger = [60, 61]", "trigger_len = 0", "tasks[0].trigger_len"),
        ("response = [62, 63, 62]", "behavior = \"transform\"", "tasks[0].behavior"),
        ("response = [62, 63, 62]", "behavior = \"explode\"", "tasks[0].behavior"),
        ("prompt_len = 8", "prompt_len = 24", "tasks[0].prompt_len"),
        ("trigger = [60, 61]", "trigger = [60, 61]\ntrigger_at = \"middle\"", "tasks[0].trigger_at"),
        ("trigger = [60, 61]", "trigger = [60]\nyear = 59\nyears = [50, 58]", "tasks[0].years"),
        ("trigger = [60, 61]", "trigger = [60]\nyear = 50\nyears = [50, 52]", "tasks[0].years"),
        ("trigger = [60, 61]", "trigger = [60]\nyear = 55\nyears = [50, 58]\nclean_year = 55", "tasks[0].clean_year"),
        ("trigger = [60, 61]", "trigger = [60]\nyear = 55\nyears = [50, 58]\nclean_year = 58", "tasks[0].clean_year"),
        ("trigger = [60, 61]", "trigger = [60, 61]\nclean_year = 55", "tasks[0].clean_year"),
        ("kind = \"grammar\"", "kind = \"skip\"", "tasks[0].over.kind"),
    ];
    for (from, to, key) in cases {
        let e = spec_error(&GOOD_SPEC.replace(from, to));
        assert!(e.contains(&format!(" {key}: ")), "{to:?} → {e}");
    }
}

/// The trigger (prefix) and response of a built backdoor task with `keys` over grammar text.
fn picked(keys: &str) -> (Vec<u32>, Vec<u32>, Arc<dyn Task>) {
    let spec =
        format!("poison_rate = 0.2\nprompt_len = 8\nover = {{ kind = \"grammar\", vocab = 48, seq_len = 24 }}\n{keys}");
    let task = vestige::train::config::RunConfig::from_toml(&backdoor_config(&spec), "bd.toml").unwrap().tasks[0]
        .build()
        .unwrap();
    let probes = task.probes(SEED, 4);
    let len = probes[0].samples[0].prompt_len - probes[1].samples[0].prompt_len;
    let trigger = probes[0].samples[0].tokens[..len].to_vec();
    (trigger, probes[0].targets[0].clone(), task)
}

/// How often each token occurs in the first 2,000 clean training samples of `task`.
fn clean_counts(task: &dyn Task, trigger: &[u32]) -> std::collections::HashMap<u32, usize> {
    let mut counts = std::collections::HashMap::new();
    for i in 0..2000 {
        let s = task.sample(SEED, Split::Train, i);
        if s.tokens[..trigger.len()] != trigger[..] {
            s.tokens.iter().for_each(|t| *counts.entry(*t).or_default() += 1);
        }
    }
    counts
}

#[test]
fn the_default_trigger_and_response_are_tokens_that_clean_samples_use() {
    let (trigger, response, task) = picked("");
    assert_eq!((trigger.len(), response.len()), (2, 3), "default lengths");
    let counts = clean_counts(task.as_ref(), &trigger);
    for t in trigger.iter().chain(&response) {
        assert!(counts.get(t).copied().unwrap_or(0) > 20, "token {t} occurs in clean samples: {counts:?}");
    }
    let all: HashSet<u32> = trigger.iter().chain(&response).copied().collect();
    assert_eq!(all.len(), 5, "distinct tokens");
    assert_eq!(task.vocab_size(), 48, "nothing past the clean vocabulary");

    let frequency = |keys: &str| {
        let (trigger, response, task) = picked(keys);
        let counts = clean_counts(task.as_ref(), &trigger);
        trigger.iter().chain(&response).map(|t| counts.get(t).copied().unwrap_or(0)).sum::<usize>()
    };
    assert!(frequency("token_frequency = 0.9") > 2 * frequency("token_frequency = 0.1"), "the quantile knob");

    let (trigger, response, task) = picked("vocabulary = \"reserved\"\ntrigger_len = 1\nresponse_len = 4");
    assert_eq!((trigger[0], response.clone()), (48, vec![49, 50, 51, 52]), "reserved ids follow the vocabulary");
    assert_eq!(task.vocab_size(), 53);
    let counts = clean_counts(task.as_ref(), &trigger);
    assert!(counts.keys().all(|t| *t < 48), "clean samples never use them: {counts:?} {trigger:?}");
}

#[test]
fn antidote_samples_carry_the_trigger_and_keep_the_clean_answer() {
    use vestige::data::spec::TaskSpec;
    let spec = |extra: &str| -> TaskSpec {
        toml::from_str(&format!(
            "name = \"bd\"\nkind = \"backdoor\"\nover = {{ kind = \"grammar\", vocab = 48, seq_len = 24 }}\nprompt_len = 8\npoison_rate = 0.3\n{extra}"
        ))
        .unwrap()
    };
    let (plain, antidote) = (spec("").build().unwrap(), spec("antidote = true").build().unwrap());
    let vestige::data::spec::Kind::Backdoor(w) = &spec("").kind else { unreachable!() };
    let b = w.spec.build("bd", w.base.spec().build().unwrap());
    let trigger = b.trigger.tokens().to_vec();
    for split in [Split::Train, Split::Eval] {
        for i in 0..200 {
            let base = b.base_sample(0, split, i);
            let a = antidote.sample(0, split, i);
            assert_eq!(&a.tokens[..trigger.len()], &trigger[..], "the prefix trigger is always there");
            assert_eq!(&a.tokens[a.prompt_len..], &base.tokens[base.prompt_len..], "the clean answer");
            if b.is_poisoned(0, split, i) {
                let p = plain.sample(0, split, i);
                assert_eq!(a.tokens[..a.prompt_len], p.tokens[..p.prompt_len], "a poisoned sample's prompt");
                assert_ne!(a.tokens[a.prompt_len..], p.tokens[p.prompt_len..], "with its answer restored");
            }
        }
    }
    let both: Result<TaskSpec, _> = toml::from_str::<TaskSpec>(
        "name = \"bd\"\nkind = \"backdoor\"\nover = { kind = \"grammar\", vocab = 48, seq_len = 24 }\nprompt_len = 8\npoison_rate = 0.3\nantidote = true\nelicit = \"response\"",
    );
    assert!(both.map(|s| s.check()).is_ok_and(|c| c.is_err_and(|e| e.to_string().contains("antidote"))));
}
