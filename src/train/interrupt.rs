//! Stopping a run on request: after [`install`], `SIGUSR1` (Slurm's warning before a time
//! limit or a preemption) sets a flag that the step loop checks after each step; it then
//! saves a checkpoint and stops with [`Interrupted`], and the run resumes bit-identically.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};

static REQUESTED: OnceLock<Arc<AtomicBool>> = OnceLock::new();

/// Makes `SIGUSR1` request a checkpoint and a stop. Idempotent.
pub fn install() -> std::io::Result<()> {
    if REQUESTED.get().is_some() {
        return Ok(());
    }
    let flag = REQUESTED.get_or_init(Arc::default);
    signal_hook::flag::register(signal_hook::consts::SIGUSR1, Arc::clone(flag)).map(|_| ())
}

/// Whether a stop was requested.
pub fn requested() -> bool {
    REQUESTED.get().is_some_and(|f| f.load(Ordering::Relaxed))
}

/// The run stopped on request after saving a checkpoint at `step`.
#[derive(Debug, thiserror::Error)]
#[error("stopped by SIGUSR1 at step {step} after saving a checkpoint; rerunning continues from it")]
pub struct Interrupted {
    pub step: u64,
}
