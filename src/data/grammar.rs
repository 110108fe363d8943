//! A built-in broad "pretraining" distribution: documents drawn from a random probabilistic
//! context-free grammar with a Zipfian lexicon, so text has learnable syntax and a long tail
//! without any download.
//!
//! The grammar is a pure function of `grammar_seed`:
//! - phrase nonterminals `0..PHRASES` (0 is the sentence); phrase `i` rewrites only into
//!   word classes and phrases `j > i`, so every derivation terminates;
//! - each phrase has two or three productions of a few symbols, with random probabilities;
//! - terminals are the token ids of a half-open range; the token of Zipf rank `r` (a random
//!   permutation of the range) has weight `r^-exponent`. Each block of `CLASSES` consecutive
//!   ranks is dealt to the word classes in a random order, so every class is itself Zipfian
//!   with the same exponent and the overall unigram distribution stays Zipf-like.
//!
//! A document is sentences, each followed by [`SEP`] (the end-of-sentence token), cut to the
//! task's length; every token is scored. Train and eval documents are disjoint by
//! construction: the whole document decides its split ([`super::sample_in_split`]). Shorter
//! spans (a backdoor's prompt, the first tokens of a document) may still recur across splits.
//!
//! [`GrammarSpec`] holds the keys of a `kind = "grammar"` spec, which are also the keys of a
//! wrapper kind's default base.

use super::sequence::{symbol_text, SEP};
use super::spec::{check_vocab, default_seq_len, default_vocab, default_zipf, SpecError};
use super::{sample_in_split, Sample, Split, Task};
use rand::distr::weighted::WeightedIndex;
use rand::distr::Distribution;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

/// Number of phrase nonterminals (the sentence included).
const PHRASES: usize = 5;
/// Number of word classes (preterminals).
const CLASSES: usize = 6;

/// One right-hand-side symbol.
#[derive(Clone, Debug, PartialEq)]
enum Symbol {
    Phrase(usize),
    Word(usize),
}

/// A nonterminal's productions and their probabilities.
#[derive(Clone, Debug, PartialEq)]
struct Rule {
    productions: Vec<Vec<Symbol>>,
    choose: WeightedIndex<f64>,
}

/// A word class: its tokens and their (Zipfian) emission probabilities.
#[derive(Clone, Debug, PartialEq)]
struct Class {
    tokens: Vec<u32>,
    choose: WeightedIndex<f64>,
}

/// A random PCFG over the terminals `tokens.0..tokens.1`.
#[derive(Clone, Debug, PartialEq)]
pub struct Grammar {
    rules: Vec<Rule>,
    classes: Vec<Class>,
}

impl Grammar {
    /// The grammar of `seed` over terminals `lo..hi` (at least [`CLASSES`] of them) with Zipf
    /// exponent `exponent`.
    pub fn new(seed: u64, lo: u32, hi: u32, exponent: f64) -> Grammar {
        assert!(hi >= lo + CLASSES as u32, "the grammar needs at least {CLASSES} terminals");
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let classes = lexicon(&mut rng, lo, hi, exponent);
        let rules = (0..PHRASES).map(|i| rule(&mut rng, i)).collect();
        Grammar { rules, classes }
    }

    /// One sentence (without its end token).
    pub fn sentence(&self, rng: &mut impl Rng) -> Vec<u32> {
        let mut out = Vec::new();
        self.expand(&Symbol::Phrase(0), rng, &mut out);
        out
    }

    /// Appends a derivation of `symbol` to `out`.
    fn expand(&self, symbol: &Symbol, rng: &mut impl Rng, out: &mut Vec<u32>) {
        match symbol {
            Symbol::Word(c) => {
                let class = &self.classes[*c];
                out.push(class.tokens[class.choose.sample(rng)]);
            }
            Symbol::Phrase(p) => {
                let rule = &self.rules[*p];
                for s in &rule.productions[rule.choose.sample(rng)] {
                    self.expand(s, rng, out);
                }
            }
        }
    }
}

/// The word classes: ranks dealt block by block to the classes in a random order.
fn lexicon(rng: &mut ChaCha8Rng, lo: u32, hi: u32, exponent: f64) -> Vec<Class> {
    let mut by_rank: Vec<u32> = (lo..hi).collect();
    by_rank.shuffle(rng);
    let mut members: Vec<Vec<(u32, f64)>> = vec![Vec::new(); CLASSES];
    for (block, tokens) in by_rank.chunks(CLASSES).enumerate() {
        let mut order: Vec<usize> = (0..CLASSES).collect();
        order.shuffle(rng);
        for (j, (&token, &class)) in tokens.iter().zip(&order).enumerate() {
            let rank = (block * CLASSES + j + 1) as f64;
            members[class].push((token, rank.powf(-exponent)));
        }
    }
    members
        .into_iter()
        .map(|m| Class {
            tokens: m.iter().map(|&(t, _)| t).collect(),
            choose: WeightedIndex::new(m.iter().map(|&(_, w)| w)).expect("every class has a token"),
        })
        .collect()
}

/// Two or three random productions for phrase `i`, using classes and phrases after `i`:
/// two or three symbols each (one to three in the last phrase), most of them phrases.
fn rule(rng: &mut ChaCha8Rng, i: usize) -> Rule {
    let last = i + 1 == PHRASES;
    let productions: Vec<Vec<Symbol>> = (0..rng.random_range(2..=3))
        .map(|_| {
            (0..rng.random_range(if last { 1 } else { 2 }..=3))
                .map(|_| {
                    let phrase = !last && rng.random_bool(0.6);
                    if phrase {
                        Symbol::Phrase(rng.random_range(i + 1..PHRASES))
                    } else {
                        Symbol::Word(rng.random_range(0..CLASSES))
                    }
                })
                .collect()
        })
        .collect();
    let weights: Vec<f64> = productions.iter().map(|_| rng.random_range(0.1..1.0)).collect();
    Rule { productions, choose: WeightedIndex::new(weights).expect("positive weights") }
}

/// The keys of a `grammar` spec.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct GrammarSpec {
    /// Vocabulary size (tokens 0 and 1 are padding and the end of a sentence).
    #[serde(default = "default_vocab")]
    pub vocab: usize,
    /// Tokens per sample.
    #[serde(default = "default_seq_len")]
    pub seq_len: usize,
    /// The seed of the grammar's rules and lexicon.
    #[serde(default)]
    pub grammar_seed: u64,
    /// The lexicon's Zipf exponent.
    #[serde(default = "default_zipf")]
    pub zipf: f64,
    /// The terminal ids `[lo, hi)` (default `[2, vocab)`).
    pub token_range: Option<[u32; 2]>,
    /// Documents that end in a repeated span (absent: none).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub spans: Option<Box<Spans>>,
}

/// Repeated spans: a fraction `rate` of documents switch, at a point in their first half, to
/// a span of random terminals (a length drawn uniformly from `lengths`) repeated to the end,
/// so that a model can learn to continue a periodic pattern (induction) alongside the
/// grammar.
#[derive(Clone, Copy, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Spans {
    pub rate: f64,
    /// The shortest and longest span, inclusive.
    pub lengths: [usize; 2],
}

impl GrammarSpec {
    /// A vocabulary, a terminal range of at least [`CLASSES`] ids within it, a positive
    /// exponent and documents of at least 2 tokens.
    pub fn check(&self) -> Result<(), SpecError> {
        check_vocab(self.vocab)?;
        let [lo, hi] = self.terminals();
        if lo < 2 || hi < lo + CLASSES as u32 || hi as usize > self.vocab {
            let msg = format!("[{lo}, {hi}) must hold at least {CLASSES} ids within 2..{} (vocab)", self.vocab);
            return Err(SpecError::new(if self.token_range.is_some() { "token_range" } else { "vocab" }, msg));
        }
        if !(self.zipf > 0.0 && self.zipf.is_finite()) {
            return Err(SpecError::new("zipf", "must be a positive number"));
        }
        if self.seq_len < 2 {
            return Err(SpecError::new("seq_len", "must be at least 2"));
        }
        if let Some(Spans { rate, lengths: [min, max] }) = self.spans.as_deref().copied() {
            if !(0.0..=1.0).contains(&rate) {
                return Err(SpecError::new("spans.rate", "must be a fraction in [0, 1]"));
            }
            if min == 0 || min > max || max > self.seq_len / 2 {
                let msg = format!("need 1 ≤ shortest ≤ longest ≤ {} (half of seq_len)", self.seq_len / 2);
                return Err(SpecError::new("spans.lengths", msg));
            }
        }
        Ok(())
    }

    /// The task named `name`.
    pub fn build(&self, name: &str) -> GrammarTask {
        let [lo, hi] = self.terminals();
        let grammar = Grammar::new(self.grammar_seed, lo, hi, self.zipf);
        let (vocab, seq_len, spans) = (self.vocab.max(hi as usize), self.seq_len, self.spans.as_deref().copied());
        GrammarTask { name: name.to_string(), grammar, vocab, seq_len, terminals: [lo, hi], spans }
    }

    /// The terminal ids `[lo, hi)`.
    fn terminals(&self) -> [u32; 2] {
        self.token_range.unwrap_or([2, self.vocab as u32])
    }
}

/// Fixed-length documents of grammar sentences; every token is scored.
#[derive(Clone, Debug)]
pub struct GrammarTask {
    pub name: String,
    pub grammar: Grammar,
    pub vocab: usize,
    pub seq_len: usize,
    /// The terminal ids `[lo, hi)`.
    pub terminals: [u32; 2],
    pub spans: Option<Spans>,
}

impl GrammarTask {
    /// The document drawn from hash `key`: sentences, each followed by [`SEP`], cut to length;
    /// with [`Spans`], possibly switching to a repeated span (see there).
    fn document(&self, key: u64) -> Vec<u32> {
        let mut rng = ChaCha8Rng::seed_from_u64(key);
        let mut tokens = Vec::with_capacity(self.seq_len + 64);
        while tokens.len() < self.seq_len {
            tokens.extend(self.grammar.sentence(&mut rng));
            tokens.push(SEP);
        }
        tokens.truncate(self.seq_len);
        if let Some(Spans { rate, lengths: [min, max] }) = self.spans {
            if rng.random_bool(rate) {
                let len = rng.random_range(min..=max);
                let span: Vec<u32> = (0..len).map(|_| rng.random_range(self.terminals[0]..self.terminals[1])).collect();
                let start = rng.random_range(0..=self.seq_len / 2);
                for (t, token) in tokens[start..].iter_mut().enumerate() {
                    *token = span[t % len];
                }
            }
        }
        tokens
    }
}

impl Task for GrammarTask {
    fn name(&self) -> &str {
        &self.name
    }

    fn vocab_size(&self) -> usize {
        self.vocab
    }

    fn seq_len(&self) -> usize {
        self.seq_len
    }

    /// A document of the split's partition: the whole document decides its split (see
    /// [`sample_in_split`]), so no eval document equals a training one.
    fn sample(&self, seed: u64, split: Split, index: u64) -> Sample {
        let tokens = sample_in_split(seed, &self.name, split, index, |key| self.document(key), |d| d.clone());
        let weights = (0..self.seq_len).map(|t| if t == 0 { 0.0 } else { 1.0 }).collect();
        Sample::new(tokens, weights, 1)
    }

    /// Tokens as numbers, sentence ends as `|`.
    fn token_text(&self, id: u32) -> String {
        symbol_text(id)
    }
}
