//! Metric rows as CSV, one file per run, for pandas users (`pd.read_csv(path)` reads it).
//!
//! Format: the header [`CSV_HEADER`], then one line per [`MetricRow`], `\n` line ends, and
//! RFC 4180 quoting (a field containing `,`, `"`, `\r` or `\n` is wrapped in `"` with inner
//! `"` doubled). Values are written in Rust's shortest round-trip form (`0.1`, `1e-7`),
//! NaN as `NaN` and infinities as `inf` / `-inf`, all of which pandas parses as floats.

use super::{MetricRow, Store, StoreError};
use std::fs::{self, File};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

/// The first line of every metrics CSV.
pub const CSV_HEADER: &str = "run,phase,step,tokens,task,metric,value";

/// An append-only metrics CSV. One writer per file: the CSV of a run is written by the
/// process running it (the [`Store`] is the place for concurrent writers).
pub struct CsvLog {
    file: File,
    path: PathBuf,
}

impl CsvLog {
    /// Opens `path` for appending, creating it (and missing parent directories) with the
    /// header if it does not exist or is empty. An existing file must start with
    /// [`CSV_HEADER`] ([`StoreError::Csv`] otherwise). A partial last line (a write cut
    /// short by a crash) is cut off, with a warning: the row is in the store, and
    /// [`CsvLog::rewrite_from_store`] restores it.
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            fs::create_dir_all(dir).map_err(io(dir, "creating the CSV's directory"))?;
        }
        let mut file = File::options()
            .read(true)
            .append(true)
            .create(true)
            .open(path)
            .map_err(io(path, "opening the CSV for appending"))?;
        let len = file.metadata().map_err(io(path, "reading the CSV's size"))?.len();
        let complete = complete_prefix_len(&mut file, len).map_err(io(path, "reading the CSV's last line"))?;
        if complete < len {
            tracing::warn!("{}: cutting off a partial last line ({} bytes)", path.display(), len - complete);
            file.set_len(complete).map_err(io(path, "cutting off a partial last line"))?;
        }
        let mut log = CsvLog { file, path: path.to_path_buf() };
        if complete == 0 {
            log.write_synced(format!("{CSV_HEADER}\n").as_bytes())?;
        } else {
            let mut first = vec![0u8; CSV_HEADER.len() + 1];
            log.file.seek(SeekFrom::Start(0)).map_err(io(path, "seeking to the CSV header"))?;
            let n = read_up_to(&mut log.file, &mut first).map_err(io(path, "reading the CSV header"))?;
            if first[..n] != *format!("{CSV_HEADER}\n").as_bytes() {
                let line = String::from_utf8_lossy(&first[..n]);
                return Err(csv_error(
                    path,
                    1,
                    format!("header {:?} is not {CSV_HEADER:?}", line.lines().next().unwrap_or("")),
                ));
            }
        }
        Ok(log)
    }

    /// The CSV file this log appends to.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Appends `rows` with one write, then flushes and fsyncs the file.
    pub fn append(&mut self, rows: &[MetricRow]) -> Result<(), StoreError> {
        if rows.is_empty() {
            return Ok(());
        }
        let mut text = String::new();
        for row in rows {
            push_row(&mut text, row);
        }
        self.write_synced(text.as_bytes())
    }

    /// Replaces the file atomically with exactly `rows` (see [`rewrite_csv`]) and keeps
    /// appending to the new file.
    pub fn rewrite(&mut self, rows: &[MetricRow]) -> Result<(), StoreError> {
        rewrite_csv(&self.path, rows)?;
        *self = CsvLog::open(&self.path)?;
        Ok(())
    }

    /// Replaces the file atomically with the store's rows for `run` (in the store's order)
    /// and keeps appending to the new file; returns the number of rows written. Used after
    /// [`Store::truncate_after`] on resume, so the CSV never holds duplicates.
    pub fn rewrite_from_store(&mut self, store: &Store, run: &str) -> Result<usize, StoreError> {
        let rows = store.metrics(run)?;
        self.rewrite(&rows)?;
        Ok(rows.len())
    }

    fn write_synced(&mut self, bytes: &[u8]) -> Result<(), StoreError> {
        self.file.write_all(bytes).map_err(io(&self.path, "appending to the CSV"))?;
        self.file.flush().map_err(io(&self.path, "flushing the CSV"))?;
        self.file.sync_data().map_err(io(&self.path, "syncing the CSV"))
    }
}

/// Writes `rows` (header first) to a temporary file next to `path`, fsyncs it and renames
/// it over `path`, then fsyncs the directory: readers see the old or the new file, never a
/// mix, and no temporary file is left behind (also not on failure). A [`CsvLog`] open on
/// `path` keeps appending to the old file: use [`CsvLog::rewrite`] instead, or reopen it.
pub fn rewrite_csv(path: &Path, rows: &[MetricRow]) -> Result<(), StoreError> {
    let dir = path.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new("."));
    fs::create_dir_all(dir).map_err(io(dir, "creating the CSV's directory"))?;
    let tmp = temp_sibling(path, dir)?;
    let mut text = format!("{CSV_HEADER}\n");
    for row in rows {
        push_row(&mut text, row);
    }
    let written = File::options()
        .write(true)
        .create_new(true)
        .open(&tmp)
        .and_then(|mut f| {
            f.write_all(text.as_bytes())?;
            f.sync_all()
        })
        .map_err(io(&tmp, "writing the new CSV"))
        .and_then(|()| fs::rename(&tmp, path).map_err(io(path, "renaming the new CSV into place")));
    if written.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    written?;
    if cfg!(unix) {
        File::open(dir).and_then(|d| d.sync_all()).map_err(io(dir, "syncing the CSV's directory"))?;
    }
    Ok(())
}

/// Reads a metrics CSV as written by [`CsvLog`] / [`rewrite_csv`] (`NaN`, `inf`, `-inf`
/// included). Errors name the file and the line.
pub fn read_csv(path: &Path) -> Result<Vec<MetricRow>, StoreError> {
    let text = fs::read_to_string(path).map_err(io(path, "reading the CSV"))?;
    let records = parse_records(&text).map_err(|(line, message)| csv_error(path, line, message))?;
    let mut records = records.into_iter();
    match records.next() {
        Some((_, header)) if header.join(",") == CSV_HEADER => {}
        Some((line, header)) => {
            return Err(csv_error(path, line, format!("header {:?} is not {CSV_HEADER:?}", header.join(","))))
        }
        None => return Err(csv_error(path, 1, "empty file, expected a header".into())),
    }
    records
        .map(|(line, fields)| {
            let [run, phase, step, tokens, task, metric, value]: [String; 7] = fields
                .try_into()
                .map_err(|f: Vec<String>| csv_error(path, line, format!("{} fields, expected 7", f.len())))?;
            let bad = |what: &str, text: &str| csv_error(path, line, format!("bad {what} {text:?}"));
            Ok(MetricRow {
                phase: phase.parse().map_err(|_| bad("phase", &phase))?,
                step: step.parse().map_err(|_| bad("step", &step))?,
                tokens: tokens.parse().map_err(|_| bad("tokens", &tokens))?,
                value: value.parse().map_err(|_| bad("value", &value))?,
                run,
                task,
                metric,
            })
        })
        .collect()
}

/// Appends one CSV line for `row` to `out`.
fn push_row(out: &mut String, row: &MetricRow) {
    push_field(out, &row.run);
    out.push_str(&format!(",{},{},{},", row.phase, row.step, row.tokens));
    push_field(out, &row.task);
    out.push(',');
    push_field(out, &row.metric);
    // Debug gives the shortest round-trip form with exponents for very large/small values;
    // NaN -> "NaN", infinities -> "inf"/"-inf".
    out.push_str(&format!(",{:?}\n", row.value));
}

/// Appends `field`, quoted if it needs to be.
fn push_field(out: &mut String, field: &str) {
    if field.contains([',', '"', '\n', '\r']) {
        out.push('"');
        out.push_str(&field.replace('"', "\"\""));
        out.push('"');
    } else {
        out.push_str(field);
    }
}

/// A CSV record: the line it starts on and its fields.
type Record = (usize, Vec<String>);

/// Splits RFC 4180 text into records, each with the line number it starts on. Errors are
/// `(line, message)`.
fn parse_records(text: &str) -> Result<Vec<Record>, (usize, String)> {
    let mut records = Vec::new();
    let mut fields = Vec::new();
    let mut field = String::new();
    let (mut line, mut record_line) = (1usize, 1usize);
    // Inside a quoted field; just after a quoted field's closing quote.
    let (mut quoted, mut closed) = (false, false);
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        if quoted {
            match c {
                '"' if chars.peek() == Some(&'"') => {
                    chars.next();
                    field.push('"');
                }
                '"' => (quoted, closed) = (false, true),
                _ => {
                    line += usize::from(c == '\n');
                    field.push(c);
                }
            }
            continue;
        }
        match c {
            ',' => {
                fields.push(std::mem::take(&mut field));
                closed = false;
            }
            '\r' if chars.peek() == Some(&'\n') => {}
            '\n' => {
                fields.push(std::mem::take(&mut field));
                records.push((record_line, std::mem::take(&mut fields)));
                closed = false;
                line += 1;
                record_line = line;
            }
            _ if closed => return Err((line, format!("unexpected {c:?} after a closing quote"))),
            '"' if field.is_empty() => quoted = true,
            '"' => return Err((line, "quote inside an unquoted field".into())),
            _ => field.push(c),
        }
    }
    if quoted {
        return Err((record_line, "unterminated quoted field".into()));
    }
    if !field.is_empty() || !fields.is_empty() || closed {
        fields.push(field);
        records.push((record_line, fields));
    }
    Ok(records)
}

/// The length of the file's longest prefix that ends in a line end (0 if there is none).
fn complete_prefix_len(file: &mut File, len: u64) -> std::io::Result<u64> {
    let mut end = len;
    let mut buf = [0u8; 4096];
    while end > 0 {
        let start = end.saturating_sub(buf.len() as u64);
        let chunk = &mut buf[..(end - start) as usize];
        file.seek(SeekFrom::Start(start))?;
        file.read_exact(chunk)?;
        if let Some(i) = chunk.iter().rposition(|&b| b == b'\n') {
            return Ok(start + i as u64 + 1);
        }
        end = start;
    }
    Ok(0)
}

/// Reads until `buf` is full or the file ends; returns the bytes read.
fn read_up_to(file: &mut File, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match file.read(&mut buf[n..])? {
            0 => break,
            k => n += k,
        }
    }
    Ok(n)
}

/// A temporary name next to `path`, unique within this process and across processes.
fn temp_sibling(path: &Path, dir: &Path) -> Result<PathBuf, StoreError> {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let name = path.file_name().ok_or_else(|| StoreError::Io {
        path: path.to_path_buf(),
        op: "rewriting the CSV",
        source: std::io::Error::new(std::io::ErrorKind::InvalidInput, "not a file path"),
    })?;
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    Ok(dir.join(format!(".{}.tmp.{}.{n}", name.to_string_lossy(), std::process::id())))
}

fn io<'a>(path: &'a Path, op: &'static str) -> impl FnOnce(std::io::Error) -> StoreError + 'a {
    move |source| StoreError::Io { path: path.to_path_buf(), op, source }
}

fn csv_error(path: &Path, line: usize, message: String) -> StoreError {
    StoreError::Csv { path: path.to_path_buf(), line, message }
}

/// Writes one evaluation's per-sample scores, `(metric, one value per sample)`, as CSV:
/// header `sample,METRIC…`, then one line per sample (NaN where a sample does not define a
/// metric), replacing `path` atomically.
pub fn write_sample_scores(path: &Path, scores: &[(&str, Vec<f64>)]) -> Result<(), StoreError> {
    let mut text = std::iter::once("sample").chain(scores.iter().map(|(m, _)| *m)).collect::<Vec<_>>().join(",");
    let n = scores.first().map_or(0, |(_, v)| v.len());
    for k in 0..n {
        text.push_str(&format!("\n{k}"));
        for (_, values) in scores {
            text.push_str(&format!(",{}", values[k]));
        }
    }
    text.push('\n');
    let dir = path.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new("."));
    fs::create_dir_all(dir).map_err(io(dir, "creating the sample scores' directory"))?;
    crate::fs::write_atomic(path, text.as_bytes()).map_err(|e| StoreError::Io {
        path: path.to_path_buf(),
        op: "writing sample scores",
        source: e.source,
    })
}

/// Reads per-sample scores as [`write_sample_scores`] writes them: `(metric, one value per
/// sample)`. Errors name the file and the line.
pub fn read_sample_scores(path: &Path) -> Result<Vec<(String, Vec<f64>)>, StoreError> {
    let text = fs::read_to_string(path).map_err(io(path, "reading sample scores"))?;
    let records = parse_records(&text).map_err(|(line, message)| csv_error(path, line, message))?;
    let mut records = records.into_iter();
    let Some((_, header)) = records.next() else {
        return Err(csv_error(path, 1, "empty file, expected a header".into()));
    };
    let mut columns: Vec<(String, Vec<f64>)> = header.into_iter().skip(1).map(|m| (m, Vec::new())).collect();
    for (line, fields) in records {
        if fields.len() != columns.len() + 1 {
            return Err(csv_error(path, line, format!("{} fields, expected {}", fields.len(), columns.len() + 1)));
        }
        for ((_, values), field) in columns.iter_mut().zip(&fields[1..]) {
            values.push(field.parse().map_err(|_| csv_error(path, line, format!("bad value {field:?}")))?);
        }
    }
    Ok(columns)
}
