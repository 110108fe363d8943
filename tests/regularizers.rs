//! The L2-to-reference and diagonal-Fisher (EWC) penalties do their jobs: after a second
//! phase on a different task, a strongly L2-anchored run ends much closer to the end of the
//! first phase, and an EWC run forgets the first task less, than an unregularised run.

mod common;

use common::RunToml;
use std::path::Path;
use vestige::engine::model::Model;
use vestige::train::checkpoint::find_pinned;
use vestige::train::run::train;

/// Runs copy then reverse; returns the weight distance between the phase ends and the
/// held-out copy loss at the end.
fn run(dir: &Path, regulariser: &str) -> (f64, f64) {
    let phase = "batch_size = 8\noptimizer = { lr = 3e-3 }";
    let path = RunToml::new("reg")
        .set("seed", 1)
        .out_dir(dir)
        .model(32, 1, 2, 16)
        .sequence_task("copy", 5, 12)
        .sequence_task("reverse", 5, 12)
        .phase(
            "a",
            &format!("steps = 250\n{phase}\nmixture = {{ copy = 1.0 }}\neval = {{ samples = 8, exact_match = false }}"),
        )
        .phase(
            "b",
            &format!(
                "steps = 60\n{phase}\nmixture = {{ reverse = 1.0 }}\n\
                 eval = {{ samples = 32, tasks = [\"copy\"], exact_match = false }}\n{regulariser}"
            ),
        )
        .write(dir, "reg.toml");
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
