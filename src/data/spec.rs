//! Task specifications: the `[[tasks]]` tables of run configs, also accepted on the
//! command line (`vestige data sample '{ kind = "copy", length = 8 }'`), and the task
//! objects they build.

use super::family::Family;
use super::pair::Pair;
use super::pathfinding::Pathfinding;
use super::sequence::{SequenceTask, Transform};
use super::Task;
use serde::Deserialize;
use std::sync::Arc;

/// A task the run can train or evaluate on.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct TaskSpec {
    pub name: String,
    /// One of [`KINDS`].
    pub kind: String,
    /// Symbols per input.
    #[serde(default = "default_length")]
    pub length: usize,
    /// Vocabulary size (tokens 0 and 1 are reserved for padding and the separator).
    #[serde(default = "default_vocab")]
    pub vocab: usize,
    /// Pathfinding board width and height.
    #[serde(default = "default_side")]
    pub width: usize,
    #[serde(default = "default_side")]
    pub height: usize,
    /// Pathfinding: longest path emitted.
    #[serde(default = "default_max_moves")]
    pub max_moves: usize,
    /// Family: the pipeline of primitive names, applied left to right.
    #[serde(default)]
    pub primitives: Vec<String>,
    /// Family and pair: symbol tokens `[start, end]` (`end` excluded; pair: member a's).
    pub alphabet: Option<[u32; 2]>,
    /// Pair: the shared mechanism in `[0, 1]`, the member (`a` or `b`), the pipeline depth.
    pub overlap: Option<f64>,
    #[serde(default = "default_member")]
    pub member: String,
    #[serde(default = "default_depth")]
    pub depth: usize,
    /// Family and pair: seed of the fixed parameters (shift, permutation, a pair's primitives).
    #[serde(default)]
    pub task_seed: u64,
}

fn default_member() -> String {
    "a".into()
}
fn default_depth() -> usize {
    2
}

fn default_side() -> usize {
    8
}
fn default_max_moves() -> usize {
    64
}

fn default_length() -> usize {
    12
}
fn default_vocab() -> usize {
    64
}

/// The task kinds a spec may name.
pub const KINDS: [&str; 5] = ["copy", "reverse", "pathfinding", "family", "pair"];

/// A spec key with a bad value: the key (within the task's table) and what is valid.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
#[error("{key}: {message}")]
pub struct SpecError {
    pub key: String,
    pub message: String,
}

impl SpecError {
    /// An error at `key`.
    pub fn new(key: impl Into<String>, message: impl Into<String>) -> SpecError {
        SpecError { key: key.into(), message: message.into() }
    }
}

impl TaskSpec {
    /// Parses an inline TOML table such as `{ kind = "copy", length = 8 }` (`name`
    /// defaults to the kind); errors list the valid kinds and keys.
    pub fn parse_inline(text: &str) -> Result<TaskSpec, String> {
        // Parsed as the value of a key, so commas inside arrays and strings stay intact.
        let t = text.trim();
        let braced = if t.starts_with('{') { t.to_string() } else { format!("{{ {t} }}") };
        let example = "expected e.g. { kind = \"copy\", length = 8, vocab = 64 }";
        let mut table = match toml::from_str::<toml::Table>(&format!("spec = {braced}")) {
            Ok(mut doc) => match doc.remove("spec") {
                Some(toml::Value::Table(table)) => table,
                _ => return Err(format!("task spec {text:?}: {example}")),
            },
            Err(e) => return Err(format!("task spec {text:?}: {}; {example}", e.message().trim())),
        };
        if !table.contains_key("name") {
            let kind = table.get("kind").and_then(|k| k.as_str()).unwrap_or("task").to_string();
            table.insert("name".into(), toml::Value::String(kind));
        }
        let spec: TaskSpec = table.try_into().map_err(|e: toml::de::Error| {
            format!(
                "task spec {text:?}: {}; keys: name, kind ({}), length, vocab",
                e.message().trim(),
                KINDS.join(", ")
            )
        })?;
        if !KINDS.contains(&spec.kind.as_str()) {
            return Err(format!("task spec {text:?}: unknown kind {:?}; valid kinds: {}", spec.kind, KINDS.join(", ")));
        }
        spec.check().map_err(|e| format!("task spec {text:?}: {e}"))?;
        Ok(spec)
    }

    /// Checks the keys of the family kinds (the run config checks the others).
    pub fn check(&self) -> Result<(), SpecError> {
        match self.kind.as_str() {
            "family" => Family::from_spec(self).map(drop),
            "pair" => Pair::from_spec(self).map(drop),
            _ => Ok(()),
        }
    }

    /// The task object; panics on a family spec that fails [`TaskSpec::check`].
    pub fn build(&self) -> Arc<dyn Task> {
        match self.kind.as_str() {
            "family" => return Arc::new(Family::from_spec(self).expect("a checked family spec")),
            "pair" => return Arc::new(Pair::from_spec(self).expect("a checked pair spec")),
            _ => {}
        }
        if self.kind == "pathfinding" {
            let (width, height, max_moves) = (self.width, self.height, self.max_moves);
            return Arc::new(Pathfinding { name: self.name.clone(), width, height, max_moves });
        }
        let transform = if self.kind == "reverse" { Transform::Reverse } else { Transform::Copy };
        Arc::new(SequenceTask { name: self.name.clone(), transform, length: self.length, vocab: self.vocab })
    }
}
