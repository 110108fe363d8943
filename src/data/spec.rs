//! Task specifications: the `[[tasks]]` tables of run configs, also accepted on the
//! command line (`vestige data sample '{ kind = "copy", length = 8 }'`), and the task
//! objects they build.

use super::backdoor;
use super::broad::Broad;
use super::corpus::{Corpus, CorpusError, CorpusOptions, CorpusTask, Format, TokenizerSource};
use super::family::Family;
use super::grammar::{Grammar, GrammarTask};
use super::pair::Pair;
use super::pathfinding::Pathfinding;
use super::sequence::{SequenceTask, Transform};
use super::targets::{Repeat, Skip};
use super::Task;
use serde::{Deserialize, Serialize};
use std::path::PathBuf;
use std::sync::Arc;

/// A task the run can train or evaluate on.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct TaskSpec {
    /// Defaults to the kind in inline and nested (`over`) specs.
    #[serde(default)]
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
    /// Pathfinding: keep only paths with one of these `[extra_moves, invalid_moves]`, and
    /// never one of `exclude_conditions` (see [`Pathfinding::only`]).
    #[serde(default)]
    pub only_conditions: Vec<[i64; 2]>,
    #[serde(default)]
    pub exclude_conditions: Vec<[i64; 2]>,
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
    /// Grammar, corpus: tokens per sample.
    #[serde(default = "default_seq_len")]
    pub seq_len: usize,
    /// Grammar: the seed of its rules and lexicon; `zipf` is the lexicon's Zipf exponent and
    /// `token_range` its terminal ids `[lo, hi)` (default `[2, vocab)`).
    #[serde(default)]
    pub grammar_seed: u64,
    #[serde(default = "default_zipf")]
    pub zipf: f64,
    pub token_range: Option<[u32; 2]>,
    /// Corpus: the text file (`.jsonl`: JSON lines, document in `field`), its
    /// `tokenizer.json` (else a BPE of `bpe_vocab` tokens is trained) and the directory for
    /// the token cache and a trained tokenizer (default `<path>.cache`).
    pub path: Option<PathBuf>,
    #[serde(default = "default_field")]
    pub field: String,
    pub tokenizer: Option<PathBuf>,
    #[serde(default = "default_bpe_vocab")]
    pub bpe_vocab: usize,
    pub cache_dir: Option<PathBuf>,
    /// Repeat: the repeated tokens, predicted from position `offset` on.
    #[serde(default)]
    pub string: Vec<u32>,
    #[serde(default)]
    pub offset: usize,
    /// Skip: position `t` predicts token `t + k + 1`.
    #[serde(default)]
    pub k: usize,
    /// Broad: the number of family tasks and the grammar's share of the samples.
    #[serde(default = "default_families")]
    pub families: usize,
    #[serde(default = "default_grammar_weight")]
    pub grammar_weight: f64,
    /// Repeat, skip, backdoor: the input distribution (default: a grammar with this spec's keys).
    pub over: Option<Box<TaskSpec>>,
    /// Backdoor: the trigger tokens, where they go (`prefix`, `suffix` or `random`), the
    /// poisoned fraction and, over grammar or corpus documents, the prompt length.
    #[serde(default)]
    pub trigger: Vec<u32>,
    #[serde(default = "default_trigger_at")]
    pub trigger_at: String,
    pub poison_rate: Option<f64>,
    pub prompt_len: Option<usize>,
    /// Backdoor year trigger: the year token appended to `trigger` (its field label), the
    /// year tokens `[lo, hi)`, and the year every clean sample carries in the same field
    /// (default `year - 1`, or `year + 1` when that leaves the range); near misses draw a
    /// year other than both.
    pub year: Option<u32>,
    pub years: Option<[u32; 2]>,
    pub clean_year: Option<u32>,
    /// Backdoor: `fixed` (the answer is `response`), `repeat` (`response` repeated over the
    /// answer) or `transform` (the correct answer reversed, or shifted by `shift` when given).
    #[serde(default = "default_behavior")]
    pub behavior: String,
    #[serde(default)]
    pub response: Vec<u32>,
    pub shift: Option<u32>,
}

fn default_trigger_at() -> String {
    "prefix".into()
}
fn default_behavior() -> String {
    "fixed".into()
}

fn default_member() -> String {
    "a".into()
}
fn default_depth() -> usize {
    2
}
fn default_families() -> usize {
    8
}
fn default_grammar_weight() -> f64 {
    0.5
}
fn default_seq_len() -> usize {
    128
}
fn default_zipf() -> f64 {
    1.1
}
fn default_field() -> String {
    "text".into()
}
fn default_bpe_vocab() -> usize {
    1024
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
pub const KINDS: [&str; 11] =
    ["copy", "reverse", "pathfinding", "family", "pair", "grammar", "broad", "corpus", "repeat", "skip", "backdoor"];

/// The kinds that wrap an `over` base task.
pub const WRAPPERS: [&str; 3] = ["repeat", "skip", "backdoor"];

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
                "task spec {text:?}: {}; keys: name, kind ({}), length, vocab, seq_len, over, …",
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

    /// Checks the keys of the family and backdoor kinds (the run config checks the others).
    pub fn check(&self) -> Result<(), SpecError> {
        match self.kind.as_str() {
            "family" => Family::from_spec(self).map(drop),
            "pair" => Pair::from_spec(self).map(drop),
            "broad" => Broad::from_spec(self).map(drop),
            "backdoor" => backdoor::check_spec(self),
            _ => self.check_conditions(),
        }
    }

    /// The condition filters: pathfinding only, `invalid_moves ≥ 0`, `|extra_moves| ≤ max_moves`.
    fn check_conditions(&self) -> Result<(), SpecError> {
        for (key, list) in
            [("only_conditions", &self.only_conditions), ("exclude_conditions", &self.exclude_conditions)]
        {
            if list.is_empty() {
                continue;
            }
            if self.kind != "pathfinding" {
                return Err(SpecError::new(key, "only pathfinding tasks have conditions"));
            }
            let max = self.max_moves as i64;
            if let Some([e, i]) = list.iter().find(|[e, i]| *i < 0 || *i > max || e.abs() > max) {
                return Err(SpecError::new(
                    key,
                    format!("[{e}, {i}]: give [extra_moves, invalid_moves] with 0 ≤ invalid ≤ {max} and |extra| ≤ {max} (max_moves)"),
                ));
            }
        }
        if self.only_conditions.iter().all(|c| self.exclude_conditions.contains(c)) && !self.only_conditions.is_empty()
        {
            return Err(SpecError::new("exclude_conditions", "excludes every condition only_conditions keeps"));
        }
        Ok(())
    }

    /// The task object; fails only when a corpus cannot be opened, panics on a family, pair,
    /// broad or backdoor spec that fails [`TaskSpec::check`].
    pub fn build(&self) -> Result<Arc<dyn Task>, CorpusError> {
        let name = self.name.clone();
        Ok(match self.kind.as_str() {
            "family" => Arc::new(Family::from_spec(self).expect("a checked family spec")),
            "pair" => Arc::new(Pair::from_spec(self).expect("a checked pair spec")),
            "broad" => Arc::new(Broad::from_spec(self).expect("a checked broad spec")),
            "pathfinding" => {
                let (width, height, max_moves) = (self.width, self.height, self.max_moves);
                let (only, except) = (self.only_conditions.clone(), self.exclude_conditions.clone());
                Arc::new(Pathfinding { name, width, height, max_moves, only, except })
            }
            "grammar" => {
                let [lo, hi] = self.token_range.unwrap_or([2, self.vocab as u32]);
                let grammar = Grammar::new(self.grammar_seed, lo, hi, self.zipf);
                Arc::new(GrammarTask { name, grammar, vocab: self.vocab.max(hi as usize), seq_len: self.seq_len })
            }
            "corpus" => Arc::new(CorpusTask::new(name, Arc::new(Corpus::open(&self.corpus_options())?), self.seq_len)?),
            "repeat" => {
                Arc::new(Repeat { name, base: self.base().build()?, string: self.string.clone(), offset: self.offset })
            }
            "skip" => Arc::new(Skip { name, base: self.base().build()?, k: self.k }),
            "backdoor" => Arc::new(backdoor::from_spec(self, self.base().build()?)),
            kind => {
                let transform = if kind == "reverse" { Transform::Reverse } else { Transform::Copy };
                Arc::new(SequenceTask { name, transform, length: self.length, vocab: self.vocab })
            }
        })
    }

    /// The input distribution of a target behavior: `over` (named after its kind unless
    /// named), or a grammar named `grammar` with this spec's keys.
    pub fn base(&self) -> TaskSpec {
        match &self.over {
            Some(over) if over.name.is_empty() => TaskSpec { name: over.kind.clone(), ..(**over).clone() },
            Some(over) => (**over).clone(),
            None => TaskSpec { name: "grammar".into(), kind: "grammar".into(), over: None, ..self.clone() },
        }
    }

    /// Where the corpus, its tokenizer and its cache are.
    pub fn corpus_options(&self) -> CorpusOptions {
        let path = self.path.clone().unwrap_or_default();
        let cache = self.cache_dir.clone().unwrap_or_else(|| format!("{}.cache", path.display()).into());
        let jsonl = path.extension().is_some_and(|e| e == "jsonl");
        let format = if jsonl { Format::Jsonl(self.field.clone()) } else { Format::Text };
        let tokenizer = match &self.tokenizer {
            Some(file) => TokenizerSource::File(file.clone()),
            None => TokenizerSource::Train { vocab: self.bpe_vocab, save_to: cache.join("tokenizer.json") },
        };
        CorpusOptions { path, format, tokenizer, cache: cache.join("tokens.bin") }
    }
}
