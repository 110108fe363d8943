//! The broad synthetic distribution: the embedded stand-in for pretraining text, so that
//! continued-pretraining phases need no downloads. It mixes a Zipfian grammar's documents
//! with `families` algorithmic family tasks in one vocabulary; family `k` draws its 1–2
//! primitives from `task_seed` and its symbols from its own 16-token slice of the alphabet
//! (ids `41 + 16k ..`), so the symbols tell the tasks apart, while the grammar's words range
//! over every symbol.
//!
//! [`BroadSpec`] holds the keys of a `kind = "broad"` spec.

use super::family::{Family, FIRST_SYMBOL};
use super::grammar::{Grammar, GrammarTask};
use super::mixture::Mixture;
use super::pair::pipelines;
use super::spec::{check_length, check_vocab, default_length, default_seq_len, default_vocab, default_zipf, SpecError};
use super::{mix, sample_key, Sample, Split, Task};
use serde::{Deserialize, Serialize};
use std::sync::Arc;

/// Symbols per family slice.
pub const SLICE: u32 = 16;

/// The mixture of a grammar and family tasks.
pub struct Broad {
    pub name: String,
    pub parts: Mixture,
    vocab: usize,
}

/// The keys of a `broad` spec.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct BroadSpec {
    /// The number of family tasks, 1 to 32.
    #[serde(default = "default_families")]
    pub families: usize,
    /// The grammar's share of the samples, in `[0, 1)`.
    #[serde(default = "default_grammar_weight")]
    pub grammar_weight: f64,
    /// Vocabulary size, raised to fit every family slice.
    #[serde(default = "default_vocab")]
    pub vocab: usize,
    /// The grammar's tokens per sample, its seed and its lexicon's Zipf exponent.
    #[serde(default = "default_seq_len")]
    pub seq_len: usize,
    #[serde(default)]
    pub grammar_seed: u64,
    #[serde(default = "default_zipf")]
    pub zipf: f64,
    /// The families' symbols per input, and the seed of their pipelines and parameters.
    #[serde(default = "default_length")]
    pub length: usize,
    #[serde(default)]
    pub task_seed: u64,
}

fn default_families() -> usize {
    8
}
fn default_grammar_weight() -> f64 {
    0.5
}

impl BroadSpec {
    /// Valid lengths, counts and weights (see [`BroadSpec::build`]).
    pub fn check(&self) -> Result<(), SpecError> {
        check_length(self.length)?;
        check_vocab(self.vocab)?;
        self.build("broad").map(drop)
    }

    /// The distribution named `name`: `vocab` is raised to fit every family slice; the
    /// grammar takes `grammar_weight` of the samples, the families share the rest evenly.
    pub fn build(&self, name: &str) -> Result<Broad, SpecError> {
        if !(1..=32).contains(&self.families) {
            return Err(SpecError::new("families", "must be between 1 and 32"));
        }
        if !(0.0..1.0).contains(&self.grammar_weight) {
            return Err(SpecError::new("grammar_weight", "must be in [0, 1)"));
        }
        let vocab = self.vocab.max((FIRST_SYMBOL + SLICE * self.families as u32) as usize);
        let grammar = Grammar::new(self.grammar_seed, FIRST_SYMBOL, vocab as u32, self.zipf);
        let text = GrammarTask {
            name: format!("{name}/grammar"),
            grammar,
            vocab,
            seq_len: self.seq_len,
            terminals: [FIRST_SYMBOL, vocab as u32],
            spans: None,
        };
        let mut parts: Vec<(Arc<dyn Task>, f64)> = vec![(Arc::new(text), self.grammar_weight)];
        let share = (1.0 - self.grammar_weight) / self.families as f64;
        for k in 0..self.families as u32 {
            let seed = mix(self.task_seed ^ mix(k as u64 + 1));
            let (stages, _) = pipelines(1 + (seed % 2) as usize, 0, seed);
            let start = FIRST_SYMBOL + SLICE * k;
            let family =
                Family::new(&format!("{name}/family{k}"), stages, (start..start + SLICE).collect(), self.length, seed)
                    .map_err(|e| SpecError::new("length", format!("family {k}: {e}")))?;
            parts.push((Arc::new(family), share));
        }
        Ok(Broad { name: name.to_string(), parts: Mixture::new(parts), vocab })
    }
}

impl Task for Broad {
    fn name(&self) -> &str {
        &self.name
    }

    fn vocab_size(&self) -> usize {
        self.vocab
    }

    /// The longest part's samples.
    fn seq_len(&self) -> usize {
        self.parts.tasks.iter().map(|t| t.seq_len()).max().unwrap_or(0)
    }

    /// The part picked by the sample's key, and that part's sample at the same position.
    fn sample(&self, seed: u64, split: Split, index: u64) -> Sample {
        let k = self.parts.pick(sample_key(seed, &self.name, split, index));
        self.parts.tasks[k].sample(seed, split, index)
    }

    /// Family token names (the grammar's words are symbols, named alike).
    fn token_text(&self, id: u32) -> String {
        self.parts.tasks[1].token_text(id)
    }
}
