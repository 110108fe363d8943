//! Coin change: pay an exact sum with the coins a prompt allows. Most targets have many
//! solutions (the order and the mix of coins), so it is an environment whose spread of
//! solutions is wide, next to pathfinding's few shortest paths.
//!
//! Generation, per sample (all randomness from one `ChaCha8Rng` seeded with the key that
//! [`sample_in_split`] derives from `(seed, name, split, index)`, drawn in this order):
//! 1. the target, uniform in `min_target..=max_target`; the allowed coins, a uniform subset
//!    of 2 or 3 of the values `1..=max_coin`, redrawn until the target can be paid;
//! 2. `p` uniform in `noise[0]..=noise[1]`;
//! 3. the payment: each coin is, with probability `1/p`, any allowed coin (it may overshoot
//!    the target or leave a remainder no coin mix pays), otherwise a uniform allowed coin that
//!    leaves a payable remainder; it stops once the sum reaches the target (or passes it) and
//!    writes `=`.
//!
//! Text: `Sum: T<target> coins: <coins> => <payment> =`; one token per word. Only the payment
//! and `=` carry loss weight.

use super::spec::SpecError;
use super::{sample_in_split, Sample, Split, Task};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

/// `Sum:`.
pub const TOK_SUM: u32 = 1;
/// `coins:`.
pub const TOK_COINS: u32 = 2;
/// `=>`: the prompt's end.
pub const TOK_ARROW: u32 = 3;
/// `=`: the payment's end.
pub const TOK_EQ: u32 = 4;

/// The token of coin value `c` (`1..=max_coin`).
pub fn coin_token(c: usize) -> u32 {
    4 + c as u32
}

/// The keys of a `coins` spec.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct CoinsSpec {
    #[serde(default = "default_max_coin")]
    pub max_coin: usize,
    #[serde(default = "default_min_target")]
    pub min_target: usize,
    #[serde(default = "default_max_target")]
    pub max_target: usize,
    /// The range of `p`: each coin is unconstrained with probability `1/p`.
    #[serde(default = "default_noise")]
    pub noise: [usize; 2],
}

fn default_max_coin() -> usize {
    5
}
fn default_min_target() -> usize {
    6
}
fn default_max_target() -> usize {
    20
}
fn default_noise() -> [usize; 2] {
    [2, 6]
}

impl CoinsSpec {
    /// Coin values 2..=9, targets within `1..=40` and at least `max_coin`, noise `1 ≤ lo ≤ hi`.
    pub fn check(&self) -> Result<(), SpecError> {
        if !(2..=9).contains(&self.max_coin) {
            return Err(SpecError::new("max_coin", "give the largest coin value, 2 to 9"));
        }
        if self.min_target == 0 || self.min_target > self.max_target || self.max_target > 40 {
            return Err(SpecError::new("max_target", "give 1 ≤ min_target ≤ max_target ≤ 40"));
        }
        let [lo, hi] = self.noise;
        if lo == 0 || lo > hi {
            return Err(SpecError::new("noise", format!("[{lo}, {hi}]: give [min, max] of p with 1 ≤ min ≤ max")));
        }
        Ok(())
    }

    /// The task named `name`.
    pub fn build(&self, name: &str) -> Coins {
        Coins { name: name.to_string(), spec: self.clone() }
    }
}

/// The coin-change task.
#[derive(Clone, Debug)]
pub struct Coins {
    pub name: String,
    pub spec: CoinsSpec,
}

/// A prompt read back: the target and the allowed coin values.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Purse {
    pub target: usize,
    pub coins: Vec<usize>,
}

impl Purse {
    /// The fewest coins that pay `amount` exactly (`None`: no mix does).
    pub fn fewest(&self, amount: usize) -> Option<usize> {
        let mut best = vec![None; amount + 1];
        best[0] = Some(0);
        for a in 1..=amount {
            best[a] = self.coins.iter().filter(|&&c| c <= a).filter_map(|&c| best[a - c].map(|n: usize| n + 1)).min();
        }
        best[amount]
    }
}

impl Coins {
    /// The token of target `t`.
    pub fn target_token(&self, t: usize) -> u32 {
        coin_token(self.spec.max_coin) + 1 + t as u32
    }

    /// The value of coin token `id`, if it is one.
    pub fn coin_of(&self, id: u32) -> Option<usize> {
        (coin_token(1)..=coin_token(self.spec.max_coin)).contains(&id).then(|| (id - coin_token(1)) as usize + 1)
    }

    /// The purse of `prompt`, if it is one of this task's prompts.
    pub fn parse(&self, prompt: &[u32]) -> Option<Purse> {
        let [TOK_SUM, t, TOK_COINS, rest @ ..] = prompt else { return None };
        let (TOK_ARROW, coins) = rest.split_last().map(|(l, c)| (*l, c))? else { return None };
        let target = t.checked_sub(self.target_token(0))? as usize;
        let coins: Option<Vec<usize>> = coins.iter().map(|&c| self.coin_of(c)).collect();
        Some(Purse { target, coins: coins? })
    }

    fn draw(&self, key: u64) -> (Purse, Vec<usize>) {
        let s = &self.spec;
        let mut rng = ChaCha8Rng::seed_from_u64(key);
        let target = rng.random_range(s.min_target..=s.max_target);
        let purse = loop {
            let size = rng.random_range(2..=3);
            let mut values: Vec<usize> = (1..=s.max_coin).collect();
            for i in 0..size {
                let j = rng.random_range(i..values.len());
                values.swap(i, j);
            }
            let mut coins = values[..size].to_vec();
            coins.sort_unstable();
            let purse = Purse { target, coins };
            if purse.fewest(target).is_some() {
                break purse;
            }
        };
        let p = rng.random_range(s.noise[0]..=s.noise[1]);
        let mut paid = Vec::new();
        let mut sum = 0;
        while sum < target {
            let payable: Vec<usize> = purse
                .coins
                .iter()
                .copied()
                .filter(|&c| c <= target - sum && purse.fewest(target - sum - c).is_some())
                .collect();
            let random = rng.random_range(0..p) == 0 || payable.is_empty();
            let pool = if random { &purse.coins } else { &payable };
            let c = pool[rng.random_range(0..pool.len())];
            paid.push(c);
            sum += c;
        }
        (purse, paid)
    }

    fn tokens(&self, purse: &Purse, paid: &[usize]) -> (Vec<u32>, usize) {
        let mut t = vec![TOK_SUM, self.target_token(purse.target), TOK_COINS];
        t.extend(purse.coins.iter().map(|&c| coin_token(c)));
        t.push(TOK_ARROW);
        let prompt_len = t.len();
        t.extend(paid.iter().map(|&c| coin_token(c)));
        t.push(TOK_EQ);
        (t, prompt_len)
    }
}

impl Task for Coins {
    fn name(&self) -> &str {
        &self.name
    }

    fn vocab_size(&self) -> usize {
        self.target_token(self.spec.max_target) as usize + 1
    }

    /// The prompt (at most 3 coins) and the longest payment: `max_target` coins of 1 and `=`.
    fn seq_len(&self) -> usize {
        7 + self.max_answer_len()
    }

    fn max_answer_len(&self) -> usize {
        self.spec.max_target + 1
    }

    fn sample(&self, seed: u64, split: Split, index: u64) -> Sample {
        let (purse, paid) = sample_in_split(
            seed,
            &self.name,
            split,
            index,
            |key| self.draw(key),
            |(purse, _)| self.tokens(purse, &[]).0[..purse.coins.len() + 4].to_vec(),
        );
        let (tokens, prompt_len) = self.tokens(&purse, &paid);
        let weights = (0..tokens.len()).map(|i| if i >= prompt_len { 1.0 } else { 0.0 }).collect();
        Sample::new(tokens, weights, prompt_len)
    }

    fn token_text(&self, id: u32) -> String {
        match id {
            0 => super::PAD_TEXT.to_string(),
            TOK_SUM => "Sum:".into(),
            TOK_COINS => "coins:".into(),
            TOK_ARROW => "=>".into(),
            TOK_EQ => "=".into(),
            id => match self.coin_of(id) {
                Some(c) => c.to_string(),
                None => format!("T{}", id - self.target_token(0)),
            },
        }
    }

    /// Token accuracy; `exact_sum` (1 when the coins before the first other token are all
    /// allowed and pay the target exactly) and `coins` (how many were paid).
    fn score(&self, sample: &Sample, generated: &[u32]) -> Vec<(&'static str, f64)> {
        let mut out = vec![("token_accuracy", super::score::token_accuracy(sample, generated))];
        if let Some(purse) = self.parse(sample.input()) {
            let paid: Vec<usize> = generated.iter().map_while(|&t| self.coin_of(t)).collect();
            let exact = paid.iter().all(|c| purse.coins.contains(c)) && paid.iter().sum::<usize>() == purse.target;
            out.push(("exact_sum", f64::from(u8::from(exact))));
            out.push(("coins", paid.len() as f64));
        }
        out
    }
}
