//! `vestige run --backend slurm` against a real Slurm cluster (CI starts a one-node one with
//! scripts/slurm/start-local-cluster.sh): an array's report equals a local run's bits, a
//! cancelled task shows as failed and a resubmission completes it, a task sent USR1
//! checkpoints, is requeued and resumes bit-identically, a two-rung halving search goes out
//! whole and selects as a local search does, and bad input gets clear errors.
//! Without a cluster these tests skip with a printed reason, unless VESTIGE_REQUIRE_SLURM=1.

mod common;

use common::{output_text as text, tiny_decay_experiment as experiment};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};
use vestige::store::Store;

/// Whether a Slurm cluster answers; prints why not (or fails under VESTIGE_REQUIRE_SLURM=1).
fn cluster() -> bool {
    let up = Command::new("sinfo").args(["-h", "-o", "%t"]).output();
    let reason = match up {
        Ok(o) if o.status.success() && !o.stdout.is_empty() => return true,
        Ok(o) => format!("`sinfo` failed: {}", String::from_utf8_lossy(&o.stderr).trim()),
        Err(e) => format!("no `sinfo` on PATH ({e})"),
    };
    let reason = format!("{reason}; start a local cluster with scripts/slurm/start-local-cluster.sh (as root)");
    if std::env::var("VESTIGE_REQUIRE_SLURM").is_ok_and(|v| v == "1") {
        panic!("VESTIGE_REQUIRE_SLURM=1, but there is no Slurm cluster: {reason}");
    }
    eprintln!("skipping a Slurm test: {reason}");
    false
}

fn vestige(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_vestige")).args(args).output().unwrap()
}

/// Runs `args`, failing the test on a non-zero exit; returns the output.
fn ok(args: &[&str]) -> String {
    let out = vestige(args);
    assert!(out.status.success(), "vestige {}:\n{}", args.join(" "), text(&out));
    text(&out)
}

/// The job id a submission printed.
fn job_id(out: &str) -> String {
    let line = out.lines().find(|l| l.starts_with("submitted job ")).unwrap_or_else(|| panic!("no job id in:\n{out}"));
    line["submitted job ".len()..].split_whitespace().next().unwrap().to_string()
}

/// Polls `f` every 200 ms until it is true; fails after `secs` seconds, saying `what`.
fn until(secs: u64, what: &str, mut f: impl FnMut() -> bool) {
    let start = Instant::now();
    while !f() {
        assert!(start.elapsed() < Duration::from_secs(secs), "timed out waiting until {what}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Every metric of every run in the store at `db`, with values as bits.
fn metric_bits(db: &Path) -> Vec<(String, u32, u64, String, String, u64)> {
    let store = Store::open(db).unwrap();
    let mut out = Vec::new();
    for run in store.runs().unwrap() {
        assert_eq!(run.status, "done", "{}", run.run);
        for r in store.metrics(&run.run).unwrap() {
            out.push((r.run, r.phase, r.step, r.task, r.metric, r.value.to_bits()));
        }
    }
    out.sort();
    out
}

#[test]
fn an_array_finishes_with_a_report_equal_to_a_local_runs_bits_and_bad_input_is_refused() {
    if !cluster() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let local = experiment(&tmp.path().join("local"), "parity", "[0, 1]", 60);
    let slurm = experiment(&tmp.path().join("slurm"), "parity", "[0, 1]", 60);
    ok(&["run", local.to_str().unwrap()]);
    let out = ok(&["run", slurm.to_str().unwrap(), "--backend", "slurm", "--max-parallel", "2", "--wait"]);
    assert!(out.contains("report: "), "{out}");
    let (a, b) = (tmp.path().join("local/parity"), tmp.path().join("slurm/parity"));
    for file in ["fits.csv", "summary.md", "index.html"] {
        let read = |d: &Path| std::fs::read_to_string(d.join("report").join(file)).unwrap();
        assert!(read(&a) == read(&b), "report/{file} differs between the local and the Slurm run");
    }
    assert_eq!(metric_bits(&a.join("vestige.db")), metric_bits(&b.join("vestige.db")));
    let script = std::fs::read_to_string(b.join("slurm/array.sbatch")).unwrap();
    assert!(script.contains("#SBATCH --requeue") && script.contains("#SBATCH --signal=B:USR1@90"), "{script}");
    let status = ok(&["status", b.to_str().unwrap()]);
    assert!(status.contains("2 cells: 2 done"), "{status}");
    // Merging is idempotent: the report again, from the merged store, is the same.
    let before = std::fs::read_to_string(b.join("report/summary.md")).unwrap();
    ok(&["report", b.to_str().unwrap()]);
    assert_eq!(std::fs::read_to_string(b.join("report/summary.md")).unwrap(), before);

    let out = vestige(&["run", slurm.to_str().unwrap(), "--backend", "slurm", "--partition", "no-such-partition"]);
    assert!(!out.status.success());
    assert!(text(&out).contains("unknown partition \"no-such-partition\"; this cluster has: "), "{}", text(&out));
    let changed = std::fs::read_to_string(&slurm).unwrap().replace("eval_samples = 8", "eval_samples = 9");
    std::fs::write(&slurm, changed).unwrap();
    let out = vestige(&["run", slurm.to_str().unwrap(), "--backend", "slurm", "--resubmit", "all-unfinished"]);
    assert!(!out.status.success());
    assert!(text(&out).contains("the experiment changed since it was submitted"), "{}", text(&out));
}

#[test]
fn a_cancelled_task_shows_as_failed_and_resubmitting_the_failed_cells_completes_them() {
    if !cluster() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let path = experiment(tmp.path(), "cancel", "[0, 1]", 1500);
    let dir = tmp.path().join("cancel");
    let job = job_id(&ok(&["run", path.to_str().unwrap(), "--backend", "slurm"]));
    let log = dir.join("slurm/logs/cell-0.log");
    until(120, "cell 0 runs", || std::fs::read_to_string(&log).is_ok_and(|l| l.contains("params")));
    let cancel = Command::new("scancel").arg(format!("{job}_0")).output().unwrap();
    assert!(cancel.status.success(), "{}", text(&cancel));
    let mut status = String::new();
    until(180, "cell 0 fails and cell 1 finishes", || {
        status = ok(&["status", dir.to_str().unwrap()]);
        status.contains("1 done") && status.contains("1 failed")
    });
    assert!(status.contains("c000_seed-0") && status.contains("failed (exit code 143)"), "{status}");
    let out = ok(&["run", path.to_str().unwrap(), "--backend", "slurm", "--resubmit", "failed", "--wait"]);
    assert!(out.contains("(1 cells)"), "only the failed cell goes out again:\n{out}");
    let status = ok(&["status", dir.to_str().unwrap()]);
    assert!(status.contains("2 cells: 2 done"), "{status}");
    let out = vestige(&["run", path.to_str().unwrap(), "--backend", "slurm", "--resubmit", "failed"]);
    assert!(text(&out).contains("nothing to resubmit"), "{}", text(&out));
}

#[test]
fn a_task_sent_usr1_checkpoints_is_requeued_and_resumes_bit_identically() {
    if !cluster() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let local = experiment(&tmp.path().join("local"), "usr1", "[0]", 1500);
    let slurm = experiment(&tmp.path().join("slurm"), "usr1", "[0]", 1500);
    let dir = tmp.path().join("slurm/usr1");
    let job = job_id(&ok(&["run", slurm.to_str().unwrap(), "--backend", "slurm"]));
    let csv = dir.join("cells/c000_seed-0/metrics.csv");
    until(120, "the cell is past its first steps", || {
        std::fs::read_to_string(&csv).is_ok_and(|c| c.lines().count() > 60)
    });
    let signal = Command::new("scancel").args(["--signal=USR1", "--batch", &format!("{job}_0")]).output().unwrap();
    assert!(signal.status.success(), "{}", text(&signal));
    ok(&["run", local.to_str().unwrap()]);
    until(240, "the requeued cell finishes", || ok(&["status", dir.to_str().unwrap()]).contains("1 cells: 1 done"));
    let log = std::fs::read_to_string(dir.join("slurm/logs/cell-0.log")).unwrap();
    assert!(log.contains("stopped by SIGUSR1 at step"), "{log}");
    assert!(log.contains("restart 1"), "the task was requeued:\n{log}");
    ok(&["report", dir.to_str().unwrap()]);
    assert_eq!(metric_bits(&tmp.path().join("local/usr1/vestige.db")), metric_bits(&dir.join("vestige.db")));
}

#[test]
fn without_sbatch_on_path_a_submission_says_what_is_missing() {
    let tmp = tempfile::tempdir().unwrap();
    let path = experiment(tmp.path(), "nosbatch", "[0]", 10);
    let out = Command::new(env!("CARGO_BIN_EXE_vestige"))
        .args(["run", path.to_str().unwrap(), "--backend", "slurm"])
        .env("PATH", tmp.path())
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(text(&out).contains("`sbatch` is not on PATH: run this on a Slurm login node"), "{}", text(&out));
}

/// `experiments/backdoor-small.toml` under `dir` as a tiny two-rung halving search over three
/// planting learning rates (the same as the local halving test in tests/backdoor_study.rs).
fn tiny_search(dir: &Path) -> PathBuf {
    std::fs::create_dir_all(dir).unwrap();
    let text = std::fs::read_to_string("experiments/backdoor-small.toml").unwrap();
    let sweep = "\"backdoor.plant_optimizer|backdoor.plant_lr\" = [[\"adamw\", 3e-3], [\"sgd\", 0.3]]\nseed = [0, 1]";
    let grid =
        "\"backdoor.plant_lr\" = [0.0003, 0.003, 0.03]\nseed = [0]\n\n[search]\naxes = [\"backdoor.plant_lr\"]\n\
                budget_cells = 4\nmethod = \"halving\"\nrungs = 2\nseed = 3";
    let text = text
        .replacen("threads = 2", &format!("threads = 2\nout_dir = \"{}\"", dir.display()), 1)
        .replace(sweep, grid)
        .replace("pretrain_steps = 150", "pretrain_steps = 60")
        .replace("continue_steps = 300", "continue_steps = 90");
    let path = dir.join("exp.toml");
    std::fs::write(&path, text).unwrap();
    path
}

#[test]
fn a_two_rung_halving_search_goes_out_whole_and_promotes_what_a_local_search_does() {
    if !cluster() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let (local, slurm) = (tiny_search(&tmp.path().join("local")), tiny_search(&tmp.path().join("slurm")));
    let search = "maximize=backdoor.half_life";
    ok(&["run", local.to_str().unwrap(), "--search", search]);
    let out = ok(&["run", slurm.to_str().unwrap(), "--backend", "slurm", "--search", search, "--wait"]);
    assert!(out.contains("(3 cells)") && out.contains("(the selection of rung 1"), "{out}");
    let (a, b) = (tmp.path().join("local/backdoor-small"), tmp.path().join("slurm/backdoor-small"));
    for file in ["fits.csv", "summary.md"] {
        let read = |d: &Path| std::fs::read_to_string(d.join("report").join(file)).unwrap();
        assert!(read(&a) == read(&b), "report/{file} differs between the local and the Slurm search");
    }
    assert_eq!(metric_bits(&a.join("vestige.db")), metric_bits(&b.join("vestige.db")), "the same cells, bit for bit");
    let rung1: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(b.join("slurm/rung-1.json")).unwrap()).unwrap();
    let promoted = rung1["cells"].as_array().unwrap();
    assert_eq!(promoted.len(), 1, "{rung1}");
    let id = Store::open(&b.join("vestige.db")).unwrap().runs().unwrap().into_iter().map(|r| r.run);
    let full: Vec<String> = id.filter(|r| !r.ends_with("_rung0")).collect();
    assert_eq!(full.len(), 1, "only the promoted configuration ran in full: {full:?}");
    assert!(full[0].starts_with(&format!("c{:03}_", promoted[0].as_u64().unwrap())), "{full:?} vs {rung1}");
    let status = ok(&["status", b.to_str().unwrap()]);
    assert!(status.contains("4 cells: 4 done") && status.contains("rung 1: 1 configurations selected"), "{status}");
    let out = vestige(&["run", slurm.to_str().unwrap(), "--backend", "slurm", "--resubmit", "failed"]);
    assert!(text(&out).contains("--resubmit of a search is not supported yet"), "{}", text(&out));
}
