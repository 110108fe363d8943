//! Family tasks: a pipeline of 1 to 3 [primitives](super::primitives) applied to a random
//! input over an alphabet of symbol tokens, rendered with a task marker and a separator; the
//! loss covers the answer only.
//!
//! Composition: the sequence primitives apply left to right; a scalar read-out (`lookup`,
//! `parity`, `count`) may only be the last stage. With a read-out the prompt also carries a
//! query `? q`, where `q` is a symbol of the sequence the read-out sees.
//!
//! Formats (`M` the marker, `x…` the input, `y…` the answer):
//! - prefix: `M x… [? q] | y…`
//! - suffix: `x… [? q] M = y…`
//!
//! Token layout, shared by every family task so that any of them fit one vocabulary:
//! `0 <pad>`, `1 |`, `2 =`, `3 ?`, `4 even`, `5 odd`, markers `6 <a>` and `7 <b>`, counts
//! `8..=40` as `#0..#32`, then symbols from [`FIRST_SYMBOL`] (41), named by their id in decimal.
//!
//! [`FamilySpec`] holds the keys of a `kind = "family"` spec.

use super::primitives::{Params, Primitive, Readout};
use super::spec::{check_length, default_length, SpecError};
use super::{sample_in_split, score, Sample, Split, Task};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};
use std::ops::Range;

/// The separator of the prefix format.
pub const SEP: u32 = 1;
/// The separator of the suffix format.
pub const EQ: u32 = 2;
/// Introduces the query symbol of a read-out.
pub const QUERY: u32 = 3;
/// The parity answers.
pub const EVEN: u32 = 4;
pub const ODD: u32 = 5;
/// The task markers `<a>` and `<b>`.
pub const MARKERS: [u32; 2] = [6, 7];
/// The count token of 0; count `k` is `COUNT0 + k`.
pub const COUNT0: u32 = 8;
/// The largest count with a token.
pub const MAX_COUNT: usize = 32;
/// The first token id free for symbols.
pub const FIRST_SYMBOL: u32 = COUNT0 + MAX_COUNT as u32 + 1;
/// The alphabet of a spec that gives none: 16 symbols.
pub const DEFAULT_ALPHABET: [u32; 2] = [FIRST_SYMBOL, FIRST_SYMBOL + 16];
/// Texts of the tokens below [`COUNT0`].
const TEXTS: [&str; 8] = ["<pad>", "|", "=", "?", "even", "odd", "<a>", "<b>"];

/// Where the marker goes and which separator precedes the answer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MarkerPlacement {
    /// `M x… [? q] | y…`
    Prefix,
    /// `x… [? q] M = y…`
    Suffix,
}

/// A family task.
#[derive(Clone, Debug, PartialEq)]
pub struct Family {
    pub name: String,
    /// The pipeline, applied left to right.
    pub stages: Vec<Primitive>,
    /// The `shift` constant and `permute` map.
    pub params: Params,
    /// `alphabet[v]` is the token of symbol value `v`.
    pub alphabet: Vec<u32>,
    /// Input symbols per sample.
    pub length: usize,
    pub format: MarkerPlacement,
    /// The marker token (one of [`MARKERS`]).
    pub marker: u32,
    /// The vocabulary size (at least the largest token + 1).
    pub vocab: usize,
}

/// The token range `start..end` of a spec's `alphabet` (default [`DEFAULT_ALPHABET`]).
pub fn alphabet_range(alphabet: Option<[u32; 2]>) -> Result<Range<u32>, SpecError> {
    let [start, end] = alphabet.unwrap_or(DEFAULT_ALPHABET);
    if start < FIRST_SYMBOL || end < start.saturating_add(2) {
        let msg = format!("give [start, end] with {FIRST_SYMBOL} <= start and end >= start + 2 (symbols start..end)");
        return Err(SpecError::new("alphabet", msg));
    }
    Ok(start..end)
}

/// The keys of a `family` spec.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct FamilySpec {
    /// The pipeline of primitive names, applied left to right.
    #[serde(default)]
    pub primitives: Vec<String>,
    /// Symbol tokens `[start, end]` (`end` excluded).
    pub alphabet: Option<[u32; 2]>,
    /// Symbols per input.
    #[serde(default = "default_length")]
    pub length: usize,
    /// Seed of the fixed parameters (shift, permutation).
    #[serde(default)]
    pub task_seed: u64,
}

impl FamilySpec {
    /// A valid pipeline over a valid alphabet (see [`FamilySpec::build`]).
    pub fn check(&self) -> Result<(), SpecError> {
        check_length(self.length)?;
        self.build("family").map(drop)
    }

    /// The task named `name`; errors name the key at fault.
    pub fn build(&self, name: &str) -> Result<Family, SpecError> {
        let stages = self
            .primitives
            .iter()
            .enumerate()
            .map(|(i, p)| Primitive::parse(p).map_err(|m| SpecError::new(format!("primitives[{i}]"), m)))
            .collect::<Result<Vec<_>, _>>()?;
        let alphabet = alphabet_range(self.alphabet)?.collect();
        Family::new(name, stages, alphabet, self.length, self.task_seed)
    }
}

impl Family {
    /// A task in the prefix format with marker `<a>`, its parameters drawn from `task_seed`;
    /// errors name the spec key at fault.
    pub fn new(
        name: &str,
        stages: Vec<Primitive>,
        alphabet: Vec<u32>,
        length: usize,
        task_seed: u64,
    ) -> Result<Family, SpecError> {
        let vocab = alphabet.iter().max().map_or(0, |&t| t as usize + 1);
        let params = Params::new(task_seed, alphabet.len());
        let family = Family {
            name: name.to_string(),
            stages,
            params,
            alphabet,
            length,
            format: MarkerPlacement::Prefix,
            marker: MARKERS[0],
            vocab,
        };
        family.check()?;
        Ok(family)
    }

    /// Checks the pipeline's shape against the alphabet and length.
    fn check(&self) -> Result<(), SpecError> {
        let pipeline = self.stages.iter().map(|p| p.name()).collect::<Vec<_>>().join(" → ");
        if !(1..=3).contains(&self.stages.len()) {
            let msg = format!("give 1 to 3 primitives from: {}", super::primitives::names());
            return Err(SpecError::new("primitives", msg));
        }
        if let Some(i) = self.stages[..self.stages.len() - 1].iter().position(|p| p.is_scalar()) {
            let msg = format!("{} is a scalar read-out; it may only be the last stage", self.stages[i].name());
            return Err(SpecError::new(format!("primitives[{i}]"), msg));
        }
        if self.alphabet.len() < 2 || self.alphabet.iter().any(|&t| t < FIRST_SYMBOL) {
            return Err(SpecError::new("alphabet", format!("needs 2 or more symbols, all >= {FIRST_SYMBOL}")));
        }
        if self.length == 0 {
            return Err(SpecError::new("length", "must be at least 1"));
        }
        let seen = self.mapped_len();
        match self.readout() {
            Some(r) if seen < r.min_len() => {
                let msg = format!("{pipeline}: {} needs at least {} symbols, gets {seen}", r.name(), r.min_len());
                Err(SpecError::new("length", msg))
            }
            Some(Primitive::Count) if seen > MAX_COUNT => {
                let msg = format!("{pipeline}: count sees {seen} symbols, but counts above {MAX_COUNT} have no token");
                Err(SpecError::new("length", msg))
            }
            _ => Ok(()),
        }
    }

    /// The scalar read-out ending the pipeline, if any.
    pub fn readout(&self) -> Option<Primitive> {
        self.stages.last().copied().filter(|p| p.is_scalar())
    }

    /// The sequence stages (all but a final read-out).
    fn maps(&self) -> &[Primitive] {
        &self.stages[..self.stages.len() - usize::from(self.readout().is_some())]
    }

    /// Length of the sequence the sequence stages produce.
    fn mapped_len(&self) -> usize {
        self.maps().iter().fold(self.length, |len, p| p.out_len(len))
    }

    /// The sequence after each sequence stage of input values `x` (`x` itself first).
    pub fn trace(&self, x: &[usize]) -> Vec<Vec<usize>> {
        let mut out = vec![x.to_vec()];
        for p in self.maps() {
            out.push(p.apply(out.last().expect("starts with x"), &self.params));
        }
        out
    }

    /// The answer tokens for input values `x` and, with a read-out, query value `query`.
    pub fn answer(&self, x: &[usize], query: Option<usize>) -> Vec<u32> {
        let y = self.trace(x).pop().expect("starts with x");
        match (self.readout(), query) {
            (Some(r), Some(q)) => vec![self.readout_token(r.read(&y, q))],
            _ => y.iter().map(|&v| self.alphabet[v]).collect(),
        }
    }

    /// The token of a read-out's answer.
    fn readout_token(&self, r: Readout) -> u32 {
        match r {
            Readout::Symbol(v) => self.alphabet[v],
            Readout::Parity { odd } => {
                if odd {
                    ODD
                } else {
                    EVEN
                }
            }
            Readout::Count(k) => COUNT0 + k as u32,
        }
    }

    /// The prompt tokens for input values `x` and query value `query`.
    pub fn prompt(&self, x: &[usize], query: Option<usize>) -> Vec<u32> {
        let mut body: Vec<u32> = x.iter().map(|&v| self.alphabet[v]).collect();
        if let Some(q) = query {
            body.extend([QUERY, self.alphabet[q]]);
        }
        match self.format {
            MarkerPlacement::Prefix => [vec![self.marker], body, vec![SEP]].concat(),
            MarkerPlacement::Suffix => [body, vec![self.marker, EQ]].concat(),
        }
    }

    /// The input values and query drawn from the random stream `key`.
    fn draw(&self, key: u64) -> (Vec<usize>, Option<usize>) {
        let mut rng = ChaCha8Rng::seed_from_u64(key);
        let x: Vec<usize> = (0..self.length).map(|_| rng.random_range(0..self.alphabet.len())).collect();
        let query = self.readout().map(|r| {
            let y = self.trace(&x).pop().expect("starts with x");
            y[r.query_index(y.len(), rng.random())]
        });
        (x, query)
    }

    /// The input values and query of sample `index` of `split` under `seed`.
    pub fn instance(&self, seed: u64, split: Split, index: u64) -> (Vec<usize>, Option<usize>) {
        sample_in_split(seed, &self.name, split, index, |key| self.draw(key), |(x, q)| self.prompt(x, *q))
    }

    /// The tokens an answer may hold: the alphabet, the parity answers or the count tokens.
    fn answer_tokens(&self) -> Vec<u32> {
        match self.readout() {
            Some(Primitive::Parity) => vec![EVEN, ODD],
            Some(Primitive::Count) => (COUNT0..=COUNT0 + MAX_COUNT as u32).collect(),
            _ => self.alphabet.clone(),
        }
    }
}

impl Task for Family {
    fn name(&self) -> &str {
        &self.name
    }

    fn vocab_size(&self) -> usize {
        self.vocab
    }

    /// Marker, input, query (with a read-out), separator and answer.
    fn seq_len(&self) -> usize {
        let (prompt, answer) = match self.readout() {
            Some(_) => (self.length + 4, 1),
            None => (self.length + 2, self.mapped_len()),
        };
        prompt + answer
    }

    fn sample(&self, seed: u64, split: Split, index: u64) -> Sample {
        let (x, query) = self.instance(seed, split, index);
        let prompt = self.prompt(&x, query);
        let prompt_len = prompt.len();
        let tokens = [prompt, self.answer(&x, query)].concat();
        let weights = (0..tokens.len()).map(|t| if t >= prompt_len { 1.0 } else { 0.0 }).collect();
        Sample::new(tokens, weights, prompt_len)
    }

    /// The pipeline, format, query and the sequence after each sequence stage (as tokens).
    fn fields(&self, seed: u64, split: Split, index: u64) -> serde_json::Value {
        let (x, query) = self.instance(seed, split, index);
        let tokens = |y: &Vec<usize>| y.iter().map(|&v| self.alphabet[v]).collect::<Vec<_>>();
        serde_json::json!({
            "primitives": self.stages.iter().map(|p| p.name()).collect::<Vec<_>>(),
            "format": if self.format == MarkerPlacement::Prefix { "prefix" } else { "suffix" },
            "shift": self.params.shift,
            "query": query.map(|q| self.alphabet[q]),
            "stages": self.trace(&x).iter().map(tokens).collect::<Vec<_>>(),
        })
    }

    /// The layout's names (see the module doc); symbols in decimal.
    fn token_text(&self, id: u32) -> String {
        match id {
            _ if (id as usize) < TEXTS.len() => TEXTS[id as usize].to_string(),
            _ if (COUNT0..FIRST_SYMBOL).contains(&id) => format!("#{}", id - COUNT0),
            _ => id.to_string(),
        }
    }

    /// `token_accuracy`, `exact_match`, and `valid_tokens`: the fraction of answer positions
    /// holding a token this task can answer with (its alphabet, `even`/`odd` or a count),
    /// which separates a wrong mechanism from a wrong output format.
    fn score(&self, sample: &Sample, generated: &[u32]) -> Vec<(&'static str, f64)> {
        let n = sample.tokens.len() - sample.prompt_len;
        let allowed = self.answer_tokens();
        let valid = generated.iter().take(n).filter(|t| allowed.contains(t)).count();
        vec![
            ("token_accuracy", score::token_accuracy(sample, generated)),
            ("exact_match", score::exact_match(sample, generated)),
            ("valid_tokens", if n == 0 { 1.0 } else { valid as f64 / n as f64 }),
        ]
    }
}
