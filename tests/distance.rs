//! The soft-prompt distance study: insertion and masking in both position modes, the
//! 0-token baseline scoring the same held-out labels as every prompt length, the distance on
//! synthetic curves, the template's expansion, and a tiny experiment run end to end into a
//! report with bit-identical weights after every soft-prompt phase.

mod common;

use common::experiment;
use std::path::Path;
use vestige::data::spec::Kind;
use vestige::data::{Sample, Split};
use vestige::engine::kernels::embed::InputSlot;
use vestige::lab::execute::{run, Options};
use vestige::lab::experiment::Experiment;
use vestige::lab::studies::distance::analysis::{
    arm_result, chosen_evaluation, conditional_distance, count_stats, outcome, refuse_at_edges, tolerance, ArmResult,
    Distance, Outcome, PromptRun,
};
use vestige::lab::studies::distance::conditional::{ConditionResult, TuningResult};
use vestige::lab::studies::distance::{Arm, DistanceSpec, Tuning, Variant};
use vestige::store::{MetricRow, Store};
use vestige::train::batching::{batch_at, Insert};
use vestige::train::checkpoint;
use vestige::train::config::{TaskSpec, Trainable};
use vestige::train::eval::{held_out, EvalSet};

/// `(slot, target, weight)` of the scored slots of sequence `b`.
fn scored(batch: &vestige::engine::batch::Batch, b: usize) -> Vec<(usize, i32, f32)> {
    (0..batch.seq)
        .map(|i| b * batch.seq + i)
        .filter(|&r| batch.targets[r] >= 0)
        .map(|r| (r % batch.seq, batch.targets[r], batch.weights[r]))
        .collect()
}

#[test]
fn a_prepended_prompt_predicts_nothing_and_tokens_predict_their_weighted_successors() {
    let s = Sample::new(vec![10, 11, 12, 13, 14], vec![0.0, 1.0, 0.0, 1.0, 0.5], 2);
    let batch = batch_at(&[s], 3, &[0]);
    assert_eq!(batch.seq, 8);
    assert!((0..3).all(|i| batch.slots[i] == InputSlot::Prompt(i as u32)));
    // Token 0 is never scored (no 0-token baseline can predict it); token 10 → 11 (weight 1),
    // 11 → 12 has weight 0, 12 → 13, 13 → 14 (0.5).
    assert_eq!(scored(&batch, 0), vec![(3, 11, 1.0), (5, 13, 1.0), (6, 14, 0.5)]);
}

#[test]
fn a_random_insertion_ignores_labels_before_it_and_its_last_slot_predicts_the_first_token_after_it() {
    let s = Sample::new((10..18).collect(), vec![1.0; 8], 1);
    let batch = batch_at(&[s], 2, &[3]);
    // Slots: 10 11 12 P0 P1 13 14 15 16 17.
    assert_eq!(batch.slots[3], InputSlot::Prompt(0));
    assert_eq!(batch.slots[5], InputSlot::Token(13));
    let want: Vec<(usize, i32, f32)> = [(4, 13), (5, 14), (6, 15), (7, 16), (8, 17)].map(|(i, t)| (i, t, 1.0)).to_vec();
    assert_eq!(scored(&batch, 0), want, "labels 11, 12 (before the prompt) and the first prompt slot are unscored");
}

#[test]
fn explicit_repeat_targets_survive_a_mid_sequence_prompt() {
    let mut s = Sample::new(vec![20, 21, 22, 23, 24, 25], vec![0.0, 0.0, 1.0, 1.0, 1.0, 1.0], 2);
    s.targets = Some(vec![0, 0, 5, 9, 5, 9]);
    let batch = batch_at(&[s], 1, &[4]);
    // Slots: 20 21 22 23 P 24 25 — labels 22, 23 lie before the prompt; P predicts label 4.
    assert_eq!(scored(&batch, 0), vec![(4, 5, 1.0), (5, 9, 1.0)]);
}

#[test]
fn a_repeated_string_starts_at_the_first_label_after_the_prompt_wherever_it_is_inserted() {
    let spec = TaskSpec::parse_inline("{ kind = \"repeat\", string = [5, 9, 7], vocab = 40, seq_len = 20 }").unwrap();
    let task = spec.build().unwrap();
    let s = task.sample(0, Split::Train, 0);
    for (at, n) in [(0, 0), (0, 2), (1, 2), (4, 3), (5, 1), (9, 2)] {
        let batch = batch_at(std::slice::from_ref(&s), n, &[at]);
        let labels: Vec<i32> = scored(&batch, 0).into_iter().map(|(_, t, _)| t).collect();
        // The string's phase follows the prompt, not the absolute position: a prompt cannot
        // know where it was inserted, so the reference aligns the string with it.
        let want: Vec<i32> = [5, 9, 7].iter().cycle().take(labels.len()).copied().collect();
        assert_eq!(labels, want, "prompt of {n} before token {at}");
        assert_eq!(labels.len(), s.tokens.len() - at.max(1));
    }
}

#[test]
fn random_insertion_points_stay_in_the_reference_range_and_cover_it() {
    let points: Vec<usize> = (0..2000).map(|k| Insert::Random.point(20, k)).collect();
    assert!(points.iter().all(|&p| p < 16), "floor(U·(20 − 4)) < 16");
    assert!((0..16).all(|p| points.contains(&p)));
    assert_eq!(Insert::Random.point(3, 7), 0, "short samples get the prompt first");
    assert!((0..50).all(|k| Insert::Prepend.point(20, k) == 0));
}

#[test]
fn every_prompt_length_including_zero_scores_the_same_held_out_labels() {
    let spec = TaskSpec::parse_inline("{ kind = \"repeat\", string = [5, 9, 7], vocab = 40, seq_len = 20 }").unwrap();
    let task = spec.build().unwrap();
    for insert in [Insert::Prepend, Insert::Random] {
        let (samples, at) = held_out(task.as_ref(), 3, EvalSet::reported(16), insert);
        let (again, at_again) = held_out(task.as_ref(), 3, EvalSet::reported(16), insert);
        assert_eq!((&samples, &at), (&again, &at_again), "the held-out set is fixed");
        let labels = |n: usize| {
            let batch = batch_at(&samples, n, &at);
            (0..samples.len())
                .map(|b| scored(&batch, b).into_iter().map(|(_, t, w)| (t, w)).collect::<Vec<_>>())
                .collect::<Vec<_>>()
        };
        let base = labels(0);
        assert!(base.iter().map(Vec::len).sum::<usize>() > 0);
        for n in [1, 4, 16] {
            assert_eq!(labels(n), base, "{insert:?}, {n} tokens");
        }
        if insert == Insert::Random {
            assert!(at.iter().any(|&a| a > 0), "random insertion moves the prompt");
        }
    }
    assert_ne!(task.sample(3, Split::Eval, 0).tokens, task.sample(3, Split::Train, 0).tokens);
}

#[test]
fn the_distance_is_the_smallest_count_within_a_relative_epsilon_of_saturation() {
    // L0 = 3, S = 1: ε = 0.05 × 2 = 0.1 and 0.02 × 2 = 0.04.
    let curve = [(0, 3.0), (1, 2.0), (4, 1.08), (16, 1.02), (64, 0.9)];
    assert_eq!(conditional_distance(&curve, Some(1.0), 0.05), Distance::Reached(4));
    assert_eq!(conditional_distance(&curve, Some(1.0), 0.02), Distance::Reached(16));
    assert_eq!(conditional_distance(&curve, Some(0.5), 0.01), Distance::Beyond(64));
    assert_eq!(conditional_distance(&curve, Some(3.5), 0.0), Distance::Reached(0));
    assert_eq!(conditional_distance(&curve, None, 0.1), Distance::Unknown);
    assert_eq!(conditional_distance(&curve[1..], Some(1.0), 0.1), Distance::Unknown, "no 0-token loss");
    // ε is relative: the same curve in other units (losses × 10) has the same distance,
    // which an absolute ε cannot give.
    let scaled: Vec<(usize, f64)> = curve.iter().map(|&(n, l)| (n, 10.0 * l)).collect();
    for rel in [0.01, 0.02, 0.05, 0.3] {
        assert_eq!(conditional_distance(&scaled, Some(10.0), rel), conditional_distance(&curve, Some(1.0), rel));
    }
    assert_eq!(tolerance(0.05, 3.0, Some(1.0)), 0.05 * 2.0);
}

/// A prompt run whose validation and reported losses are equal.
fn run_at(restart: usize, lr: f64, loss: f64) -> PromptRun {
    PromptRun { restart, lr, outcome: Outcome::new(loss, loss) }
}

#[test]
fn a_count_is_flagged_for_more_tuning_when_its_ensemble_spreads_or_it_loses_to_fewer_tokens() {
    let lrs = [1e-3, 3e-3, 1e-2];
    let settled = count_stats(4, vec![run_at(0, 3e-3, 1.00), run_at(1, 3e-3, 1.01)], &lrs, 0.05, Some(2.0));
    assert!(settled.concerns.is_empty(), "{:?}", settled.concerns);
    assert_eq!((settled.best, settled.worst, settled.best_lr, settled.mean), (1.00, 1.01, 3e-3, 1.005));
    assert!(!settled.lr_at_edge);
    let spread = count_stats(4, vec![run_at(0, 3e-3, 1.0), run_at(1, 3e-3, 1.5)], &lrs, 0.05, None);
    assert!(spread.concerns[0].contains("disagree"), "{:?}", spread.concerns);
    let edge = count_stats(4, vec![run_at(0, 1e-3, 1.2), run_at(0, 1e-2, 1.19)], &lrs, 0.05, None);
    assert!(edge.lr_at_edge && edge.concerns.iter().any(|c| c.contains("largest")), "{:?}", edge.concerns);
    let low = count_stats(4, vec![run_at(0, 1e-3, 1.1), run_at(0, 1e-2, 1.19)], &lrs, 0.05, None);
    assert!(low.lr_at_edge && low.concerns.iter().any(|c| c.contains("smallest")), "{:?}", low.concerns);
    let two = count_stats(4, vec![run_at(0, 1e-3, 1.1)], &[1e-3, 1e-2], 0.05, None);
    assert!(two.lr_at_edge, "a grid of two rates has no interior");
    let worse = count_stats(16, vec![run_at(0, 3e-3, 1.3)], &lrs, 0.05, Some(1.0));
    assert!(worse.concerns.iter().any(|c| c.contains("shorter prompt")), "{:?}", worse.concerns);
}

#[test]
fn a_count_is_chosen_on_validation_loss_and_reported_on_the_other_set() {
    let lrs = [1e-3, 3e-3, 1e-2];
    // The run with the lowest reported loss (0.5) has the worse validation loss: choosing on
    // the reported set would report 0.5; choosing on validation reports 0.9.
    let runs = vec![
        PromptRun { restart: 0, lr: 3e-3, outcome: Outcome::new(1.2, 0.5) },
        PromptRun { restart: 1, lr: 3e-3, outcome: Outcome::new(0.8, 0.9) },
    ];
    let c = count_stats(4, runs, &lrs, 1.0, None);
    assert_eq!((c.best, c.lowest), (0.9, 0.5));
    // The validation and reported sets are disjoint eval indices of the same task.
    let task = TaskSpec::parse_inline("{ kind = \"repeat\", string = [5, 9], vocab = 40, seq_len = 20 }")
        .unwrap()
        .build()
        .unwrap();
    let (reported, _) = held_out(task.as_ref(), 3, EvalSet::reported(64), Insert::Prepend);
    let (validation, _) = held_out(task.as_ref(), 3, EvalSet::validation(64), Insert::Prepend);
    assert!(EvalSet::validation(64).from >= 64);
    let overlap = validation.iter().filter(|v| reported.iter().any(|r| r.tokens == v.tokens)).count();
    assert!(overlap <= 2, "{overlap} of 64 validation inputs also in the reported set");
}

#[test]
fn a_run_is_read_at_its_lowest_validation_loss_and_flagged_when_that_is_its_cap() {
    let row = |step: u64, metric: &str, value: f64| MetricRow {
        run: "c".into(),
        phase: 1,
        step,
        tokens: 0,
        task: "r".into(),
        metric: metric.into(),
        value,
    };
    let rows = vec![
        row(10, "loss", 2.0),
        row(10, "val_loss", 2.1),
        row(20, "loss", 1.5),
        row(20, "val_loss", 1.4),
        row(30, "loss", 1.2),
        row(30, "val_loss", 1.6),
        MetricRow { phase: 0, ..row(20, "loss", 9.0) },
    ];
    let o = outcome(&rows, "r", 1, 30).unwrap();
    assert_eq!((o.val, o.test, o.at_cap), (1.4, 1.5, false), "early stopping keeps step 20");
    let c = chosen_evaluation(&rows, "r", 1).unwrap();
    assert_eq!((c.step, c.last), (20, 30), "every per-condition figure is read at step 20 too");
    let rising = &rows[..4];
    let o = outcome(rising, "r", 1, 20).unwrap();
    assert!(o.at_cap, "the lowest validation loss is the cap's: not converged");
    let legacy: Vec<MetricRow> = rows.iter().filter(|r| r.metric == "loss").cloned().collect();
    let o = outcome(&legacy, "r", 1, 30).unwrap();
    assert!(o.val.is_nan() && o.test == 1.2, "without validation: the last evaluation");
}

#[test]
fn a_distance_is_refused_when_a_count_it_rules_out_had_its_learning_rate_at_the_grid_edge() {
    let lrs = [1e-3, 3e-3, 1e-2];
    let counts = vec![
        count_stats(0, vec![run_at(0, 0.0, 3.0)], &lrs, 0.1, None),
        count_stats(2, vec![run_at(0, 1e-2, 2.0), run_at(0, 3e-3, 2.2)], &lrs, 0.1, None),
        count_stats(8, vec![run_at(0, 3e-3, 1.0)], &lrs, 0.1, None),
    ];
    assert_eq!(refuse_at_edges(Distance::Reached(8), &counts, 1.05), Distance::Refused(2));
    assert_eq!(
        refuse_at_edges(Distance::Reached(2), &counts, 1.05),
        Distance::Reached(2),
        "the reached count may sit at an edge"
    );
    assert_eq!(refuse_at_edges(Distance::Beyond(8), &counts, 1.05), Distance::Refused(2));
    assert_eq!(
        refuse_at_edges(Distance::Reached(8), &[counts[0].clone(), counts[2].clone()], 1.05),
        Distance::Reached(8)
    );
}

#[test]
fn an_edge_rate_refuses_only_when_the_loss_falls_towards_it_across_the_grid() {
    let lrs = [3e-2, 1e-1, 3e-1, 1.0];
    let at = |losses: [f64; 4]| {
        let runs = lrs.iter().zip(losses).map(|(&lr, l)| run_at(0, lr, l)).collect();
        count_stats(2, runs, &lrs, 0.1, None)
    };
    let rising = at([1.0, 1.1, 1.2, 1.3]);
    assert!(rising.lr_at_edge && rising.lr_under_tuned, "falls towards the smallest rate");
    assert!(rising.concerns.iter().any(|c| c.contains("smallest and the loss falls")), "{:?}", rising.concerns);
    let falling = at([1.3, 1.2, 1.1, 1.0]);
    assert!(falling.lr_under_tuned, "falls towards the largest rate");
    let noisy = at([1.0, 1.2, 1.05, 1.3]);
    assert!(noisy.lr_at_edge && !noisy.lr_under_tuned, "an end chosen on a bumpy landscape");
    assert!(noisy.concerns.iter().any(|c| c.contains("does not fall")), "{:?}", noisy.concerns);
    let interior = at([1.1, 1.0, 1.2, 1.3]);
    assert!(!interior.lr_at_edge && !interior.lr_under_tuned);
    // With restarts each rate counts by its best run.
    let mut runs: Vec<PromptRun> = lrs.iter().zip([1.0, 1.1, 1.2, 1.3]).map(|(&lr, l)| run_at(0, lr, l)).collect();
    runs.push(run_at(1, 3e-1, 1.05));
    assert!(!count_stats(2, runs, &lrs, 0.1, None).lr_under_tuned);

    // The last step's gain (0.1) repeated over 3 more rates: a wider grid might reach 0.7.
    assert!((falling.lr_reach.unwrap() - 0.7).abs() < 1e-12 && (rising.lr_reach.unwrap() - 0.7).abs() < 1e-12);
    assert_eq!((noisy.lr_reach, interior.lr_reach), (Some(1.0), Some(1.0)), "not under-tuned: the chosen loss");

    // A distance of 8 rules out 2: refused only when 2 had the falling trend and that trend
    // could carry it within S + ε.
    let zero = count_stats(0, vec![run_at(0, 0.0, 3.0)], &lrs, 0.1, None);
    let eight = count_stats(8, vec![run_at(0, 1e-1, 0.2)], &lrs, 0.1, None);
    let (near, far) = (0.75, 0.5);
    assert_eq!(
        refuse_at_edges(Distance::Reached(8), &[zero.clone(), noisy, eight.clone()], near),
        Distance::Reached(8)
    );
    let with_trend = [zero, falling, eight];
    assert_eq!(refuse_at_edges(Distance::Reached(8), &with_trend, near), Distance::Refused(2));
    assert_eq!(
        refuse_at_edges(Distance::Reached(8), &with_trend, far),
        Distance::Reached(8),
        "the trend cannot close the gap"
    );
}

#[test]
fn an_arms_saturation_is_its_best_fine_tuning_loss_and_sets_its_distance() {
    let spec: DistanceSpec =
        toml::from_str("behavior = \"r\"\nepsilon_rel = 0.05\nlrs = [0.0003, 0.001, 0.003]").unwrap();
    let v = |tuning| Variant { arm: Arm::Target, tuning };
    let p = |tokens, restart| Tuning::Prompt { tokens, restart, lr: 1e-3 };
    let same = |loss| Outcome::new(loss, loss);
    let runs = [
        (v(Tuning::Frozen), same(4.0)),
        (v(p(2, 0)), same(2.5)),
        (v(p(2, 1)), same(2.0)),
        (v(p(8, 0)), same(0.75)),
        (v(Tuning::Full { lr: 1e-3 }), same(0.9)),
        // Saturation is chosen on validation loss: this run's reported 0.6 is not S.
        (v(Tuning::Full { lr: 3e-3 }), Outcome::new(0.95, 0.6)),
        (v(Tuning::Full { lr: 1e-2 }), same(0.7)),
        (v(Tuning::Lora { lr: 1e-3 }), same(0.8)),
    ];
    let r = arm_result(&spec, "all".into(), Arm::Target, "r".into(), &runs);
    assert_eq!((r.s_full, r.s_lora, r.saturation()), (Some(0.7), Some(0.8), Some(0.7)));
    assert!(r.s_concerns.is_empty(), "{:?}", r.s_concerns);
    assert_eq!(r.counts.iter().map(|c| (c.tokens, c.best)).collect::<Vec<_>>(), vec![(0, 4.0), (2, 2.0), (8, 0.75)]);
    assert_eq!(r.distance, Distance::Reached(8));
}

#[test]
fn variant_names_round_trip() {
    for v in [
        Variant { arm: Arm::Target, tuning: Tuning::Frozen },
        Variant { arm: Arm::NullTarget, tuning: Tuning::Prompt { tokens: 16, restart: 2, lr: 0.003 } },
        Variant { arm: Arm::NullModel, tuning: Tuning::Lora { lr: 0.01 } },
        Variant { arm: Arm::Target, tuning: Tuning::Full { lr: 1e-3 } },
        Variant { arm: Arm::NullTarget, tuning: Tuning::Conditioned { lr: 3e-4 } },
    ] {
        assert_eq!(Variant::parse(&v.name()), Some(v), "{}", v.name());
    }
    assert_eq!(Variant::parse("target/p4"), None);
}

const TINY: &str = r#"name = "distance-tiny"
template = "distance"
seed = 3
threads = 2

[model]
d_model = 32
n_layers = 1
n_heads = 2
max_positions = 32

[[tasks]]
name = "text"
kind = "grammar"
vocab = 24
seq_len = 16

[[tasks]]
name = "repeat"
kind = "repeat"
string = [7, 9, 11]
over = { kind = "grammar", vocab = 24, seq_len = 16 }

[[phases]]
name = "pretrain"
steps = 30
batch_size = 8
mixture = { text = 1.0 }
optimizer = { lr = 3e-3 }
eval = { every = 30, samples = 8, exact_match = false }

[distance]
behavior = "repeat"
counts = [0, 4]
insert = "random"
restarts = 2
lrs = [0.03]
steps = 25
batch_size = 8
eval_samples = 16
saturation = { kinds = ["full", "lora"], lrs = [0.003], lora_rank = 2 }
"#;

#[test]
fn the_template_expands_every_arm_into_frozen_prompted_and_fine_tuned_cells_on_one_held_out_set() {
    let tmp = tempfile::tempdir().unwrap();
    let exp = Experiment::load(&experiment(tmp.path(), TINY)).unwrap();
    // 3 arms × (p0 + p4 × 2 restarts + full + lora).
    assert_eq!(exp.cells.len(), 15);
    let cell =
        |name: &str| exp.cells.iter().find(|c| c.point[0].1.as_str() == Some(name)).unwrap_or_else(|| panic!("{name}"));
    assert_eq!(cell("target/p4/r1/lr0.03").id, "c002_variant-target_p4_r1_lr0.03");
    for c in &exp.cells {
        assert_eq!(c.config.seed, 3, "every cell keeps the run seed and so the held-out set");
        let last = c.config.phases.last().unwrap();
        assert_eq!((last.name.as_str(), last.eval.samples), ("distance", 16));
        assert_eq!(last.soft_prompt.as_ref().unwrap().insert, Insert::Random, "{}", c.id);
    }
    let p4 = &cell("target/p4/r1/lr0.03").config;
    assert_eq!(p4.phases.len(), 2, "pre-training, then the prompt");
    let phase = &p4.phases[1];
    assert_eq!(
        (phase.trainable, phase.soft_prompt.as_ref().unwrap().tokens, phase.optimizer.lr),
        (Trainable::SoftPrompt, 4, 0.03)
    );
    assert_eq!((phase.optimizer.weight_decay, phase.eval.tasks.as_slice()), (1e-4, ["repeat".to_string()].as_slice()));
    assert_ne!(phase.seed, cell("target/p4/r0/lr0.03").config.phases[1].seed, "restarts differ in their phase seed");
    let p0 = &cell("target/p0").config.phases[1];
    assert_eq!((p0.trainable, p0.soft_prompt.as_ref().unwrap().tokens), (Trainable::None, 0));
    assert_eq!(cell("target/lora/lr0.003").config.phases[1].lora.as_ref().unwrap().rank, 2);
    assert_eq!(cell("target/full/lr0.003").config.phases[1].trainable, Trainable::All);
    let null_model = &cell("null_model/p4/r0/lr0.03").config;
    assert_eq!(null_model.phases.len(), 1, "the null model never learns the text");
    let null_target = &cell("null_target/p4/r0/lr0.03").config;
    let twin = null_target.tasks.iter().find(|t| t.name == "repeat-null").unwrap();
    assert_eq!(null_target.phases[1].eval.tasks, ["repeat-null"]);
    let (Kind::Repeat(twin), Kind::Repeat(behavior)) = (&twin.kind, &null_target.tasks[1].kind) else {
        panic!("the behavior and its twin are repeats")
    };
    assert_eq!(twin.spec.string.len(), 3);
    assert_ne!(twin.spec.string, vec![7, 9, 11]);
    assert_eq!(twin.base, behavior.base, "the same inputs");
}

#[test]
fn the_template_refuses_an_unknown_behavior_and_prompts_longer_than_the_model_allows() {
    let tmp = tempfile::tempdir().unwrap();
    let e = Experiment::load(&experiment(tmp.path(), &TINY.replace("behavior = \"repeat\"", "behavior = \"nope\"")))
        .unwrap_err();
    assert_eq!(e.key, "distance.behavior", "{e}");
    let e =
        Experiment::load(&experiment(tmp.path(), &TINY.replace("counts = [0, 4]", "counts = [0, 40]"))).unwrap_err();
    assert!(e.message.contains("max_positions"), "{e}");
}

#[test]
fn a_tiny_distance_study_runs_into_a_report_and_leaves_weights_bit_identical_under_soft_prompts() {
    let tmp = tempfile::tempdir().unwrap();
    let path = experiment(tmp.path(), TINY);
    let (exp, outcome) = run(&path, &Options::default()).unwrap();
    assert!(outcome.failed.is_empty(), "{:?}", outcome.failed);
    let store = Store::open(&exp.db()).unwrap();
    for c in exp.cells.iter().filter(|c| c.config.phases.last().unwrap().trainable == Trainable::SoftPrompt) {
        let ckpts = exp.cells_dir().join(&c.id).join("checkpoints");
        let before =
            checkpoint::find_pinned(&ckpts, if c.config.phases.len() == 2 { "pretrain" } else { "init" }).unwrap();
        let after = checkpoint::find_pinned(&ckpts, "distance").unwrap();
        let w = |d: &Path| checkpoint::load_model(d).unwrap().weights;
        let (w0, w1) = (w(&before), w(&after));
        assert!(w0.iter().zip(&w1).all(|(a, b)| a.to_bits() == b.to_bits()), "{}: weights moved", c.id);
        let phase = c.config.phases.len() as u32 - 1;
        let losses: Vec<f64> = store
            .metrics(&c.id)
            .unwrap()
            .iter()
            .filter(|r| r.phase == phase && r.metric == "loss" && r.task != "train")
            .map(|r| r.value)
            .collect();
        assert!(losses.last().unwrap() < losses.first().unwrap(), "{}: the prompt learned nothing: {losses:?}", c.id);
    }
    vestige::commands::experiment::write_report(&exp, None).unwrap();
    let report = exp.root.join("report");
    let html = std::fs::read_to_string(report.join("index.html")).unwrap();
    assert!(html.contains("Conditional distance") && html.contains("null_target") && html.contains("<svg"));
    let csv = std::fs::read_to_string(report.join("distance.csv")).unwrap();
    // Header + 3 arms × 2 counts, every loss finite.
    assert_eq!(csv.lines().count(), 7, "{csv}");
    for line in csv.lines().skip(1) {
        let best: f64 = line.split(',').nth(4).unwrap().parse().unwrap();
        assert!(best.is_finite() && best > 0.0, "{line}");
    }
    let summary = std::fs::read_to_string(report.join("summary.md")).unwrap();
    assert!(summary.contains("| distance |"), "{summary}");
}

const COND: &str = r#"name = "distance-cond-tiny"
template = "distance"
seed = 5
threads = 2

[model]
d_model = 32
n_layers = 1
n_heads = 2
max_positions = 40

[[tasks]]
name = "pf"
kind = "pathfinding"
width = 3
height = 3
max_moves = 8

[[phases]]
name = "pretrain"
steps = 30
batch_size = 16
mixture = { pf = 1.0 }
optimizer = { lr = 3e-3 }
eval = { every = 30, samples = 8, exact_match = false }

[distance]
behavior = "pf"
counts = [0, 2]
insert = "prepend"
lrs = [0.01]
steps = 20
batch_size = 8
eval_samples = 8
evals = 1
saturation = { kinds = ["lora"], lrs = [0.003], lora_rank = 2 }

[distance.conditional]
held_out = [[2, 0]]
seen = [[0, 0]]
hidden = 8
"#;

#[test]
fn each_sample_reaches_the_condition_mlp_with_its_own_conditions() {
    use vestige::engine::cond_prompt::{CondPrompt, CondPromptShape};
    use vestige::train::config::{CondPromptCfg, CondSource};
    let task = TaskSpec::parse_inline("{ kind = \"pathfinding\", width = 5, height = 5, max_moves = 16 }").unwrap();
    let task = task.build().unwrap();
    let samples: Vec<_> = (0..200).map(|k| task.sample(1, Split::Train, k)).collect();
    let (a, b) = (&samples[0], samples.iter().find(|s| s.conditions != samples[0].conditions).unwrap());
    let cfg = CondPromptCfg { tokens: 3, hidden: 4, condition: CondSource::Sample, scale: 0.5 };
    let rows = vestige::train::trainable::condition_rows(&cfg, &[a.clone(), b.clone()], &[0, 0], 2);
    let scaled = |s: &vestige::data::Sample| s.conditions.iter().map(|c| c * 0.5).collect::<Vec<f32>>();
    assert_eq!(rows, [scaled(a), scaled(b)].concat(), "each sample's own conditions, scaled, in order");
    let mut mlp = CondPrompt::new(CondPromptShape { conditions: 2, tokens: 3, hidden: 4, d_model: 6 }, 9);
    let mut prompts = vec![0.0; 2 * 3 * 6];
    mlp.forward(&rows, &mut prompts);
    assert_ne!(prompts[..18], prompts[18..], "two conditions give two prompts");
    let mut twice = vec![0.0; 2 * 3 * 6];
    mlp.forward(&[rows[..2].to_vec(), rows[..2].to_vec()].concat(), &mut twice);
    assert_eq!(twice[..18], twice[18..], "the same condition gives the same prompt");
    let by_task = CondPromptCfg { condition: CondSource::Task, ..cfg };
    assert_eq!(
        vestige::train::trainable::condition_rows(&by_task, &[a.clone(), b.clone()], &[1, 0], 2),
        [0., 1., 1., 0.]
    );
}

#[test]
fn held_out_conditions_never_reach_prompt_training_by_construction() {
    let tmp = tempfile::tempdir().unwrap();
    let exp = Experiment::load(&experiment(tmp.path(), COND)).unwrap();
    // 2 arms × (p0 + p2 + c2 + lora).
    assert_eq!(exp.cells.len(), 8);
    let cell = exp.cells.iter().find(|c| c.point[0].1.as_str() == Some("target/c2/r0/lr0.01")).unwrap();
    let phase = cell.config.phases.last().unwrap();
    assert_eq!(phase.trainable, Trainable::CondPrompt);
    assert_eq!(phase.mixture.keys().collect::<Vec<_>>(), ["pf-prompt"]);
    assert_eq!(phase.eval.tasks, ["pf-prompt", "pf-e0i0", "pf-e2i0"]);
    assert!(phase.eval.exact_match && phase.eval.temperature == 1.0, "sampled paths are scored");
    let task = |name: &str| cell.config.tasks.iter().find(|t| t.name == name).unwrap().build().unwrap();
    let (prompt, held, plain) = (task("pf-prompt"), task("pf-e2i0"), task("pf"));
    let conditions = |t: &dyn vestige::data::Task, split| -> Vec<Vec<f32>> {
        (0..400).map(|k| t.sample(0, split, k).conditions).collect()
    };
    assert!(conditions(plain.as_ref(), Split::Train).contains(&vec![2.0, 0.0]), "the behavior has (2, 0) paths");
    for split in [Split::Train, Split::Eval] {
        assert!(conditions(prompt.as_ref(), split).iter().all(|c| c != &[2.0, 0.0]), "{split:?}: held out");
        assert!(conditions(held.as_ref(), split).iter().all(|c| c == &[2.0, 0.0]), "{split:?}: only the held-out one");
    }
    let soft = exp.cells.iter().find(|c| c.point[0].1.as_str() == Some("null_model/p2/r0/lr0.01")).unwrap();
    assert_eq!(soft.config.phases.len(), 1);
    assert_eq!(soft.config.phases[0].mixture.keys().collect::<Vec<_>>(), ["pf-prompt"], "both prompt kinds alike");
}

#[test]
fn the_conditional_keys_are_checked_and_errors_name_file_key_and_line() {
    let tmp = tempfile::tempdir().unwrap();
    let line = |text: &str, pat: &str| text.lines().position(|l| l.starts_with(pat)).unwrap() + 1;
    for (from, to, key, says) in [
        ("hidden = 8", "hidden = 8\ncolour = 3", "distance.conditional.colour", "unknown field `colour`"),
        ("held_out = [[2, 0]]", "held_out = [[2, -1]]", "distance.conditional.held_out", "0 ≤ invalid"),
        ("held_out = [[2, 0]]", "held_out = []", "distance.conditional.held_out", "at least one"),
        ("seen = [[0, 0]]", "seen = [[0, 0], [2, 0]]", "distance.conditional.seen", "held out"),
        ("seen = [[0, 0]]", "seen = [[0, 0], [0, 0]]", "distance.conditional.seen", "twice"),
        ("hidden = 8", "hidden = 0", "distance.conditional.hidden", "at least 1"),
        ("hidden = 8", "hidden = 8\ntemperature = 0.0", "distance.conditional.temperature", "positive"),
        ("hidden = 8", "hidden = 8\nscale = -1.0", "distance.conditional.scale", "positive"),
        ("insert = \"prepend\"", "insert = \"random\"", "distance.insert", "prepend"),
    ] {
        let path = experiment(tmp.path(), &COND.replace(from, to));
        let text = std::fs::read_to_string(&path).unwrap();
        let e = Experiment::load(&path).unwrap_err();
        assert_eq!(e.key, key, "{to}: {e}");
        assert!(e.message.contains(says), "{to}: {e}");
        assert!(e.file.ends_with("exp.toml"), "{e}");
        assert_eq!(e.line, line(&text, key.rsplit('.').next().unwrap()), "{to}: {e}");
    }
    let grammar = COND.replace("kind = \"pathfinding\"\nwidth = 3\nheight = 3\nmax_moves = 8", "kind = \"grammar\"");
    let e = Experiment::load(&experiment(tmp.path(), &grammar)).unwrap_err();
    assert_eq!(e.key, "distance.conditional", "{e}");
    let on_copy = "{ kind = \"copy\", only_conditions = [[1, 1]] }";
    let e = TaskSpec::parse_inline(on_copy).unwrap_err();
    assert!(e.contains("only_conditions: not a key of kind \"copy\""), "{e}");
    let too_many = "{ kind = \"pathfinding\", max_moves = 4, exclude_conditions = [[9, 0]] }";
    assert!(TaskSpec::parse_inline(too_many).unwrap_err().contains("|extra| ≤ 4"));
}

#[test]
fn a_tiny_conditional_study_reports_generated_moves_per_condition() {
    let tmp = tempfile::tempdir().unwrap();
    let told = COND.replace("kinds = [\"lora\"]", "kinds = [\"lora\", \"conditioned\"]");
    let (exp, outcome) = run(&experiment(tmp.path(), &told), &Options::default()).unwrap();
    assert!(outcome.failed.is_empty(), "{:?}", outcome.failed);
    let spec: DistanceSpec = toml::from_str::<toml::Table>(&exp.text).unwrap()["distance"].clone().try_into().unwrap();
    let a = vestige::lab::studies::distance::conditional::analyse(&spec, &exp).unwrap();
    // 2 arms × (frozen, soft 2, cond 2, lora, conditioned), each on both conditions.
    assert_eq!(a.tunings.len(), 10);
    for t in &a.tunings {
        assert_eq!(t.conditions.len(), 2);
        // Extra moves are a reached path's: defined exactly when some sampled path reaches B.
        assert!(t.conditions.iter().all(|c| c.loss.is_finite() && c.invalid_gap >= 0.0 && c.reached >= 0.0));
        assert!(t.conditions.iter().all(|c| c.extra.is_finite() == (c.reached > 0.0)), "{:?}", t.conditions);
        // Per-sample scores were stored, and their intervals hold the logged means.
        for c in &t.conditions {
            let (lo, hi) = c.invalid_ci.expect("every sampled path has an invalid-move count");
            assert!(lo <= c.invalid + 1e-9 && c.invalid <= hi + 1e-9 && lo < hi || lo == hi, "{c:?}");
            let (lo, hi) = c.reached_ci.unwrap();
            assert!((lo..=hi).contains(&c.reached) || (lo - c.reached).abs() < 1e-9, "{c:?}");
        }
    }
    let stored: Vec<_> =
        std::fs::read_dir(exp.cells_dir()).unwrap().flatten().filter(|d| d.path().join("samples").is_dir()).collect();
    assert!(!stored.is_empty(), "per-sample scores are stored in the cells' run folders");
    assert_eq!(a.verdicts.len(), 2, "one per arm: cond 2 against soft 2");
    assert!(a.verdicts.iter().all(|v| v.told.is_some_and(|(m, _)| m.loss.is_finite())), "the told ceiling");
    let d = vestige::lab::studies::distance::analysis::analyse(&spec, &exp).unwrap();
    for arm in &d.arms {
        let told = arm.s_conditioned.expect("conditioned fine-tuning ran");
        assert!(told.is_finite() && arm.s_lora.is_some(), "{arm:?}");
        assert_ne!(Some(told), arm.saturation(), "the unconditional prompts saturate at lora, not at the told model");
        let ceiling = a.tunings.iter().find(|t| {
            t.point == arm.point
                && t.arm == arm.arm
                && t.kind == vestige::lab::studies::distance::conditional::Kind::Conditioned
        });
        assert_eq!(ceiling.map(|t| t.loss), Some(told), "both tables read the same run at the same evaluation");
    }
    vestige::commands::experiment::write_report(&exp, None).unwrap();
    let summary = std::fs::read_to_string(exp.root.join("report/summary.md")).unwrap();
    assert!(summary.contains("follows held-out conditions") && summary.contains("| cond 2 |"), "{summary}");
    assert!(summary.contains("| conditional |") && summary.contains("S conditioned"), "{summary}");
}

#[test]
fn conditioned_fine_tuning_is_told_each_condition_on_the_same_boards() {
    let tmp = tempfile::tempdir().unwrap();
    let told = COND.replace("kinds = [\"lora\"]", "kinds = [\"lora\", \"conditioned\"]");
    let exp = Experiment::load(&experiment(tmp.path(), &told)).unwrap();
    assert_eq!(exp.cells.len(), 10, "2 arms × (p0, p2, c2, lora, cft)");
    let cell = |v: &str| exp.cells.iter().find(|c| c.point[0].1.as_str() == Some(v)).unwrap();
    let (cft, lora) = (cell("target/cft/lr0.003"), cell("target/lora/lr0.003"));
    let phase = cft.config.phases.last().unwrap();
    assert_eq!(phase.trainable, Trainable::All);
    assert_eq!(phase.mixture.keys().collect::<Vec<_>>(), ["pf-prompt"]);
    assert_eq!(phase.eval.tasks, lora.config.phases.last().unwrap().eval.tasks, "scored on the same tasks");
    assert!(phase.stop.is_some(), "stops early like every saturation");
    let prefixed = |c: &vestige::lab::experiment::Cell, name: &str| {
        let t = c.config.tasks.iter().find(|t| t.name == name).unwrap();
        let Kind::Pathfinding(p) = &t.kind else { panic!("a pathfinding task") };
        (p.condition_prefix, t.build().unwrap())
    };
    for name in ["pf-prompt", "pf-e0i0", "pf-e2i0"] {
        let ((told, t), (plain, u)) = (prefixed(cft, name), prefixed(lora, name));
        assert!(told && !plain, "{name}");
        for k in 0..50 {
            let (a, b) = (t.sample(5, Split::Eval, k), u.sample(5, Split::Eval, k));
            let n = a.tokens.len() - b.tokens.len();
            assert_eq!(a.tokens[n..], b.tokens[..], "{name} {k}: the same board and path, told");
            assert_eq!(n as f32, a.conditions[0].max(0.0) + a.conditions[1]);
        }
    }
    let errors = [
        (COND.replace("kinds = [\"lora\"]", "kinds = [\"conditioned\"]"), "\"full\" or \"lora\": the unconditional"),
        (TINY.replace("kinds = [\"full\", \"lora\"]", "kinds = [\"full\", \"conditioned\"]"), "[distance.conditional]"),
        (TINY.replace("kinds = [\"full\", \"lora\"]", "kinds = [\"full\", \"told\"]"), "not one of"),
    ];
    for (config, says) in errors {
        let e = Experiment::load(&experiment(tmp.path(), &config)).unwrap_err();
        assert_eq!(e.key, "distance.saturation.kinds", "{e}");
        assert!(e.message.contains(says), "{e}");
    }
}

#[test]
fn the_null_model_can_pretrain_on_the_text_without_the_capability_and_fine_tuning_stops_on_validation() {
    let tmp = tempfile::tempdir().unwrap();
    let with_plain = TINY.replace(
        "[[tasks]]\nname = \"repeat\"",
        "[[tasks]]\nname = \"plain\"\nkind = \"grammar\"\nvocab = 24\nseq_len = 16\n\n[[tasks]]\nname = \"repeat\"",
    );
    let config = with_plain.replace("behavior = \"repeat\"", "behavior = \"repeat\"\nnull_mixture = { plain = 1.0 }");
    let exp = Experiment::load(&experiment(tmp.path(), &config)).unwrap();
    let cell = |name: &str| &exp.cells.iter().find(|c| c.point[0].1.as_str() == Some(name)).unwrap().config;
    let null_model = cell("null_model/p4/r0/lr0.03");
    assert_eq!(null_model.phases.len(), 2, "pre-trained, on other text");
    assert_eq!(null_model.phases[0].mixture.keys().collect::<Vec<_>>(), ["plain"]);
    assert_eq!(cell("target/p4/r0/lr0.03").phases[0].mixture.keys().collect::<Vec<_>>(), ["text"]);
    let (before, after) = (&cell("target/p4/r0/lr0.03").phases[0], &null_model.phases[0]);
    assert_eq!((before.steps, before.optimizer.lr), (after.steps, after.optimizer.lr), "the same pre-training");
    // Every measurement phase logs a validation loss; fine-tuning stops early on it.
    for c in &exp.cells {
        let last = c.config.phases.last().unwrap();
        assert_eq!(last.eval.validation, 16, "{}", c.id);
    }
    let full = &cell("target/full/lr0.003").phases[1];
    let stop = full.stop.as_ref().expect("fine-tuning stops early");
    assert_eq!(
        (stop.metric.as_str(), stop.patience, stop.task.names()),
        ("val_loss", Some(3), &["repeat".to_string()][..])
    );
    assert!(cell("target/p4/r0/lr0.03").phases[1].stop.is_none(), "prompts train their full budget");
    // null_mixture needs pre-training and no null_model.
    let both = config.replace("null_mixture", "null_model = \"elsewhere\"\nnull_mixture");
    let err = format!("{:#}", Experiment::load(&experiment(tmp.path(), &both)).unwrap_err());
    assert!(err.contains("distance.null_mixture"), "{err}");
    let unknown = config.replace("null_mixture = { plain", "null_mixture = { prose");
    let err = format!("{:#}", Experiment::load(&experiment(tmp.path(), &unknown)).unwrap_err());
    assert!(err.contains("distance.null_mixture") && err.contains("prose"), "{err}");
}

#[test]
fn grammar_documents_with_spans_end_in_a_repeated_span_at_the_given_rate() {
    let spec = "{ kind = \"grammar\", vocab = 40, seq_len = 48, spans = { rate = 0.5, lengths = [1, 6] } }";
    let task = TaskSpec::parse_inline(spec).unwrap().build().unwrap();
    let plain = TaskSpec::parse_inline("{ kind = \"grammar\", vocab = 40, seq_len = 48 }").unwrap().build().unwrap();
    let n = 400;
    let mut periodic = 0;
    for k in 0..n {
        let s = task.sample(1, Split::Train, k).tokens;
        assert_eq!(s.len(), 48);
        // Periodic from the middle on with some period 1..=6: the tail repeats itself.
        let tail = &s[24..];
        if (1..=6).any(|p| tail.iter().skip(p).zip(tail).all(|(a, b)| a == b)) {
            periodic += 1;
        }
    }
    let rate = periodic as f64 / n as f64;
    assert!((0.42..0.62).contains(&rate), "periodic tails: {rate}");
    let plain_periodic = (0..n)
        .filter(|&k| {
            let s = plain.sample(1, Split::Train, k).tokens;
            (1..=6).any(|p| s[24..].iter().skip(p).zip(&s[24..]).all(|(a, b)| a == b))
        })
        .count();
    assert!(plain_periodic < 8, "plain grammar is rarely periodic: {plain_periodic}");
    let bad = "{ kind = \"grammar\", vocab = 40, seq_len = 8, spans = { rate = 0.5, lengths = [1, 6] } }";
    let err = match TaskSpec::parse_inline(bad) {
        Ok(spec) => spec.build().err().expect("a span longer than half the document is refused").to_string(),
        Err(e) => e,
    };
    assert!(err.contains("spans.lengths"), "{err}");
}

/// An arm result with only its distance, seed and string length set.
fn distance_only(arm: Arm, length: usize, seed: u64, distance: Distance) -> ArmResult {
    ArmResult {
        point: format!("len{length}/s{seed}"),
        arm,
        task: "r".into(),
        seed,
        string_len: Some(length),
        counts: Vec::new(),
        cond_counts: Vec::new(),
        s_full: Some(0.0),
        s_lora: None,
        s_conditioned: None,
        s_concerns: Vec::new(),
        distance,
        cond_distance: None,
    }
}

#[test]
fn distance_against_length_is_fitted_with_censored_distances_kept_and_refused_ones_left_out() {
    use vestige::lab::studies::distance::lengths::{fits, rows};
    // 1 + distance ≈ 2 · length (slope 1 on the log scale), with seed noise.
    let mut arms = Vec::new();
    for (length, ds) in [(1, [1, 2, 1]), (2, [3, 3, 4]), (4, [7, 8, 6]), (8, [15, 16, 14])] {
        for (seed, d) in ds.into_iter().enumerate() {
            arms.push(distance_only(Arm::Target, length, seed as u64, Distance::Reached(d)));
        }
    }
    let uncensored = fits(&rows(&arms)).remove(0).unwrap();
    assert!((uncensored.slope.value - 1.0).abs() < 0.1, "{:?}", uncensored.slope);
    assert!(uncensored.slope.lo < 1.0 && uncensored.slope.hi > 1.0);
    // At length 16 the largest count (16) is not enough: censored at 16, which only says
    // the distance exceeds it. Dropping those seeds would flatten the slope; keeping them as
    // censored observations keeps it near 1.
    let mut with_long = arms.clone();
    for seed in 0..3 {
        with_long.push(distance_only(Arm::Target, 16, seed, Distance::Beyond(16)));
    }
    with_long.push(distance_only(Arm::Target, 16, 3, Distance::Refused(4)));
    let r = rows(&with_long);
    let long = r.iter().find(|r| r.length == 16).unwrap();
    assert_eq!(long.seeds.len(), 4);
    assert!(long.mean.is_none(), "no mean over censored seeds");
    assert!(r.iter().find(|r| r.length == 4).unwrap().mean.is_some());
    let censored = fits(&r).remove(0).unwrap();
    assert_eq!((censored.n, censored.censored), (15, 3), "refused left out, censored kept");
    // Taking the bound for the value (distance 16 where it is more) would bias the slope down.
    let mut naive = arms.clone();
    for seed in 0..3 {
        naive.push(distance_only(Arm::Target, 16, seed, Distance::Reached(16)));
    }
    let naive = fits(&rows(&naive)).remove(0).unwrap();
    assert!(censored.slope.value > naive.slope.value + 0.02, "{:?} vs naive {:?}", censored.slope, naive.slope);
    // Too few lengths for a line: no fit, and why.
    let one: Vec<ArmResult> = arms.iter().filter(|a| a.string_len == Some(1)).cloned().collect();
    assert!(fits(&rows(&one)).remove(0).is_err());
}

#[test]
fn extrapolated_conditions_lie_beyond_every_path_the_prompts_train_on() {
    let tmp = tempfile::tempdir().unwrap();
    let config = COND.replace("hidden = 8", "hidden = 8\ntrain_max_extra = 1");
    let exp = Experiment::load(&experiment(tmp.path(), &config)).unwrap();
    let cell = &exp.cells.iter().find(|c| c.id.contains("target_c2")).unwrap().config;
    let prompt = cell.tasks.iter().find(|t| t.name == "pf-prompt").unwrap();
    let Kind::Pathfinding(p) = &prompt.kind else { panic!("a pathfinding task") };
    assert_eq!(p.max_extra, Some(1));
    let task = prompt.build().unwrap();
    for k in 0..200 {
        let extra = task.sample(5, Split::Train, k).conditions[0];
        assert!(extra <= 1.0, "training path {k} has {extra} extra moves");
    }
    let held = cell.tasks.iter().find(|t| t.name == "pf-e2i0").unwrap();
    let Kind::Pathfinding(h) = &held.kind else { panic!("a pathfinding task") };
    assert_eq!(
        (h.max_extra, h.only_conditions.as_slice()),
        (None, &[[2, 0]][..]),
        "the held-out task keeps its condition"
    );
    // A seen condition beyond the bound is refused before any compute.
    let seen_beyond = config.replace("seen = [[0, 0]]", "seen = [[0, 0], [3, 0]]");
    let err = format!("{:#}", Experiment::load(&experiment(tmp.path(), &seen_beyond)).unwrap_err());
    assert!(err.contains("distance.conditional.seen") && err.contains("train_max_extra"), "{err}");
}

/// A tuning on seed `point` whose paths take `follow × requested + 1` extra moves and no
/// invalid ones, on the conditions (0, 0), (2, 0) seen and (6, 0) held out beyond the range.
fn tuning(point: &str, kind: vestige::lab::studies::distance::conditional::Kind, follow: f64) -> TuningResult {
    let condition = |extra: i64, held_out: bool| ConditionResult {
        condition: [extra, 0],
        held_out,
        extrapolated: held_out,
        loss: 1.0,
        reached: 0.5,
        extra: follow * extra as f64 + 1.0,
        invalid: 0.0,
        extra_gap: 1.0,
        invalid_gap: 0.0,
        reached_ci: None,
        extra_ci: None,
        invalid_ci: None,
    };
    TuningResult {
        point: point.into(),
        arm: Arm::Target,
        kind,
        loss: 1.0,
        conditions: vec![condition(0, false), condition(2, false), condition(6, true)],
    }
}

#[test]
fn conditional_figures_over_seeds_are_t_intervals_and_the_slope_gain_is_paired_by_seed() {
    use vestige::lab::studies::distance::conditional::{over_seeds, Kind};
    let (soft, cond) = ([0.1, 0.5, 0.3], [0.4, 0.9, 0.5]);
    let mut tunings = Vec::new();
    for (s, (a, b)) in soft.iter().zip(cond).enumerate() {
        tunings.push(tuning(&format!("seed={s}"), Kind::Soft(4), *a));
        tunings.push(tuning(&format!("seed={s}"), Kind::Cond(4), b));
    }
    let rows = over_seeds(&tunings);
    let row = |k: Kind| rows.iter().find(|r| r.kind == k).unwrap();
    let slope = row(Kind::Cond(4)).slope.unwrap();
    assert!((slope.value - 0.6).abs() < 1e-12 && slope.n == 3, "{slope:?}");
    let t = vestige::analysis::t_interval(&cond, 0.95).unwrap();
    assert!((slope.lo - t.lo).abs() < 1e-12 && (slope.hi - t.hi).abs() < 1e-12, "the seeds' t-interval");
    // Gains 0.3, 0.4, 0.2: paired, so their spread (not the slopes') sets the interval.
    let gain = row(Kind::Cond(4)).slope_gain.unwrap();
    assert!((gain.value - 0.3).abs() < 1e-12 && gain.lo > 0.0 && gain.hi - gain.lo < slope.hi - slope.lo, "{gain:?}");
    assert!(row(Kind::Soft(4)).slope_gain.is_none(), "only a conditional prompt has an unconditional twin");
    // Held out (6, 0): |follow · 6 + 1 − 6|, the extrapolated condition here.
    let err = row(Kind::Soft(4)).extrapolated_error.unwrap();
    let expect = soft.iter().map(|f| (f * 6.0 + 1.0 - 6.0f64).abs()).sum::<f64>() / 3.0;
    assert!((err.value - expect).abs() < 1e-12 && row(Kind::Soft(4)).held_out_reached.unwrap().value == 0.5);
    let one_seed = over_seeds(&tunings[..2]);
    assert!(one_seed.iter().all(|r| r.slope.is_none()), "no interval from one seed");
}
