//! Experiment files: a run config (model, tasks, phases or a template table such as
//! `[decay]`) plus the experiment's own keys — `template`, `[sweep]`, `threads`,
//! `threads_per_cell`, `[analysis]` and `[search]` — expanded into one resolved run config per cell.
//!
//! Sweeps live in their own `[sweep]` table rather than making any list-valued key an axis,
//! because many keys are lists by nature (`eval.tasks`, `lora.targets`, `betas`).

use super::backdoor::BackdoorSpec;
use super::decay::DecaySpec;
use super::scales::scale;
use super::search::SearchSpec;
use super::sweep::{axes, grid, set_path, slug, Axis};
use crate::train::config::{ConfigError, RunConfig};
use crate::train::locate::line_of;
use serde::Deserialize;
use std::path::{Path, PathBuf};

/// The experiment's own settings.
#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    /// `decay`, `distance`, `backdoor`, or none (the file gives `[[phases]]` itself).
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

/// The templates.
pub const TEMPLATES: [&str; 3] = ["decay", "distance", "backdoor"];

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
        if let Some(t) = settings.template.as_deref().filter(|t| !TEMPLATES.contains(t)) {
            return Err(err("template", format!("{t:?} is not one of {}", TEMPLATES.join(", "))));
        }
        if settings.threads == Some(0) || settings.threads_per_cell == 0 {
            return Err(err("threads_per_cell", "threads and threads_per_cell must be at least 1".into()));
        }
        let mut axes = axes(&settings.sweep).map_err(|(k, m)| err(&k, m))?;
        if let Some(search) = &settings.search {
            if let Some((k, m)) = search.problems(&axes, settings.template.as_deref()).into_iter().next() {
                return Err(err(&format!("search.{k}"), m));
            }
        }
        if settings.template.as_deref() == Some("distance") {
            let at = axes.iter().position(|a| a.key == "seed").unwrap_or(axes.len());
            axes.insert(at, super::distance::axis(&base).map_err(|(k, m)| err(&k, m))?);
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
                let cell_text = resolve(&base, &axes, &point, &settings, divisor, &id, &root)
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
        Ok(Experiment { name, file: path.to_path_buf(), text: text.to_string(), settings, axes, cells, rungs, root })
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

    /// The experiment's run store.
    pub fn db(&self) -> PathBuf {
        self.root.join("vestige.db")
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

/// The run config of one cell as TOML text: the sweep values set, the continue phase of a
/// backdoor cut `divisor` times shorter (a halving search's rung), the model scale and the
/// template expanded, the run named after the cell and written under `root/cells`.
fn resolve(
    base: &toml::Table,
    axes: &[Axis],
    point: &[(String, toml::Value)],
    settings: &Settings,
    divisor: u64,
    id: &str,
    root: &Path,
) -> Result<String, (String, String)> {
    let mut doc = base.clone();
    for (axis, (_, value)) in axes.iter().zip(point) {
        for (p, v) in axis.paths.iter().zip(axis.split(value)) {
            set_path(&mut doc, p, v).map_err(|m| (format!("sweep.{}", axis.key), m))?;
        }
    }
    if divisor > 1 {
        shorten(&mut doc, divisor)?;
    }
    expand_scale(&mut doc)?;
    match settings.template.as_deref() {
        Some("decay") => expand::<DecaySpec>(&mut doc, "decay")?,
        Some("distance") => super::distance::expand(&mut doc)?,
        Some("backdoor") => expand::<BackdoorSpec>(&mut doc, "backdoor")?,
        _ => {}
    }
    doc.insert("name".into(), id.into());
    doc.insert("out_dir".into(), root.join("cells").display().to_string().into());
    Ok(toml::to_string(&doc).expect("a TOML table serialises"))
}

/// Divides `backdoor.continue_steps` by `divisor` for a lower rung of a halving search.
fn shorten(doc: &mut toml::Table, divisor: u64) -> Result<(), (String, String)> {
    let slot = doc.get_mut("backdoor").and_then(|b| b.get_mut("continue_steps"));
    let Some(steps) = slot.as_ref().and_then(|s| s.as_integer()) else {
        return Err(("backdoor.continue_steps".into(), "a halving search needs the continue phase's steps".into()));
    };
    let short = steps / divisor as i64;
    if short < 1 {
        return Err((
            "search.rungs".into(),
            format!(
                "the shortest rung would continue for {steps} / {divisor} = 0 steps; use fewer rungs or a smaller eta"
            ),
        ));
    }
    *slot.expect("checked above") = short.into();
    Ok(())
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

/// A study template: the table named after it writes a cell's phases.
trait Template: serde::de::DeserializeOwned {
    /// Range problems as `(key under the table, message)`, given the cell's config.
    fn problems(&self, doc: &toml::Table) -> Vec<(String, String)>;
    /// Writes the phases (and any task settings) into the cell's config.
    fn write(&self, doc: &mut toml::Table);
}

impl Template for DecaySpec {
    fn problems(&self, doc: &toml::Table) -> Vec<(String, String)> {
        let names: Vec<String> = tasks(doc).into_iter().map(|(name, _)| name).collect();
        DecaySpec::problems(self, &names)
    }

    fn write(&self, doc: &mut toml::Table) {
        doc.insert("phases".into(), self.phases());
    }
}

impl Template for BackdoorSpec {
    fn problems(&self, doc: &toml::Table) -> Vec<(String, String)> {
        BackdoorSpec::problems(self, &tasks(doc))
    }

    /// The phases, and the planting rate written into the backdoor task.
    fn write(&self, doc: &mut toml::Table) {
        doc.insert("phases".into(), self.phases());
        let Some(rate) = self.rate() else { return };
        let entries = doc.get_mut("tasks").and_then(|t| t.as_array_mut()).into_iter().flatten();
        for t in entries.filter_map(|t| t.as_table_mut()).filter(|t| t.get("name") == Some(&self.task.clone().into())) {
            t.insert("poison_rate".into(), rate.into());
        }
    }
}

/// `(name, kind)` of each `[[tasks]]` entry.
fn tasks(doc: &toml::Table) -> Vec<(String, String)> {
    let field = |t: &toml::Value, k: &str| t.get(k).and_then(|v| v.as_str()).unwrap_or_default().to_string();
    let entries = doc.get("tasks").and_then(|t| t.as_array()).into_iter().flatten();
    entries.map(|t| (field(t, "name"), field(t, "kind"))).collect()
}

/// Replaces the template's `[name]` table by the phases it describes.
fn expand<T: Template>(doc: &mut toml::Table, name: &str) -> Result<(), (String, String)> {
    let table =
        doc.remove(name).ok_or(("template".to_string(), format!("template = {name:?} needs a [{name}] table")))?;
    if doc.contains_key("phases") {
        return Err(("phases".into(), format!("the {name} template writes the phases; remove [[phases]]")));
    }
    let spec: T = table.try_into().map_err(|e: toml::de::Error| (name.to_string(), e.message().trim().to_string()))?;
    if let Some((k, m)) = spec.problems(doc).into_iter().next() {
        return Err((format!("{name}.{k}"), m));
    }
    spec.write(doc);
    Ok(())
}
