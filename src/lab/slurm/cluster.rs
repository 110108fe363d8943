//! The Slurm commands vestige calls (`sbatch`, `squeue`, `sinfo`, `scontrol`), each turned
//! into a [`SlurmError`] that says what to do when it is missing or refuses.

use super::SlurmError;
use std::process::Command;

/// Fails unless `sbatch` is on PATH (checked first, so that a machine without Slurm gets
/// one clear error).
pub fn require_sbatch() -> Result<(), SlurmError> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    match std::env::split_paths(&path).any(|d| d.join("sbatch").is_file()) {
        true => Ok(()),
        false => Err(SlurmError::NotInstalled { program: "sbatch".into() }),
    }
}

/// Runs `program args` and returns its standard output.
fn call(program: &str, args: &[String]) -> Result<String, SlurmError> {
    let out = Command::new(program).args(args).output().map_err(|source| match source.kind() {
        std::io::ErrorKind::NotFound => SlurmError::NotInstalled { program: program.to_string() },
        _ => SlurmError::Io { what: format!("running {program}"), source },
    })?;
    if !out.status.success() {
        return Err(SlurmError::Refused {
            command: format!("{program} {}", args.join(" ")),
            message: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        });
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Submits `script` with `args` before it; returns the job id.
pub fn sbatch(args: &[String], script: &str) -> Result<String, SlurmError> {
    let mut all = vec!["--parsable".to_string()];
    all.extend(args.iter().cloned());
    all.push(script.to_string());
    let out = call("sbatch", &all)?;
    // `--parsable` prints `jobid` or `jobid;cluster`.
    Ok(out.trim().split(';').next().unwrap_or_default().to_string())
}

/// The partitions of the cluster.
pub fn partitions() -> Result<Vec<String>, SlurmError> {
    let out = call("sinfo", &["-h".into(), "-o".into(), "%R".into()])?;
    Ok(out.lines().map(|l| l.trim().to_string()).filter(|l| !l.is_empty()).collect())
}

/// The cluster's `MaxArraySize`: array task indices must stay below it.
pub fn max_array_size() -> Result<usize, SlurmError> {
    let out = call("scontrol", &["show".into(), "config".into()])?;
    let line = out.lines().find(|l| l.trim_start().starts_with("MaxArraySize"));
    Ok(line.and_then(|l| l.split('=').nth(1)).and_then(|v| v.trim().parse().ok()).unwrap_or(1001))
}

/// `(array job id, task index, state code)` of the queued and running tasks of `jobs`
/// (`PD`, `R`, `CG`, ...); a job that is no array (a search's selection) has no task index.
/// A job Slurm has already forgotten is simply absent.
pub fn queued(jobs: &[String]) -> Result<Vec<(String, Option<usize>, String)>, SlurmError> {
    if jobs.is_empty() {
        return Ok(Vec::new());
    }
    let args = ["-h", "-r", "-o", "%F %K %t", "-j", &jobs.join(",")].map(String::from);
    let out = match call("squeue", &args) {
        Ok(out) => out,
        // squeue refuses a list of job ids that are all gone.
        Err(SlurmError::Refused { message, .. }) if message.contains("Invalid job id") => String::new(),
        Err(e) => return Err(e),
    };
    Ok(out
        .lines()
        .filter_map(|l| {
            let mut f = l.split_whitespace();
            let (job, task, state) = (f.next()?, f.next()?.parse().ok(), f.next()?);
            Some((job.to_string(), task, state.to_string()))
        })
        .collect())
}
