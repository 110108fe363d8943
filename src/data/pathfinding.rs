//! Procedural pathfinding after Nordby (2025): a board with a start `A`, a target `B` and
//! blockers `X`, followed by a noisy walk from `A` whose noise is summarised by two
//! conditions (extra moves over the optimum, invalid moves) for conditional soft prompts.
//!
//! Generation, per sample (all randomness from one `ChaCha8Rng` seeded with the key that
//! [`sample_in_split`] derives from `(seed, name, split, index)`, drawn in this order; a board
//! whose prompt belongs to the other split is redrawn from the next key):
//!
//! 1. `m` uniform in `2..=⌊density·W·H⌋+1` (`density` 0.75 by default, Nordby's); a uniform
//!    permutation of all cells: the first is the target `B`, the second the start `A`, the
//!    rest of the first `m` are blockers `X`.
//! 2. `p` uniform in `noise[0]..=noise[1]` (`[2, 7]` by default; `[1, 1]` makes every step
//!    random, a walker that never learned to seek `B`).
//! 3. The walk from `A`. Each step: if at `B`, emit `D` and stop; if `max_moves` moves have
//!    been made, stop (the path is **truncated**: it ends in a plain move letter, with neither
//!    `D` nor `U`); with probability `1/p` take a uniformly random direction among `W, E, S, N`
//!    (emitted; if it would leave the board or hit a blocker the walker stays put and it counts
//!    as invalid); otherwise take the optimal move (lowest-distance neighbour, ties `N, W, E, S`),
//!    or, if the cell is stuck (no finite-distance neighbour), emit `U` and stop.
//!
//! Every emitted direction letter (`N`, `S`, `E`, `W`) counts as a move; `D` and `U` do not.
//! From a cell that cannot reach `B` no move (random or not) can reach it either — its
//! connected component is closed — so an unsolvable board's path ends with `U` (or is
//! truncated), never with `D`.
//!
//! Text: rows of cells separated by spaces, rows by newlines, then `"\nMoves:\n"`, then the
//! move letters separated by spaces. Tokens: one id per word and one per newline (spaces are
//! implicit), see [`vocab`]; only move tokens carry loss weight. The text is not
//! whitespace-tokenizable (newlines are tokens), so [`Task::token_text`] names the newline
//! `<nl>` and the tokenizer text ([`Task::words`]) differs from [`Task::render`].
//!
//! Two renderings of the same boards and paths ([`Render`]): `condition_prefix` writes the
//! path's conditions before the board in unary (`+` per extra move, `!` per invalid move; no
//! loss weight), so a model fine-tuned on it is *told* the condition; `mirror` writes every
//! direction as its opposite, a target of matched entropy that the plain task never shows.
//! Neither changes which boards are drawn: the split is decided on the board alone
//! ([`Board::board_tokens`]).
//!
//! [`Grid`] reads a board back from a prompt and walks any move tokens on it, which scores a
//! generated path ([`Task::score`]) against the board and the sample's own conditions.
//!
//! [`PathfindingSpec`] holds the keys of a `kind = "pathfinding"` spec.

use super::spec::SpecError;
use super::{mix, sample_in_split, score, Sample, Split, Task};
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

/// Padding.
pub const PAD: u32 = 0;
/// Blocker cell `X`.
pub const TOK_X: u32 = 1;
/// Empty cell `O`.
pub const TOK_O: u32 = 2;
/// Start cell `A`.
pub const TOK_A: u32 = 3;
/// Target cell `B`.
pub const TOK_B: u32 = 4;
/// Newline.
pub const TOK_NL: u32 = 5;
/// The `Moves:` header.
pub const TOK_MOVES: u32 = 6;
/// Move letters: `N S E W D U` are `7..=12`.
pub const TOK_N: u32 = 7;
pub const TOK_S: u32 = 8;
pub const TOK_E: u32 = 9;
pub const TOK_W: u32 = 10;
pub const TOK_D: u32 = 11;
pub const TOK_U: u32 = 12;
/// One extra move in a condition prefix (see [`Render::condition_prefix`]).
pub const TOK_EXTRA: u32 = 13;
/// One invalid move in a condition prefix.
pub const TOK_INVALID: u32 = 14;
/// Number of token ids.
pub const VOCAB_SIZE: usize = 15;

/// The vocabulary: `vocab()[id]` is the text of token `id` (`"<pad>"` for 0, `"\n"` for newline).
pub fn vocab() -> Vec<&'static str> {
    vec!["<pad>", "X", "O", "A", "B", "\n", "Moves:", "N", "S", "E", "W", "D", "U", "+", "!"]
}

/// Whether `id` belongs to a condition prefix (`+`, `!`).
pub fn is_prefix_token(id: u32) -> bool {
    id == TOK_EXTRA || id == TOK_INVALID
}

/// How a board and its path are written (spec keys `condition_prefix` and `mirror`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Render {
    /// Write the path's conditions before the board, in unary: one `+` per extra move (none
    /// when negative), then one `!` per invalid move. A model fine-tuned on it is told the
    /// condition in its text (conditioned fine-tuning, the conditional saturation).
    pub condition_prefix: bool,
    /// Write every direction as its opposite (`N`↔`S`, `E`↔`W`): the same paths in letters a
    /// model trained on the plain task never produced (a null target of matched entropy). The
    /// scorer mirrors them back before walking them.
    pub mirror: bool,
}

/// Whether `id` is a move token (`N S E W D U`).
pub fn is_move_token(id: u32) -> bool {
    (TOK_N..=TOK_U).contains(&id)
}

/// The text of `ids`: words joined by single spaces, except that no space touches a newline.
/// Padding is skipped, so `decode(tokens)` of a padded sample is still its text. Panics on an
/// id outside the vocabulary.
pub fn decode(ids: &[u32]) -> String {
    let v = vocab();
    let mut out = String::new();
    let mut prev: Option<u32> = None;
    for &id in ids.iter().filter(|&&id| id != PAD) {
        let word = v[id as usize];
        if let Some(p) = prev {
            if p != TOK_NL && id != TOK_NL {
                out.push(' ');
            }
        }
        out.push_str(word);
        prev = Some(id);
    }
    out
}

/// One board cell.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Cell {
    Empty,
    Blocker,
    Start,
    Target,
}

impl Cell {
    /// Its letter in the text rendering.
    pub fn letter(self) -> &'static str {
        match self {
            Cell::Empty => "O",
            Cell::Blocker => "X",
            Cell::Start => "A",
            Cell::Target => "B",
        }
    }

    /// Its token id.
    pub fn token(self) -> u32 {
        match self {
            Cell::Empty => TOK_O,
            Cell::Blocker => TOK_X,
            Cell::Start => TOK_A,
            Cell::Target => TOK_B,
        }
    }
}

/// One emitted path symbol: a direction, `D` (reached B) or `U` (stuck: unsolvable).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Move {
    N,
    S,
    E,
    W,
    D,
    U,
}

impl Move {
    /// Its letter.
    pub fn letter(self) -> &'static str {
        match self {
            Move::N => "N",
            Move::S => "S",
            Move::E => "E",
            Move::W => "W",
            Move::D => "D",
            Move::U => "U",
        }
    }

    /// Its token id.
    pub fn token(self) -> u32 {
        match self {
            Move::N => TOK_N,
            Move::S => TOK_S,
            Move::E => TOK_E,
            Move::W => TOK_W,
            Move::D => TOK_D,
            Move::U => TOK_U,
        }
    }

    /// The opposite direction (`D` and `U` unchanged).
    pub fn mirrored(self) -> Move {
        match self {
            Move::N => Move::S,
            Move::S => Move::N,
            Move::E => Move::W,
            Move::W => Move::E,
            other => other,
        }
    }

    /// `(drow, dcol)` of a direction (north is row − 1); `None` for `D` and `U`.
    pub fn delta(self) -> Option<(isize, isize)> {
        match self {
            Move::N => Some((-1, 0)),
            Move::S => Some((1, 0)),
            Move::E => Some((0, 1)),
            Move::W => Some((0, -1)),
            Move::D | Move::U => None,
        }
    }
}

/// Tie-break order of the optimal policy.
const POLICY_ORDER: [Move; 4] = [Move::N, Move::W, Move::E, Move::S];
/// Order in which a random direction is drawn (uniform over the four).
const RANDOM_ORDER: [Move; 4] = [Move::W, Move::E, Move::S, Move::N];

/// One generated board and its path. Positions are `(row, col)`, row 0 at the top (north).
#[derive(Clone, Debug, PartialEq)]
pub struct Board {
    pub width: usize,
    pub height: usize,
    /// `rows[r][c]`.
    pub rows: Vec<Vec<Cell>>,
    pub start: (usize, usize),
    pub target: (usize, usize),
    /// In draw order.
    pub blockers: Vec<(usize, usize)>,
    /// The number of drawn cells `m` (target + start + blockers).
    pub m: usize,
    /// The noise parameter: each step is random with probability `1/p`.
    pub p: usize,
    /// The emitted path, including a final `D` or `U` when there is one.
    pub moves: Vec<Move>,
    /// How it is written.
    pub render: Render,
    /// Moves of the optimal policy from `A` to `B`; 0 when `B` is unreachable.
    pub optimal_moves: usize,
    /// Emitted directions (`N S E W`) minus `optimal_moves`; negative only for a path
    /// truncated before reaching `B`.
    pub extra_moves: i64,
    /// Random directions that would have left the board or hit a blocker.
    pub invalid_moves: usize,
    /// Whether `B` is reachable from `A`.
    pub solvable: bool,
}

impl Board {
    /// Emitted directions (`N S E W`; not `D` or `U`).
    pub fn total_moves(&self) -> usize {
        self.moves.iter().filter(|m| m.delta().is_some()).count()
    }

    /// Whether the walk hit the move cap (ends with neither `D` nor `U`).
    pub fn truncated(&self) -> bool {
        !matches!(self.moves.last(), Some(Move::D | Move::U))
    }

    /// The conditions for a conditional soft prompt: `[extra_moves, invalid_moves]`.
    pub fn conditions(&self) -> [f32; 2] {
        [self.extra_moves as f32, self.invalid_moves as f32]
    }

    /// The moves as written (mirrored under [`Render::mirror`]).
    fn written_moves(&self) -> impl Iterator<Item = Move> + '_ {
        self.moves.iter().map(|&m| if self.render.mirror { m.mirrored() } else { m })
    }

    /// The condition prefix's tokens (empty unless [`Render::condition_prefix`]).
    fn prefix(&self) -> Vec<u32> {
        if !self.render.condition_prefix {
            return Vec::new();
        }
        let extra = vec![TOK_EXTRA; self.extra_moves.max(0) as usize];
        extra.into_iter().chain(vec![TOK_INVALID; self.invalid_moves]).collect()
    }

    /// The text rendering.
    pub fn text(&self) -> String {
        let rows: Vec<String> =
            self.rows.iter().map(|r| r.iter().map(|c| c.letter()).collect::<Vec<_>>().join(" ")).collect();
        let moves: Vec<&str> = self.written_moves().map(|m| m.letter()).collect();
        let prefix: String = self.prefix().iter().map(|&t| if t == TOK_EXTRA { "+ " } else { "! " }).collect();
        format!("{prefix}{}\nMoves:\n{}", rows.join("\n"), moves.join(" "))
    }

    /// The token ids of the text rendering (`decode(tokens()) == text()`).
    pub fn tokens(&self) -> Vec<u32> {
        let mut t = self.prefix();
        t.extend(self.board_tokens());
        t.extend(self.written_moves().map(|m| m.token()));
        t
    }

    /// The board's rows, `Moves:` and its newline: the prompt without a condition prefix,
    /// which decides the board's split (so that every rendering of a board shares it).
    pub fn board_tokens(&self) -> Vec<u32> {
        let mut t = Vec::with_capacity(self.width * self.height + self.height + 2);
        for row in &self.rows {
            t.extend(row.iter().map(|c| c.token()));
            t.push(TOK_NL);
        }
        t.push(TOK_MOVES);
        t.push(TOK_NL);
        t
    }

    /// The training sample: weight 1 on move tokens only; `prompt_len` is the index of the
    /// first move token (the whole length if there is none); its conditions are
    /// [`Board::conditions`].
    pub fn sample(&self) -> Sample {
        let tokens = self.tokens();
        let weights: Vec<f32> = tokens.iter().map(|&id| if is_move_token(id) { 1.0 } else { 0.0 }).collect();
        let prompt_len = tokens.iter().position(|&id| is_move_token(id)).unwrap_or(tokens.len());
        Sample { conditions: self.conditions().to_vec(), ..Sample::new(tokens, weights, prompt_len) }
    }

    /// `(extra_moves, invalid_moves)`.
    pub fn condition_pair(&self) -> [i64; 2] {
        [self.extra_moves, self.invalid_moves as i64]
    }
}

/// Distances to `target` over the 4-neighbourhood (blockers excluded; `usize::MAX` when
/// unreachable), by relaxation to a fixed point. `blocked[r * width + c]`.
pub fn distances(width: usize, height: usize, blocked: &[bool], target: (usize, usize)) -> Vec<usize> {
    let mut d = vec![usize::MAX; width * height];
    d[target.0 * width + target.1] = 0;
    loop {
        let mut changed = false;
        for r in 0..height {
            for c in 0..width {
                let i = r * width + c;
                if blocked[i] {
                    continue;
                }
                let best = neighbours(width, height, (r, c))
                    .filter(|&(_, (nr, nc))| !blocked[nr * width + nc])
                    .map(|(_, (nr, nc))| d[nr * width + nc])
                    .min()
                    .unwrap_or(usize::MAX);
                if best != usize::MAX && best + 1 < d[i] {
                    d[i] = best + 1;
                    changed = true;
                }
            }
        }
        if !changed {
            return d;
        }
    }
}

/// The in-board neighbours of `pos`, in policy order `N, W, E, S`.
fn neighbours(width: usize, height: usize, pos: (usize, usize)) -> impl Iterator<Item = (Move, (usize, usize))> {
    POLICY_ORDER.into_iter().filter_map(move |m| step(width, height, pos, m).map(|p| (m, p)))
}

/// `pos` moved one cell in direction `m`, or `None` if that leaves the board.
fn step(width: usize, height: usize, pos: (usize, usize), m: Move) -> Option<(usize, usize)> {
    let (dr, dc) = m.delta()?;
    let r = pos.0.checked_add_signed(dr)?;
    let c = pos.1.checked_add_signed(dc)?;
    (r < height && c < width).then_some((r, c))
}

/// Moves of the optimal policy from `start` to `target` (0 when `start` cannot reach it).
fn optimal_moves(width: usize, height: usize, dist: &[usize], start: (usize, usize), target: (usize, usize)) -> usize {
    if dist[start.0 * width + start.1] == usize::MAX {
        return 0;
    }
    let (mut pos, mut n) = (start, 0);
    while pos != target {
        pos = policy(width, height, dist, pos).expect("a reachable cell has a closer neighbour").1;
        n += 1;
    }
    n
}

/// The optimal policy's move from `pos`: the lowest-distance neighbour (ties `N, W, E, S`), or
/// `None` when `pos` is stuck (no finite-distance neighbour).
fn policy(width: usize, height: usize, dist: &[usize], pos: (usize, usize)) -> Option<(Move, (usize, usize))> {
    let mut best: Option<(usize, Move, (usize, usize))> = None;
    for (m, p) in neighbours(width, height, pos) {
        let d = dist[p.0 * width + p.1];
        if d != usize::MAX && best.is_none_or(|(bd, _, _)| d < bd) {
            best = Some((d, m, p));
        }
    }
    best.map(|(_, m, p)| (m, p))
}

/// The pathfinding task.
#[derive(Clone, Debug)]
pub struct Pathfinding {
    pub name: String,
    pub width: usize,
    pub height: usize,
    /// Cap on emitted directions (the walk is truncated there).
    pub max_moves: usize,
    /// Keep only boards whose path has one of these `(extra_moves, invalid_moves)` (empty:
    /// any), and never one of `except`: a board that fails is redrawn from the next key, so
    /// a filtered stream holds no other condition by construction.
    pub only: Vec<[i64; 2]>,
    pub except: Vec<[i64; 2]>,
    /// Keep only boards whose path has at most this many extra moves (`None`: any), so
    /// that conditions beyond it are extrapolations for a model trained on the task.
    pub max_extra: Option<i64>,
    /// The largest fraction of the cells drawn as target, start and blockers: `m` is uniform
    /// in `2..=⌊density·W·H⌋+1` (Nordby's 0.75 leaves a third of 6×6 boards unsolvable).
    pub density: f64,
    /// The range of the noise parameter `p` (each step random with probability `1/p`):
    /// `[2, 7]` as in Nordby; `[1, 1]` makes every step random (a walker that never learned
    /// to seek the target).
    pub noise: [usize; 2],
    /// How boards and paths are written (spec keys `condition_prefix` and `mirror`).
    pub render: Render,
}

impl Default for Pathfinding {
    /// `pathfinding`, 8×8, at most 64 moves, every condition.
    fn default() -> Self {
        Pathfinding {
            name: "pathfinding".into(),
            width: 8,
            height: 8,
            max_moves: 64,
            only: Vec::new(),
            except: Vec::new(),
            max_extra: None,
            density: DEFAULT_DENSITY,
            noise: DEFAULT_NOISE,
            render: Render::default(),
        }
    }
}

/// The keys of a `pathfinding` spec.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct PathfindingSpec {
    /// Board width and height.
    #[serde(default = "default_side")]
    pub width: usize,
    #[serde(default = "default_side")]
    pub height: usize,
    /// Longest path emitted.
    #[serde(default = "default_max_moves")]
    pub max_moves: usize,
    /// Keep only paths with one of these `[extra_moves, invalid_moves]`, and never one of
    /// `exclude_conditions` (see [`Pathfinding::only`]).
    #[serde(default)]
    pub only_conditions: Vec<[i64; 2]>,
    #[serde(default)]
    pub exclude_conditions: Vec<[i64; 2]>,
    /// Keep only paths with at most this many extra moves.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_extra: Option<i64>,
    /// See [`Pathfinding::density`] (default 0.75).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub density: Option<f64>,
    /// See [`Pathfinding::noise`] (default `[2, 7]`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub noise: Option<[usize; 2]>,
    /// See [`Render::condition_prefix`].
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub condition_prefix: bool,
    /// See [`Render::mirror`].
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub mirror: bool,
}

/// Nordby's largest fraction of drawn cells.
const DEFAULT_DENSITY: f64 = 0.75;
/// Nordby's range of the noise parameter.
const DEFAULT_NOISE: [usize; 2] = [2, 7];

fn default_side() -> usize {
    8
}
fn default_max_moves() -> usize {
    64
}

impl PathfindingSpec {
    /// The condition filters (`0 ≤ invalid_moves ≤ max_moves`, `|extra_moves| ≤ max_moves`,
    /// not every kept condition excluded) and a board of at least 2 cells.
    pub fn check(&self) -> Result<(), SpecError> {
        for (key, list) in
            [("only_conditions", &self.only_conditions), ("exclude_conditions", &self.exclude_conditions)]
        {
            let max = self.max_moves as i64;
            if let Some([e, i]) = list.iter().find(|[e, i]| *i < 0 || *i > max || e.abs() > max) {
                return Err(SpecError::new(
                    key,
                    format!("[{e}, {i}]: give [extra_moves, invalid_moves] with 0 ≤ invalid ≤ {max} and |extra| ≤ {max} (max_moves)"),
                ));
            }
        }
        if self.only_conditions.iter().all(|c| self.exclude_conditions.contains(c)) && !self.only_conditions.is_empty()
        {
            return Err(SpecError::new("exclude_conditions", "excludes every condition only_conditions keeps"));
        }
        if self.max_extra.is_some_and(|m| m < 0) {
            return Err(SpecError::new("max_extra", "must be at least 0 (the optimal path has 0 extra moves)"));
        }
        if self.width * self.height < 2 {
            return Err(SpecError::new("width", "a board needs at least 2 cells"));
        }
        if self.density.is_some_and(|d| !(d > 0.0 && d <= 1.0)) {
            return Err(SpecError::new("density", "give the largest fraction of drawn cells, in (0, 1]"));
        }
        if let Some([lo, hi]) = self.noise.filter(|[lo, hi]| *lo == 0 || lo > hi) {
            return Err(SpecError::new(
                "noise",
                format!(
                    "[{lo}, {hi}]: give [min, max] of p with 1 ≤ min ≤ max (each step is random with probability 1/p)"
                ),
            ));
        }
        Ok(())
    }

    /// The task named `name`.
    pub fn build(&self, name: &str) -> Pathfinding {
        Pathfinding {
            name: name.to_string(),
            width: self.width,
            height: self.height,
            max_moves: self.max_moves,
            only: self.only_conditions.clone(),
            except: self.exclude_conditions.clone(),
            max_extra: self.max_extra,
            density: self.density.unwrap_or(DEFAULT_DENSITY),
            noise: self.noise.unwrap_or(DEFAULT_NOISE),
            render: Render { condition_prefix: self.condition_prefix, mirror: self.mirror },
        }
    }
}

/// Draws per sample before a condition filter is declared unsatisfiable.
const MAX_CONDITION_DRAWS: u64 = 1 << 20;
/// Salt of the redraws of a condition filter.
const CONDITION_SALT: u64 = 0xc0de_f11e;

impl Pathfinding {
    /// An 8×8 task with at most 64 moves named `name`.
    pub fn new(name: &str) -> Self {
        Pathfinding { name: name.into(), ..Default::default() }
    }

    /// The largest `m` (cells drawn): `⌊density·W·H⌋ + 1`, at least 2.
    pub fn max_m(&self) -> usize {
        ((self.density * (self.width * self.height) as f64).floor() as usize + 1).max(2)
    }

    /// Board `index` of `split` under `seed`: the same one [`Task::sample`] renders.
    /// Panics if the board has fewer than two cells.
    pub fn board(&self, seed: u64, split: Split, index: u64) -> Board {
        sample_in_split(seed, &self.name, split, index, |key| self.draw_kept(key), Board::board_tokens)
    }

    /// Whether a path with `conditions` `(extra_moves, invalid_moves)` passes the filter
    /// (`only`, `except` and `max_extra`).
    pub fn keeps(&self, conditions: [i64; 2]) -> bool {
        (self.only.is_empty() || self.only.contains(&conditions))
            && !self.except.contains(&conditions)
            && self.max_extra.is_none_or(|m| conditions[0] <= m)
    }

    /// The first board from `key` (then its redraws) that passes the condition filter.
    /// Panics when none does in 2²⁰ draws (a condition the generator almost never makes).
    fn draw_kept(&self, key: u64) -> Board {
        for attempt in 0..MAX_CONDITION_DRAWS {
            let b = self.draw(if attempt == 0 { key } else { mix(key ^ CONDITION_SALT ^ mix(attempt)) });
            if self.keeps(b.condition_pair()) {
                return b;
            }
        }
        panic!(
            "task {}: no board with (extra_moves, invalid_moves) in {:?} and not in {:?} in {MAX_CONDITION_DRAWS} draws",
            self.name, self.only, self.except
        )
    }

    /// The board drawn from the random stream `key`.
    fn draw(&self, key: u64) -> Board {
        let (w, h) = (self.width, self.height);
        assert!(w * h >= 2, "pathfinding board {w}x{h} needs at least two cells");
        let mut rng = ChaCha8Rng::seed_from_u64(key);
        let m = rng.random_range(2..=self.max_m());
        let mut cells: Vec<usize> = (0..w * h).collect();
        cells.shuffle(&mut rng);
        let at = |i: usize| (i / w, i % w);
        let target = at(cells[0]);
        let start = at(cells[1]);
        let blockers: Vec<(usize, usize)> = cells[2..m].iter().map(|&i| at(i)).collect();
        let p = rng.random_range(self.noise[0]..=self.noise[1]);

        let mut rows = vec![vec![Cell::Empty; w]; h];
        let mut blocked = vec![false; w * h];
        for &(r, c) in &blockers {
            rows[r][c] = Cell::Blocker;
            blocked[r * w + c] = true;
        }
        rows[start.0][start.1] = Cell::Start;
        rows[target.0][target.1] = Cell::Target;

        let dist = distances(w, h, &blocked, target);
        let solvable = dist[start.0 * w + start.1] != usize::MAX;
        let optimal_moves = optimal_moves(w, h, &dist, start, target);

        let mut moves = Vec::new();
        let (mut pos, mut total, mut invalid) = (start, 0usize, 0usize);
        loop {
            if pos == target {
                moves.push(Move::D);
                break;
            }
            if total == self.max_moves {
                break;
            }
            if rng.random_range(0..p) == 0 {
                let dir = RANDOM_ORDER[rng.random_range(0..4)];
                match step(w, h, pos, dir).filter(|&(r, c)| !blocked[r * w + c]) {
                    Some(next) => pos = next,
                    None => invalid += 1,
                }
                moves.push(dir);
                total += 1;
            } else {
                match policy(w, h, &dist, pos) {
                    Some((dir, next)) => {
                        pos = next;
                        moves.push(dir);
                        total += 1;
                    }
                    None => {
                        moves.push(Move::U);
                        break;
                    }
                }
            }
        }

        Board {
            width: w,
            height: h,
            rows,
            start,
            target,
            blockers,
            m,
            p,
            moves,
            render: self.render,
            optimal_moves,
            extra_moves: total as i64 - optimal_moves as i64,
            invalid_moves: invalid,
            solvable,
        }
    }

    /// The conditions `[extra_moves, invalid_moves]` of sample `index` of `split` under `seed`.
    pub fn conditions(&self, seed: u64, split: Split, index: u64) -> [f32; 2] {
        self.board(seed, split, index).conditions()
    }
}

impl Task for Pathfinding {
    fn name(&self) -> &str {
        &self.name
    }

    fn vocab_size(&self) -> usize {
        VOCAB_SIZE
    }

    /// `[extra_moves, invalid_moves]`.
    fn condition_width(&self) -> usize {
        2
    }

    /// The longest possible sample: a condition prefix of at most `2·max_moves` tokens (extra
    /// and invalid moves are each at most the moves made), `W·H` cells, `H` newlines, `Moves:`
    /// and its newline, `max_moves` directions and one `D`/`U`. Samples are variable length,
    /// never longer.
    fn seq_len(&self) -> usize {
        let prefix = if self.render.condition_prefix { 2 * self.max_moves } else { 0 };
        prefix + self.width * self.height + self.height + 2 + self.max_moves + 1
    }

    /// `max_moves` directions and one `D`/`U`, whatever the prefix.
    fn max_answer_len(&self) -> usize {
        self.max_moves + 1
    }

    fn sample(&self, seed: u64, split: Split, index: u64) -> Sample {
        self.board(seed, split, index).sample()
    }

    /// Board rows, start, target, moves and the path-quality conditions.
    fn fields(&self, seed: u64, split: Split, index: u64) -> serde_json::Value {
        let b = self.board(seed, split, index);
        let rows: Vec<String> =
            b.rows.iter().map(|r| r.iter().map(|c| c.letter()).collect::<Vec<_>>().join(" ")).collect();
        serde_json::json!({
            "rows": rows,
            "start": [b.start.0, b.start.1],
            "target": [b.target.0, b.target.1],
            "moves": b.moves.iter().map(|m| m.letter()).collect::<Vec<_>>().join(" "),
            "optimal_moves": b.optimal_moves,
            "extra_moves": b.extra_moves,
            "invalid_moves": b.invalid_moves,
            "solvable": b.solvable,
        })
    }

    fn render(&self, sample: &Sample) -> String {
        decode(&sample.tokens)
    }

    /// The words of [`vocab`], with the newline as `<nl>`.
    fn token_text(&self, id: u32) -> String {
        match vocab().get(id as usize) {
            Some(&"\n") => "<nl>".to_string(),
            Some(word) => word.to_string(),
            None => id.to_string(),
        }
    }

    /// Token accuracy, and the generated path walked on the sample's board (see [`Grid::walk`]):
    /// `reached_target` (0/1), `valid_moves` (fraction of its directions that moved),
    /// `invalid_moves` and `invalid_moves_gap` (its absolute difference from the sample's own
    /// path); for a path that reaches the target only, `extra_moves` and `extra_moves_gap`
    /// (so that their means are over reached paths, next to the reach rate). A prompt that is
    /// not a board scores token accuracy only.
    fn score(&self, sample: &Sample, generated: &[u32]) -> Vec<(&'static str, f64)> {
        let mut out = vec![("token_accuracy", score::token_accuracy(sample, generated))];
        let Some(grid) = Grid::parse(sample.input()) else { return out };
        let unmirror = |ids: &[u32]| -> Vec<u32> {
            let mirrored = |id: u32| move_of(id).map_or(id, |m| m.mirrored().token());
            ids.iter().map(|&id| if self.render.mirror { mirrored(id) } else { id }).collect()
        };
        let (got, want) = (grid.walk(&unmirror(generated)), grid.walk(&unmirror(&sample.answer())));
        out.extend([
            ("reached_target", f64::from(u8::from(got.reached))),
            ("valid_moves", if got.moves == 0 { 1.0 } else { (got.moves - got.invalid) as f64 / got.moves as f64 }),
            ("invalid_moves", got.invalid as f64),
            ("invalid_moves_gap", got.invalid.abs_diff(want.invalid) as f64),
        ]);
        if let Some(extra) = got.extra_moves {
            out.push(("extra_moves", extra as f64));
            out.push(("extra_moves_gap", (extra - want.extra_moves.unwrap_or(extra)).abs() as f64));
        }
        out
    }
}

/// A board read back from a prompt's tokens: `blocked[r * width + c]`.
#[derive(Clone, Debug, PartialEq)]
pub struct Grid {
    pub width: usize,
    pub height: usize,
    pub blocked: Vec<bool>,
    pub start: (usize, usize),
    pub target: (usize, usize),
}

/// A path walked on a [`Grid`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Walk {
    /// Directions walked.
    pub moves: usize,
    /// Directions that would have left the board or hit a blocker (the walker stays put).
    pub invalid: usize,
    /// Whether the walker stood on the target at some point.
    pub reached: bool,
    /// `moves` minus the optimal path length (0 for an unreachable target), as in [`Board`];
    /// `None` for a path that never reaches the target, whose moves are not extra moves of a
    /// path to it.
    pub extra_moves: Option<i64>,
}

impl Grid {
    /// The board of `prompt` (after any condition prefix, rows of cell tokens ended by
    /// newlines, then `Moves:` and a newline); `None` unless the rows are equally long and hold
    /// one `A` and one `B`.
    pub fn parse(prompt: &[u32]) -> Option<Grid> {
        let prompt = &prompt[prompt.iter().take_while(|&&t| is_prefix_token(t)).count()..];
        let end = prompt.iter().position(|&t| t == TOK_MOVES)?;
        let rows: Vec<&[u32]> = prompt[..end].split(|&t| t == TOK_NL).filter(|r| !r.is_empty()).collect();
        let width = rows.first()?.len();
        if rows.iter().any(|r| r.len() != width) {
            return None;
        }
        let cells: Vec<u32> = rows.concat();
        let find = |tok: u32| -> Option<(usize, usize)> {
            let mut at = cells.iter().enumerate().filter(|(_, &c)| c == tok).map(|(i, _)| (i / width, i % width));
            let first = at.next();
            first.filter(|_| at.next().is_none())
        };
        let (start, target) = (find(TOK_A)?, find(TOK_B)?);
        let blocked = cells.iter().map(|&c| c == TOK_X).collect();
        Some(Grid { width, height: rows.len(), blocked, start, target })
    }

    /// The walker's cell after each direction token at the head of `moves` (stopping at the
    /// first other token), and whether that direction was invalid (the walker stayed put).
    pub fn positions(&self, moves: &[u32]) -> Vec<((usize, usize), bool)> {
        let (w, h) = (self.width, self.height);
        let mut pos = self.start;
        let dirs = moves.iter().map_while(|&t| move_of(t).filter(|m| m.delta().is_some()));
        dirs.map(|dir| match step(w, h, pos, dir).filter(|&(r, c)| !self.blocked[r * w + c]) {
            Some(next) => {
                pos = next;
                (pos, false)
            }
            None => (pos, true),
        })
        .collect()
    }

    /// Distances to the target (see [`distances`]).
    pub fn distances(&self) -> Vec<usize> {
        distances(self.width, self.height, &self.blocked, self.target)
    }

    /// Walks the direction tokens at the head of `moves` from the start (stopping at the first
    /// other token, such as `D`, `U` or padding), as the generator does.
    pub fn walk(&self, moves: &[u32]) -> Walk {
        let cells = self.positions(moves);
        let walked = cells.len();
        let invalid = cells.iter().filter(|(_, invalid)| *invalid).count();
        let reached = self.start == self.target || cells.iter().any(|(pos, _)| *pos == self.target);
        let optimal = optimal_moves(self.width, self.height, &self.distances(), self.start, self.target);
        Walk { moves: walked, invalid, reached, extra_moves: reached.then_some(walked as i64 - optimal as i64) }
    }
}

/// The move of a move token.
pub fn move_of(token: u32) -> Option<Move> {
    [Move::N, Move::S, Move::E, Move::W, Move::D, Move::U].into_iter().find(|m| m.token() == token)
}
