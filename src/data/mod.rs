//! Tasks: deterministic maps from `(seed, split, index)` to samples (tokens plus per-token
//! loss weights), and mixtures of tasks as resumable streams.
//!
//! Train and eval are disjoint by construction: a sample's *input* (its prompt tokens)
//! belongs to the eval split iff a hash of the input lands in a fixed bucket of
//! [`EVAL_BUCKETS`], and each split rejection-samples until its input lands in its own
//! partition ([`sample_in_split`]). Any position of a stream can be regenerated from its
//! index alone — which is what makes checkpoints resumable.
//!
//! Each task kind's module also holds its spec struct, the keys of its `[[tasks]]` table;
//! [`spec`] reads a table into the kind it names.

pub mod backdoor;
pub mod broad;
pub mod coins;
pub mod corpus;
pub mod environment;
pub mod family;
pub mod grammar;
pub mod mixture;
pub mod pair;
pub mod pathfinding;
pub mod primitives;
pub mod score;
pub mod sequence;
pub mod spec;
pub mod targets;
pub mod vocab;

/// Eval-split index of the first sample of a selection set (an evaluation's `validation`
/// samples, an elicitation target's probes, a backdoor's with `selection`): the selection
/// set (`val_*` and `select_*` metrics) and the reported set (eval indices `0..n`) are
/// disjoint for any `n` below it.
pub const SELECTION_OFFSET: u64 = 1 << 32;

/// Which stream a sample comes from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Split {
    Train,
    Eval,
}

/// One sample: `tokens[t]` and the loss weight of predicting it (`weights[0]` is unused);
/// `prompt_len` tokens form the input, the rest the answer.
#[derive(Clone, Debug, PartialEq)]
pub struct Sample {
    pub tokens: Vec<u32>,
    pub weights: Vec<f32>,
    pub prompt_len: usize,
    /// Explicit labels, when position `t - 1` must predict `targets[t]` rather than the next
    /// token `tokens[t]` (skip-k, repetition); same length as `tokens`.
    pub targets: Option<Vec<u32>>,
    /// Repetition: the scored labels are this string repeated from its first token at the
    /// first scored label, wherever a soft prompt is inserted (see [`Sample::label_from`]);
    /// `targets` holds the labels of a prepended prompt.
    pub cycle: Option<Vec<u32>>,
    /// What a conditional soft prompt is conditioned on (pathfinding: `[extra_moves,
    /// invalid_moves]` of the sample's own path); empty for tasks without conditions.
    pub conditions: Vec<f32>,
}

impl Sample {
    /// A next-token sample: position `t - 1` predicts `tokens[t]` with weight `weights[t]`.
    pub fn new(tokens: Vec<u32>, weights: Vec<f32>, prompt_len: usize) -> Sample {
        Sample { tokens, weights, prompt_len, targets: None, cycle: None, conditions: Vec::new() }
    }

    /// The label scored at token `t` (`targets[t]`, or `tokens[t]` without explicit targets).
    pub fn label(&self, t: usize) -> u32 {
        self.targets.as_ref().map_or(self.tokens[t], |l| l[t])
    }

    /// The label scored at token `t` when a soft prompt goes before token `at`: [`label`],
    /// except that a [`cycle`] restarts at the first label that can be scored, token
    /// `max(at, prompt_len, 1)`, so the token after the prompt is always the string's first
    /// (the reference study's phase alignment).
    ///
    /// [`label`]: Sample::label
    /// [`cycle`]: Sample::cycle
    pub fn label_from(&self, t: usize, at: usize) -> u32 {
        match &self.cycle {
            Some(c) if !c.is_empty() => c[(t - at.max(self.prompt_len).max(1).min(t)) % c.len()],
            _ => self.label(t),
        }
    }

    /// The input: the prompt tokens, which decide the sample's split (see [`split_of`]).
    pub fn input(&self) -> &[u32] {
        &self.tokens[..self.prompt_len]
    }

    /// The answer labels (`label(t)` for every answer position).
    pub fn answer(&self) -> Vec<u32> {
        (self.prompt_len..self.tokens.len()).map(|t| self.label(t)).collect()
    }
}

/// The text of the padding token (id 0) in every task's vocabulary.
pub const PAD_TEXT: &str = "<pad>";

/// A task: deterministic in `(seed, split, index)`.
pub trait Task: Send + Sync {
    /// The task's name in configs and metrics.
    fn name(&self) -> &str;
    /// Smallest vocabulary that holds every token.
    fn vocab_size(&self) -> usize;
    /// Length of every sample.
    fn seq_len(&self) -> usize;
    /// Sample `index` of `split` under `seed`.
    fn sample(&self, seed: u64, split: Split, index: u64) -> Sample;

    /// The length of every sample's [`Sample::conditions`] (default 0: the task has none).
    fn condition_width(&self) -> usize {
        0
    }

    /// The longest answer (tokens after the prompt) a sample can have: the generation budget
    /// where answers are open-ended (default: [`Task::seq_len`]).
    fn max_answer_len(&self) -> usize {
        self.seq_len()
    }

    /// Task-specific fields of a sample for inspection (default: none).
    fn fields(&self, _seed: u64, _split: Split, _index: u64) -> serde_json::Value {
        serde_json::Value::Null
    }

    /// The text of token `id`: one word without whitespace, distinct per id (default:
    /// [`PAD_TEXT`] for 0, the id in decimal otherwise). [`vocab::write_tokenizer`] builds a
    /// `tokenizer.json` from these texts.
    fn token_text(&self, id: u32) -> String {
        if id == 0 {
            PAD_TEXT.to_string()
        } else {
            id.to_string()
        }
    }

    /// The `tokenizer.json` this task's ids come from, when it has one of its own (a corpus's);
    /// [`vocab::tokenizer_for`] copies it instead of building one from [`Task::token_text`].
    fn tokenizer_file(&self) -> Option<&std::path::Path> {
        None
    }

    /// The token texts of `tokens` joined by single spaces: the text the task's
    /// `tokenizer.json` encodes back to exactly `tokens`.
    fn words(&self, tokens: &[u32]) -> String {
        tokens.iter().map(|&t| self.token_text(t)).collect::<Vec<_>>().join(" ")
    }

    /// Human-readable text of a sample (default: its [`Task::words`]).
    fn render(&self, sample: &Sample) -> String {
        self.words(&sample.tokens)
    }

    /// Metrics of `generated`, the greedy continuation of `sample`'s prompt (default: the
    /// answer's token accuracy, see [`score::token_accuracy`]); [`score::score_all`] averages them.
    fn score(&self, sample: &Sample, generated: &[u32]) -> Vec<(&'static str, f64)> {
        vec![("token_accuracy", score::token_accuracy(sample, generated))]
    }

    /// Probe sets of `n` held-out samples each that evaluations score by greedy decoding,
    /// beyond the task's own eval set (default: none; a backdoor's attack metrics).
    fn probes(&self, _seed: u64, _n: usize) -> Vec<score::Probe> {
        Vec::new()
    }
}

/// Inputs fall into this many hash buckets; bucket 0 is the eval partition (1/8 of inputs).
pub const EVAL_BUCKETS: u64 = 8;
/// Draws per sample before a split is declared empty.
const MAX_ATTEMPTS: u64 = 1 << 16;
/// Seeds the input hash, so it is unrelated to the sample keys.
const INPUT_SALT: u64 = 0x696e_7075_745f_6861;

/// The split whose partition holds `input`: eval iff its hash lands in bucket 0 of
/// [`EVAL_BUCKETS`]. Depends on the input tokens only (not the seed, task or index).
pub fn split_of(input: &[u32]) -> Split {
    let h = input.iter().fold(mix(INPUT_SALT ^ input.len() as u64), |h, &t| mix(h ^ t as u64));
    if h % EVAL_BUCKETS == 0 {
        Split::Eval
    } else {
        Split::Train
    }
}

/// Sample `index` of `split` drawn by `draw(key)`: attempt `a` uses [`sample_key`] with `a`
/// folded in (attempt 0 uses it as is) and the first draw whose `input` lies in `split`'s
/// partition ([`split_of`]) is kept, so train and eval inputs never coincide, however small
/// the input space. Panics when no input of `split` turns up in 65536 draws.
pub fn sample_in_split<T>(
    seed: u64,
    name: &str,
    split: Split,
    index: u64,
    draw: impl Fn(u64) -> T,
    input: impl Fn(&T) -> Vec<u32>,
) -> T {
    let key = sample_key(seed, name, split, index);
    for attempt in 0..MAX_ATTEMPTS {
        let x = draw(if attempt == 0 { key } else { mix(key ^ mix(attempt)) });
        if split_of(&input(&x)) == split {
            return x;
        }
    }
    panic!("task {name}: no {split:?} input in {MAX_ATTEMPTS} draws; its input space is too small to split")
}

/// SplitMix64: a well-mixed hash used to derive independent random streams.
pub fn mix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// The seed of sample `index` of `split` under `seed` for the task named `name`.
pub fn sample_key(seed: u64, name: &str, split: Split, index: u64) -> u64 {
    let name_hash = name.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| (h ^ b as u64).wrapping_mul(0x100_0000_01b3));
    mix(mix(mix(seed ^ name_hash) ^ (split as u64 + 1)) ^ index)
}
