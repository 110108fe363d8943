//! The run store (`vestige::store`): SQLite round trips, resume semantics, concurrent
//! writers in separate OS processes, and the per-run CSV.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use vestige::store::{read_csv, rewrite_csv, Begun, CsvLog, MetricRow, Store, StoreError, CSV_HEADER};

fn row(run: &str, phase: u32, step: u64, task: &str, metric: &str, value: f64) -> MetricRow {
    MetricRow { run: run.into(), phase, step, tokens: step * 1024, task: task.into(), metric: metric.into(), value }
}

/// Compares rows exactly, treating NaN as equal to NaN (bitwise for everything else).
fn assert_rows_eq(got: &[MetricRow], want: &[MetricRow]) {
    assert_eq!(got.len(), want.len(), "row counts differ:\n got {got:?}\nwant {want:?}");
    for (g, w) in got.iter().zip(want) {
        let same_value = (g.value.is_nan() && w.value.is_nan()) || g.value.to_bits() == w.value.to_bits();
        assert!(
            same_value && MetricRow { value: 0.0, ..g.clone() } == MetricRow { value: 0.0, ..w.clone() },
            "row differs:\n got {g:?}\nwant {w:?}"
        );
    }
}

fn unix_now() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs() as i64
}

#[test]
fn round_trip_runs_phases_and_metrics_in_deterministic_order() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("nested/dir/vestige.db");
    let store = Store::open(&path).unwrap();
    assert_eq!(store.path(), path);
    let before = unix_now();
    assert_eq!(store.begin_run("b-run", "[model]\nd = 64\n", "hash-b").unwrap(), Begun::Created);
    assert_eq!(store.begin_run("a-run", "[model]\nd = 32\n", "hash-a").unwrap(), Begun::Created);
    store.record_phase("a-run", 1, "decay", 100).unwrap();
    store.record_phase("a-run", 0, "plant", 0).unwrap();
    store.set_status("b-run", "failed: out of memory").unwrap();

    // Logged out of order, across two calls; values include NaN, ±inf and the extremes of f64.
    let rows = [
        row("a-run", 1, 200, "copy", "loss", 0.5),
        row("a-run", 0, 10, "copy", "loss", f64::NAN),
        row("a-run", 0, 10, "backdoor", "asr", f64::INFINITY),
        row("a-run", 0, 10, "backdoor", "loss", f64::NEG_INFINITY),
        row("a-run", 1, 100, "copy", "loss", 1e-300),
        row("a-run", 0, 100, "copy", "loss", 1.7976931348623157e308),
        row("a-run", 0, 100, "copy", "acc", 0.1),
        row("b-run", 0, 5, "copy", "loss", 3.25),
    ];
    store.log_metrics(&rows[..3]).unwrap();
    store.log_metrics(&rows[3..]).unwrap();

    let want_a = vec![
        row("a-run", 0, 10, "backdoor", "asr", f64::INFINITY),
        row("a-run", 0, 10, "backdoor", "loss", f64::NEG_INFINITY),
        row("a-run", 0, 10, "copy", "loss", f64::NAN),
        row("a-run", 0, 100, "copy", "acc", 0.1),
        row("a-run", 0, 100, "copy", "loss", 1.7976931348623157e308),
        row("a-run", 1, 100, "copy", "loss", 1e-300),
        row("a-run", 1, 200, "copy", "loss", 0.5),
    ];
    assert_rows_eq(&store.metrics("a-run").unwrap(), &want_a);
    assert_rows_eq(&store.metrics("b-run").unwrap(), &[row("b-run", 0, 5, "copy", "loss", 3.25)]);
    assert!(store.metrics("no-such-run").unwrap().is_empty());

    assert_eq!(store.phases("a-run").unwrap(), vec![(0, "plant".to_string(), 0), (1, "decay".to_string(), 100)]);
    assert!(store.phases("b-run").unwrap().is_empty());

    // Everything survives closing and reopening.
    drop(store);
    let store = Store::open(&path).unwrap();
    assert_rows_eq(&store.metrics("a-run").unwrap(), &want_a);
    let runs = store.runs().unwrap();
    assert_eq!(runs.len(), 2);
    let names: Vec<&str> = runs.iter().map(|r| r.run.as_str()).collect();
    // Same second: ordered by id; b-run was created first, so a later second puts it first.
    assert!(names == ["a-run", "b-run"] || names == ["b-run", "a-run"], "{names:?}");
    let a = store.run_info("a-run").unwrap().unwrap();
    assert_eq!((a.config_hash.as_str(), a.status.as_str()), ("hash-a", "running"));
    assert!(a.created_unix >= before && a.created_unix <= unix_now() + 1);
    let b = store.run_info("b-run").unwrap().unwrap();
    assert_eq!(b.status, "failed: out of memory");
    assert_eq!(store.config_toml("b-run").unwrap().as_deref(), Some("[model]\nd = 64\n"));
    assert_eq!(store.run_info("nope").unwrap(), None);
    assert_eq!(store.config_toml("nope").unwrap(), None);
}

#[test]
fn relogging_a_row_replaces_it() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&dir.path().join("vestige.db")).unwrap();
    store.begin_run("r", "", "h").unwrap();
    store.log_metrics(&[row("r", 0, 1, "t", "loss", 2.0), row("r", 0, 2, "t", "loss", 1.0)]).unwrap();
    let mut again = row("r", 0, 1, "t", "loss", 1.5);
    again.tokens = 7;
    store.log_metrics(&[again.clone()]).unwrap();
    store.log_metrics(&[again.clone()]).unwrap();
    assert_rows_eq(&store.metrics("r").unwrap(), &[again, row("r", 0, 2, "t", "loss", 1.0)]);
}

#[test]
fn begin_run_is_idempotent_for_the_same_hash_and_refuses_another() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("vestige.db");
    let store = Store::open(&path).unwrap();
    assert_eq!(store.begin_run("run-1", "lr = 1e-3", "abc123").unwrap(), Begun::Created);
    store.set_status("run-1", "failed: killed").unwrap();
    let created = store.run_info("run-1").unwrap().unwrap().created_unix;
    assert_eq!(
        store.begin_run("run-1", "lr = 1e-3", "abc123").unwrap(),
        Begun::Resumed { previous_status: "failed: killed".into() }
    );
    let info = store.run_info("run-1").unwrap().unwrap();
    assert_eq!((info.status.as_str(), info.created_unix), ("running", created));
    assert_eq!(store.runs().unwrap().len(), 1);

    let err = store.begin_run("run-1", "lr = 3e-3", "def456").unwrap_err();
    assert!(matches!(err, StoreError::ConfigHashMismatch { .. }), "{err:?}");
    let msg = err.to_string();
    for needle in ["run-1", "abc123", "def456", path.to_str().unwrap()] {
        assert!(msg.contains(needle), "{msg:?} lacks {needle:?}");
    }
    // The refused call changed nothing.
    assert_eq!(store.config_toml("run-1").unwrap().as_deref(), Some("lr = 1e-3"));
    assert_eq!(store.run_info("run-1").unwrap().unwrap().config_hash, "abc123");
}

#[test]
fn record_phase_is_idempotent_and_refuses_a_different_phase() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&dir.path().join("vestige.db")).unwrap();
    store.begin_run("r", "", "h").unwrap();
    store.record_phase("r", 0, "plant", 0).unwrap();
    store.record_phase("r", 0, "plant", 0).unwrap();
    assert_eq!(store.phases("r").unwrap(), vec![(0, "plant".to_string(), 0)]);
    let err = store.record_phase("r", 0, "decay", 0).unwrap_err();
    assert!(matches!(err, StoreError::PhaseMismatch { .. }), "{err:?}");
    let err = store.record_phase("r", 0, "plant", 5).unwrap_err();
    assert!(err.to_string().contains("\"plant\" starting at step 0"), "{err}");
    assert_eq!(store.phases("r").unwrap(), vec![(0, "plant".to_string(), 0)]);
}

#[test]
fn unknown_runs_and_out_of_range_integers_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&dir.path().join("vestige.db")).unwrap();
    store.begin_run("r", "", "h").unwrap();
    assert!(matches!(store.set_status("ghost", "done"), Err(StoreError::UnknownRun { .. })));
    assert!(matches!(store.record_phase("ghost", 0, "p", 0), Err(StoreError::UnknownRun { .. })));
    assert!(matches!(store.truncate_after("ghost", 0), Err(StoreError::UnknownRun { .. })));
    // One unknown run in a batch rolls back the whole batch.
    let err = store.log_metrics(&[row("r", 0, 1, "t", "m", 1.0), row("ghost", 0, 1, "t", "m", 1.0)]).unwrap_err();
    assert!(err.to_string().contains("ghost"), "{err}");
    assert!(store.metrics("r").unwrap().is_empty());

    let mut big = row("r", 0, 1, "t", "m", 1.0);
    big.step = u64::MAX;
    let err = store.log_metrics(&[big]).unwrap_err();
    assert!(matches!(err, StoreError::OutOfRange { what: "step", .. }), "{err:?}");
    let mut largest = row("r", 0, i64::MAX as u64, "t", "m", 1.0);
    largest.tokens = i64::MAX as u64;
    store.log_metrics(&[largest.clone()]).unwrap();
    assert_rows_eq(&store.metrics("r").unwrap(), &[largest]);
}

#[test]
fn truncate_after_removes_exactly_the_later_rows() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&dir.path().join("vestige.db")).unwrap();
    store.begin_run("r", "", "h").unwrap();
    store.begin_run("other", "", "h").unwrap();
    let mut rows = Vec::new();
    for step in 1..=20u64 {
        let phase = u32::from(step > 10);
        rows.push(row("r", phase, step, "t", "loss", step as f64));
        rows.push(row("r", phase, step, "t", "acc", f64::NAN));
        rows.push(row("other", 0, step, "t", "loss", step as f64));
    }
    store.log_metrics(&rows).unwrap();
    store.record_phase("r", 1, "decay", 11).unwrap();

    assert_eq!(store.truncate_after("r", 12).unwrap(), 16);
    let want: Vec<MetricRow> = store_order(rows.iter().filter(|r| r.run == "r" && r.step <= 12).cloned().collect());
    assert_rows_eq(&store.metrics("r").unwrap(), &want);
    assert_eq!(store.metrics("other").unwrap().len(), 20, "other runs untouched");
    assert_eq!(store.phases("r").unwrap(), vec![(1, "decay".to_string(), 11)], "phases untouched");
    assert_eq!(store.truncate_after("r", 12).unwrap(), 0);
    assert_eq!(store.truncate_after("r", 20).unwrap(), 0);
    assert_eq!(store.truncate_after("r", 0).unwrap(), 24);
    assert!(store.metrics("r").unwrap().is_empty());
}

/// Sorts rows the way `Store::metrics` orders them.
fn store_order(mut rows: Vec<MetricRow>) -> Vec<MetricRow> {
    rows.sort_by(|a, b| (a.step, a.phase, &a.task, &a.metric).cmp(&(b.step, b.phase, &b.task, &b.metric)));
    rows
}

// ---- concurrent writers -------------------------------------------------------------------

const WRITER_DB: &str = "VESTIGE_STORE_TEST_WRITER_DB";
const WRITER_ID: &str = "VESTIGE_STORE_TEST_WRITER_ID";
const WRITER_START: &str = "VESTIGE_STORE_TEST_WRITER_START_MS";
const WRITERS: usize = 6;
const ROWS_PER_WRITER: u64 = 200;
const ROWS_PER_TX: u64 = 2;

/// The rows writer `id` logs: half to its own run, half to a run all writers share.
fn writer_rows(id: usize) -> Vec<MetricRow> {
    (0..ROWS_PER_WRITER)
        .map(|i| {
            let run = if i % 2 == 0 { format!("own-{id}") } else { "shared".to_string() };
            let mut r = row(&run, (i / 100) as u32, i, &format!("writer-{id}"), "loss", i as f64 + id as f64 / 8.0);
            if i % 37 == 0 {
                r.value = f64::NAN;
            }
            r
        })
        .collect()
}

/// The body of one writer process: opens the (possibly not yet existing) store at the same
/// moment as the others, begins its own run and the shared one, then logs its rows in many
/// small transactions, reading in between. Only runs when spawned by
/// `concurrent_writers_never_lose_rows` (the environment says where); a no-op otherwise.
#[test]
#[ignore = "a child process of concurrent_writers_never_lose_rows"]
fn concurrent_writer_child() {
    let Ok(db) = std::env::var(WRITER_DB) else { return };
    let id: usize = std::env::var(WRITER_ID).unwrap().parse().unwrap();
    let start_ms: u128 = std::env::var(WRITER_START).unwrap().parse().unwrap();
    while SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_millis() < start_ms {
        std::thread::sleep(Duration::from_millis(1));
    }
    let store = Store::open(Path::new(&db)).unwrap();
    store.begin_run("shared", "shared = true", "shared-hash").unwrap();
    store.begin_run(&format!("own-{id}"), "", &format!("hash-{id}")).unwrap();
    store.record_phase("shared", 0, "first", 0).unwrap();
    store.record_phase("shared", 1, "second", 100).unwrap();
    let rows = writer_rows(id);
    for (k, chunk) in rows.chunks(ROWS_PER_TX as usize).enumerate() {
        store.log_metrics(chunk).unwrap();
        if k % 5 == 0 {
            // Reads see this process's own writes so far.
            let logged = (k + 1) * ROWS_PER_TX as usize;
            assert_eq!(store.metrics(&format!("own-{id}")).unwrap().len(), logged.div_ceil(2));
            store.set_status(&format!("own-{id}"), &format!("running chunk {k}")).unwrap();
        }
    }
    store.set_status(&format!("own-{id}"), "done").unwrap();
    println!("writer {id} done");
}

#[test]
fn concurrent_writers_never_lose_rows() {
    let dir = tempfile::tempdir().unwrap();
    let db: PathBuf = dir.path().join("vestige.db");
    let exe = std::env::current_exe().unwrap();
    // All children open the store (which does not exist yet) at the same moment.
    let start_ms = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_millis() + 500;
    let t0 = Instant::now();
    let children: Vec<_> = (0..WRITERS)
        .map(|id| {
            Command::new(&exe)
                .args(["--exact", "concurrent_writer_child", "--ignored", "--nocapture", "--test-threads=1"])
                .env(WRITER_DB, &db)
                .env(WRITER_ID, id.to_string())
                .env(WRITER_START, start_ms.to_string())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    for (id, child) in children.into_iter().enumerate() {
        let out = child.wait_with_output().unwrap();
        assert!(
            out.status.success() && String::from_utf8_lossy(&out.stdout).contains(&format!("writer {id} done")),
            "writer {id} failed: {:?}\n{}\n{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let elapsed = t0.elapsed();
    eprintln!("{WRITERS} writers x {ROWS_PER_WRITER} rows in {elapsed:?}");

    let store = Store::open(&db).unwrap();
    let runs = store.runs().unwrap();
    let names: BTreeSet<String> = runs.iter().map(|r| r.run.clone()).collect();
    let mut want_names: BTreeSet<String> = (0..WRITERS).map(|id| format!("own-{id}")).collect();
    want_names.insert("shared".into());
    assert_eq!(names, want_names);
    for r in &runs {
        let want = if r.run == "shared" { "running" } else { "done" };
        assert_eq!(r.status, want, "{r:?}");
    }
    assert_eq!(store.phases("shared").unwrap(), vec![(0, "first".into(), 0), (1, "second".into(), 100)]);

    let mut total = 0;
    let mut want_shared = Vec::new();
    for id in 0..WRITERS {
        let (own, shared): (Vec<_>, Vec<_>) = writer_rows(id).into_iter().partition(|r| r.run != "shared");
        let got = store.metrics(&format!("own-{id}")).unwrap();
        assert_rows_eq(&got, &store_order(own));
        total += got.len();
        want_shared.extend(shared);
    }
    let got_shared = store.metrics("shared").unwrap();
    total += got_shared.len();
    assert_rows_eq(&got_shared, &store_order(want_shared));
    assert_eq!(total, WRITERS * ROWS_PER_WRITER as usize);
}

#[test]
fn a_write_waits_for_a_lock_held_by_another_connection() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("vestige.db");
    let store = Store::open(&path).unwrap();
    store.begin_run("r", "", "h").unwrap();
    let other = rusqlite::Connection::open(&path).unwrap();
    other.execute_batch("BEGIN EXCLUSIVE; INSERT INTO runs VALUES ('held', '', 'h', 0, 'running');").unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    let holder = std::thread::spawn(move || {
        rx.recv().unwrap();
        std::thread::sleep(Duration::from_millis(400));
        other.execute_batch("COMMIT").unwrap();
    });
    let t0 = Instant::now();
    tx.send(()).unwrap();
    store.log_metrics(&[row("r", 0, 1, "t", "m", 1.0)]).unwrap();
    let waited = t0.elapsed();
    holder.join().unwrap();
    assert!(waited >= Duration::from_millis(300), "the write did not wait for the lock: {waited:?}");
    assert_eq!(store.metrics("r").unwrap().len(), 1);
    assert!(store.run_info("held").unwrap().is_some());
}

// ---- corrupt files ------------------------------------------------------------------------

#[test]
fn corrupt_database_file_gives_a_clear_error_naming_the_path() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("vestige.db");
    let garbage: Vec<u8> = (0..8192u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8).collect();
    std::fs::write(&path, &garbage).unwrap();
    let err = Store::open(&path).err().expect("garbage must not open");
    assert!(matches!(err, StoreError::Corrupt { .. }), "{err:?}");
    let msg = err.to_string();
    assert!(msg.contains(path.to_str().unwrap()), "{msg}");
    assert!(msg.contains("corrupt or not an SQLite database"), "{msg}");
    assert_eq!(std::fs::read(&path).unwrap(), garbage, "the file is left untouched");
}

#[test]
fn another_applications_database_and_a_newer_schema_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let foreign = dir.path().join("other.db");
    rusqlite::Connection::open(&foreign).unwrap().execute_batch("CREATE TABLE runs (x INTEGER);").unwrap();
    let err = Store::open(&foreign).err().expect("a foreign database must not open");
    assert!(matches!(err, StoreError::NotAStore { .. }), "{err:?}");
    assert!(err.to_string().contains(foreign.to_str().unwrap()), "{err}");

    let newer = dir.path().join("newer.db");
    drop(Store::open(&newer).unwrap());
    rusqlite::Connection::open(&newer).unwrap().execute_batch("PRAGMA user_version = 99;").unwrap();
    let err = Store::open(&newer).err().expect("a newer schema must not open");
    assert!(matches!(err, StoreError::SchemaTooNew { found: 99, .. }), "{err:?}");
    assert!(err.to_string().contains(newer.to_str().unwrap()), "{err}");
}

// ---- CSV ----------------------------------------------------------------------------------

#[test]
fn csv_header_once_rows_appended_across_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("runs/r/metrics.csv");
    let first = vec![row("r", 0, 1, "copy", "loss", 2.5), row("r", 0, 1, "copy", "acc", f64::NAN)];
    let second = vec![
        row("r", 1, 2, "with,comma", "say \"hi\"", f64::INFINITY),
        row("r", 1, 3, "multi\nline", "m", -1e-7),
        row("r", 1, 4, "copy", "loss", f64::NEG_INFINITY),
    ];
    {
        let mut log = CsvLog::open(&path).unwrap();
        assert_eq!(log.path(), path);
        log.append(&first).unwrap();
        log.append(&[]).unwrap();
    }
    {
        let mut log = CsvLog::open(&path).unwrap();
        log.append(&second).unwrap();
    }
    // Opening again without appending adds nothing.
    drop(CsvLog::open(&path).unwrap());
    let text = std::fs::read_to_string(&path).unwrap();
    assert_eq!(text.matches(CSV_HEADER).count(), 1, "{text}");
    assert_eq!(
        text,
        format!(
            "{CSV_HEADER}\nr,0,1,1024,copy,loss,2.5\nr,0,1,1024,copy,acc,NaN\n\
             r,1,2,2048,\"with,comma\",\"say \"\"hi\"\"\",inf\nr,1,3,3072,\"multi\nline\",m,-1e-7\n\
             r,1,4,4096,copy,loss,-inf\n"
        )
    );
    let all: Vec<MetricRow> = first.iter().chain(&second).cloned().collect();
    assert_rows_eq(&read_csv(&path).unwrap(), &all);
}

#[test]
fn csv_partial_last_line_is_cut_and_a_foreign_header_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("metrics.csv");
    std::fs::write(&path, format!("{CSV_HEADER}\nr,0,1,1024,copy,loss,2.5\nr,0,2,20")).unwrap();
    let mut log = CsvLog::open(&path).unwrap();
    log.append(&[row("r", 0, 2, "copy", "loss", 1.0)]).unwrap();
    assert_rows_eq(
        &read_csv(&path).unwrap(),
        &[row("r", 0, 1, "copy", "loss", 2.5), row("r", 0, 2, "copy", "loss", 1.0)],
    );

    // A torn header alone is replaced by a whole one.
    let torn = dir.path().join("torn.csv");
    std::fs::write(&torn, &CSV_HEADER[..10]).unwrap();
    drop(CsvLog::open(&torn).unwrap());
    assert_eq!(std::fs::read_to_string(&torn).unwrap(), format!("{CSV_HEADER}\n"));

    let foreign = dir.path().join("foreign.csv");
    std::fs::write(&foreign, "a,b,c\n1,2,3\n").unwrap();
    let err = CsvLog::open(&foreign).err().expect("foreign header");
    assert!(matches!(err, StoreError::Csv { line: 1, .. }), "{err:?}");
    assert!(err.to_string().contains(foreign.to_str().unwrap()), "{err}");
    assert_eq!(std::fs::read_to_string(&foreign).unwrap(), "a,b,c\n1,2,3\n", "left untouched");
}

#[test]
fn rewrite_csv_is_atomic_and_matches_the_store_after_resume() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&dir.path().join("vestige.db")).unwrap();
    let csv = dir.path().join("r.csv");
    store.begin_run("r", "", "h").unwrap();
    let mut log = CsvLog::open(&csv).unwrap();
    let rows: Vec<MetricRow> = (1..=10u64)
        .flat_map(|s| [row("r", 0, s, "t", "loss", 1.0 / s as f64), row("r", 0, s, "t", "acc", f64::NAN)])
        .collect();
    for chunk in rows.chunks(4) {
        store.log_metrics(chunk).unwrap();
        log.append(chunk).unwrap();
    }
    assert_rows_eq(&read_csv(&csv).unwrap(), &rows);

    // Resume from a checkpoint at step 6: the store drops later rows, the CSV follows, and
    // the re-run steps are logged again without duplicates anywhere.
    assert_eq!(store.truncate_after("r", 6).unwrap(), 8);
    assert_eq!(log.rewrite_from_store(&store, "r").unwrap(), 12);
    assert_rows_eq(&read_csv(&csv).unwrap(), &store.metrics("r").unwrap());
    let rerun: Vec<MetricRow> = (7..=12u64).map(|s| row("r", 0, s, "t", "loss", 0.5 / s as f64)).collect();
    store.log_metrics(&rerun).unwrap();
    log.append(&rerun).unwrap();
    let from_store = store.metrics("r").unwrap();
    assert_eq!(from_store.len(), 18);
    assert_rows_eq(&read_csv(&csv).unwrap(), &from_store);

    // The free function: content equals the given rows, header once, no temp file left.
    let fresh = dir.path().join("fresh/r.csv");
    rewrite_csv(&fresh, &from_store).unwrap();
    rewrite_csv(&fresh, &from_store).unwrap();
    assert_rows_eq(&read_csv(&fresh).unwrap(), &from_store);
    assert_eq!(std::fs::read_to_string(&fresh).unwrap(), std::fs::read_to_string(&csv).unwrap());
    for d in [dir.path().to_path_buf(), dir.path().join("fresh")] {
        let names: Vec<String> =
            std::fs::read_dir(&d).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
        assert!(names.iter().all(|n| !n.contains(".tmp")), "temp file left in {}: {names:?}", d.display());
    }
    rewrite_csv(&fresh, &[]).unwrap();
    assert_eq!(std::fs::read_to_string(&fresh).unwrap(), format!("{CSV_HEADER}\n"));
    assert!(read_csv(&fresh).unwrap().is_empty());

    // A failed rewrite (target is a directory) leaves no temp file either.
    let blocked = dir.path().join("blocked");
    std::fs::create_dir(&blocked).unwrap();
    assert!(rewrite_csv(&blocked, &from_store).is_err());
    let names: Vec<String> =
        std::fs::read_dir(dir.path()).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
    assert!(names.iter().all(|n| !n.contains(".tmp")), "{names:?}");
}

#[test]
fn read_csv_errors_name_file_and_line() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.csv");
    std::fs::write(&path, format!("{CSV_HEADER}\nr,0,1,1,t,m,1.0\nr,0,x,1,t,m,1.0\n")).unwrap();
    let err = read_csv(&path).unwrap_err();
    assert!(matches!(err, StoreError::Csv { line: 3, .. }), "{err:?}");
    assert!(err.to_string().contains(&format!("{}:3", path.display())), "{err}");
}
