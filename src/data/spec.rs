//! Task specifications: the `[[tasks]]` tables of run configs, also accepted on the command
//! line (`vestige data sample '{ kind = "copy", length = 8 }'`), and the task objects they
//! build.
//!
//! A spec is a name and a [`Kind`]: `kind = "…"` picks the kind, and every other key of the
//! table belongs to that kind's struct, which lives beside its task ([`SequenceSpec`] in
//! `sequence.rs`, [`GrammarSpec`] in `grammar.rs`, …) with its defaults, its range checks
//! (`check`) and the task it builds (`build`). A key the kind does not have is refused with
//! the keys it has ([`TaskSpec::from_table`]).
//!
//! The wrapper kinds (repeat, skip, backdoor) transform a [`Base`]: the task in
//! `over = { … }`, or else a grammar whose keys sit in the wrapper's own table.
//!
//! A spec serialises to its table form (`kind` a key beside the kind's own), the form a run
//! config's hash is taken of.

use super::backdoor::BackdoorSpec;
use super::broad::BroadSpec;
use super::coins::CoinsSpec;
use super::corpus::{CorpusError, CorpusSpec};
use super::family::FamilySpec;
use super::grammar::GrammarSpec;
use super::pair::PairSpec;
use super::pathfinding::PathfindingSpec;
use super::sequence::{SequenceSpec, Transform};
use super::targets::{RepeatSpec, SkipSpec};
use super::Task;
use serde::de::{DeserializeOwned, Visitor};
use serde::{Deserialize, Deserializer, Serialize};
use serde_json::{Map, Value};
use std::sync::Arc;

/// A task the run can train or evaluate on: its name and its kind's keys.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct TaskSpec {
    /// Defaults to the kind in inline and nested (`over`) specs.
    pub name: String,
    #[serde(flatten)]
    pub kind: Kind,
}

/// A task kind (`kind = "copy"`, …) and its keys.
#[derive(Clone, Debug, Serialize, PartialEq)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Kind {
    Copy(SequenceSpec),
    Reverse(SequenceSpec),
    Pathfinding(PathfindingSpec),
    Coins(CoinsSpec),
    Family(FamilySpec),
    Pair(PairSpec),
    Grammar(GrammarSpec),
    Broad(BroadSpec),
    Corpus(CorpusSpec),
    Repeat(Wrapped<RepeatSpec>),
    Skip(Wrapped<SkipSpec>),
    Backdoor(Wrapped<BackdoorSpec>),
}

/// The task kinds a spec may name.
pub const KINDS: [&str; 12] = [
    "copy",
    "reverse",
    "pathfinding",
    "coins",
    "family",
    "pair",
    "grammar",
    "broad",
    "corpus",
    "repeat",
    "skip",
    "backdoor",
];

/// The keys of a wrapper kind: its base and its own (`spec`).
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct Wrapped<T> {
    #[serde(flatten)]
    pub base: Base,
    #[serde(flatten)]
    pub spec: T,
}

/// The input distribution a wrapper kind transforms.
#[derive(Clone, Debug, Serialize, PartialEq)]
#[serde(untagged)]
pub enum Base {
    /// `over = { … }`: a task of any kind but a wrapper.
    Over { over: Box<TaskSpec> },
    /// A grammar named `grammar`, its keys in the wrapper's own table.
    Grammar(GrammarSpec),
}

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

    /// The same error with its key under table `table` (`over.seq_len`).
    fn under(self, table: &str) -> SpecError {
        SpecError { key: format!("{table}.{}", self.key), ..self }
    }
}

/// The default `length` of the kinds that have one.
pub(super) fn default_length() -> usize {
    12
}
/// The default `vocab` of the kinds that have one.
pub fn default_vocab() -> usize {
    64
}
/// The default `seq_len` of the kinds that have one.
pub(super) fn default_seq_len() -> usize {
    128
}
/// The default Zipf exponent of a grammar's lexicon.
pub(super) fn default_zipf() -> f64 {
    1.1
}

/// `length` is at least 1.
pub(super) fn check_length(length: usize) -> Result<(), SpecError> {
    if length == 0 {
        return Err(SpecError::new("length", "must be at least 1"));
    }
    Ok(())
}

/// `vocab` is at least 3.
pub(super) fn check_vocab(vocab: usize) -> Result<(), SpecError> {
    if vocab < 3 {
        return Err(SpecError::new("vocab", "must be at least 3 (0 and 1 are reserved)"));
    }
    Ok(())
}

impl TaskSpec {
    /// Parses an inline TOML table such as `{ kind = "copy", length = 8 }` (`name`
    /// defaults to the kind) and checks it; errors name the key and what is valid.
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
        let spec: TaskSpec =
            table.try_into().map_err(|e: toml::de::Error| format!("task spec {text:?}: {}", e.message().trim()))?;
        spec.check().map_err(|e| format!("task spec {text:?}: {e}"))?;
        Ok(spec)
    }

    /// The spec a table describes: `kind` picks the kind, whose struct takes the other keys
    /// (all optional). Errors name the key at fault: a missing or unknown kind, a key the
    /// kind does not have (listing those it has), a value of the wrong type.
    pub fn from_table(mut table: Map<String, Value>) -> Result<TaskSpec, SpecError> {
        let name = match table.remove("name") {
            Some(name) => serde_json::from_value(name).map_err(|e| SpecError::new("name", e.to_string()))?,
            None => String::new(),
        };
        let kinds = KINDS.join(", ");
        let kind = match table.remove("kind") {
            Some(Value::String(kind)) => kind,
            Some(other) => return Err(SpecError::new("kind", format!("{other} is not one of {kinds}"))),
            None => return Err(SpecError::new("kind", format!("give the task's kind, one of {kinds}"))),
        };
        let kind = match kind.as_str() {
            "copy" => Kind::Copy(kind_keys(&kind, table)?),
            "reverse" => Kind::Reverse(kind_keys(&kind, table)?),
            "pathfinding" => Kind::Pathfinding(kind_keys(&kind, table)?),
            "coins" => Kind::Coins(kind_keys(&kind, table)?),
            "family" => Kind::Family(kind_keys(&kind, table)?),
            "pair" => Kind::Pair(kind_keys(&kind, table)?),
            "grammar" => Kind::Grammar(kind_keys(&kind, table)?),
            "broad" => Kind::Broad(kind_keys(&kind, table)?),
            "corpus" => Kind::Corpus(kind_keys(&kind, table)?),
            "repeat" => Kind::Repeat(Wrapped::from_table(&kind, table)?),
            "skip" => Kind::Skip(Wrapped::from_table(&kind, table)?),
            "backdoor" => Kind::Backdoor(Wrapped::from_table(&kind, table)?),
            other => return Err(SpecError::new("kind", format!("{other:?} is not one of {kinds}"))),
        };
        Ok(TaskSpec { name, kind })
    }

    /// The range checks of the spec's kind (a wrapper's base first); the error names the key
    /// within the task's table.
    pub fn check(&self) -> Result<(), SpecError> {
        match &self.kind {
            Kind::Copy(s) | Kind::Reverse(s) => s.check(),
            Kind::Pathfinding(s) => s.check(),
            Kind::Coins(s) => s.check(),
            Kind::Family(s) => s.check(),
            Kind::Pair(s) => s.check(),
            Kind::Grammar(s) => s.check(),
            Kind::Broad(s) => s.check(),
            Kind::Corpus(s) => s.check(),
            Kind::Repeat(w) => w.base.check().and_then(|()| w.spec.check()),
            Kind::Skip(w) => w.base.check(),
            Kind::Backdoor(w) => w.base.check().and_then(|()| w.spec.check(&w.base.spec())),
        }
    }

    /// The checks that need the built task's sample length, `seq_len`: a repeat's `offset`
    /// and a skip's `k` must leave a position to score.
    pub fn check_length(&self, seq_len: usize) -> Result<(), SpecError> {
        match &self.kind {
            Kind::Repeat(w) => w.spec.check_length(seq_len),
            Kind::Skip(w) => w.spec.check_length(seq_len),
            _ => Ok(()),
        }
    }

    /// The task object; fails only when a corpus cannot be opened, panics on a spec that
    /// fails [`TaskSpec::check`].
    pub fn build(&self) -> Result<Arc<dyn Task>, CorpusError> {
        let name = self.name.as_str();
        Ok(match &self.kind {
            Kind::Copy(s) => Arc::new(s.build(name, Transform::Copy)),
            Kind::Reverse(s) => Arc::new(s.build(name, Transform::Reverse)),
            Kind::Pathfinding(s) => Arc::new(s.build(name)),
            Kind::Coins(s) => Arc::new(s.build(name)),
            Kind::Family(s) => Arc::new(s.build(name).expect("a checked family spec")),
            Kind::Pair(s) => Arc::new(s.build(name).expect("a checked pair spec")),
            Kind::Grammar(s) => Arc::new(s.build(name)),
            Kind::Broad(s) => Arc::new(s.build(name).expect("a checked broad spec")),
            Kind::Corpus(s) => Arc::new(s.build(name)?),
            Kind::Repeat(w) => Arc::new(w.spec.build(name, w.base.spec().build()?)?),
            Kind::Skip(w) => Arc::new(w.spec.build(name, w.base.spec().build()?)),
            Kind::Backdoor(w) => Arc::new(w.spec.build(name, w.base.spec().build()?)),
        })
    }
}

impl<'de> Deserialize<'de> for TaskSpec {
    /// Reads the table, then [`TaskSpec::from_table`]: the kind first, then its keys.
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<TaskSpec, D::Error> {
        let table = Map::deserialize(deserializer)?;
        TaskSpec::from_table(table).map_err(serde::de::Error::custom)
    }
}

impl Kind {
    /// The kind's name, as `kind = "…"` gives it.
    pub fn name(&self) -> &'static str {
        match self {
            Kind::Copy(_) => "copy",
            Kind::Reverse(_) => "reverse",
            Kind::Pathfinding(_) => "pathfinding",
            Kind::Coins(_) => "coins",
            Kind::Family(_) => "family",
            Kind::Pair(_) => "pair",
            Kind::Grammar(_) => "grammar",
            Kind::Broad(_) => "broad",
            Kind::Corpus(_) => "corpus",
            Kind::Repeat(_) => "repeat",
            Kind::Skip(_) => "skip",
            Kind::Backdoor(_) => "backdoor",
        }
    }

    /// The base a wrapper kind transforms; `None` for the other kinds.
    pub fn base(&self) -> Option<&Base> {
        match self {
            Kind::Repeat(w) => Some(&w.base),
            Kind::Skip(w) => Some(&w.base),
            Kind::Backdoor(w) => Some(&w.base),
            _ => None,
        }
    }

    /// The `vocab` key of the kinds that have one (copy, reverse, grammar, broad, and a
    /// wrapper over a grammar of its own keys); the others take their vocabulary from other keys.
    pub fn vocab(&self) -> Option<usize> {
        match self {
            Kind::Copy(s) | Kind::Reverse(s) => Some(s.vocab),
            Kind::Grammar(s) => Some(s.vocab),
            Kind::Broad(s) => Some(s.vocab),
            _ => match self.base() {
                Some(Base::Grammar(s)) => Some(s.vocab),
                _ => None,
            },
        }
    }
}

impl Base {
    /// The base task's spec: `over` (named after its kind unless named), or a grammar named
    /// `grammar`.
    pub fn spec(&self) -> TaskSpec {
        match self {
            Base::Over { over } if over.name.is_empty() => {
                TaskSpec { name: over.kind.name().into(), ..(**over).clone() }
            }
            Base::Over { over } => (**over).clone(),
            Base::Grammar(grammar) => TaskSpec { name: "grammar".into(), kind: Kind::Grammar(grammar.clone()) },
        }
    }

    /// The base's own checks, its keys under `over.` when it is nested; a wrapper kind
    /// cannot be a base.
    fn check(&self) -> Result<(), SpecError> {
        match self {
            Base::Over { over } if over.kind.base().is_some() => Err(SpecError::new(
                "over.kind",
                format!("{:?} wraps a task itself; give a kind other than repeat, skip, backdoor", over.kind.name()),
            )),
            Base::Over { over } => over.check().map_err(|e| e.under("over")),
            Base::Grammar(grammar) => grammar.check(),
        }
    }
}

impl<T: DeserializeOwned> Wrapped<T> {
    /// The keys of wrapper kind `kind`: `T`'s, and `over` or else the grammar's.
    fn from_table(kind: &str, mut table: Map<String, Value>) -> Result<Wrapped<T>, SpecError> {
        let own = fields::<T>();
        let over = table.remove("over");
        let (spec, rest): (Map<String, Value>, Map<String, Value>) =
            table.into_iter().partition(|(key, _)| own.contains(&key.as_str()));
        let base = match over {
            Some(Value::Object(over)) => {
                refuse_other_keys(kind, &rest, &[own, &["over"]].concat())?;
                Base::Over { over: Box::new(TaskSpec::from_table(over).map_err(|e| e.under("over"))?) }
            }
            Some(_) => {
                return Err(SpecError::new("over", "give the base task's table, e.g. over = { kind = \"copy\" }"))
            }
            None => {
                refuse_other_keys(kind, &rest, &[own, &["over"], fields::<GrammarSpec>()].concat())?;
                Base::Grammar(typed(rest)?)
            }
        };
        Ok(Wrapped { base, spec: typed(spec)? })
    }
}

/// The keys of kind `kind`, whose struct is `T`.
fn kind_keys<T: DeserializeOwned>(kind: &str, table: Map<String, Value>) -> Result<T, SpecError> {
    refuse_other_keys(kind, &table, fields::<T>())?;
    typed(table)
}

/// Refuses the first key of `table` outside `keys`, the keys of kind `kind` beside `name`
/// and `kind`.
fn refuse_other_keys(kind: &str, table: &Map<String, Value>, keys: &[&str]) -> Result<(), SpecError> {
    match table.keys().find(|key| !keys.contains(&key.as_str())) {
        Some(key) => {
            Err(SpecError::new(key, format!("not a key of kind {kind:?} (keys: name, kind, {})", keys.join(", "))))
        }
        None => Ok(()),
    }
}

/// `table` as a `T` whose keys are all optional, so that a value of the wrong type is named
/// by its key: the one key that `T` refuses on its own.
fn typed<T: DeserializeOwned>(table: Map<String, Value>) -> Result<T, SpecError> {
    serde_json::from_value(Value::Object(table.clone())).map_err(|e| {
        let alone = |(key, value): &(&String, &Value)| {
            serde_json::from_value::<T>(Value::Object(Map::from_iter([((*key).clone(), (*value).clone())]))).is_err()
        };
        let key = table.iter().find(alone).map_or("kind", |(key, _)| key.as_str());
        SpecError::new(key, e.to_string())
    })
}

/// The keys of struct `T`: the field list its derived `Deserialize` hands the deserializer.
fn fields<T: DeserializeOwned>() -> &'static [&'static str] {
    match T::deserialize(FieldProbe) {
        Err(Fields(fields)) => fields,
        Ok(_) => &[],
    }
}

/// A deserializer that answers a struct's request with its field list, and nothing else.
struct FieldProbe;

/// What [`FieldProbe`] answers: the fields of the struct asked for (none for other types).
#[derive(Debug)]
struct Fields(&'static [&'static str]);

impl std::fmt::Display for Fields {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "fields {:?}", self.0)
    }
}

impl std::error::Error for Fields {}

impl serde::de::Error for Fields {
    fn custom<M: std::fmt::Display>(_: M) -> Fields {
        Fields(&[])
    }
}

impl<'de> Deserializer<'de> for FieldProbe {
    type Error = Fields;

    fn deserialize_struct<V: Visitor<'de>>(
        self,
        _: &'static str,
        fields: &'static [&'static str],
        _: V,
    ) -> Result<V::Value, Fields> {
        Err(Fields(fields))
    }

    fn deserialize_any<V: Visitor<'de>>(self, _: V) -> Result<V::Value, Fields> {
        Err(Fields(&[]))
    }

    serde::forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string bytes byte_buf option
        unit unit_struct newtype_struct seq tuple tuple_struct map enum identifier ignored_any
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table(text: &str) -> Map<String, Value> {
        toml::from_str(text).unwrap()
    }

    #[test]
    fn every_kind_reads_from_its_name_alone_and_names_itself() {
        for kind in KINDS {
            let spec = TaskSpec::from_table(table(&format!("kind = {kind:?}"))).unwrap();
            assert_eq!(spec.kind.name(), kind);
        }
    }

    #[test]
    fn a_struct_lists_its_fields_in_order() {
        assert_eq!(fields::<SequenceSpec>(), ["length", "vocab", "marker"]);
        assert_eq!(fields::<u32>(), [] as [&str; 0]);
    }

    #[test]
    fn a_wrapper_takes_grammar_keys_only_without_over() {
        let spec = TaskSpec::from_table(table("kind = \"skip\"\nk = 2\nvocab = 40")).unwrap();
        assert_eq!(spec.kind.vocab(), Some(40));
        let e = TaskSpec::from_table(table("kind = \"skip\"\nvocab = 40\nover = { kind = \"copy\" }")).unwrap_err();
        assert_eq!(e.key, "vocab");
        assert_eq!(e.message, "not a key of kind \"skip\" (keys: name, kind, k, over)");
        let e = TaskSpec::from_table(table("kind = \"skip\"\nover = { kind = \"copy\", zipf = 1.0 }")).unwrap_err();
        assert_eq!(e.key, "over.zipf");
    }

    #[test]
    fn a_value_of_the_wrong_type_is_named_by_its_key() {
        let e = TaskSpec::from_table(table("kind = \"copy\"\nvocab = 12\nlength = \"x\"")).unwrap_err();
        assert_eq!((e.key.as_str(), e.message.as_str()), ("length", "invalid type: string \"x\", expected usize"));
    }
}
