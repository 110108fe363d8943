//! The run store: where experiment results live on disk.
//!
//! - [`Store`]: an embedded SQLite database (conventionally `vestige.db`) holding runs (id,
//!   config TOML and hash, creation time, status), the phases of each run and the metric rows
//!   they log. Several processes (experiment cells running in parallel) may write to the same
//!   database file at the same time: the database runs in WAL mode, every write is one
//!   `BEGIN IMMEDIATE` transaction, SQLite waits up to [`BUSY_TIMEOUT`] for a lock and the
//!   store retries a write that still finds the database busy or locked until
//!   [`RETRY_DEADLINE`] has passed, so concurrent writers never lose rows.
//! - [`CsvLog`], [`rewrite_csv`], [`read_csv`] (in `csv.rs`): the same metric rows as one CSV
//!   file per run, for pandas users.
//!
//! # Values
//!
//! Integers (`step`, `tokens`, phase start steps) are stored as SQLite's signed 64-bit
//! integers; a `u64` above `i64::MAX` is refused with [`StoreError::OutOfRange`]. Metric
//! values are `f64`. SQLite turns NaN into NULL, so the store writes NaN as NULL on purpose
//! and reads NULL back as NaN (the canonical `f64::NAN`: a NaN's sign and payload are not
//! kept). `+inf` and `-inf` are stored as themselves.
//!
//! # Resuming a run
//!
//! [`Store::begin_run`] is idempotent for the same config hash and refuses a different one.
//! After restoring a checkpoint taken at step `s`, [`Store::truncate_after`]`(run, s)` drops
//! the metric rows logged after it, so re-logged rows are not duplicated; and since a metric
//! row is keyed by `(run, phase, step, task, metric)` and written with `INSERT OR REPLACE`,
//! logging the same row twice is idempotent anyway (the evaluation that opens a phase is
//! logged at the step of the checkpoint before it). The CSV, which keeps rows in the order
//! they were logged, is rolled back by the run to the rows before the checkpoint
//! ([`CsvLog::rewrite`]); [`CsvLog::rewrite_from_store`] rebuilds it in the store's order.
//!
//! # Durability
//!
//! The database uses `synchronous = FULL`: once a write method returns, its rows survive a
//! process crash and a power loss. `CsvLog::append` flushes and fsyncs each call.

mod csv;

pub use csv::{read_csv, read_sample_scores, rewrite_csv, write_sample_scores, CsvLog, CSV_HEADER};

use rusqlite::{params, Connection, ErrorCode, OptionalExtension, Transaction, TransactionBehavior};
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// How long SQLite itself waits for a lock held by another connection before a statement
/// fails with `SQLITE_BUSY` (SQLite's busy handler).
pub const BUSY_TIMEOUT: Duration = Duration::from_secs(30);

/// How long a write (or read) that still fails with `SQLITE_BUSY`/`SQLITE_LOCKED` after the
/// busy handler gave up is retried, with a short randomized backoff, before the error is
/// returned. Some busy conditions (WAL recovery, a read transaction that could not be
/// upgraded) skip SQLite's busy handler entirely; this loop covers them.
pub const RETRY_DEADLINE: Duration = Duration::from_secs(120);

/// The schema version this build writes and reads (`PRAGMA user_version`).
pub const SCHEMA_VERSION: i64 = 1;

/// `PRAGMA application_id` of a vestige run store ("VSTG"), so that another application's
/// SQLite database is not mistaken for one.
pub const APPLICATION_ID: i64 = 0x5653_5447;

/// The tables, created on first open. `metrics.value` is NULL exactly when the value is NaN.
const SCHEMA: &str = "
CREATE TABLE runs (
    run          TEXT PRIMARY KEY NOT NULL,
    config_toml  TEXT NOT NULL,
    config_hash  TEXT NOT NULL,
    created_unix INTEGER NOT NULL,
    status       TEXT NOT NULL
);
CREATE TABLE phases (
    run        TEXT NOT NULL REFERENCES runs(run),
    idx        INTEGER NOT NULL,
    name       TEXT NOT NULL,
    start_step INTEGER NOT NULL,
    PRIMARY KEY (run, idx)
);
CREATE TABLE metrics (
    run    TEXT NOT NULL REFERENCES runs(run),
    phase  INTEGER NOT NULL,
    step   INTEGER NOT NULL,
    tokens INTEGER NOT NULL,
    task   TEXT NOT NULL,
    metric TEXT NOT NULL,
    value  REAL,
    UNIQUE (run, phase, step, task, metric)
);
CREATE INDEX metrics_run_step ON metrics (run, step);
";

/// Everything that can go wrong in the run store. Every message names the file involved:
/// the database path for [`Store`] errors, the CSV path for CSV errors.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// An SQLite call failed; `op` says what the store was doing.
    #[error("run store {}: {op}: {source}", path.display())]
    Sqlite {
        path: PathBuf,
        op: String,
        #[source]
        source: rusqlite::Error,
    },
    /// The file is not an SQLite database, or its content is damaged.
    #[error("run store {} is corrupt or not an SQLite database ({op}): {source}", path.display())]
    Corrupt {
        path: PathBuf,
        op: String,
        #[source]
        source: rusqlite::Error,
    },
    /// The file is a valid SQLite database that another application made.
    #[error("{} is an SQLite database but not a vestige run store: {reason}", path.display())]
    NotAStore { path: PathBuf, reason: String },
    /// The store was written by a newer vestige with a schema this build does not know.
    #[error("run store {} has schema version {found}; this build understands up to {SCHEMA_VERSION}", path.display())]
    SchemaTooNew { path: PathBuf, found: i64 },
    /// `begin_run` for an existing run id with a different config hash.
    #[error(
        "run store {}: run {run:?} already exists with config hash {stored}, \
         refusing to begin it again with config hash {given}",
        path.display()
    )]
    ConfigHashMismatch { path: PathBuf, run: String, stored: String, given: String },
    /// A run id that `begin_run` never created.
    #[error("run store {}: unknown run {run:?} (begin_run creates runs)", path.display())]
    UnknownRun { path: PathBuf, run: String },
    /// `record_phase` for an already recorded phase index with a different name or start.
    #[error(
        "run store {}: run {run:?} phase {index} is recorded as {stored_name:?} starting at step \
         {stored_start}, not {name:?} starting at step {start_step}",
        path.display()
    )]
    PhaseMismatch {
        path: PathBuf,
        run: String,
        index: u32,
        stored_name: String,
        stored_start: u64,
        name: String,
        start_step: u64,
    },
    /// A `u64` above `i64::MAX`, which SQLite integers cannot hold.
    #[error("run store {}: {what} {value} exceeds the largest storable integer {}", path.display(), i64::MAX)]
    OutOfRange { path: PathBuf, what: &'static str, value: u64 },
    /// A stored integer that cannot be what the store wrote (negative step, phase over u32).
    #[error("run store {}: invalid stored {what} {value}", path.display())]
    BadStoredValue { path: PathBuf, what: &'static str, value: i64 },
    /// A file system error (CSV files, the database's directory).
    #[error("{}: {op}: {source}", path.display())]
    Io {
        path: PathBuf,
        op: &'static str,
        #[source]
        source: std::io::Error,
    },
    /// A CSV file whose content is not what [`CsvLog`] writes.
    #[error("{}:{line}: {message}", path.display())]
    Csv { path: PathBuf, line: usize, message: String },
}

impl StoreError {
    /// True for SQLite's transient lock conflicts (`SQLITE_BUSY`, `SQLITE_LOCKED`), which
    /// the store retries.
    fn is_busy(&self) -> bool {
        matches!(
            self,
            StoreError::Sqlite { source, .. }
                if matches!(source.sqlite_error_code(), Some(ErrorCode::DatabaseBusy | ErrorCode::DatabaseLocked))
        )
    }
}

/// One metric value at one point of a run: the unit [`Store::log_metrics`] writes and
/// [`Store::metrics`] reads. `(run, phase, step, task, metric)` identifies a row.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct MetricRow {
    /// Run id (must have been created by [`Store::begin_run`]).
    pub run: String,
    /// Phase index within the run.
    pub phase: u32,
    /// Global optimizer step of the run.
    pub step: u64,
    /// Training tokens seen so far.
    pub tokens: u64,
    /// What was measured on (e.g. a task or data set name).
    pub task: String,
    /// What was measured (e.g. `loss`, `exact_match`).
    pub metric: String,
    /// The value; NaN and ±inf are allowed.
    pub value: f64,
}

/// One run as [`Store::runs`] lists it.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct RunInfo {
    /// Run id.
    pub run: String,
    /// Hash of the run's config, as given to [`Store::begin_run`].
    pub config_hash: String,
    /// When the run was first begun, in seconds since the Unix epoch.
    pub created_unix: i64,
    /// `running`, `done`, `failed: ...`, `diverged`, ... (free text; see [`Store::set_status`]).
    pub status: String,
}

/// What [`Store::begin_run`] found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Begun {
    /// The run did not exist and was created with status `running`.
    Created,
    /// The run existed with the same config hash (a resume); its status was
    /// `previous_status` and is now `running`.
    Resumed { previous_status: String },
}

/// A connection to the run store database. Cheap to open; open one per process (or per
/// thread: a `Store` can move between threads but is not `Sync`).
pub struct Store {
    conn: Connection,
    path: PathBuf,
}

impl Store {
    /// Opens (creating if needed) the run store at `path`, creating missing parent
    /// directories and, on first open, the schema. Puts the database in WAL mode (where the
    /// file system supports it), sets `synchronous = FULL`, enables foreign keys and a busy
    /// timeout of [`BUSY_TIMEOUT`]. Safe to call from many processes at once, also for a
    /// database that does not exist yet.
    ///
    /// Fails with [`StoreError::Corrupt`] for a file that is not an SQLite database (the file
    /// is left untouched), [`StoreError::NotAStore`] for another application's database and
    /// [`StoreError::SchemaTooNew`] for a store written by a newer vestige.
    pub fn open(path: &Path) -> Result<Store, StoreError> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|source| StoreError::Io {
                path: dir.to_path_buf(),
                op: "creating the run store's directory",
                source,
            })?;
        }
        let conn = Connection::open(path).map_err(|e| sql_error(path, "opening", e))?;
        let store = Store { conn, path: path.to_path_buf() };
        store.conn.busy_timeout(BUSY_TIMEOUT).map_err(|e| store.err("setting the busy timeout", e))?;
        store.retry(|| {
            // Reads the header and schema first, so a file that is not a database (or another
            // application's database) is refused before anything is written to it.
            store.check_identity(&store.conn)?;
            let mode: String = store
                .conn
                .query_row("PRAGMA journal_mode = WAL", [], |r| r.get(0))
                .map_err(|e| store.err("switching to WAL mode", e))?;
            if !mode.eq_ignore_ascii_case("wal") {
                tracing::warn!(
                    "run store {}: file system does not support WAL mode, using journal mode {mode}",
                    path.display()
                );
            }
            store
                .conn
                .execute_batch("PRAGMA synchronous = FULL; PRAGMA foreign_keys = ON;")
                .map_err(|e| store.err("setting pragmas", e))?;
            store.init_schema()
        })?;
        Ok(store)
    }

    /// The database file this store was opened on.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Returns whether the database is fresh (no schema yet), or fails unless it is a
    /// vestige run store of a schema version this build understands.
    fn check_identity(&self, conn: &Connection) -> Result<bool, StoreError> {
        // One statement, so the three values come from one snapshot even while another
        // process is creating the schema.
        let (version, app_id, objects): (i64, i64, i64) = conn
            .query_row(
                "SELECT (SELECT user_version FROM pragma_user_version), \
                        (SELECT application_id FROM pragma_application_id), \
                        (SELECT count(*) FROM sqlite_master)",
                [],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
            )
            .map_err(|e| self.err("reading the schema version", e))?;
        if version == 0 {
            if objects > 0 || app_id != 0 {
                return Err(StoreError::NotAStore {
                    path: self.path.clone(),
                    reason: format!(
                        "it has {objects} schema objects and application id {app_id:#x} but no schema version"
                    ),
                });
            }
            return Ok(true);
        }
        if app_id != APPLICATION_ID {
            return Err(StoreError::NotAStore {
                path: self.path.clone(),
                reason: format!("application id {app_id:#x}, expected {APPLICATION_ID:#x}"),
            });
        }
        if version > SCHEMA_VERSION {
            return Err(StoreError::SchemaTooNew { path: self.path.clone(), found: version });
        }
        Ok(false)
    }

    /// Creates the schema in a fresh database, inside a write transaction so that of several
    /// processes opening a new database at once exactly one creates it.
    fn init_schema(&self) -> Result<(), StoreError> {
        let tx = self.write_tx()?;
        if self.check_identity(&tx)? {
            tx.execute_batch(SCHEMA).map_err(|e| self.err("creating the schema", e))?;
            tx.execute_batch(&format!(
                "PRAGMA user_version = {SCHEMA_VERSION}; PRAGMA application_id = {APPLICATION_ID};"
            ))
            .map_err(|e| self.err("writing the schema version", e))?;
            tx.commit().map_err(|e| self.err("committing the schema", e))?;
        }
        Ok(())
    }

    /// Creates run `run` with status `running`, or resumes it: for an existing run with the
    /// same `config_hash` the stored config and creation time are kept and the status is set
    /// back to `running`. An existing run with a different hash is refused with
    /// [`StoreError::ConfigHashMismatch`] (naming the run and both hashes) and left as is.
    /// The result says which case happened (callers that do not care may ignore it).
    pub fn begin_run(&self, run: &str, config_toml: &str, config_hash: &str) -> Result<Begun, StoreError> {
        self.retry(|| {
            let tx = self.write_tx()?;
            let existing: Option<(String, String)> = tx
                .query_row("SELECT config_hash, status FROM runs WHERE run = ?1", [run], |r| Ok((r.get(0)?, r.get(1)?)))
                .optional()
                .map_err(|e| self.err("looking up the run", e))?;
            let begun = match existing {
                Some((stored, _)) if stored != config_hash => {
                    return Err(StoreError::ConfigHashMismatch {
                        path: self.path.clone(),
                        run: run.to_string(),
                        stored,
                        given: config_hash.to_string(),
                    })
                }
                Some((_, previous_status)) => {
                    tx.execute("UPDATE runs SET status = 'running' WHERE run = ?1", [run])
                        .map_err(|e| self.err("resuming the run", e))?;
                    Begun::Resumed { previous_status }
                }
                None => {
                    tx.execute(
                        "INSERT INTO runs (run, config_toml, config_hash, created_unix, status) \
                         VALUES (?1, ?2, ?3, ?4, 'running')",
                        params![run, config_toml, config_hash, unix_now()],
                    )
                    .map_err(|e| self.err("creating the run", e))?;
                    Begun::Created
                }
            };
            tx.commit().map_err(|e| self.err("committing begin_run", e))?;
            Ok(begun)
        })
    }

    /// Re-records run `run` under config hash `new` if it is stored under `old` (the same
    /// config hashed another way); otherwise changes nothing.
    pub fn rehash_run(&self, run: &str, old: &str, new: &str) -> Result<(), StoreError> {
        self.retry(|| {
            let tx = self.write_tx()?;
            tx.execute("UPDATE runs SET config_hash = ?3 WHERE run = ?1 AND config_hash = ?2", [run, old, new])
                .map_err(|e| self.err("re-recording the config hash", e))?;
            tx.commit().map_err(|e| self.err("committing rehash_run", e))
        })
    }

    /// Sets the status of an existing run: `running`, `done`, `failed: <reason>`, `diverged`
    /// or any other text. An unknown run is [`StoreError::UnknownRun`].
    pub fn set_status(&self, run: &str, status: &str) -> Result<(), StoreError> {
        self.retry(|| {
            let tx = self.write_tx()?;
            let n = tx
                .execute("UPDATE runs SET status = ?2 WHERE run = ?1", [run, status])
                .map_err(|e| self.err("setting the status", e))?;
            if n == 0 {
                return Err(self.unknown_run(run));
            }
            tx.commit().map_err(|e| self.err("committing set_status", e))
        })
    }

    /// Records that phase `index` of `run` is called `name` and starts at step `start_step`.
    /// Idempotent: recording the same phase again is a no-op; recording a different name or
    /// start step for an already recorded index is [`StoreError::PhaseMismatch`]. Phases are
    /// not touched by [`Store::truncate_after`]; a resumed run records them again.
    pub fn record_phase(&self, run: &str, index: u32, name: &str, start_step: u64) -> Result<(), StoreError> {
        let start = self.to_i64("phase start step", start_step)?;
        self.retry(|| {
            let tx = self.write_tx()?;
            self.check_run(&tx, run)?;
            let existing: Option<(String, i64)> = tx
                .query_row(
                    "SELECT name, start_step FROM phases WHERE run = ?1 AND idx = ?2",
                    params![run, index],
                    |r| Ok((r.get(0)?, r.get(1)?)),
                )
                .optional()
                .map_err(|e| self.err("looking up the phase", e))?;
            match existing {
                Some((stored_name, stored_start)) if stored_name == name && stored_start == start => return Ok(()),
                Some((stored_name, stored_start)) => {
                    return Err(StoreError::PhaseMismatch {
                        path: self.path.clone(),
                        run: run.to_string(),
                        index,
                        stored_name,
                        stored_start: self.to_u64("phase start step", stored_start)?,
                        name: name.to_string(),
                        start_step,
                    })
                }
                None => {}
            }
            tx.execute(
                "INSERT INTO phases (run, idx, name, start_step) VALUES (?1, ?2, ?3, ?4)",
                params![run, index, name, start],
            )
            .map_err(|e| self.err("recording the phase", e))?;
            tx.commit().map_err(|e| self.err("committing record_phase", e))
        })
    }

    /// Writes `rows` in one transaction (all or none). A row with the same
    /// `(run, phase, step, task, metric)` as a stored one replaces it (`INSERT OR REPLACE`),
    /// so logging the same rows again is idempotent. Every row's run must exist
    /// ([`StoreError::UnknownRun`] otherwise). NaN is stored as NULL.
    pub fn log_metrics(&self, rows: &[MetricRow]) -> Result<(), StoreError> {
        if rows.is_empty() {
            return Ok(());
        }
        let converted = rows
            .iter()
            .map(|r| Ok((self.to_i64("step", r.step)?, self.to_i64("tokens", r.tokens)?)))
            .collect::<Result<Vec<_>, StoreError>>()?;
        let runs: BTreeSet<&str> = rows.iter().map(|r| r.run.as_str()).collect();
        self.retry(|| {
            let tx = self.write_tx()?;
            for run in &runs {
                self.check_run(&tx, run)?;
            }
            {
                let mut insert = tx
                    .prepare_cached(
                        "INSERT OR REPLACE INTO metrics (run, phase, step, tokens, task, metric, value) \
                         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
                    )
                    .map_err(|e| self.err("preparing the metric insert", e))?;
                for (row, (step, tokens)) in rows.iter().zip(&converted) {
                    let value = (!row.value.is_nan()).then_some(row.value);
                    insert
                        .execute(params![row.run, row.phase, step, tokens, row.task, row.metric, value])
                        .map_err(|e| self.err("inserting a metric row", e))?;
                }
            }
            tx.commit().map_err(|e| self.err("committing log_metrics", e))
        })
    }

    /// Deletes the metric rows of `run` with `step > step` (used when a run resumes from a
    /// checkpoint taken at `step`, so the metrics logged after it are not duplicated) and
    /// returns how many were deleted. Runs and phases are left alone.
    pub fn truncate_after(&self, run: &str, step: u64) -> Result<usize, StoreError> {
        let step = self.to_i64("step", step)?;
        self.retry(|| {
            let tx = self.write_tx()?;
            self.check_run(&tx, run)?;
            let n = tx
                .execute("DELETE FROM metrics WHERE run = ?1 AND step > ?2", params![run, step])
                .map_err(|e| self.err("truncating metrics", e))?;
            tx.commit().map_err(|e| self.err("committing truncate_after", e))?;
            Ok(n)
        })
    }

    /// All metric rows of `run`, ordered by `(step, phase, task, metric)` (deterministic:
    /// these identify a row). NULL values come back as NaN. An unknown run has no rows.
    pub fn metrics(&self, run: &str) -> Result<Vec<MetricRow>, StoreError> {
        self.retry(|| {
            let mut stmt = self
                .conn
                .prepare_cached(
                    "SELECT phase, step, tokens, task, metric, value FROM metrics WHERE run = ?1 \
                     ORDER BY step, phase, task, metric",
                )
                .map_err(|e| self.err("preparing the metrics query", e))?;
            let raw = stmt
                .query_map([run], |r| {
                    Ok((
                        r.get::<_, i64>(0)?,
                        r.get::<_, i64>(1)?,
                        r.get::<_, i64>(2)?,
                        r.get::<_, String>(3)?,
                        r.get::<_, String>(4)?,
                        r.get::<_, Option<f64>>(5)?,
                    ))
                })
                .and_then(|rows| rows.collect::<Result<Vec<_>, _>>())
                .map_err(|e| self.err("reading metrics", e))?;
            raw.into_iter()
                .map(|(phase, step, tokens, task, metric, value)| {
                    Ok(MetricRow {
                        run: run.to_string(),
                        phase: u32::try_from(phase).map_err(|_| self.bad_value("phase", phase))?,
                        step: self.to_u64("step", step)?,
                        tokens: self.to_u64("tokens", tokens)?,
                        task,
                        metric,
                        value: value.unwrap_or(f64::NAN),
                    })
                })
                .collect()
        })
    }

    /// All runs, ordered by creation time, then run id.
    pub fn runs(&self) -> Result<Vec<RunInfo>, StoreError> {
        self.retry(|| {
            let mut stmt = self
                .conn
                .prepare_cached("SELECT run, config_hash, created_unix, status FROM runs ORDER BY created_unix, run")
                .map_err(|e| self.err("preparing the runs query", e))?;
            stmt.query_map([], |r| {
                Ok(RunInfo { run: r.get(0)?, config_hash: r.get(1)?, created_unix: r.get(2)?, status: r.get(3)? })
            })
            .and_then(|rows| rows.collect())
            .map_err(|e| self.err("reading runs", e))
        })
    }

    /// One run, or `None` if it does not exist.
    pub fn run_info(&self, run: &str) -> Result<Option<RunInfo>, StoreError> {
        self.retry(|| {
            self.conn
                .query_row("SELECT run, config_hash, created_unix, status FROM runs WHERE run = ?1", [run], |r| {
                    Ok(RunInfo { run: r.get(0)?, config_hash: r.get(1)?, created_unix: r.get(2)?, status: r.get(3)? })
                })
                .optional()
                .map_err(|e| self.err("reading the run", e))
        })
    }

    /// The config TOML a run was begun with, or `None` if the run does not exist.
    pub fn config_toml(&self, run: &str) -> Result<Option<String>, StoreError> {
        self.retry(|| {
            self.conn
                .query_row("SELECT config_toml FROM runs WHERE run = ?1", [run], |r| r.get(0))
                .optional()
                .map_err(|e| self.err("reading the run's config", e))
        })
    }

    /// The recorded phases of `run` as `(index, name, start_step)`, ordered by index. An
    /// unknown run has no phases.
    pub fn phases(&self, run: &str) -> Result<Vec<(u32, String, u64)>, StoreError> {
        self.retry(|| {
            let mut stmt = self
                .conn
                .prepare_cached("SELECT idx, name, start_step FROM phases WHERE run = ?1 ORDER BY idx")
                .map_err(|e| self.err("preparing the phases query", e))?;
            let raw = stmt
                .query_map([run], |r| Ok((r.get::<_, i64>(0)?, r.get::<_, String>(1)?, r.get::<_, i64>(2)?)))
                .and_then(|rows| rows.collect::<Result<Vec<_>, _>>())
                .map_err(|e| self.err("reading phases", e))?;
            raw.into_iter()
                .map(|(idx, name, start)| {
                    Ok((
                        u32::try_from(idx).map_err(|_| self.bad_value("phase index", idx))?,
                        name,
                        self.to_u64("phase start step", start)?,
                    ))
                })
                .collect()
        })
    }

    /// Runs `op` until it succeeds, fails with something other than a lock conflict, or
    /// [`RETRY_DEADLINE`] has passed, sleeping a short, growing, randomized time between
    /// tries. `op` must be safe to repeat (every write op is one transaction that rolls back
    /// when dropped uncommitted).
    fn retry<T>(&self, mut op: impl FnMut() -> Result<T, StoreError>) -> Result<T, StoreError> {
        let start = Instant::now();
        let mut attempt = 0u32;
        loop {
            match op() {
                Err(e) if e.is_busy() && start.elapsed() < RETRY_DEADLINE => {
                    attempt += 1;
                    let cap_ms = 2u64.saturating_pow(attempt.min(8)).min(200);
                    let jitter = jitter_ms(cap_ms);
                    tracing::debug!("run store {}: busy ({e}), retry {attempt} in {jitter} ms", self.path.display());
                    std::thread::sleep(Duration::from_millis(1 + jitter));
                }
                other => return other,
            }
        }
    }

    /// Starts a write transaction that takes the write lock at once (`BEGIN IMMEDIATE`),
    /// so it never has to upgrade a read lock (which fails without waiting in WAL mode).
    fn write_tx(&self) -> Result<Transaction<'_>, StoreError> {
        Transaction::new_unchecked(&self.conn, TransactionBehavior::Immediate)
            .map_err(|e| self.err("beginning a write transaction", e))
    }

    /// Fails with [`StoreError::UnknownRun`] unless `run` exists.
    fn check_run(&self, tx: &Transaction<'_>, run: &str) -> Result<(), StoreError> {
        let exists: bool = tx
            .query_row("SELECT EXISTS (SELECT 1 FROM runs WHERE run = ?1)", [run], |r| r.get(0))
            .map_err(|e| self.err("looking up the run", e))?;
        if exists {
            Ok(())
        } else {
            Err(self.unknown_run(run))
        }
    }

    fn err(&self, op: &str, e: rusqlite::Error) -> StoreError {
        sql_error(&self.path, op, e)
    }

    fn unknown_run(&self, run: &str) -> StoreError {
        StoreError::UnknownRun { path: self.path.clone(), run: run.to_string() }
    }

    fn bad_value(&self, what: &'static str, value: i64) -> StoreError {
        StoreError::BadStoredValue { path: self.path.clone(), what, value }
    }

    fn to_i64(&self, what: &'static str, value: u64) -> Result<i64, StoreError> {
        i64::try_from(value).map_err(|_| StoreError::OutOfRange { path: self.path.clone(), what, value })
    }

    fn to_u64(&self, what: &'static str, value: i64) -> Result<u64, StoreError> {
        u64::try_from(value).map_err(|_| self.bad_value(what, value))
    }
}

/// Wraps an SQLite error, telling a damaged or foreign file apart from other failures.
fn sql_error(path: &Path, op: &str, source: rusqlite::Error) -> StoreError {
    let path = path.to_path_buf();
    let op = op.to_string();
    match source.sqlite_error_code() {
        Some(ErrorCode::NotADatabase | ErrorCode::DatabaseCorrupt) => StoreError::Corrupt { path, op, source },
        _ => StoreError::Sqlite { path, op, source },
    }
}

/// Seconds since the Unix epoch (0 if the clock is before it).
fn unix_now() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs() as i64)
}

/// A pseudo-random number in `0..=cap` that differs between processes and calls, so that
/// retrying writers do not wake in lock step.
fn jitter_ms(cap: u64) -> u64 {
    let nanos = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.subsec_nanos() as u64);
    let mut x = nanos ^ (u64::from(std::process::id()) << 32) ^ 0x9E37_79B9_7F4A_7C15;
    // splitmix64 finalizer
    x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    x ^= x >> 31;
    x % (cap + 1)
}
