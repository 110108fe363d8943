//! Helpers shared by the integration tests: reading reference fixtures of any dtype,
//! comparing tensors at a tolerance relative to the reference's scale, building run
//! configs ([`RunToml`]), and a tiny decay experiment for the scheduler's tests.
#![allow(dead_code)]

use safetensors::{Dtype, SafeTensors};
use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

/// A reference tensor as f64 values (integers included) with its shape.
pub struct RefTensor {
    pub shape: Vec<usize>,
    pub data: Vec<f64>,
}

/// Every tensor in a safetensors fixture, converted to f64.
pub fn read_reference(path: &Path) -> BTreeMap<String, RefTensor> {
    let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let st = SafeTensors::deserialize(&bytes).unwrap();
    st.tensors()
        .into_iter()
        .map(|(name, view)| {
            let raw = view.data();
            let data: Vec<f64> = match view.dtype() {
                Dtype::F32 => raw.chunks_exact(4).map(|b| f32::from_le_bytes(b.try_into().unwrap()) as f64).collect(),
                Dtype::F64 => raw.chunks_exact(8).map(|b| f64::from_le_bytes(b.try_into().unwrap())).collect(),
                Dtype::I64 => raw.chunks_exact(8).map(|b| i64::from_le_bytes(b.try_into().unwrap()) as f64).collect(),
                other => panic!("unsupported fixture dtype {other:?}"),
            };
            (name, RefTensor { shape: view.shape().to_vec(), data })
        })
        .collect()
}

/// The fixture directory of the repository.
pub fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

/// `max |a − b| / max(max |b|, floor)`.
pub fn rel_err(actual: &[f32], reference: &[f64], floor: f64) -> f64 {
    assert_eq!(actual.len(), reference.len(), "length mismatch");
    let scale = reference.iter().fold(floor, |m, v| m.max(v.abs()));
    actual.iter().zip(reference).map(|(a, b)| (*a as f64 - b).abs()).fold(0.0, f64::max) / scale
}

/// Asserts `rel_err ≤ tol`, naming the tensor.
#[track_caller]
pub fn assert_close(name: &str, actual: &[f32], reference: &[f64], tol: f64) {
    let e = rel_err(actual, reference, 1e-12);
    assert!(e <= tol, "{name}: relative max error {e:.3e} exceeds {tol:.0e}");
}

/// Writes experiment `text` to `dir/exp.toml` with its results under `dir` (an `out_dir`
/// line goes after its `threads = 2` line, which must be there).
pub fn experiment(dir: &Path, text: &str) -> PathBuf {
    assert!(text.contains("threads = 2"), "an experiment for `experiment` sets threads = 2");
    let path = dir.join("exp.toml");
    let text = text.replacen("threads = 2", &format!("threads = 2\nout_dir = \"{}\"", dir.display()), 1);
    std::fs::write(&path, text).unwrap();
    path
}

/// A tiny decay experiment named `name` (seeds `seeds`, e.g. `[0, 1]`; `steps` steps in its
/// first phase; a checkpoint every 100 steps; the chance floor, so one cell per seed), written
/// to `dir/<name>.toml` and recording under `dir`; returns its path.
pub fn tiny_decay_experiment(dir: &Path, name: &str, seeds: &str, steps: u64) -> PathBuf {
    let decay = format!(
        "a = \"copy\"\nb = \"reverse\"\ntogether_steps = {steps}\nafter_steps = 20\nafter_evals = 4\n\
         eval_samples = 8\nbatch_size = 8\nfloor = \"chance\""
    );
    RunToml::new(name)
        .set("template", "decay")
        .set("threads", 2)
        .out_dir(dir)
        .table("[model]", "scale = \"100k\"\nmax_positions = 16")
        .sequence_task("copy", 4, 12)
        .sequence_task("reverse", 4, 12)
        .table("[checkpoint]", "every = 100")
        .table("[decay]", &decay)
        .table("[sweep]", &format!("seed = {seeds}"))
        .write(dir, &format!("{name}.toml"))
}

/// A run config (or an experiment) as TOML text, built table by table so that a test states
/// only what it is about:
///
/// ```text
/// RunToml::new("reg").set("seed", 1).model(32, 1, 2, 16).sequence_task("copy", 5, 12)
///     .phase("a", "steps = 250\nmixture = { copy = 1.0 }")
/// ```
///
/// It prints the top-level keys, then each table after a blank line, in the order given:
/// `name = "x"` is line 1 and the first table's header line 3.
#[derive(Clone)]
pub struct RunToml {
    top: Vec<String>,
    tables: Vec<String>,
}

impl RunToml {
    /// The smallest run of one task: `name = "x"`, the task named `task` whose other lines
    /// are `keys` (from line 5 on), and a one-step phase on it.
    pub fn one_task(task: &str, keys: &str) -> RunToml {
        RunToml::new("x").task(task, keys).phase("a", &format!("steps = 1\nmixture = {{ {task} = 1.0 }}"))
    }

    /// A config named `name`, without tables.
    pub fn new(name: &str) -> RunToml {
        RunToml { top: Vec::new(), tables: Vec::new() }.set("name", name)
    }

    /// A top-level `key = value` (`seed`, `threads`, `template`, …).
    pub fn set(mut self, key: &str, value: impl Into<toml::Value>) -> RunToml {
        self.top.push(format!("{key} = {}", value.into()));
        self
    }

    /// Results go under `dir`.
    pub fn out_dir(self, dir: &Path) -> RunToml {
        self.set("out_dir", dir.display().to_string())
    }

    /// A fresh `gpt_neox` model of this shape.
    pub fn model(self, d_model: usize, n_layers: usize, n_heads: usize, max_positions: usize) -> RunToml {
        let keys =
            format!("d_model = {d_model}\nn_layers = {n_layers}\nn_heads = {n_heads}\nmax_positions = {max_positions}");
        self.table("[model]", &keys)
    }

    /// A `[[tasks]]` entry named `name`; `keys` holds its other lines (`kind = …` first).
    pub fn task(self, name: &str, keys: &str) -> RunToml {
        self.table("[[tasks]]", &format!("name = {}\n{keys}", toml::Value::from(name)))
    }

    /// A `copy` or `reverse` task, named after its kind.
    pub fn sequence_task(self, kind: &str, length: usize, vocab: usize) -> RunToml {
        self.task(kind, &format!("kind = \"{kind}\"\nlength = {length}\nvocab = {vocab}"))
    }

    /// A `[[phases]]` entry named `name`; `keys` holds its other lines.
    pub fn phase(self, name: &str, keys: &str) -> RunToml {
        self.table("[[phases]]", &format!("name = {}\n{keys}", toml::Value::from(name)))
    }

    /// Any table: `header` (`[checkpoint]`, `[decay]`, …) and its lines.
    pub fn table(mut self, header: &str, keys: &str) -> RunToml {
        self.tables.push(format!("{header}\n{}", keys.trim_end()));
        self
    }

    /// Writes the TOML to `dir/file` (creating `dir`) and returns the file's path.
    pub fn write(&self, dir: &Path, file: &str) -> PathBuf {
        std::fs::create_dir_all(dir).unwrap();
        let path = dir.join(file);
        std::fs::write(&path, self.to_string()).unwrap();
        path
    }
}

impl fmt::Display for RunToml {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for line in &self.top {
            writeln!(f, "{line}")?;
        }
        for table in &self.tables {
            write!(f, "\n{table}\n")?;
        }
        Ok(())
    }
}

/// A finished command's standard output and error, as text.
pub fn output_text(out: &std::process::Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr))
}
