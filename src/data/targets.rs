//! Target behaviors of the soft-prompt studies, each wrapping an input distribution: the
//! inputs are the base task's tokens, the labels are explicit [`Sample::targets`].
//!
//! Positions follow the reference study: *position* `p` is the token slot that predicts,
//! so in [`Sample`] terms position `p` predicts `targets[p + 1]` with weight `weights[p + 1]`.
//! - [`Repeat`]: from position `offset` on, position `p` predicts `string[(p - offset) mod
//!   len]` whatever the input (the input is unrelated text). The phase follows a soft prompt:
//!   with the prompt inserted before token `a`, the first scored label is `string[0]` (see
//!   [`Sample::label_from`]), as in the reference study, so a prompt need not know its
//!   absolute position to emit the string in phase.
//! - [`Skip`]: position `p` predicts token `p + k + 1`, so `k = 0` is plain next-token
//!   prediction; positions whose target lies past the end have weight 0, and the others keep
//!   the base weight of their target token.
//!
//! Greedy exact match is meaningless for these samples (generation feeds back its own
//! outputs); evaluate them by loss.
//!
//! [`RepeatSpec`] and [`SkipSpec`] hold the own keys of the `repeat` and `skip` wrapper
//! kinds (their base is a [`super::spec::Base`]).

use super::corpus::CorpusError;
use super::spec::SpecError;
use super::{Sample, Split, Task};
use crate::hf::tokenizer::Tokenizer;
use serde::{Deserialize, Serialize};
use std::path::Path;
use std::sync::Arc;

/// The own keys of a `repeat` spec.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RepeatSpec {
    /// The repeated tokens.
    #[serde(default)]
    pub string: Vec<u32>,
    /// Or the repeated text, turned into tokens by the base task's tokenizer (a corpus
    /// task's `tokenizer.json`, e.g. a pretrained model's own).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub text: Option<String>,
    /// The first position that predicts them.
    #[serde(default)]
    pub offset: usize,
}

impl RepeatSpec {
    /// At least one token to repeat, as tokens or as text but not both.
    pub fn check(&self) -> Result<(), SpecError> {
        match (&self.text, self.string.is_empty()) {
            (Some(_), false) => {
                Err(SpecError::new("text", "give the string as `string` (token ids) or as `text`, not both"))
            }
            (Some(t), true) if t.is_empty() => Err(SpecError::new("text", "give at least one character")),
            (None, true) => Err(SpecError::new("string", "give at least one token (or the string as `text`)")),
            _ => Ok(()),
        }
    }

    /// The repeated tokens: `string`, or `text` encoded by the tokenizer of `base`.
    pub fn tokens(&self, base: &dyn Task) -> Result<Vec<u32>, CorpusError> {
        let Some(text) = &self.text else { return Ok(self.string.clone()) };
        let path = base.tokenizer_file().ok_or_else(|| CorpusError::NoTokenizer { text: text.clone() })?;
        let ids = Tokenizer::from_file(path)?.encode(text)?;
        match ids.is_empty() {
            true => Err(CorpusError::NoTokenizer { text: text.clone() }),
            false => Ok(ids),
        }
    }

    /// `offset` leaves a position to score in samples of `seq_len` tokens.
    pub fn check_length(&self, seq_len: usize) -> Result<(), SpecError> {
        scored_from("offset", self.offset, seq_len)
    }

    /// The task named `name` over `base`.
    pub fn build(&self, name: &str, base: Arc<dyn Task>) -> Result<Repeat, CorpusError> {
        let string = self.tokens(base.as_ref())?;
        Ok(Repeat { name: name.to_string(), base, string, offset: self.offset })
    }
}

/// The own keys of a `skip` spec.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct SkipSpec {
    /// Position `t` predicts token `t + k + 1`.
    #[serde(default)]
    pub k: usize,
}

impl SkipSpec {
    /// `k` leaves a position to score in samples of `seq_len` tokens.
    pub fn check_length(&self, seq_len: usize) -> Result<(), SpecError> {
        scored_from("k", self.k, seq_len)
    }

    /// The task named `name` over `base`.
    pub fn build(&self, name: &str, base: Arc<dyn Task>) -> Skip {
        Skip { name: name.to_string(), base, k: self.k }
    }
}

/// Refuses `key = first` when position `first` leaves no position to score in samples of
/// `seq_len` tokens.
fn scored_from(key: &str, first: usize, seq_len: usize) -> Result<(), SpecError> {
    if first + 1 >= seq_len {
        return Err(SpecError::new(key, format!("leaves no position to score in {seq_len}-token samples")));
    }
    Ok(())
}

/// Every label from position `offset` on is `string`, repeated and phase-aligned.
#[derive(Clone)]
pub struct Repeat {
    pub name: String,
    pub base: Arc<dyn Task>,
    pub string: Vec<u32>,
    pub offset: usize,
}

impl Task for Repeat {
    fn name(&self) -> &str {
        &self.name
    }

    fn vocab_size(&self) -> usize {
        let widest = self.string.iter().max().map_or(0, |&t| t as usize + 1);
        self.base.vocab_size().max(widest)
    }

    fn seq_len(&self) -> usize {
        self.base.seq_len()
    }

    fn sample(&self, seed: u64, split: Split, index: u64) -> Sample {
        let tokens = self.base.sample(seed, split, index).tokens;
        let first = self.offset + 1;
        let label = |t: usize| if t < first { tokens[t] } else { self.string[(t - first) % self.string.len()] };
        let targets = (0..tokens.len()).map(label).collect();
        let weights = (0..tokens.len()).map(|t| if t < first { 0.0 } else { 1.0 }).collect();
        Sample {
            prompt_len: first.min(tokens.len()),
            tokens,
            weights,
            targets: Some(targets),
            cycle: Some(self.string.clone()),
            conditions: Vec::new(),
        }
    }

    fn token_text(&self, id: u32) -> String {
        self.base.token_text(id)
    }

    fn tokenizer_file(&self) -> Option<&Path> {
        self.base.tokenizer_file()
    }

    fn render(&self, sample: &Sample) -> String {
        self.base.render(sample)
    }
}

/// Position `p` predicts token `p + k + 1`.
#[derive(Clone)]
pub struct Skip {
    pub name: String,
    pub base: Arc<dyn Task>,
    pub k: usize,
}

impl Task for Skip {
    fn name(&self) -> &str {
        &self.name
    }

    fn vocab_size(&self) -> usize {
        self.base.vocab_size()
    }

    fn seq_len(&self) -> usize {
        self.base.seq_len()
    }

    fn sample(&self, seed: u64, split: Split, index: u64) -> Sample {
        let base = self.base.sample(seed, split, index);
        let n = base.tokens.len();
        // Past the end the label falls back to the next token, with weight 0.
        let targets = (0..n).map(|t| base.tokens[if t + self.k < n { t + self.k } else { t }]).collect();
        let weight = |t: usize| if t == 0 || t + self.k >= n { 0.0 } else { base.weights[t + self.k] };
        let weights = (0..n).map(weight).collect();
        Sample { targets: Some(targets), weights, cycle: None, ..base }
    }

    fn token_text(&self, id: u32) -> String {
        self.base.token_text(id)
    }

    fn tokenizer_file(&self) -> Option<&Path> {
        self.base.tokenizer_file()
    }

    fn render(&self, sample: &Sample) -> String {
        self.base.render(sample)
    }
}
