//! Atomic file writes: a file is either its old content or its new content, never a mix,
//! whatever crashes when. The new bytes go to a temporary sibling that is fsynced, renamed
//! over the target, and the directory fsynced so the rename itself survives a crash.
//!
//! What does not live here: any file format (`hf` writes safetensors through
//! [`replace_atomically`]; checkpoints assemble directories in `train::checkpoint`).

use std::fs::{self, File};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

/// A file or directory that could not be written, read or synced.
#[derive(Debug, thiserror::Error)]
#[error("I/O error on {}: {source}", path.display())]
pub struct FsError {
    /// The file or directory involved.
    pub path: PathBuf,
    /// The underlying I/O error.
    #[source]
    pub source: std::io::Error,
}

/// The error of an I/O failure on `path`.
fn at(path: &Path) -> impl FnOnce(std::io::Error) -> FsError + '_ {
    move |source| FsError { path: path.to_path_buf(), source }
}

/// Replaces `path` with `bytes` atomically: writes a temporary file in the same
/// directory, fsyncs it, renames it over `path`, then fsyncs the directory.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), FsError> {
    replace_atomically(path, |tmp| {
        let mut file = File::options().write(true).create_new(true).open(tmp).map_err(at(tmp))?;
        file.write_all(bytes).map_err(at(tmp))
    })
}

/// Runs `write` on a fresh temporary sibling of `path`, then fsyncs and renames it over
/// `path`; the temporary file is removed on any failure.
pub fn replace_atomically<E: From<FsError>>(path: &Path, write: impl FnOnce(&Path) -> Result<(), E>) -> Result<(), E> {
    let dir = path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    let tmp = temp_sibling(path, dir)?;
    let result =
        write(&tmp).and_then(|()| Ok(sync_file(&tmp)?)).and_then(|()| Ok(fs::rename(&tmp, path).map_err(at(path))?));
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result?;
    Ok(sync_dir(dir)?)
}

/// A temporary name next to `path`, unique within this process and across processes.
fn temp_sibling(path: &Path, dir: &Path) -> Result<PathBuf, FsError> {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let name = path.file_name().ok_or_else(|| FsError {
        path: path.to_path_buf(),
        source: std::io::Error::new(std::io::ErrorKind::InvalidInput, "not a file path"),
    })?;
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    Ok(dir.join(format!(".{}.tmp.{}.{n}", name.to_string_lossy(), std::process::id())))
}

/// Flushes a written file's data to disk (opened for writing: Windows requires it).
fn sync_file(path: &Path) -> Result<(), FsError> {
    File::options().write(true).open(path).and_then(|f| f.sync_all()).map_err(at(path))
}

/// Makes a rename in `dir` durable; directories cannot be fsynced this way off Unix.
fn sync_dir(dir: &Path) -> Result<(), FsError> {
    if cfg!(unix) {
        File::open(dir).and_then(|d| d.sync_all()).map_err(at(dir))?;
    }
    Ok(())
}
