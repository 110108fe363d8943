//! The broad synthetic distribution: the embedded stand-in for pretraining text, so that
//! continued-pretraining phases need no downloads. It mixes a Zipfian grammar's documents
//! with `families` algorithmic family tasks in one vocabulary; family `k` draws its 1–2
//! primitives from `task_seed` and its symbols from its own 16-token slice of the alphabet
//! (ids `41 + 16k ..`), so the symbols tell the tasks apart, while the grammar's words range
//! over every symbol.

use super::family::{Family, FIRST_SYMBOL};
use super::grammar::{Grammar, GrammarTask};
use super::mixture::Mixture;
use super::pair::pipelines;
use super::spec::{SpecError, TaskSpec};
use super::{mix, sample_key, Sample, Split, Task};
use std::sync::Arc;

/// Symbols per family slice.
pub const SLICE: u32 = 16;

/// The mixture of a grammar and family tasks.
pub struct Broad {
    pub name: String,
    pub parts: Mixture,
    vocab: usize,
}

impl Broad {
    /// The distribution a `kind = "broad"` spec describes: `vocab` is raised to fit every
    /// family slice; the grammar takes `grammar_weight` of the samples, the families share the
    /// rest evenly.
    pub fn from_spec(spec: &TaskSpec) -> Result<Broad, SpecError> {
        if !(1..=32).contains(&spec.families) {
            return Err(SpecError::new("families", "must be between 1 and 32"));
        }
        if !(0.0..1.0).contains(&spec.grammar_weight) {
            return Err(SpecError::new("grammar_weight", "must be in [0, 1)"));
        }
        let vocab = spec.vocab.max((FIRST_SYMBOL + SLICE * spec.families as u32) as usize);
        let grammar = Grammar::new(spec.grammar_seed, FIRST_SYMBOL, vocab as u32, spec.zipf);
        let text = GrammarTask { name: format!("{}/grammar", spec.name), grammar, vocab, seq_len: spec.seq_len };
        let mut parts: Vec<(Arc<dyn Task>, f64)> = vec![(Arc::new(text), spec.grammar_weight)];
        let share = (1.0 - spec.grammar_weight) / spec.families as f64;
        for k in 0..spec.families as u32 {
            let seed = mix(spec.task_seed ^ mix(k as u64 + 1));
            let (stages, _) = pipelines(1 + (seed % 2) as usize, 0, seed);
            let start = FIRST_SYMBOL + SLICE * k;
            let name = format!("{}/family{k}", spec.name);
            let family = Family::new(&name, stages, (start..start + SLICE).collect(), spec.length, seed)
                .map_err(|e| SpecError::new("length", format!("family {k}: {e}")))?;
            parts.push((Arc::new(family), share));
        }
        Ok(Broad { name: spec.name.clone(), parts: Mixture::new(parts), vocab })
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
