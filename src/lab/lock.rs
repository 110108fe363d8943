//! One runner per cell: a runner holds an exclusive `flock` on `<cell dir>/.lock` while the
//! cell runs, so that a second `vestige run`, a requeued Slurm task or a resubmission skips
//! a cell that is running elsewhere instead of training it twice.
//!
//! The lock file names its holder (`pid@host`) while held and is emptied on release. The
//! kernel drops a dead process's `flock`, so a lock left by a crashed or killed runner is
//! free to take; the holder it still names says that a runner died there, which
//! [`CellLock::took_over`] reports.

use std::fs::{File, OpenOptions, TryLockError};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

/// The lock file in a cell's directory.
pub const LOCK_FILE: &str = ".lock";

/// An exclusive lock on a cell, released on drop.
#[derive(Debug)]
pub struct CellLock {
    file: File,
    path: PathBuf,
    took_over: Option<String>,
}

/// What [`CellLock::try_acquire`] found.
#[derive(Debug)]
pub enum Acquired {
    /// The cell is ours until the lock drops.
    Locked(CellLock),
    /// Another runner holds it; the holder as it wrote itself (`pid@host`).
    Busy(String),
}

impl CellLock {
    /// Takes the lock of the cell in `dir` (created if missing) without waiting.
    pub fn try_acquire(dir: &Path) -> std::io::Result<Acquired> {
        std::fs::create_dir_all(dir)?;
        let path = dir.join(LOCK_FILE);
        let mut file = OpenOptions::new().read(true).write(true).create(true).truncate(false).open(&path)?;
        match file.try_lock() {
            Ok(()) => {}
            Err(TryLockError::WouldBlock) => return Ok(Acquired::Busy(holder(&mut file)?)),
            Err(TryLockError::Error(e)) => return Err(e),
        }
        let previous = holder(&mut file)?;
        file.set_len(0)?;
        file.seek(SeekFrom::Start(0))?;
        write!(file, "{}", me())?;
        file.sync_all()?;
        let took_over = (!previous.is_empty()).then_some(previous);
        Ok(Acquired::Locked(CellLock { file, path, took_over }))
    }

    /// The holder of the cell's lock in `dir` while another runner holds it; the lock is
    /// only looked at, not taken.
    pub fn held_by(dir: &Path) -> std::io::Result<Option<String>> {
        let mut file = match File::open(dir.join(LOCK_FILE)) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e),
        };
        match file.try_lock_shared() {
            Ok(()) => Ok(None),
            Err(TryLockError::WouldBlock) => Ok(Some(holder(&mut file)?)),
            Err(TryLockError::Error(e)) => Err(e),
        }
    }

    /// The holder named by a lock that a runner left without releasing it (it died), now
    /// taken over.
    pub fn took_over(&self) -> Option<&str> {
        self.took_over.as_deref()
    }
}

impl Drop for CellLock {
    fn drop(&mut self) {
        // Emptied before the kernel drops the lock with the file, so that a holder named in
        // the file always means a runner that did not release it.
        if let Err(e) = self.file.set_len(0) {
            tracing::warn!("emptying {}: {e}", self.path.display());
        }
    }
}

/// `pid@host` of this process.
fn me() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
    format!("pid {}@{}", std::process::id(), host.trim())
}

/// The holder written in a lock file.
fn holder(file: &mut File) -> std::io::Result<String> {
    let mut s = String::new();
    file.seek(SeekFrom::Start(0))?;
    file.read_to_string(&mut s)?;
    Ok(s.trim().to_string())
}
