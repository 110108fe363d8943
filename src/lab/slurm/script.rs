//! `runs/<exp>/slurm/array.sbatch`: the batch script every array task runs. It is plain
//! bash with `#SBATCH` lines, so a user can read and adapt it.
//!
//! Each task runs cell `VESTIGE_CELL_OFFSET + SLURM_ARRAY_TASK_ID` (the offset lets a grid
//! larger than the cluster's `MaxArraySize` go out in chunks) with its own store file, its
//! output appended to `slurm/logs/cell-<i>.log`, and its end written to
//! `slurm/exits/cell-<i>` (`exit CODE` or `requeued`), which `vestige status` reads where
//! `sacct` has no accounting to offer. The batch shell receives Slurm's
//! `USR1` ahead of the time limit (or from `scancel --signal=USR1 --batch`) and forwards it
//! to the cell, which checkpoints and exits with [`INTERRUPTED_EXIT`]; the task then
//! requeues itself (up to [`MAX_REQUEUES`] times) and resumes from that checkpoint.

use std::path::Path;

/// The exit code of a cell that checkpointed and stopped on `USR1`.
pub const INTERRUPTED_EXIT: i32 = 75;

/// A task requeues itself at most this many times (a time limit shorter than the USR1
/// warning would otherwise requeue it forever); then it counts as failed, to resubmit.
pub const MAX_REQUEUES: u32 = 10;

/// What the script needs to know.
pub struct Script<'a> {
    pub name: &'a str,
    /// The experiment directory (absolute).
    pub root: &'a Path,
    /// Where `vestige run` was started (tasks run there, so relative paths agree).
    pub workdir: &'a Path,
    /// The vestige binary (absolute).
    pub vestige: &'a Path,
    pub cpus_per_task: usize,
    pub partition: Option<&'a str>,
    pub time: Option<&'a str>,
    pub mem: Option<&'a str>,
    /// Further `sbatch` options, written as `#SBATCH` lines.
    pub extra: &'a [String],
}

impl Script<'_> {
    /// The script's text.
    pub fn render(&self) -> String {
        let q = |p: &Path| shell_quote(&p.display().to_string());
        let mut s = format!(
            "#!/bin/bash\n\
             # vestige experiment {name}: one cell per array task. Written by\n\
             # `vestige run --backend slurm`, which submits it as\n\
             #   sbatch --array=0-N%K --export=ALL,VESTIGE_CELL_OFFSET=0 array.sbatch\n\
             #SBATCH --job-name=vestige-{name}\n\
             #SBATCH --output={root}/slurm/logs/job-%A_%a.out\n\
             #SBATCH --requeue\n\
             #SBATCH --signal=B:USR1@90\n\
             #SBATCH --cpus-per-task={cpus}\n",
            name = self.name,
            root = self.root.display(),
            cpus = self.cpus_per_task,
        );
        s.push_str(&self.options());
        s.push_str(&format!(
            r#"
set -u
cell=$(( ${{VESTIGE_CELL_OFFSET:-0}} + SLURM_ARRAY_TASK_ID ))
# A lower rung of a halving search (its cells' ids end in _rung<k>); unset for the grid's cells.
rung=${{VESTIGE_RUNG:-}}
name="cell-$cell${{rung:+_rung$rung}}"
root={root}
log="$root/slurm/logs/$name.log"
exits="$root/slurm/exits/$name"
mkdir -p "$root/slurm/logs" "$root/slurm/exits"
rm -f "$exits"
echo "== task ${{SLURM_ARRAY_JOB_ID}}_${{SLURM_ARRAY_TASK_ID}} on $(hostname), restart ${{SLURM_RESTART_COUNT:-0}}, $(date -u +%FT%TZ)" >>"$log"
cd {workdir}
{vestige} --threads {cpus} run "$root/experiment.toml" --cell "$cell" ${{rung:+--rung "$rung"}} --cell-store >>"$log" 2>&1 &
pid=$!
# USR1 (before the time limit, or scancel --signal=USR1 --batch): checkpoint and stop.
trap 'kill -USR1 $pid' USR1
# TERM: cancelled, or out of time (Slurm's note in the job's output file says which).
trap 'echo "exit 143" >"$exits"; kill -TERM $pid 2>/dev/null' TERM
while kill -0 $pid 2>/dev/null; do wait $pid; done
wait $pid
rc=$?
if [ $rc -eq {interrupted} ] && [ "${{SLURM_RESTART_COUNT:-0}}" -lt {max_requeues} ]; then
    echo "requeued" >"$exits"
    scontrol requeue "${{SLURM_ARRAY_JOB_ID}}_${{SLURM_ARRAY_TASK_ID}}"
    exit 0
fi
[ -s "$exits" ] || echo "exit $rc" >"$exits"
exit $rc
"#,
            root = q(self.root),
            workdir = q(self.workdir),
            vestige = q(self.vestige),
            cpus = self.cpus_per_task,
            interrupted = INTERRUPTED_EXIT,
            max_requeues = MAX_REQUEUES,
        ));
        s
    }

    /// The text of `select.sbatch`: the small job that selects the configurations of a halving
    /// search's rung `VESTIGE_RUNG` from the last rung's cells and submits that rung's array
    /// (and the next rung's selection), each array capped at `max_parallel` running tasks.
    pub fn render_select(&self, max_parallel: Option<usize>) -> String {
        let q = |p: &Path| shell_quote(&p.display().to_string());
        let limit = max_parallel.map(|k| format!(" --max-parallel {k}")).unwrap_or_default();
        format!(
            "#!/bin/bash\n\
             # vestige experiment {name}: the selection of a successive-halving rung. Written by\n\
             # `vestige run --backend slurm --search`, which submits it (and each selection the next) as\n\
             #   sbatch --dependency=afterany:<the last rung's jobs> --export=ALL,VESTIGE_RUNG=k select.sbatch\n\
             #SBATCH --job-name=vestige-{name}-select\n\
             #SBATCH --cpus-per-task=1\n\
             {options}\n\
             set -u\n\
             cd {workdir}\n\
             exec {vestige} search-rung {root} --rung \"$VESTIGE_RUNG\"{limit}\n",
            name = self.name,
            options = self.options(),
            workdir = q(self.workdir),
            vestige = q(self.vestige),
            root = q(self.root),
        )
    }

    /// The `#SBATCH` lines of the user's options.
    fn options(&self) -> String {
        let mut s = String::new();
        for (key, value) in [("partition", self.partition), ("time", self.time), ("mem", self.mem)] {
            if let Some(v) = value {
                s.push_str(&format!("#SBATCH --{key}={v}\n"));
            }
        }
        for arg in self.extra {
            s.push_str(&format!("#SBATCH {arg}\n"));
        }
        s
    }
}

/// `s` quoted for bash.
fn shell_quote(s: &str) -> String {
    if s.chars().all(|c| c.is_ascii_alphanumeric() || "/._-+=:,@".contains(c)) {
        s.to_string()
    } else {
        format!("'{}'", s.replace('\'', r"'\''"))
    }
}
