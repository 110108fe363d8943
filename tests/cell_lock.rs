//! One runner per cell: a second `vestige run` of the same experiment skips the cells the
//! first one is running (instead of training them twice), and a lock left by a dead runner
//! is taken over.

mod common;

use common::{output_text as text, tiny_decay_experiment};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};
use vestige::store::read_csv;

fn vestige(args: &[&str]) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_vestige"));
    c.args(args).stdout(Stdio::piped()).stderr(Stdio::piped());
    c
}

#[test]
fn a_second_runner_skips_the_cells_the_first_is_running_and_no_cell_trains_twice() {
    let tmp = tempfile::tempdir().unwrap();
    let path = tiny_decay_experiment(tmp.path(), "lock-test", "[0, 1]", 300);
    let cells = tmp.path().join("lock-test").join("cells");
    let first = vestige(&["run", path.to_str().unwrap()]).spawn().unwrap();
    // Wait until the first runner holds both cells' locks.
    let held = |id: &str| std::fs::read_to_string(cells.join(id).join(".lock")).is_ok_and(|s| !s.trim().is_empty());
    let started = Instant::now();
    while !(held("c000_seed-0") && held("c001_seed-1")) {
        assert!(started.elapsed() < Duration::from_secs(60), "the first runner never locked its cells");
        std::thread::sleep(Duration::from_millis(20));
    }
    let second = vestige(&["run", path.to_str().unwrap()]).output().unwrap();
    let first = first.wait_with_output().unwrap();
    assert!(first.status.success(), "{}", text(&first));
    assert!(second.status.success(), "{}", text(&second));
    let (first, second) = (text(&first), text(&second));
    assert!(first.contains("2 cells ran"), "{first}");
    assert!(second.contains("0 cells ran"), "{second}");
    assert_eq!(second.matches("is running in pid ").count(), 2, "both cells are reported busy:\n{second}");
    for id in ["c000_seed-0", "c001_seed-1"] {
        let rows = read_csv(&cells.join(id).join("metrics.csv")).unwrap();
        let mut keys: Vec<_> = rows.iter().map(|r| (r.phase, r.step, r.task.clone(), r.metric.clone())).collect();
        keys.sort();
        keys.dedup();
        assert_eq!(keys.len(), rows.len(), "cell {id} logged rows twice");
        let lock = std::fs::read_to_string(cells.join(id).join(".lock")).unwrap();
        assert!(lock.is_empty(), "a released lock names no holder: {lock:?}");
    }
}

#[test]
fn a_lock_left_by_a_dead_runner_is_taken_over() {
    let tmp = tempfile::tempdir().unwrap();
    let path = tiny_decay_experiment(tmp.path(), "lock-test", "[0, 1]", 300);
    let cell = tmp.path().join("lock-test").join("cells").join("c000_seed-0");
    std::fs::create_dir_all(&cell).unwrap();
    // What a killed runner leaves: its name in the file, but no flock (the kernel dropped it).
    std::fs::write(cell.join(".lock"), "pid 4194304@gone").unwrap();
    let out = vestige(&["run", path.to_str().unwrap(), "--cell", "0"]).output().unwrap();
    let out_text = text(&out);
    assert!(out.status.success(), "{out_text}");
    assert!(out_text.contains("1 cells ran"), "{out_text}");
    assert!(out_text.contains("took over the lock that pid 4194304@gone left"), "{out_text}");
}
