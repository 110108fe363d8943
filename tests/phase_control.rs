//! Phase control: a phase ends early at the first evaluation that meets its `stop`
//! criterion (logging the step), and `optimizer_state = "carry"` hands the previous phase's
//! optimizer moments and step count to the next phase where `reset` starts fresh. Both are
//! validated before any compute.

mod common;

use common::RunToml;
use std::path::Path;
use vestige::hf::io::{read_safetensors, read_safetensors_metadata};
use vestige::store::read_csv;
use vestige::train::checkpoint::find_pinned;
use vestige::train::config::{Direction, RunConfig, StopCfg, TaskNames};
use vestige::train::run::train;

const LEARN: &str = "batch_size = 16\nmixture = { copy = 1.0 }\noptimizer = { lr = 3e-3 }";

fn base() -> RunToml {
    RunToml::new("ctl").set("seed", 4).model(32, 2, 4, 32).sequence_task("copy", 4, 10)
}

fn run(config: RunToml) -> (tempfile::TempDir, std::path::PathBuf) {
    let tmp = tempfile::tempdir().unwrap();
    let summary = train(&config.out_dir(tmp.path()).write(tmp.path(), "c.toml")).unwrap();
    (tmp, summary.dir)
}

fn stop(at_least: Option<f64>, at_most: Option<f64>, patience: Option<usize>, min_improvement: f64) -> StopCfg {
    StopCfg {
        task: TaskNames::One("t".into()),
        metric: "loss".into(),
        at_least,
        at_most,
        patience,
        min_improvement,
        direction: Direction::Min,
    }
}

#[test]
fn thresholds_judge_the_latest_evaluation_and_patience_counts_evaluations_since_the_best() {
    assert!(stop(Some(0.9), None, None, 0.0).met(&[0.2, 0.95]));
    assert!(!stop(Some(0.9), None, None, 0.0).met(&[0.95, 0.2]));
    assert!(stop(None, Some(1.0), None, 0.0).met(&[3.0, 0.9]));
    assert!(!stop(None, Some(1.0), None, 0.0).met(&[]));
    // Best 1.0 at the second evaluation, then two that do not improve by 10%.
    let p = stop(None, None, Some(2), 0.1);
    assert!(p.met(&[2.0, 1.0, 0.95, 0.99]));
    assert!(!p.met(&[2.0, 1.0, 0.95]));
    assert!(!p.met(&[2.0, 1.0, 0.95, 0.85]), "0.85 improves on 1.0 by more than 10%");
    let max = StopCfg { direction: Direction::Max, ..stop(None, None, Some(1), 0.0) };
    assert!(max.met(&[0.5, 0.5]) && !max.met(&[0.5, 0.6]));
}

#[test]
fn a_phase_stops_at_its_first_evaluation_meeting_the_criterion_and_logs_that_step() {
    let stopping = base().phase(
        "a",
        &format!(
            "steps = 600\n{LEARN}\neval = {{ every = 25, samples = 16 }}\n\
             stop = {{ task = \"copy\", metric = \"loss\", at_most = 1.5 }}"
        ),
    );
    let (_tmp, root) = run(stopping.phase("b", &format!("steps = 5\n{LEARN}")));
    let rows = read_csv(&root.join("metrics.csv")).unwrap();
    let stopped = rows.iter().find(|r| r.task == "stop").expect("a stop row");
    let at = stopped.value as u64;
    assert!(at > 0 && at < 600 && at.is_multiple_of(25), "stopped at {at}");
    let losses: Vec<(u64, f64)> = rows
        .iter()
        .filter(|r| r.phase == 0 && r.task == "copy" && r.metric == "loss")
        .map(|r| (r.step, r.value))
        .collect();
    let (last_step, last) = *losses.last().unwrap();
    assert_eq!(last_step, at);
    assert!(last <= 1.5, "{last}");
    assert!(losses[..losses.len() - 1].iter().all(|(_, l)| *l > 1.5), "{losses:?}");
    // Phase b starts right after: its 5 steps follow the stop.
    let b_steps = rows.iter().filter(|r| r.phase == 1 && r.task == "train" && r.metric == "loss").count();
    assert_eq!(b_steps, 5);
    assert_eq!(rows.iter().filter(|r| r.task == "train" && r.metric == "loss").map(|r| r.step).max(), Some(at + 5));
}

/// `opt_step` and the AdamW moments in the checkpoint pinned at phase `name`'s end.
fn handed_over(root: &Path, name: &str) -> (u64, usize) {
    let dir = find_pinned(&root.join("checkpoints"), name).unwrap();
    let state = dir.join("trainer_state.safetensors");
    let step = read_safetensors_metadata(&state).unwrap()["opt_step"].parse().unwrap();
    let moments = read_safetensors(&state).unwrap().keys().filter(|k| k.starts_with("opt.")).count();
    (step, moments)
}

#[test]
fn carry_hands_the_moments_and_step_count_to_the_next_phase_and_reset_does_not() {
    for (state, expected) in [("carry", (40, 2)), ("reset", (0, 0))] {
        let config = base()
            .phase("a", &format!("steps = 40\n{LEARN}"))
            .phase("b", &format!("steps = 10\n{LEARN}\noptimizer_state = \"{state}\""));
        let (_tmp, root) = run(config);
        assert_eq!(handed_over(&root, "a"), expected, "{state}");
    }
}

#[test]
fn carry_and_stop_are_checked_before_compute() {
    let cases = [
        (base().phase("a", &format!("steps = 5\n{LEARN}\noptimizer_state = \"carry\"")), "phases[0].optimizer_state"),
        (
            base().phase("a", &format!("steps = 5\n{LEARN}")).phase(
                "b",
                "steps = 5\nmixture = { copy = 1.0 }\noptimizer = { kind = \"sgd\" }\noptimizer_state = \"carry\"",
            ),
            "phases[1].optimizer_state",
        ),
        (
            base().phase(
                "a",
                &format!("steps = 5\n{LEARN}\neval = {{ every = 5 }}\nstop = {{ task = \"other\", metric = \"loss\", at_most = 1.0 }}"),
            ),
            "phases[0].stop.task",
        ),
        (
            base().phase(
                "a",
                &format!("steps = 5\n{LEARN}\neval = {{ every = 5 }}\nstop = {{ task = \"copy\", metric = \"loss\" }}"),
            ),
            "phases[0].stop",
        ),
        (
            base().phase("a", &format!("steps = 5\n{LEARN}\nstop = {{ task = \"copy\", metric = \"loss\", at_most = 1.0 }}")),
            "phases[0].stop",
        ),
    ];
    for (config, key) in cases {
        let tmp = tempfile::tempdir().unwrap();
        let e = RunConfig::from_file(&config.write(tmp.path(), "c.toml")).unwrap_err().to_string();
        assert!(e.contains(key), "{key}: {e}");
    }
}
