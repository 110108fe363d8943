//! The primitives of algorithmic task families: maps on sequences of symbol values `0..n`
//! (an alphabet of `n` symbols) and three scalar read-outs that answer a query about a
//! sequence. A family task chains them ([`super::family`]); tokens are not known here.
//!
//! Sequence primitives (output length in brackets, `L` the input length):
//! - `reverse` [L]: the sequence backwards.
//! - `sort` [L]: ascending by symbol value.
//! - `shift` [L]: each symbol plus a constant `c ∈ 1..n`, mod `n`.
//! - `permute` [L]: each symbol through a fixed permutation `π` of `0..n`.
//! - `duplicate` [2L]: each symbol twice in a row.
//! - `add` [L]: the running sum mod `n` (`yᵢ = x₀ + … + xᵢ mod n`).
//!
//! Scalar read-outs of a sequence `y` and a query symbol `q` (one answer token):
//! - `lookup`: `y` read as key/value pairs `(y₀, y₁), (y₂, y₃), …` (an odd last symbol is
//!   unpaired); the answer is the value of the first pair whose key is `q`.
//! - `parity`: whether `q` occurs an even or odd number of times in `y`.
//! - `count`: how many times `q` occurs in `y`.
//!
//! The query is a symbol of `y` itself (see [`Primitive::query_index`]), so a lookup always
//! finds its key and a count is at least 1. The constant `c` and permutation `π` are drawn
//! once per task from its task seed ([`Params`]).

use super::mix;
use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

/// One primitive.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Primitive {
    Reverse,
    Sort,
    Shift,
    Permute,
    Duplicate,
    Add,
    Lookup,
    Parity,
    Count,
}

/// Every primitive, sequence primitives first.
pub const ALL: [Primitive; 9] = [
    Primitive::Reverse,
    Primitive::Sort,
    Primitive::Shift,
    Primitive::Permute,
    Primitive::Duplicate,
    Primitive::Add,
    Primitive::Lookup,
    Primitive::Parity,
    Primitive::Count,
];

/// The names of every primitive, comma-separated (for error messages).
pub fn names() -> String {
    ALL.map(Primitive::name).join(", ")
}

impl Primitive {
    /// Its name in task specs.
    pub fn name(self) -> &'static str {
        match self {
            Primitive::Reverse => "reverse",
            Primitive::Sort => "sort",
            Primitive::Shift => "shift",
            Primitive::Permute => "permute",
            Primitive::Duplicate => "duplicate",
            Primitive::Add => "add",
            Primitive::Lookup => "lookup",
            Primitive::Parity => "parity",
            Primitive::Count => "count",
        }
    }

    /// The primitive called `name`; the error lists the valid names.
    pub fn parse(name: &str) -> Result<Primitive, String> {
        ALL.into_iter()
            .find(|p| p.name() == name)
            .ok_or_else(|| format!("unknown primitive {name:?}; valid primitives: {}", names()))
    }

    /// Whether it reads out one answer token instead of mapping a sequence.
    pub fn is_scalar(self) -> bool {
        matches!(self, Primitive::Lookup | Primitive::Parity | Primitive::Count)
    }

    /// Output length of a sequence primitive on an input of `len` symbols.
    pub fn out_len(self, len: usize) -> usize {
        if self == Primitive::Duplicate {
            2 * len
        } else {
            len
        }
    }

    /// Smallest sequence a scalar read-out needs (`lookup`: one key/value pair).
    pub fn min_len(self) -> usize {
        if self == Primitive::Lookup {
            2
        } else {
            1
        }
    }

    /// The position of `y` (of length `len`) whose symbol becomes the query, from a uniform
    /// random `u`: a uniform key position (even index of a full pair) for `lookup`, a uniform
    /// position otherwise.
    pub fn query_index(self, len: usize, u: u64) -> usize {
        if self == Primitive::Lookup {
            2 * (u % (len / 2) as u64) as usize
        } else {
            (u % len as u64) as usize
        }
    }

    /// Applies a sequence primitive to `x` over `params`' alphabet; panics on a scalar one.
    pub fn apply(self, x: &[usize], params: &Params) -> Vec<usize> {
        let n = params.perm.len();
        match self {
            Primitive::Reverse => x.iter().rev().copied().collect(),
            Primitive::Sort => {
                let mut y = x.to_vec();
                y.sort_unstable();
                y
            }
            Primitive::Shift => x.iter().map(|&v| (v + params.shift) % n).collect(),
            Primitive::Permute => x.iter().map(|&v| params.perm[v]).collect(),
            Primitive::Duplicate => x.iter().flat_map(|&v| [v, v]).collect(),
            Primitive::Add => x
                .iter()
                .scan(0, |sum, &v| {
                    *sum = (*sum + v) % n;
                    Some(*sum)
                })
                .collect(),
            Primitive::Lookup | Primitive::Parity | Primitive::Count => {
                panic!("{} is a scalar read-out, not a sequence map", self.name())
            }
        }
    }

    /// Applies a scalar read-out to `y` with query `q`; panics on a sequence primitive or a
    /// lookup whose key is absent.
    pub fn read(self, y: &[usize], q: usize) -> Readout {
        let count = y.iter().filter(|&&v| v == q).count();
        match self {
            Primitive::Lookup => {
                let pair = y.chunks_exact(2).find(|p| p[0] == q).expect("the lookup key is one of the keys");
                Readout::Symbol(pair[1])
            }
            Primitive::Parity => Readout::Parity { odd: count % 2 == 1 },
            Primitive::Count => Readout::Count(count),
            _ => panic!("{} is a sequence map, not a scalar read-out", self.name()),
        }
    }
}

/// The answer of a scalar read-out.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Readout {
    /// A symbol value (`lookup`).
    Symbol(usize),
    /// The parity of a count (`parity`).
    Parity { odd: bool },
    /// A count (`count`).
    Count(usize),
}

/// Stream constants of the two parameters.
const SHIFT_STREAM: u64 = 0x7368_6966_7400_0001;
const PERM_STREAM: u64 = 0x7065_726d_0000_0002;

/// The fixed parameters of one task's primitives over an alphabet of `n` symbols.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Params {
    /// The `shift` constant, in `1..n` (0 when `n = 1`).
    pub shift: usize,
    /// The `permute` map: `perm[v]`; its length is `n`.
    pub perm: Vec<usize>,
}

impl Params {
    /// The parameters drawn from `task_seed` for `n` symbols: `shift = 1 + h mod (n − 1)` and a
    /// uniform permutation (which may fix some symbols).
    pub fn new(task_seed: u64, n: usize) -> Params {
        let shift = if n > 1 { 1 + (mix(task_seed ^ SHIFT_STREAM) % (n as u64 - 1)) as usize } else { 0 };
        let mut perm: Vec<usize> = (0..n).collect();
        perm.shuffle(&mut ChaCha8Rng::seed_from_u64(mix(task_seed ^ PERM_STREAM)));
        Params { shift, perm }
    }
}
