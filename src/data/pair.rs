//! Task pairs with an explicit shared-mechanism knob: two [family](super::family) tasks `a`
//! and `b` that share a controlled part of their primitives, alphabet, format and marker,
//! and fit one vocabulary so that both train in one model.
//!
//! Construction from [`Knobs`], a pipeline `depth` (1 to 3), `a`'s alphabet `start..end`
//! (`N` symbols), the input `length` and a `task_seed`:
//! - Primitives: a shuffle of all nine primitives drawn from `task_seed` (reshuffled until
//!   every `k ∈ 0..=depth` gives valid pipelines, so the draw does not depend on `k`); with
//!   `k` shared primitives, `a` takes the first `depth` of the order and `b` the first `k`
//!   followed by the `depth − k` after `a`'s. Each keeps that order except that a scalar
//!   read-out moves last. Both use the same parameters (`shift` constant, permutation).
//! - Alphabet: `a` uses `start..end`; `b` the first `s = round(alphabet·N)` of those,
//!   then `N − s` new tokens from `end`. Symbol value `v` of `b` is its `v`-th token, so
//!   shared tokens keep their value. Both vocabularies are `end + N` whatever `s`.
//! - Format: `a` prefix; `b` prefix if `format`, else suffix.
//! - Marker: `a` `<a>`; `b` `<a>` if `marker`, else `<b>`.
//!
//! So `a` does not depend on the knobs at all: sweeping the overlap changes `b` only.
//!
//! A single `overlap ∈ [0, 1]` sets every knob ([`Knobs::from_overlap`]): `k =
//! round(overlap·depth)` (halves round up), alphabet share `overlap`, shared format iff
//! `overlap ≥ 0.5`, shared marker iff `overlap = 1`. Overlap 0 gives disjoint primitives,
//! alphabets and markers and different formats; overlap 1 gives the same task twice.
//!
//! [`PairSpec`] holds the keys of a `kind = "pair"` spec, which builds one member.

use super::family::{alphabet_range, Family, MarkerPlacement, MARKERS};
use super::mix;
use super::primitives::{Primitive, ALL};
use super::spec::{check_length, default_length, SpecError};
use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};
use std::ops::Range;

/// Separates the primitive draw from the task's other streams.
const PAIR_STREAM: u64 = 0x7061_6972_0000_0001;

/// What the two members of a pair share.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Knobs {
    /// Primitives in common, at most the depth.
    pub primitives: usize,
    /// Fraction of the alphabet in common, in `[0, 1]`.
    pub alphabet: f64,
    /// Whether `b` uses `a`'s format.
    pub format: bool,
    /// Whether `b` uses `a`'s marker.
    pub marker: bool,
}

impl Knobs {
    /// The knobs of a single overlap (see the module doc).
    pub fn from_overlap(overlap: f64, depth: usize) -> Knobs {
        Knobs {
            primitives: (overlap * depth as f64).round() as usize,
            alphabet: overlap,
            format: overlap >= 0.5,
            marker: overlap >= 1.0,
        }
    }
}

/// Which member of a pair.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Member {
    A,
    B,
}

/// Two family tasks sharing what [`Knobs`] says.
#[derive(Clone, Debug, PartialEq)]
pub struct Pair {
    pub a: Family,
    pub b: Family,
}

impl Pair {
    /// The pair (members named `a` and `b`); errors name the spec key at fault.
    pub fn new(
        knobs: &Knobs,
        depth: usize,
        alphabet: Range<u32>,
        length: usize,
        task_seed: u64,
    ) -> Result<Pair, SpecError> {
        if !(1..=3).contains(&depth) {
            return Err(SpecError::new("depth", "must be 1, 2 or 3"));
        }
        if knobs.primitives > depth || !(0.0..=1.0).contains(&knobs.alphabet) {
            return Err(SpecError::new("overlap", "shared primitives must be at most depth, alphabet share in [0, 1]"));
        }
        let (stages_a, stages_b) = pipelines(depth, knobs.primitives, task_seed);
        let n = alphabet.len();
        let shared = (knobs.alphabet * n as f64).round() as usize;
        let tokens_a: Vec<u32> = alphabet.clone().collect();
        let tokens_b: Vec<u32> = tokens_a[..shared].iter().copied().chain(alphabet.end..).take(n).collect();
        let mut a = Family::new("a", stages_a, tokens_a, length, task_seed)?;
        let mut b = Family::new("b", stages_b, tokens_b, length, task_seed)?;
        a.vocab = alphabet.end as usize + n;
        b.vocab = a.vocab;
        b.format = if knobs.format { MarkerPlacement::Prefix } else { MarkerPlacement::Suffix };
        b.marker = if knobs.marker { MARKERS[0] } else { MARKERS[1] };
        Ok(Pair { a, b })
    }

    /// One member.
    pub fn member(&self, m: Member) -> &Family {
        match m {
            Member::A => &self.a,
            Member::B => &self.b,
        }
    }
}

/// The keys of a `pair` spec.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct PairSpec {
    /// The shared mechanism, in `[0, 1]` (see [`Knobs::from_overlap`]).
    pub overlap: Option<f64>,
    /// The member built: `a` or `b`.
    #[serde(default = "default_member")]
    pub member: String,
    /// The pipeline depth, 1 to 3.
    #[serde(default = "default_depth")]
    pub depth: usize,
    /// Member `a`'s symbol tokens `[start, end]` (`end` excluded).
    pub alphabet: Option<[u32; 2]>,
    /// Symbols per input.
    #[serde(default = "default_length")]
    pub length: usize,
    /// Seed of the fixed parameters (the primitives, shift, permutation).
    #[serde(default)]
    pub task_seed: u64,
}

fn default_member() -> String {
    "a".into()
}
fn default_depth() -> usize {
    2
}

impl PairSpec {
    /// Valid knobs, member and pipeline (see [`PairSpec::build`]).
    pub fn check(&self) -> Result<(), SpecError> {
        check_length(self.length)?;
        self.build("pair").map(drop)
    }

    /// The member the spec asks for, named `name`; errors name the key at fault.
    pub fn build(&self, name: &str) -> Result<Family, SpecError> {
        let overlap = match self.overlap {
            Some(o) if (0.0..=1.0).contains(&o) => o,
            Some(o) => return Err(SpecError::new("overlap", format!("{o} is not in [0, 1]"))),
            None => return Err(SpecError::new("overlap", "a pair needs overlap = x with x in [0, 1]")),
        };
        let member = match self.member.as_str() {
            "a" => Member::A,
            "b" => Member::B,
            other => return Err(SpecError::new("member", format!("{other:?} is not one of \"a\", \"b\""))),
        };
        let knobs = Knobs::from_overlap(overlap, self.depth);
        let pair = Pair::new(&knobs, self.depth, alphabet_range(self.alphabet)?, self.length, self.task_seed)?;
        let mut task = pair.member(member).clone();
        task.name = name.to_string();
        Ok(task)
    }
}

/// The pipelines of `a` and `b` with `shared` primitives in common (see the module doc).
pub fn pipelines(depth: usize, shared: usize, task_seed: u64) -> (Vec<Primitive>, Vec<Primitive>) {
    let mut rng = ChaCha8Rng::seed_from_u64(mix(task_seed ^ PAIR_STREAM));
    let mut order = ALL.to_vec();
    loop {
        order.shuffle(&mut rng);
        let split =
            |k: usize| (arrange(&order[..depth]), arrange(&[&order[..k], &order[depth..2 * depth - k]].concat()));
        if (0..=depth).all(|k| matches!(split(k), (Some(_), Some(_)))) {
            let (a, b) = split(shared);
            return (a.expect("checked"), b.expect("checked"));
        }
    }
}

/// `stages` in order with the scalar read-out moved last; `None` with two read-outs.
fn arrange(stages: &[Primitive]) -> Option<Vec<Primitive>> {
    let (mut maps, readouts): (Vec<Primitive>, Vec<Primitive>) = stages.iter().partition(|p| !p.is_scalar());
    (readouts.len() <= 1).then(|| {
        maps.extend(readouts);
        maps
    })
}
