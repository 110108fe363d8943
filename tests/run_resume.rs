//! Runs end to end through the binary: a run killed with SIGKILL (twice, at arbitrary
//! moments, possibly mid-checkpoint) and resumed produces a metrics CSV byte-identical to an
//! uninterrupted run's and the same final weights; a diverging run stops with exit code 3 and keeps
//! its last good checkpoint.

mod common;

use common::RunToml;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};
use vestige::store::read_csv;
use vestige::train::checkpoint;

const BIN: &str = env!("CARGO_BIN_EXE_vestige");

/// A two-phase run (full weights with dropout and clipping, then LoRA) in `out`.
fn config(out: &Path, extra: &str) -> PathBuf {
    RunToml::new("r")
        .set("seed", 3)
        .out_dir(out)
        .model(32, 2, 4, 16)
        .sequence_task("copy", 6, 16)
        .table("[checkpoint]", "every = 7\nkeep_last = 2")
        .phase(
            "one",
            &format!(
                "steps = 1500\nbatch_size = 8\ngrad_accum = 2\nmixture = {{ copy = 1.0 }}\ndropout_resid = 0.1\n\
                 grad_clip = 1.0\nschedule = {{ kind = \"cosine\", warmup_steps = 20 }}\n\
                 eval = {{ every = 50, samples = 16 }}\n{extra}"
            ),
        )
        .phase(
            "two",
            "steps = 500\nbatch_size = 8\ntrainable = \"lora\"\nlora = { rank = 2 }\nmixture = { copy = 1.0 }\n\
             eval = { log_points = 6, samples = 16 }",
        )
        .write(out, "run.toml")
}

fn vestige(args: &[&str]) -> std::process::Output {
    Command::new(BIN).args(["--threads", "2"]).args(args).output().unwrap()
}

/// Starts `args`, waits until a checkpoint at or after `step` exists, then SIGKILLs it.
fn kill_after_checkpoint(args: &[&str], ckpts: &Path, step: u64) {
    let mut child = Command::new(BIN)
        .args(["--threads", "2"])
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let start = Instant::now();
    while checkpoint::list(ckpts).last().is_none_or(|(s, _)| *s < step) {
        assert!(child.try_wait().unwrap().is_none(), "the run ended before it could be killed; make it longer");
        assert!(start.elapsed() < Duration::from_secs(120), "no checkpoint at step {step} after 2 minutes");
        std::thread::sleep(Duration::from_millis(2));
    }
    assert!(child.try_wait().unwrap().is_none(), "the run ended before it could be killed; make it longer");
    child.kill().unwrap();
    child.wait().unwrap();
}

fn final_weights(run_dir: &Path) -> Vec<u32> {
    let (_, last) = checkpoint::list(&run_dir.join("checkpoints")).pop().unwrap();
    let model = vestige::engine::model::Model::load(&last.join("model")).unwrap().model;
    model.weights.iter().map(|w| w.to_bits()).collect()
}

#[test]
fn killed_and_resumed_run_matches_an_uninterrupted_run_bit_for_bit() {
    let tmp = tempfile::tempdir().unwrap();
    let (a, b) = (tmp.path().join("a"), tmp.path().join("b"));
    let out = vestige(&["train", config(&a, "").to_str().unwrap()]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));

    let cfg_b = config(&b, "");
    let run_b = b.join("r");
    kill_after_checkpoint(&["train", cfg_b.to_str().unwrap()], &run_b.join("checkpoints"), 300);
    kill_after_checkpoint(&["resume", run_b.to_str().unwrap()], &run_b.join("checkpoints"), 1200);
    let out = vestige(&["resume", run_b.to_str().unwrap()]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));

    // A resumed run's CSV is rolled back to the checkpoint it resumes from: the rows come in
    // the same order, to the byte.
    let (csv_a, csv_b) = (a.join("r/metrics.csv"), run_b.join("metrics.csv"));
    let (ma, mb) = (read_csv(&csv_a).unwrap(), read_csv(&csv_b).unwrap());
    assert!(ma.len() > 2000, "the uninterrupted run logged {} rows", ma.len());
    assert_eq!(ma.len(), mb.len(), "row counts differ");
    for (x, y) in ma.iter().zip(&mb) {
        assert_eq!((x.phase, x.step, x.tokens, &x.task, &x.metric), (y.phase, y.step, y.tokens, &y.task, &y.metric));
        assert_eq!(x.value.to_bits(), y.value.to_bits(), "{} {} at step {} differs", x.task, x.metric, x.step);
    }
    assert!(std::fs::read(csv_a).unwrap() == std::fs::read(csv_b).unwrap(), "metrics.csv differs byte for byte");
    assert!(final_weights(&a.join("r")) == final_weights(&run_b), "final weights differ");

    // `vestige eval` on the final checkpoint reproduces the run's last logged evaluation.
    let out = vestige(&["eval", a.join("r").to_str().unwrap(), "--samples", "16"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let printed = String::from_utf8_lossy(&out.stdout);
    let evaluated: f64 = printed.lines().find_map(|l| l.strip_prefix("copy/loss = ")).unwrap().parse().unwrap();
    let logged = ma.iter().rev().find(|r| r.task == "copy" && r.metric == "loss").unwrap().value;
    assert!((evaluated - logged).abs() < 1e-5, "eval printed {evaluated}, the run logged {logged}");
}

#[test]
fn resume_refuses_a_changed_config() {
    let tmp = tempfile::tempdir().unwrap();
    let cfg = config(tmp.path(), "");
    let run = tmp.path().join("r");
    kill_after_checkpoint(&["train", cfg.to_str().unwrap()], &run.join("checkpoints"), 14);
    let text = std::fs::read_to_string(run.join("config.toml")).unwrap().replace("seed = 3", "seed = 4");
    std::fs::write(run.join("config.toml"), text).unwrap();
    let out = vestige(&["resume", run.to_str().unwrap()]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("config hash"), "{}", String::from_utf8_lossy(&out.stderr));
}

#[test]
fn a_corrupted_checkpoint_is_refused_not_loaded() {
    let tmp = tempfile::tempdir().unwrap();
    let cfg = config(tmp.path(), "");
    let run = tmp.path().join("r");
    kill_after_checkpoint(&["train", cfg.to_str().unwrap()], &run.join("checkpoints"), 14);
    let (_, last) = checkpoint::list(&run.join("checkpoints")).pop().unwrap();
    let file = last.join("model/model.safetensors");
    let mut bytes = std::fs::read(&file).unwrap();
    let n = bytes.len();
    bytes[n - 5] ^= 0xff;
    std::fs::write(&file, bytes).unwrap();
    let out = vestige(&["resume", run.to_str().unwrap()]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("model.safetensors") && err.contains("corrupt"), "{err}");
}

#[test]
fn a_diverging_run_exits_3_and_keeps_its_last_good_checkpoint() {
    let tmp = tempfile::tempdir().unwrap();
    let cfg = config(tmp.path(), "optimizer = { kind = \"sgd\", lr = 1e12 }");
    let out = vestige(&["train", cfg.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(3), "{}", String::from_utf8_lossy(&out.stderr));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("diverged") && err.contains("not finite"), "{err}");
    let ckpts = checkpoint::list(&tmp.path().join("r/checkpoints"));
    assert!(!ckpts.is_empty(), "the initial checkpoint is kept");
    for (_, dir) in ckpts {
        checkpoint::verify(&dir).unwrap();
    }
}
