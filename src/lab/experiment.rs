//! Experiment files: a run config (model, tasks, phases or a template table such as
//! `[decay]`) plus the experiment's own keys — `template`, `[sweep]`, `threads`,
//! `threads_per_cell`, `[analysis]` and `[search]` — expanded into one resolved run config per cell.
//!
//! Sweeps live in their own `[sweep]` table rather than making any list-valued key an axis,
//! because many keys are lists by nature (`eval.tasks`, `lora.targets`, `betas`).

use super::scales::scale;
use super::search::SearchSpec;
use super::studies;
use super::study::{Parse, Problem, Study};
use super::sweep::{axes, grid, set_path, slug, Axis};
use crate::train::config::{ConfigError, RunConfig};
use crate::train::locate::line_of;
use serde::Deserialize;
use std::path::{Path, PathBuf};

/// The experiment's own settings.
#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    /// A study's name (see [`studies::REGISTRY`]), or none (the file gives `[[phases]]` itself).
    pub template: Option<String>,
    /// Key path → values; the grid is the product.
    #[serde(default)]
    pub sweep: toml::Table,
    /// Threads for the whole experiment (default: all cores).
    pub threads: Option<usize>,
    /// Threads per cell; `threads / threads_per_cell` cells run at once.
    #[serde(default = "one")]
    pub threads_per_cell: usize,
    #[serde(default)]
    pub analysis: AnalysisSpec,
    /// What `vestige run --search` samples, within which budget.
    pub search: Option<SearchSpec>,
}

fn one() -> usize {
    1
}

/// What the analysis fits.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct AnalysisSpec {
    /// The metric whose decay defines the half-life (`loss`, `exact_match`, ...).
    pub metric: String,
    /// The metric's chance level (default: ln(vocab) for `loss`, 0 otherwise).
    pub floor: Option<f64>,
    /// Bootstrap resamples for confidence intervals.
    pub resamples: usize,
}

impl Default for AnalysisSpec {
    fn default() -> Self {
        AnalysisSpec { metric: "loss".into(), floor: None, resamples: 1000 }
    }
}

/// The experiment-level keys (everything else belongs to the cells' run config).
const OWN_KEYS: [&str; 6] = ["template", "sweep", "threads", "threads_per_cell", "analysis", "search"];

/// One cell: a sweep point and its resolved run config.
#[derive(Clone, Debug)]
pub struct Cell {
    pub index: usize,
    /// `c003_scale-300k_seed-1`: the run name and directory.
    pub id: String,
    /// `(axis key, value)` for each axis.
    pub point: Vec<(String, toml::Value)>,
    pub config: RunConfig,
    /// The resolved config's TOML text.
    pub text: String,
}

/// A parsed experiment.
#[derive(Debug)]
pub struct Experiment {
    pub name: String,
    pub file: PathBuf,
    pub text: String,
    pub settings: Settings,
    /// The study the template names, read at the grid's first point (a key the sweep varies
    /// differs per cell: read it from the cell's point or config); none without a template.
    pub study: Option<Box<dyn Study>>,
    pub axes: Vec<Axis>,
    pub cells: Vec<Cell>,
    /// With a successive-halving `[search]`, the cells of every rung but the last (which is
    /// [`Experiment::cells`]): rung `k`'s continue phase is `search.divisor(k)` times shorter,
    /// its cells have the grid's indices and ids ending in `_rung{k}`. Empty otherwise.
    pub rungs: Vec<Vec<Cell>>,
    /// `out_dir/name`.
    pub root: PathBuf,
}

impl Experiment {
    /// Reads and expands an experiment file; every cell's config is validated, and errors
    /// name the file, key and line.
    pub fn load(path: &Path) -> Result<Experiment, ConfigError> {
        Self::parse(&ConfigError::read(path)?, path)
    }

    /// Expands experiment TOML `text` read from `path`.
    pub fn parse(text: &str, path: &Path) -> Result<Experiment, ConfigError> {
        let file = path.display().to_string();
        let err = |key: &str, message: String| ConfigError {
            file: file.clone(),
            line: line_of(text, key),
            key: key.to_string(),
            message,
        };
        let mut base: toml::Table = toml::from_str(text).map_err(|e| {
            let line = e.span().map_or(0, |s| text[..s.start].matches('\n').count() + 1);
            ConfigError { file: file.clone(), line, key: "(parse)".into(), message: e.message().trim().to_string() }
        })?;
        let mut own = toml::Table::new();
        for key in OWN_KEYS {
            if let Some(v) = base.remove(key) {
                own.insert(key.into(), v);
            }
        }
        if let Some(search) = own.get("search") {
            let checked: Result<SearchSpec, _> = search.clone().try_into();
            checked.map_err(|e| err("search", e.message().trim().into()))?;
        }
        let settings: Settings = own.try_into().map_err(|e: toml::de::Error| err("", e.message().trim().into()))?;
        let parser = settings.template.as_deref().map(studies::parser).transpose().map_err(|m| err("template", m))?;
        if settings.threads == Some(0) || settings.threads_per_cell == 0 {
            return Err(err("threads_per_cell", "threads and threads_per_cell must be at least 1".into()));
        }
        let mut axes = axes(&settings.sweep).map_err(|(k, m)| err(&k, m))?;
        let study = match parser {
            Some(parse) => {
                Some(parse(&first_point(&base, &axes).map_err(|(k, m)| err(&k, m))?).map_err(|(k, m)| err(&k, m))?)
            }
            None => None,
        };
        if let Some(search) = &settings.search {
            if let Some((k, m)) = search.problems(&axes, study.as_deref()).into_iter().next() {
                return Err(err(&format!("search.{k}"), m));
            }
        }
        if let Some(study) = &study {
            let at = axes.iter().position(|a| a.key == "seed").unwrap_or(axes.len());
            axes.splice(at..at, study.axes());
        }
        let name = base.get("name").and_then(|n| n.as_str()).unwrap_or_default().to_string();
        let out_dir = base.get("out_dir").and_then(|n| n.as_str()).unwrap_or("runs").to_string();
        let root = PathBuf::from(out_dir).join(&name);
        if name.is_empty() || name.contains(['/', '\\']) {
            return Err(err("name", "must be a non-empty name without path separators".into()));
        }
        let expand_cells = |divisor: u64, suffix: &str| -> Result<Vec<Cell>, ConfigError> {
            let mut cells = Vec::new();
            for (index, point) in grid(&axes).into_iter().enumerate() {
                let point: Vec<(String, toml::Value)> =
                    axes.iter().zip(&point).map(|(a, &i)| (a.key.clone(), a.values[i].clone())).collect();
                let id = format!("{}{suffix}", cell_id(index, &axes, &point));
                let cell_text = resolve(&base, &axes, &point, parser, divisor, &id, &root)
                    .map_err(|(k, m)| err(&k, format!("{m} (cell {id})")))?;
                let config = RunConfig::from_toml(&cell_text, &file).map_err(|e| ConfigError {
                    line: source_line(text, &cell_text, &e),
                    message: format!("{} (cell {id})", e.message),
                    ..e
                })?;
                cells.push(Cell { index, id, point, config, text: cell_text });
            }
            Ok(cells)
        };
        let cells = expand_cells(1, "")?;
        let rungs = match settings.search.as_ref().filter(|s| s.method == "halving") {
            Some(s) => {
                (0..s.rungs - 1).map(|k| expand_cells(s.divisor(k), &format!("_rung{k}"))).collect::<Result<_, _>>()?
            }
            None => Vec::new(),
        };
        Ok(Experiment {
            name,
            file: path.to_path_buf(),
            text: text.to_string(),
            settings,
            study,
            axes,
            cells,
            rungs,
            root,
        })
    }

    /// The experiment an earlier `vestige run` copied into `dir`, with results read from `dir`.
    pub fn open_dir(dir: &Path) -> Result<Experiment, ConfigError> {
        let mut exp = Self::load(&dir.join("experiment.toml"))?;
        exp.root = dir.to_path_buf();
        Ok(exp)
    }

    /// Where cell runs are written.
    pub fn cells_dir(&self) -> PathBuf {
        self.root.join("cells")
    }

    /// Where cells' shared first phases are kept (see [`crate::train::shared_base`]).
    pub fn bases_dir(&self) -> PathBuf {
        self.root.join("bases")
    }

    /// The experiment's run store.
    pub fn db(&self) -> PathBuf {
        self.root.join("vestige.db")
    }

    /// The store file of cell `id` when the cell keeps its own (under Slurm; the report
    /// merges it into [`Experiment::db`]).
    pub fn cell_db(&self, id: &str) -> PathBuf {
        self.cells_dir().join(id).join("vestige.db")
    }
}

/// The experiment-file line of a cell config error: by key path, or for a parse error by
/// finding the offending resolved line in the experiment text.
fn source_line(text: &str, cell_text: &str, e: &ConfigError) -> usize {
    if e.key != "(parse)" {
        return line_of(text, &e.key);
    }
    let wanted = cell_text.lines().nth(e.line.saturating_sub(1)).unwrap_or_default().trim();
    text.lines().position(|l| l.trim() == wanted && !wanted.is_empty()).map_or(1, |i| i + 1)
}

/// `c{index}_{label}-{value}…`.
fn cell_id(index: usize, axes: &[Axis], point: &[(String, toml::Value)]) -> String {
    let mut id = format!("c{index:03}");
    for (axis, (_, value)) in axes.iter().zip(point) {
        id.push_str(&format!("_{}-{}", axis.label(), slug(value)));
    }
    id
}

/// The run config of one cell as TOML text: the sweep values set, the model scale and the
/// study expanded (its measured phase cut `divisor` times shorter for a halving search's
/// lower rung), the run named after the cell and written under `root/cells`.
fn resolve(
    base: &toml::Table,
    axes: &[Axis],
    point: &[(String, toml::Value)],
    parser: Option<Parse>,
    divisor: u64,
    id: &str,
    root: &Path,
) -> Result<String, Problem> {
    let mut doc = base.clone();
    for (axis, (_, value)) in axes.iter().zip(point) {
        set_values(&mut doc, axis, value)?;
    }
    expand_scale(&mut doc)?;
    if let Some(parse) = parser {
        let mut study = parse(&doc)?;
        if divisor > 1 {
            study.shorten(divisor)?;
        }
        study.write(&mut doc)?;
    }
    doc.insert("name".into(), id.into());
    doc.insert("out_dir".into(), root.join("cells").display().to_string().into());
    Ok(toml::to_string(&doc).expect("a TOML table serialises"))
}

/// Sets `axis`'s key paths in `doc` to `value` (split over them for a `a|b` axis).
fn set_values(doc: &mut toml::Table, axis: &Axis, value: &toml::Value) -> Result<(), Problem> {
    for (p, v) in axis.paths.iter().zip(axis.split(value)) {
        set_path(doc, p, v).map_err(|m| (format!("sweep.{}", axis.key), m))?;
    }
    Ok(())
}

/// `base` with every axis at its first value: where the experiment reads its study.
fn first_point(base: &toml::Table, axes: &[Axis]) -> Result<toml::Table, Problem> {
    let mut doc = base.clone();
    for axis in axes {
        if let Some(value) = axis.values.first() {
            set_values(&mut doc, axis, value)?;
        }
    }
    Ok(doc)
}

/// Replaces `model.scale = "NAME"` by the ladder's width, depth and heads.
fn expand_scale(doc: &mut toml::Table) -> Result<(), (String, String)> {
    let Some(model) = doc.get_mut("model").and_then(|m| m.as_table_mut()) else { return Ok(()) };
    let Some(name) = model.remove("scale") else { return Ok(()) };
    let s = scale(name.as_str().unwrap_or_default()).map_err(|m| ("model.scale".to_string(), m))?;
    model.insert("d_model".into(), (s.d_model as i64).into());
    model.insert("n_layers".into(), (s.n_layers as i64).into());
    model.insert("n_heads".into(), (s.n_heads as i64).into());
    Ok(())
}
