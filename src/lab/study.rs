//! What a study is to the lab: a typed spec, parsed from its own table of an experiment file
//! (`template = "decay"` reads `[decay]`), that writes each cell's phases, may add sweep axes,
//! may shorten a cell for a search rung and score a searched configuration, and analyses the
//! finished cells into its report. The lab calls studies only through [`Study`]; the
//! registry that maps a template name to its parser is [`crate::lab::studies::REGISTRY`].
//!
//! What a study does lives in its folder, `lab/studies/<study>/`; what studies share lives in
//! [`crate::lab::pooling`] and [`crate::analysis`], never in another study.

use super::experiment::{Cell, Experiment};
use super::plan::PlannedCell;
use super::search::Score;
use super::sweep::Axis;
use crate::store::Store;
use std::fmt::Debug;
use std::path::PathBuf;

/// A configuration problem: the key path it concerns (as written in the experiment file) and
/// what is wrong; the experiment turns it into an error with the file and line.
pub type Problem = (String, String);

/// Reads a study's spec from a cell's config table (the whole table, so that the spec can
/// check the task names it refers to) and checks its ranges.
pub type Parse = fn(&toml::Table) -> Result<Box<dyn Study>, Problem>;

/// One study template.
pub trait Study: Debug + Send + Sync {
    /// The template name, as in `template = "..."`; also the name of its table.
    fn name(&self) -> &'static str;

    /// Sweep axes the study generates, inserted before the seed axis (e.g. the distance
    /// study's `distance.variant`). None by default.
    fn axes(&self) -> Vec<Axis> {
        Vec::new()
    }

    /// Replaces the study's table in a cell's config by what it describes: the phases, and
    /// any tasks or task settings they need.
    fn write(&self, doc: &mut toml::Table) -> Result<(), Problem>;

    /// The objective a search maximizes (`vestige run --search maximize=OBJECTIVE`), for a
    /// study that can be searched; a successive-halving search also needs [`Study::shorten`]
    /// and [`Study::score`].
    fn objective(&self) -> Option<&'static str> {
        None
    }

    /// Makes the phase whose horizon a halving search grows `divisor` times shorter, for a
    /// cell of a lower rung.
    fn shorten(&mut self, _divisor: u64) -> Result<(), Problem> {
        Err((
            "search.method".into(),
            format!("halving shortens a study's measured phase; the {} study has none to shorten", self.name()),
        ))
    }

    /// A searched configuration's standing from its finished cells among `members` (indices
    /// into `cells`, one per seed); `params[i]` is cell `i`'s parameter count.
    fn score(
        &self,
        _exp: &Experiment,
        _store: &Store,
        _cells: &[Cell],
        _members: &[usize],
        _params: &[usize],
    ) -> anyhow::Result<Score> {
        anyhow::bail!("the {} study has no search objective to score", self.name())
    }

    /// Analyses the experiment's finished cells from its store and writes the report under
    /// `exp.root/report`; `search` says how a search chose the cells. Returns the HTML page.
    fn report(&self, exp: &Experiment, planned: &[PlannedCell], search: Option<&str>) -> anyhow::Result<PathBuf>;
}

/// The study table `name` of `doc`, read as `T` and checked with `problems` (key paths under
/// the table); errors name `name.key`.
pub fn parse_table<T: serde::de::DeserializeOwned>(
    doc: &toml::Table,
    name: &str,
    problems: impl FnOnce(&T) -> Vec<Problem>,
) -> Result<T, Problem> {
    let table = doc
        .get(name)
        .cloned()
        .ok_or(("template".to_string(), format!("template = {name:?} needs a [{name}] table")))?;
    let spec: T = table.try_into().map_err(|e: toml::de::Error| (name.to_string(), e.message().trim().to_string()))?;
    match problems(&spec).into_iter().next() {
        Some((k, m)) => Err((format!("{name}.{k}"), m)),
        None => Ok(spec),
    }
}

/// Removes the study table `name` from a cell's config and sets its phases, refusing a
/// config that also gives `[[phases]]`.
pub fn replace_phases(doc: &mut toml::Table, name: &str, phases: toml::Value) -> Result<(), Problem> {
    doc.remove(name);
    if doc.contains_key("phases") {
        return Err(("phases".into(), format!("the {name} template writes the phases; remove [[phases]]")));
    }
    doc.insert("phases".into(), phases);
    Ok(())
}

/// The `[[tasks]]` entries of a config table, read as task specs.
pub fn task_specs(doc: &toml::Table) -> Result<Vec<crate::data::spec::TaskSpec>, Problem> {
    let tasks = doc.get("tasks").and_then(|t| t.as_array()).cloned().unwrap_or_default();
    tasks
        .into_iter()
        .map(|t| t.try_into().map_err(|e: toml::de::Error| ("tasks".to_string(), e.message().trim().to_string())))
        .collect()
}

/// The generated sweep axis `key` of a study that expands each sweep point into one cell per
/// variant, named `values`.
pub fn variant_axis(key: &str, values: &[String]) -> Vec<Axis> {
    vec![Axis { key: key.into(), paths: vec![key.into()], values: values.iter().map(|v| v.as_str().into()).collect() }]
}

/// `(name, kind)` of each `[[tasks]]` entry of a config table.
pub fn task_kinds(doc: &toml::Table) -> Vec<(String, String)> {
    let field = |t: &toml::Value, k: &str| t.get(k).and_then(|v| v.as_str()).unwrap_or_default().to_string();
    let entries = doc.get("tasks").and_then(|t| t.as_array()).into_iter().flatten();
    entries.map(|t| (field(t, "name"), field(t, "kind"))).collect()
}
