//! Sequence-transformation tasks: `x₁…x_L SEP f(x)₁…f(x)_L`, scored on the answer only.
//! Token 0 is padding and token 1 the separator; symbols are drawn from `2..vocab`. With a
//! `marker`, the prompt starts with that token (outside the alphabet), so that two tasks over
//! the same alphabet, such as copy and reverse, have distinguishable prompts.
//! [`SequenceSpec`] holds the keys of `kind = "copy"` and `kind = "reverse"` specs.

use super::spec::{check_length, check_vocab, default_length, default_vocab, SpecError};
use super::{sample_in_split, Sample, Split, Task};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

/// The separator token.
pub const SEP: u32 = 1;

/// Which transformation the answer applies.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Transform {
    Copy,
    Reverse,
}

/// A copy or reversal task over `length` symbols from a `vocab`-token alphabet.
#[derive(Clone, Debug)]
pub struct SequenceTask {
    pub name: String,
    pub transform: Transform,
    pub length: usize,
    pub vocab: usize,
    pub marker: Option<u32>,
}

/// The keys of a `copy` or `reverse` spec.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct SequenceSpec {
    /// Symbols per input.
    #[serde(default = "default_length")]
    pub length: usize,
    /// Vocabulary size (tokens 0 and 1 are reserved for padding and the separator).
    #[serde(default = "default_vocab")]
    pub vocab: usize,
    /// A task token opening every prompt, at least `vocab` (outside the symbols).
    pub marker: Option<u32>,
}

impl SequenceSpec {
    /// At least one symbol per input, and at least one symbol token.
    pub fn check(&self) -> Result<(), SpecError> {
        check_length(self.length)?;
        check_vocab(self.vocab)?;
        match self.marker {
            Some(m) if (m as usize) < self.vocab => Err(SpecError::new(
                "marker",
                format!("{m} is a symbol of the alphabet (2..{}): use a token ≥ vocab", self.vocab),
            )),
            _ => Ok(()),
        }
    }

    /// The task named `name` applying `transform`.
    pub fn build(&self, name: &str, transform: Transform) -> SequenceTask {
        SequenceTask { name: name.to_string(), transform, length: self.length, vocab: self.vocab, marker: self.marker }
    }
}

impl Task for SequenceTask {
    fn name(&self) -> &str {
        &self.name
    }

    fn vocab_size(&self) -> usize {
        self.marker.map_or(self.vocab, |m| self.vocab.max(m as usize + 1))
    }

    fn seq_len(&self) -> usize {
        2 * self.length + 1 + usize::from(self.marker.is_some())
    }

    fn sample(&self, seed: u64, split: Split, index: u64) -> Sample {
        sample_in_split(seed, &self.name, split, index, |key| self.draw(key), |s| s.input().to_vec())
    }

    /// See [`symbol_text`].
    fn token_text(&self, id: u32) -> String {
        symbol_text(id)
    }
}

impl SequenceTask {
    /// The sample drawn from the random stream `key`.
    fn draw(&self, key: u64) -> Sample {
        let mut rng = ChaCha8Rng::seed_from_u64(key);
        let x: Vec<u32> = (0..self.length).map(|_| rng.random_range(2..self.vocab as u32)).collect();
        let mut tokens: Vec<u32> = self.marker.into_iter().chain(x.iter().copied()).collect();
        tokens.push(SEP);
        let prompt_len = tokens.len();
        match self.transform {
            Transform::Copy => tokens.extend(&x),
            Transform::Reverse => tokens.extend(x.iter().rev()),
        }
        let weights = (0..tokens.len()).map(|t| if t >= prompt_len { 1.0 } else { 0.0 }).collect();
        Sample::new(tokens, weights, prompt_len)
    }
}

/// `|` for the separator, the id in decimal for symbols: a sample renders as `"5 9 3 | 3 9 5"`.
pub fn symbol_text(id: u32) -> String {
    match id {
        0 => super::PAD_TEXT.to_string(),
        SEP => "|".to_string(),
        _ => id.to_string(),
    }
}
