//! Every trainable set works as a run phase: after full-weight pre-training, a steering
//! phase, a soft-prompt phase, an evaluation-only phase and a conditional-prompt phase
//! leave the weights bit-identical,
//! lower their training loss, and save what they trained; a LoRA phase changes the weights
//! only through its merged adapters.

use std::path::Path;
use vestige::engine::model::Model;
use vestige::store::read_csv;
use vestige::train::checkpoint::find_pinned;
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
    Model::load(&dir.join("model")).unwrap().model.weights.iter().map(|w| w.to_bits()).collect()
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
