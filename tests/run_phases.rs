//! Every trainable set works as a run phase: after full-weight pre-training, a steering
//! phase, a soft-prompt phase, an evaluation-only phase and a conditional-prompt phase
//! leave the weights bit-identical,
//! lower their training loss, and save what they trained; a LoRA phase changes the weights
//! only through its merged adapters. Evaluations log each task's scorers, and checkpoints
//! carry the tasks' tokenizer when they share one.

use std::path::Path;
use vestige::data::Split;
use vestige::store::read_csv;
use vestige::train::build::build_tasks;
use vestige::train::checkpoint::{find_pinned, load_model};
use vestige::train::config::RunConfig;
use vestige::train::run::train;

const CONFIG: &str = r#"name = "phases"
seed = 2
[model]
d_model = 32
n_layers = 2
n_heads = 4
max_positions = 32
[[tasks]]
name = "copy"
kind = "copy"
length = 5
vocab = 12
[[tasks]]
name = "reverse"
kind = "reverse"
length = 5
vocab = 12
[[phases]]
name = "pretrain"
steps = 150
batch_size = 16
mixture = { copy = 1.0 }
optimizer = { lr = 3e-3 }
[[phases]]
name = "steer"
steps = 40
trainable = "steering"
steering = { layer = 1, coef = 1.0 }
mixture = { reverse = 1.0 }
optimizer = { lr = 1e-2 }
[[phases]]
name = "prompt"
steps = 40
trainable = "soft_prompt"
soft_prompt = { tokens = 4 }
mixture = { reverse = 1.0 }
optimizer = { lr = 1e-2 }
[[phases]]
name = "look"
steps = 3
trainable = "none"
mixture = { copy = 1.0 }
[[phases]]
name = "condition"
steps = 40
trainable = "cond_prompt"
cond_prompt = { tokens = 2, hidden = 16 }
mixture = { copy = 1.0, reverse = 1.0 }
optimizer = { lr = 1e-2 }
[[phases]]
name = "adapt"
steps = 40
trainable = "lora"
lora = { rank = 2, targets = ["qkv", "down"] }
mixture = { reverse = 1.0 }
optimizer = { lr = 1e-2 }
"#;

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
    let path = tmp.path().join("c.toml");
    std::fs::write(&path, CONFIG.replace("seed = 2", &format!("seed = 2\nout_dir = \"{}\"", tmp.path().display())))
        .unwrap();
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
    let path = tmp.path().join("c.toml");
    let head = CONFIG.split("[[phases]]").next().unwrap();
    let config = format!(
        "{head}[[phases]]\nname = \"pretrain\"\nsteps = 60\nbatch_size = 16\nmixture = {{ copy = 1.0 }}\n\
         optimizer = {{ lr = 3e-3 }}\n[[phases]]\nname = \"drift\"\nsteps = 30\nbatch_size = 16\n\
         mixture = {{ reverse = 1.0 }}\noptimizer = {{ lr = 3e-3 }}\n\
         eval = {{ every = 10, tasks = [\"copy\"], kl_to = \"pretrain\", exact_match = false }}\n"
    )
    .replace("seed = 2", &format!("seed = 2\nout_dir = \"{}\"", tmp.path().display()));
    std::fs::write(&path, config).unwrap();
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

const SCORED: &str = r#"name = "scored"
seed = 3
[model]
d_model = 32
n_layers = 2
n_heads = 4
max_positions = 32
[[tasks]]
name = "copy"
kind = "copy"
length = 5
vocab = 12
[[tasks]]
name = "next"
kind = "skip"
over = { kind = "copy", length = 5, vocab = 12 }
[[tasks]]
name = "skip2"
kind = "skip"
k = 2
over = { kind = "copy", length = 5, vocab = 12 }
[[phases]]
name = "pretrain"
steps = 150
batch_size = 16
mixture = { copy = 1.0 }
optimizer = { lr = 3e-3 }
eval = { tasks = ["copy", "next", "skip2"] }
"#;

/// Trains `config` in a fresh directory; returns it and the run's directory.
fn run(config: &str) -> (tempfile::TempDir, std::path::PathBuf) {
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("c.toml");
    let name = config.lines().next().unwrap();
    std::fs::write(&path, config.replacen(name, &format!("{name}\nout_dir = \"{}\"", tmp.path().display()), 1))
        .unwrap();
    let summary = train(&path).unwrap();
    (tmp, summary.dir)
}

#[test]
fn evaluations_log_task_scorers_and_teacher_forced_target_accuracy_for_explicit_targets() {
    let (_tmp, root) = run(SCORED);
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
    let (_tmp, root) = run(&SCORED.replace("steps = 150", "steps = 2"));
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
    let family = "[[tasks]]\nname = \"sort\"\nkind = \"family\"\nprimitives = [\"sort\"]\n[[phases]]";
    let (_tmp, root) = run(&SCORED.replace("steps = 150", "steps = 1").replacen("[[phases]]", family, 1));
    let model = find_pinned(&root.join("checkpoints"), "pretrain").unwrap().join("model");
    assert!(model.join("config.json").is_file() && !model.join("tokenizer.json").exists());
}
