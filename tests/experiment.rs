//! Experiment files expand into one validated run config per sweep point, the decay
//! template writes the phases it promises, errors point at the experiment file's line, and
//! `vestige run` runs cells, skips finished ones and resumes interrupted ones.

mod common;

use common::experiment;
use std::path::Path;
use vestige::data::spec::{Kind, TaskSpec};
use vestige::lab::execute::{run, Options};
use vestige::lab::experiment::Experiment;
use vestige::store::{read_csv, Store};
use vestige::train::checkpoint;
use vestige::train::config::Trainable;

const EXPERIMENT: &str = r#"name = "decay-test"
template = "decay"
threads = 2

[model]
scale = "100k"
max_positions = 16

[[tasks]]
name = "copy"
kind = "copy"
length = 4
vocab = 12

[[tasks]]
name = "reverse"
kind = "reverse"
length = 4
vocab = 12

[checkpoint]
every = 10

[decay]
a = "copy"
b = "reverse"
together_steps = 30
after_steps = 20
after_evals = 4
eval_samples = 8
batch_size = 8
regularizer = "l2"
strength = 0.5
# These tests exercise sweeps and runs; the measured floor's twins are tested in decay_template.rs.
floor = "chance"

[sweep]
seed = [0, 1]
"decay.b_fraction" = [0.0, 0.25]
"#;

#[test]
fn a_sweep_expands_into_the_product_of_its_axes_with_seed_last_and_stable_cell_ids() {
    let tmp = tempfile::tempdir().unwrap();
    let exp = Experiment::load(&experiment(tmp.path(), EXPERIMENT)).unwrap();
    let ids: Vec<&str> = exp.cells.iter().map(|c| c.id.as_str()).collect();
    assert_eq!(
        ids,
        [
            "c000_b_fraction-0.0_seed-0",
            "c001_b_fraction-0.0_seed-1",
            "c002_b_fraction-0.25_seed-0",
            "c003_b_fraction-0.25_seed-1"
        ]
    );
    let seeds: Vec<u64> = exp.cells.iter().map(|c| c.config.seed).collect();
    assert_eq!(seeds, [0, 1, 0, 1]);
    assert!(exp.cells.iter().all(|c| c.config.out_dir == tmp.path().join("decay-test").join("cells")));
}

#[test]
fn the_decay_template_writes_a_together_phase_and_a_regularised_log_evaluated_after_phase() {
    let tmp = tempfile::tempdir().unwrap();
    let exp = Experiment::load(&experiment(tmp.path(), EXPERIMENT)).unwrap();
    let cfg = &exp.cells[2].config;
    assert_eq!(cfg.model.d_model, 64, "scale 100k sets the width");
    let [together, after] = &cfg.phases[..] else { panic!("two phases") };
    assert_eq!((together.name.as_str(), together.steps, after.steps), ("together", 30, 20));
    assert_eq!(together.mixture.len(), 2);
    // b_fraction 0.25: B is a quarter of phase 2's samples.
    let share = after.mixture["reverse"] / (after.mixture["reverse"] + after.mixture["copy"]);
    assert!((share - 0.25).abs() < 1e-12, "{share}");
    assert_eq!(after.eval.log_points, 4);
    assert_eq!(after.eval.kl_to.as_deref(), Some("together"));
    assert_eq!((after.l2_to.as_deref(), after.l2_coef), (Some("together"), 0.5));
    assert_eq!(together.l2_coef, 0.0, "the L2 anchor acts after phase 1 only");
    assert_eq!(after.trainable, Trainable::All);
    assert_eq!(exp.cells[0].config.phases[1].mixture.len(), 1, "b_fraction 0 trains A alone");
}

#[test]
fn linked_sweep_paths_move_together() {
    let tmp = tempfile::tempdir().unwrap();
    let text = EXPERIMENT.replace("\"decay.b_fraction\" = [0.0, 0.25]", "\"tasks[0].length|tasks[1].length\" = [3, 5]");
    let exp = Experiment::load(&experiment(tmp.path(), &text)).unwrap();
    let length = |t: &TaskSpec| match &t.kind {
        Kind::Copy(s) | Kind::Reverse(s) => s.length,
        other => panic!("{other:?} is neither copy nor reverse"),
    };
    for c in &exp.cells {
        assert_eq!(length(&c.config.tasks[0]), length(&c.config.tasks[1]));
    }
    assert_eq!(length(&exp.cells[3].config.tasks[1]), 5);
}

/// The error message of an experiment file with `from` replaced by `to`.
fn error_of(from: &str, to: &str) -> String {
    let tmp = tempfile::tempdir().unwrap();
    let path = experiment(tmp.path(), &EXPERIMENT.replace(from, to));
    Experiment::load(&path).unwrap_err().to_string()
}

/// 1-based line of the first line containing `needle` in the test experiment.
fn line_with(needle: &str) -> usize {
    EXPERIMENT.lines().position(|l| l.contains(needle)).unwrap() + 2 // + the out_dir line
}

#[test]
fn experiment_errors_name_the_file_the_key_and_the_line() {
    let e = error_of("strength = 0.5", "strenght = 0.5");
    assert!(e.contains("exp.toml:") && e.contains("strenght"), "{e}");
    let e = error_of("regularizer = \"l2\"", "regularizer = \"magic\"");
    assert!(e.contains(&format!("exp.toml:{}: decay.regularizer", line_with("regularizer"))), "{e}");
    assert!(e.contains("ewc"), "lists the valid regularisers: {e}");
    let e = error_of("scale = \"100k\"", "scale = \"9t\"");
    assert!(e.contains(&format!(":{}: model.scale", line_with("scale ="))) && e.contains("30m"), "{e}");
    let e = error_of("seed = [0, 1]", "seed = 3");
    assert!(e.contains("sweep.seed") && e.contains("list"), "{e}");
    let e = error_of("\"decay.b_fraction\" = [0.0, 0.25]", "\"tasks[7].length\" = [3]");
    assert!(e.contains("index 7"), "{e}");
    let e = error_of("b = \"reverse\"", "b = \"sort\"");
    assert!(e.contains("decay.b") && e.contains("unknown task"), "{e}");
    let e = error_of("vocab = 12\n\n[[tasks]]", "vocab = 12\nwidht = 3\n\n[[tasks]]");
    assert!(e.contains(&format!("exp.toml:{}:", line_with("vocab = 12") + 1)) && e.contains("widht"), "{e}");
    let e = error_of("template = \"decay\"", "template = \"grow\"");
    assert!(e.contains("template") && e.contains("decay"), "{e}");
}

/// A cell's metrics.csv rows in (step, task, metric) order.
fn sorted_metrics(cell: &Path) -> Vec<(u64, String, String, u64)> {
    let mut rows: Vec<_> = read_csv(&cell.join("metrics.csv"))
        .unwrap()
        .into_iter()
        .map(|r| (r.step, r.task, r.metric, r.value.to_bits()))
        .collect();
    rows.sort();
    rows
}

#[test]
fn run_skips_finished_cells_runs_one_cell_on_request_and_resumes_an_interrupted_cell_bit_exactly() {
    let tmp = tempfile::tempdir().unwrap();
    let path = experiment(tmp.path(), &EXPERIMENT.replace("\"decay.b_fraction\" = [0.0, 0.25]\n", ""));
    let (exp, first) = run(&path, &Options { cell: Some(1), ..Default::default() }).unwrap();
    assert_eq!(first.ran, ["c001_seed-1"]);
    let (_, all) = run(&path, &Options::default()).unwrap();
    assert_eq!(
        (all.ran.clone(), all.skipped.clone()),
        (vec!["c000_seed-0".to_string()], vec!["c001_seed-1".to_string()])
    );
    assert!(all.failed.is_empty());

    // Interrupt cell 0 after the fact: drop its checkpoints after step 40 and mark it running.
    let cell = exp.cells_dir().join("c000_seed-0");
    let finished = sorted_metrics(&cell);
    for (step, dir) in checkpoint::list(&cell.join("checkpoints")) {
        if step > 40 {
            std::fs::remove_dir_all(dir).unwrap();
        }
    }
    Store::open(&exp.db()).unwrap().set_status("c000_seed-0", "running").unwrap();
    let (_, again) = run(&path, &Options::default()).unwrap();
    assert_eq!(again.ran, ["c000_seed-0"]);
    let resumed = sorted_metrics(&cell);
    assert_eq!(resumed.len(), finished.len());
    assert!(resumed == finished, "resuming reproduces every metric bit for bit");
    assert!(exp.root.join("plan.json").is_file());
    let rows = Store::open(&exp.db()).unwrap().metrics("c001_seed-1").unwrap();
    assert!(rows.iter().any(|r| r.task == "reverse" && r.metric == "forgetting_kl"));
}

#[test]
fn the_decay_report_draws_curves_fits_and_tables_from_the_runs_and_can_be_rewritten_from_the_store() {
    let tmp = tempfile::tempdir().unwrap();
    let text = EXPERIMENT
        .replace("\"decay.b_fraction\" = [0.0, 0.25]", "\"model.scale\" = [\"100k\", \"300k\"]")
        .replace("after_evals = 4", "after_evals = 8");
    let path = experiment(tmp.path(), &text);
    vestige::commands::experiment::run(&path, &Options::default()).unwrap();
    let report = tmp.path().join("decay-test").join("report");
    let html = std::fs::read_to_string(report.join("index.html")).unwrap();
    assert!(html.contains("reverse: loss") && html.contains("<svg"), "decay curves are drawn");
    assert!(html.contains("Half-life against scale"), "the scaling section is drawn");
    let fits = std::fs::read_to_string(report.join("fits.csv")).unwrap();
    assert_eq!(fits.lines().count(), 1 + 4, "a header and one row per cell:\n{fits}");
    assert!(fits.lines().nth(1).unwrap().starts_with("c000_scale-100k_seed-0,scale=100k,0,"), "{fits}");
    // Every cell's start value is its end-of-phase-1 evaluation of B, read from the store.
    let store = Store::open(&tmp.path().join("decay-test").join("vestige.db")).unwrap();
    let start = store
        .metrics("c000_scale-100k_seed-0")
        .unwrap()
        .into_iter()
        .find(|r| r.phase == 1 && r.task == "reverse" && r.metric == "loss")
        .unwrap()
        .value;
    assert!(fits.lines().nth(1).unwrap().contains(&format!(",{start:.4},")), "{fits}");
    let summary = std::fs::read_to_string(report.join("summary.md")).unwrap();
    assert!(summary.contains("| condition |"));
    assert_tables_are_rectangular(&summary);
    std::fs::remove_dir_all(&report).unwrap();
    vestige::commands::experiment::report(&tmp.path().join("decay-test")).unwrap();
    assert_eq!(
        std::fs::read_to_string(report.join("index.html")).unwrap(),
        html,
        "the report is a function of the store"
    );
}

/// Every row of every Markdown table in `md` has as many cells as the table's header.
fn assert_tables_are_rectangular(md: &str) {
    let cells = |line: &str| line.replace("\\|", "").matches('|').count();
    let mut header = None;
    for line in md.lines() {
        match (line.starts_with('|'), header) {
            (false, _) => header = None,
            (true, None) => header = Some(cells(line)),
            (true, Some(n)) => assert_eq!(cells(line), n, "row and header differ in width: {line}"),
        }
    }
}

#[test]
fn a_finished_cell_whose_config_changed_is_reported_and_kept_not_rerun() {
    let tmp = tempfile::tempdir().unwrap();
    let text = EXPERIMENT.replace("\"decay.b_fraction\" = [0.0, 0.25]\n", "");
    let path = experiment(tmp.path(), &text);
    let (_, first) = run(&path, &Options { cell: Some(0), ..Default::default() }).unwrap();
    assert_eq!(first.ran, ["c000_seed-0"]);
    experiment(tmp.path(), &text.replace("eval_samples = 8", "eval_samples = 9"));
    let (_, again) = run(&path, &Options { cell: Some(0), ..Default::default() }).unwrap();
    assert!(again.ran.is_empty());
    assert_eq!(again.failed.len(), 1);
    assert!(again.failed[0].1.contains("finished under config hash"), "{}", again.failed[0].1);
}
