//! Every trainable set works as a run phase: after full-weight pre-training, a steering
//! phase, a soft-prompt phase, an evaluation-only phase and a conditional-prompt phase
//! leave the weights bit-identical,
//! lower their training loss, and save what they trained; a LoRA phase changes the weights
//! only through its merged adapters. Evaluations log each task's scorers, and checkpoints
//! carry the tasks' tokenizer when they share one.

mod common;

use common::RunToml;
use std::path::Path;
use vestige::data::Split;
use vestige::store::read_csv;
use vestige::train::build::build_tasks;
use vestige::train::checkpoint::{find_pinned, load_model};
use vestige::train::config::RunConfig;
use vestige::train::run::train;

/// Copy and reverse on a small model, without phases.
fn copy_and_reverse() -> RunToml {
    RunToml::new("phases")
        .set("seed", 2)
        .model(32, 2, 4, 32)
        .sequence_task("copy", 5, 12)
        .sequence_task("reverse", 5, 12)
}

/// Full-weight pre-training on copy for `steps`.
const PRETRAIN: &str = "batch_size = 16\nmixture = { copy = 1.0 }\noptimizer = { lr = 3e-3 }";

fn weights(root: &Path, phase: &str) -> Vec<u32> {
    let dir = find_pinned(&root.join("checkpoints"), phase).unwrap();
    load_model(&dir).unwrap().weights.iter().map(|w| w.to_bits()).collect()
}

/// Held-out loss summed over the phase's eval tasks, at its first and last evaluation.
fn loss_span(root: &Path, phase: u32) -> (f64, f64) {
    let rows: Vec<_> = read_csv(&root.join("metrics.csv"))
        .unwrap()
        .into_iter()
        .filter(|r| r.phase == phase && r.task != "train" && r.metric == "loss")
        .collect();
    let (first, last) = (rows.first().unwrap().step, rows.last().unwrap().step);
    let at = |step| rows.iter().filter(|r| r.step == step).map(|r| r.value).sum::<f64>();
    (at(first), at(last))
}

#[test]
fn steering_soft_prompt_none_cond_prompt_and_lora_phases_train_only_their_own_parameters() {
    let tmp = tempfile::tempdir().unwrap();
    let path = copy_and_reverse()
        .out_dir(tmp.path())
        .phase("pretrain", &format!("steps = 150\n{PRETRAIN}"))
        .phase(
            "steer",
            "steps = 40\ntrainable = \"steering\"\nsteering = { layer = 1, coef = 1.0 }\n\
             mixture = { reverse = 1.0 }\noptimizer = { lr = 1e-2 }",
        )
        .phase(
            "prompt",
            "steps = 40\ntrainable = \"soft_prompt\"\nsoft_prompt = { tokens = 4 }\n\
             mixture = { reverse = 1.0 }\noptimizer = { lr = 1e-2 }",
        )
        .phase("look", "steps = 3\ntrainable = \"none\"\nmixture = { copy = 1.0 }")
        .phase(
            "condition",
            "steps = 40\ntrainable = \"cond_prompt\"\ncond_prompt = { tokens = 2, hidden = 16 }\n\
             mixture = { copy = 1.0, reverse = 1.0 }\noptimizer = { lr = 1e-2 }",
        )
        .phase(
            "adapt",
            "steps = 40\ntrainable = \"lora\"\nlora = { rank = 2, targets = [\"qkv\", \"down\"] }\n\
             mixture = { reverse = 1.0 }\noptimizer = { lr = 1e-2 }",
        )
        .write(tmp.path(), "c.toml");
    train(&path).unwrap();
    let root = tmp.path().join("phases");
    let pre = weights(&root, "pretrain");
    for phase in ["steer", "prompt", "look", "condition"] {
        assert!(weights(&root, phase) == pre, "phase {phase} changed the model weights");
    }
    assert!(weights(&root, "adapt") != pre, "merged LoRA adapters change the weights");
    for (phase, name) in [(1, "steer"), (2, "prompt"), (4, "condition"), (5, "adapt")] {
        let (first, last) = loss_span(&root, phase);
        assert!(last < first, "phase {name}: held-out loss {first} -> {last}");
    }
    assert!(root.join("steering.steer.safetensors").is_file());
    assert!(root.join("soft_prompt.prompt.safetensors").is_file());
    assert!(root.join("cond_prompt.condition.safetensors").is_file());
}

#[test]
fn forgetting_is_zero_at_the_reference_phase_end_and_grows_as_training_moves_away() {
    let tmp = tempfile::tempdir().unwrap();
    let path = copy_and_reverse()
        .out_dir(tmp.path())
        .phase("pretrain", &format!("steps = 60\n{PRETRAIN}"))
        .phase(
            "drift",
            "steps = 30\nbatch_size = 16\nmixture = { reverse = 1.0 }\noptimizer = { lr = 3e-3 }\n\
             eval = { every = 10, tasks = [\"copy\"], kl_to = \"pretrain\", exact_match = false }",
        )
        .write(tmp.path(), "c.toml");
    train(&path).unwrap();
    let rows = read_csv(&tmp.path().join("phases").join("metrics.csv")).unwrap();
    let kl: Vec<(u64, f64)> =
        rows.iter().filter(|r| r.phase == 1 && r.metric == "forgetting_kl").map(|r| (r.step, r.value)).collect();
    assert_eq!(kl.iter().map(|r| r.0).collect::<Vec<_>>(), vec![60, 70, 80, 90]);
    assert_eq!(kl[0].1, 0.0, "the drift phase starts from the reference model");
    assert!(kl[1..].iter().all(|r| r.1 > 1e-2), "training on reverse moves copy's predictions: {kl:?}");
    let ce_at_start = rows.iter().find(|r| r.phase == 1 && r.metric == "forgetting_ce").unwrap().value;
    assert!(ce_at_start > 0.0, "cross-entropy against itself is the reference's entropy");
}

/// Copy and two skips over it, pre-trained on copy for `steps`.
fn scored(steps: u64) -> RunToml {
    let over = "over = { kind = \"copy\", length = 5, vocab = 12 }";
    RunToml::new("scored")
        .set("seed", 3)
        .model(32, 2, 4, 32)
        .sequence_task("copy", 5, 12)
        .task("next", &format!("kind = \"skip\"\n{over}"))
        .task("skip2", &format!("kind = \"skip\"\nk = 2\n{over}"))
        .phase(
            "pretrain",
            &format!("steps = {steps}\n{PRETRAIN}\neval = {{ tasks = [\"copy\", \"next\", \"skip2\"] }}"),
        )
}

/// Trains `config` in a fresh directory; returns it and the run's directory.
fn run(config: RunToml) -> (tempfile::TempDir, std::path::PathBuf) {
    let tmp = tempfile::tempdir().unwrap();
    let summary = train(&config.out_dir(tmp.path()).write(tmp.path(), "c.toml")).unwrap();
    (tmp, summary.dir)
}

#[test]
fn evaluations_log_task_scorers_and_teacher_forced_target_accuracy_for_explicit_targets() {
    let (_tmp, root) = run(scored(150));
    let rows = read_csv(&root.join("metrics.csv")).unwrap();
    let last = rows.iter().map(|r| r.step).max().unwrap();
    let metric = |task: &str, metric: &str| {
        rows.iter().find(|r| r.step == last && r.task == task && r.metric == metric).map(|r| r.value)
    };
    let copy_accuracy = metric("copy", "token_accuracy").expect("the copy scorer is logged");
    assert!(copy_accuracy > 0.9, "a trained copy model copies: token accuracy {copy_accuracy}");
    assert!(metric("copy", "exact_match").unwrap() <= copy_accuracy);
    // Skip-0 labels are the next tokens, i.e. the copy task teacher-forced; skip-2 labels are not.
    let next = metric("next", "target_accuracy").expect("explicit targets get a teacher-forced accuracy");
    let skip2 = metric("skip2", "target_accuracy").unwrap();
    assert!(next > 0.9 && skip2 < next, "target accuracy: next {next}, skip-2 {skip2}");
    for task in ["next", "skip2"] {
        assert!(metric(task, "exact_match").is_none() && metric(task, "token_accuracy").is_none(), "{task}");
    }
}

#[test]
fn checkpoint_model_dirs_hold_a_tokenizer_that_encodes_rendered_samples_to_their_tokens() {
    let (_tmp, root) = run(scored(2));
    let model = find_pinned(&root.join("checkpoints"), "pretrain").unwrap().join("model");
    let tokenizer = tokenizers::Tokenizer::from_file(model.join("tokenizer.json")).unwrap();
    let cfg = RunConfig::from_file(&root.join("config.toml")).unwrap();
    for (name, task) in build_tasks(&cfg).unwrap() {
        let sample = task.sample(0, Split::Eval, 0);
        let ids = tokenizer.encode_fast(task.words(&sample.tokens), false).unwrap().get_ids().to_vec();
        assert_eq!(ids, sample.tokens, "task {name}");
    }
}

#[test]
fn a_run_whose_tasks_name_ids_differently_saves_models_without_a_tokenizer() {
    let (_tmp, root) = run(scored(1).task("sort", "kind = \"family\"\nprimitives = [\"sort\"]"));
    let model = find_pinned(&root.join("checkpoints"), "pretrain").unwrap().join("model");
    assert!(model.join("config.json").is_file() && !model.join("tokenizer.json").exists());
}

#[test]
fn an_all_but_head_phase_trains_every_weight_but_the_untied_output_head() {
    let tmp = tempfile::tempdir().unwrap();
    let path = copy_and_reverse()
        .out_dir(tmp.path())
        .phase("pretrain", &format!("steps = 60\n{PRETRAIN}"))
        .phase(
            "tune",
            "steps = 40\ntrainable = \"all_but_head\"\nmixture = { reverse = 1.0 }\n\
             optimizer = { lr = 1e-2, weight_decay = 0.1 }",
        )
        .write(tmp.path(), "c.toml");
    train(&path).unwrap();
    let root = tmp.path().join("phases");
    let model = load_model(&find_pinned(&root.join("checkpoints"), "pretrain").unwrap()).unwrap();
    let head = model.layout.head.clone().expect("the default architecture has an untied head");
    let head = head.offset..head.offset + head.len();
    let (pre, tuned) = (weights(&root, "pretrain"), weights(&root, "tune"));
    assert!(pre[head.clone()] == tuned[head.clone()], "the output head is bit-identical after the phase");
    let moved = (0..pre.len()).filter(|i| !head.contains(i) && pre[*i] != tuned[*i]).count();
    assert!(
        moved > (pre.len() - head.len()) / 2,
        "the other weights train ({moved} of {} moved)",
        pre.len() - head.len()
    );
    let (first, last) = loss_span(&root, 1);
    assert!(last < first, "held-out loss {first} -> {last}");

    let tied = RunToml::new("tied")
        .table("[model]", "arch = \"gpt2\"\nd_model = 32\nn_layers = 2\nn_heads = 4\nmax_positions = 32")
        .sequence_task("copy", 5, 12)
        .phase("tune", "steps = 1\ntrainable = \"all_but_head\"\nmixture = { copy = 1.0 }")
        .to_string();
    let cfg = RunConfig::from_toml(&tied, "tied.toml").unwrap();
    let e = vestige::train::build::build(&cfg).err().expect("a tied head cannot be frozen apart").to_string();
    assert!(e.contains("phases[0].trainable = \"all_but_head\"") && e.contains("ties it"), "{e}");
}
