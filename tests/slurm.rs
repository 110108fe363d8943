//! `vestige run --backend slurm` against a real Slurm cluster (CI starts a one-node one with
//! scripts/slurm/start-local-cluster.sh): an array's report equals a local run's bits, a
//! cancelled task shows as failed and a resubmission completes it, a task sent USR1
//! checkpoints, is requeued and resumes bit-identically, and bad input gets clear errors.
//! Without a cluster these tests skip with a printed reason, unless VESTIGE_REQUIRE_SLURM=1.

mod common;

use common::{output_text as text, tiny_decay_experiment as experiment};
use std::path::Path;
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
