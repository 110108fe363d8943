//! The L2-to-reference and diagonal-Fisher (EWC) penalties do their jobs: after a second
//! phase on a different task, a strongly L2-anchored run ends much closer to the end of the
//! first phase, and an EWC run forgets the first task less, than an unregularised run.

use std::path::Path;
use vestige::engine::model::Model;
use vestige::train::checkpoint::find_pinned;
use vestige::train::run::train;

/// Runs copy then reverse; returns the weight distance between the phase ends and the
/// held-out copy loss at the end.
fn run(dir: &Path, regulariser: &str) -> (f64, f64) {
    let text = format!(
        r#"name = "reg"
seed = 1
out_dir = "{}"
[model]
d_model = 32
n_layers = 1
n_heads = 2
max_positions = 16
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
name = "a"
steps = 250
batch_size = 8
mixture = {{ copy = 1.0 }}
optimizer = {{ lr = 3e-3 }}
eval = {{ samples = 8, exact_match = false }}
[[phases]]
name = "b"
steps = 60
batch_size = 8
mixture = {{ reverse = 1.0 }}
optimizer = {{ lr = 3e-3 }}
eval = {{ samples = 32, tasks = ["copy"], exact_match = false }}
{regulariser}
"#,
        dir.display()
    );
    let path = dir.join("reg.toml");
    std::fs::create_dir_all(dir).unwrap();
    std::fs::write(&path, text).unwrap();
    let summary = train(&path).unwrap();
    let ckpts = dir.join("reg/checkpoints");
    let weights = |pin: &str| Model::load(&find_pinned(&ckpts, pin).unwrap().join("model")).unwrap().model.weights;
    let (a, b) = (weights("a"), weights("b"));
    let distance = a.iter().zip(&b).map(|(x, y)| ((x - y) as f64).powi(2)).sum::<f64>().sqrt();
    (distance, summary.final_metrics["b/copy/loss"])
}

#[test]
fn l2_to_an_earlier_phase_keeps_weights_near_it() {
    let tmp = tempfile::tempdir().unwrap();
    let free = run(&tmp.path().join("free"), "").0;
    let held = run(&tmp.path().join("l2"), "l2_to = \"a\"\nl2_coef = 50.0").0;
    assert!(held < 0.3 * free, "L2 anchor: moved {held:.4} vs {free:.4} unregularised");
}

#[test]
fn ewc_penalty_reduces_forgetting_of_the_first_task() {
    let tmp = tempfile::tempdir().unwrap();
    let free = run(&tmp.path().join("free"), "").1;
    let held = run(&tmp.path().join("ewc"), "ewc_coef = 1e10\newc_samples = 32").1;
    assert!(held < 0.8 * free, "EWC: copy loss {held:.4} vs {free:.4} unregularised");
}
