//! The pathfinding task: optimal move counts agree with an independent BFS, emitted paths
//! re-simulate to the recorded conditions, only move tokens are scored, and samples are
//! deterministic, split-separated and decode to their text; the scorer walks generated paths
//! on the prompt's board. The variants: a condition prefix, mirrored letters, board density
//! and walk noise.

use std::collections::{HashSet, VecDeque};

use vestige::data::pathfinding::{
    decode, move_of, vocab, Board, Cell, Grid, Move, Pathfinding, Render, TOK_EXTRA, TOK_INVALID, VOCAB_SIZE,
};
use vestige::data::spec::TaskSpec;
use vestige::data::Sample;
use vestige::data::{Split, Task};

fn tasks() -> Vec<Pathfinding> {
    vec![
        Pathfinding::default(),
        Pathfinding { name: "pf-wide".into(), width: 5, height: 3, max_moves: 64, ..Default::default() },
        Pathfinding { name: "pf-capped".into(), width: 8, height: 8, max_moves: 6, ..Default::default() },
    ]
}

fn boards(task: &Pathfinding, n: u64) -> impl Iterator<Item = Board> + '_ {
    (0..n).map(move |i| task.board(7, if i % 2 == 0 { Split::Train } else { Split::Eval }, i))
}

/// Shortest path length from A to B by breadth-first search over the rendered cells.
fn bfs(b: &Board) -> Option<usize> {
    let (w, h) = (b.width, b.height);
    let mut seen = vec![vec![false; w]; h];
    let mut queue = VecDeque::from([(b.start, 0usize)]);
    seen[b.start.0][b.start.1] = true;
    while let Some(((r, c), d)) = queue.pop_front() {
        if b.rows[r][c] == Cell::Target {
            return Some(d);
        }
        let candidates = [(r.wrapping_sub(1), c), (r + 1, c), (r, c.wrapping_sub(1)), (r, c + 1)];
        for (nr, nc) in candidates {
            if nr < h && nc < w && !seen[nr][nc] && b.rows[nr][nc] != Cell::Blocker {
                seen[nr][nc] = true;
                queue.push_back(((nr, nc), d + 1));
            }
        }
    }
    None
}

/// Walks the letters from A (off-board or blocked moves stay put): `(final position, moves,
/// invalid moves)`.
fn simulate(b: &Board, letters: &[&str]) -> ((usize, usize), usize, usize) {
    let (mut pos, mut total, mut invalid) = (b.start, 0, 0);
    for &l in letters {
        let (dr, dc): (isize, isize) = match l {
            "N" => (-1, 0),
            "S" => (1, 0),
            "E" => (0, 1),
            "W" => (0, -1),
            "D" | "U" => continue,
            other => panic!("unexpected move letter {other:?}"),
        };
        total += 1;
        let (r, c) = (pos.0 as isize + dr, pos.1 as isize + dc);
        let off_board = r < 0 || c < 0 || r >= b.height as isize || c >= b.width as isize;
        if off_board || b.rows[r as usize][c as usize] == Cell::Blocker {
            invalid += 1;
        } else {
            pos = (r as usize, c as usize);
        }
    }
    (pos, total, invalid)
}

/// The move letters of a sample's text (everything after the "Moves:" line).
fn text_moves(text: &str) -> Vec<&str> {
    let (_, moves) = text.split_once("\nMoves:\n").expect("a Moves: header");
    moves.split(' ').filter(|s| !s.is_empty()).collect()
}

#[test]
fn optimal_move_counts_agree_with_independent_bfs() {
    for task in tasks() {
        let (mut solvable, mut unsolvable) = (0, 0);
        for b in boards(&task, 600) {
            match bfs(&b) {
                Some(d) => {
                    solvable += 1;
                    assert!(b.solvable);
                    assert_eq!(b.optimal_moves, d, "{}", b.text());
                    // A reachable walker is never stuck: the path ends with D or is truncated.
                    assert_ne!(b.moves.last(), Some(&Move::U), "{}", b.text());
                }
                None => {
                    unsolvable += 1;
                    assert!(!b.solvable);
                    assert_eq!(b.optimal_moves, 0);
                    // The component of A is closed under moves, so B is never reached: the path
                    // ends with U unless it hit the move cap first.
                    assert_ne!(b.moves.last(), Some(&Move::D), "{}", b.text());
                    assert!(b.moves.last() == Some(&Move::U) || b.total_moves() == task.max_moves, "{}", b.text());
                }
            }
        }
        assert!(solvable >= 100 && unsolvable >= 50, "{}: {solvable} solvable, {unsolvable} unsolvable", task.name);
    }
}

#[test]
fn emitted_moves_resimulate_to_recorded_conditions() {
    for task in tasks() {
        let mut truncated = 0;
        for b in boards(&task, 600) {
            let text = b.text();
            let letters = text_moves(&text);
            let (end, total, invalid) = simulate(&b, &letters);
            let ends_with_d = letters.last() == Some(&"D");
            assert_eq!(end == b.target, ends_with_d, "{text}");
            assert_eq!(total, b.total_moves());
            assert!(total <= task.max_moves);
            assert_eq!(invalid, b.invalid_moves, "{text}");
            let optimal = bfs(&b).unwrap_or(0) as i64;
            assert_eq!(b.extra_moves, total as i64 - optimal, "{text}");
            assert_eq!(b.conditions(), [b.extra_moves as f32, b.invalid_moves as f32]);
            // D and U only ever appear last; a path without them was truncated at the cap.
            assert!(letters[..letters.len().saturating_sub(1)].iter().all(|&l| l != "D" && l != "U"));
            if b.truncated() {
                truncated += 1;
                assert_eq!(total, task.max_moves, "{text}");
            }
            if ends_with_d {
                assert!(b.extra_moves >= 0);
            }
        }
        if task.max_moves < 10 {
            assert!(truncated > 0, "{}: the cap is never hit", task.name);
        }
    }
}

#[test]
fn loss_mask_covers_exactly_the_move_tokens() {
    let v = vocab();
    let letters: HashSet<&str> = ["N", "S", "E", "W", "D", "U"].into();
    for task in tasks() {
        for i in 0..300 {
            let s = task.sample(3, Split::Train, i);
            let b = task.board(3, Split::Train, i);
            assert_eq!(s.tokens.len(), s.weights.len());
            assert!(s.tokens.len() <= task.seq_len());
            assert!(s.tokens.iter().all(|&t| (t as usize) < task.vocab_size()));
            let header = s.tokens.iter().position(|&t| v[t as usize] == "Moves:").unwrap();
            for (t, (&id, &w)) in s.tokens.iter().zip(&s.weights).enumerate() {
                let word = decode(&[id]);
                let is_move = t > header && letters.contains(word.as_str());
                assert_eq!(w, if is_move { 1.0 } else { 0.0 }, "position {t} ({word:?})");
                if w > 0.0 {
                    assert!(letters.contains(word.as_str()));
                }
            }
            let weighted = s.weights.iter().filter(|&&w| w > 0.0).count();
            assert_eq!(weighted, text_moves(&decode(&s.tokens)).len());
            assert_eq!(weighted, b.moves.len());
            // The prompt is the board and header: the first weighted token starts the answer.
            assert_eq!(s.prompt_len, header + 2);
            assert_eq!(s.prompt_len, task.width * task.height + task.height + 2);
            assert!(s.weights[..s.prompt_len].iter().all(|&w| w == 0.0));
        }
    }
}

#[test]
fn samples_are_deterministic_and_splits_differ() {
    for task in tasks() {
        for i in 0..50 {
            assert_eq!(task.sample(11, Split::Train, i), task.sample(11, Split::Train, i));
            assert_eq!(task.board(11, Split::Eval, i), task.board(11, Split::Eval, i));
            assert_eq!(task.board(11, Split::Train, i).sample(), task.sample(11, Split::Train, i));
            assert_eq!(task.conditions(11, Split::Train, i), task.board(11, Split::Train, i).conditions());
        }
        let train: HashSet<Vec<u32>> = (0..200).map(|i| task.sample(11, Split::Train, i).tokens).collect();
        let eval: HashSet<Vec<u32>> = (0..200).map(|i| task.sample(11, Split::Eval, i).tokens).collect();
        assert!(train.len() >= 195 && eval.len() >= 195);
        assert_eq!(train.intersection(&eval).count(), 0, "{}", task.name);
        assert_ne!(task.sample(11, Split::Train, 0), task.sample(12, Split::Train, 0));
        assert_ne!(task.sample(11, Split::Train, 0), task.sample(11, Split::Train, 1));
    }
}

#[test]
fn decode_reproduces_text_rendering() {
    assert_eq!(vocab().len(), VOCAB_SIZE);
    assert_eq!(vocab()[0], "<pad>");
    for task in tasks() {
        for b in boards(&task, 200) {
            let mut tokens = b.tokens();
            assert_eq!(decode(&tokens), b.text());
            tokens.extend([0, 0, 0]); // batcher padding is ignored
            assert_eq!(decode(&tokens), b.text());
        }
    }
    // The rendering itself, on one board.
    let b = Pathfinding::default().board(0, Split::Train, 0);
    let text = b.text();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), b.height + 2);
    for (r, line) in lines[..b.height].iter().enumerate() {
        let cells: Vec<&str> = line.split(' ').collect();
        assert_eq!(cells.len(), b.width);
        for (c, cell) in cells.iter().enumerate() {
            let expect = if (r, c) == b.start {
                "A"
            } else if (r, c) == b.target {
                "B"
            } else if b.blockers.contains(&(r, c)) {
                "X"
            } else {
                "O"
            };
            assert_eq!(*cell, expect);
        }
    }
    assert_eq!(lines[b.height], "Moves:");
    let moves: Vec<&str> = b.moves.iter().map(|m| m.letter()).collect();
    assert_eq!(lines[b.height + 1], moves.join(" "));
}

#[test]
fn p_and_m_are_drawn_from_their_stated_ranges() {
    for task in [
        Pathfinding::default(),
        Pathfinding { name: "pf-wide".into(), width: 5, height: 3, max_moves: 64, ..Default::default() },
    ] {
        let max_m = 3 * task.width * task.height / 4 + 1;
        let mut ps = [0usize; 8];
        let mut ms = vec![0usize; max_m + 1];
        let n = 6000;
        for b in boards(&task, n) {
            assert!((2..=7).contains(&b.p), "p = {}", b.p);
            assert!((2..=max_m).contains(&b.m), "m = {}", b.m);
            ps[b.p] += 1;
            ms[b.m] += 1;
            assert_eq!(b.blockers.len(), b.m - 2);
            assert_ne!(b.start, b.target);
            let count = |k: Cell| b.rows.iter().flatten().filter(|&&c| c == k).count();
            assert_eq!((count(Cell::Start), count(Cell::Target), count(Cell::Blocker)), (1, 1, b.m - 2));
        }
        // Every value occurs, roughly uniformly (expected n/6 for p, n/(max_m-1) for m).
        for (p, &k) in ps.iter().enumerate().skip(2) {
            let e = n as f64 / 6.0;
            assert!((k as f64 - e).abs() < 0.2 * e, "p = {p}: {k} of {n}");
        }
        let e = n as f64 / (max_m - 1) as f64;
        for (m, &k) in ms.iter().enumerate().skip(2) {
            assert!(k > 0 && (k as f64) < 2.0 * e, "m = {m}: {k} of {n}");
        }
        assert_eq!(ps[..2], [0, 0]);
        assert_eq!(ms[..2], [0, 0]);
    }
}

#[test]
fn seq_len_bounds_every_sample() {
    let task = Pathfinding::default();
    assert_eq!(task.seq_len(), 64 + 8 + 2 + 64 + 1);
    let capped = Pathfinding { name: "c".into(), width: 4, height: 4, max_moves: 3, ..Default::default() };
    let longest = (0..2000).map(|i| capped.sample(0, Split::Train, i).tokens.len()).max().unwrap();
    assert!(longest <= capped.seq_len());
    assert!(longest >= capped.seq_len() - 1);
}

/// Token ids of space-separated words, `/` standing for a newline.
fn ids(words: &str) -> Vec<u32> {
    let v = vocab();
    words.split(' ').map(|w| v.iter().position(|&x| x == if w == "/" { "\n" } else { w }).unwrap() as u32).collect()
}

/// The metric `name` of `generated` on `sample`.
fn metric(sample: &Sample, generated: &str, name: &str) -> f64 {
    let scores = Pathfinding::default().score(sample, &ids(generated));
    scores.iter().find(|(n, _)| *n == name).unwrap_or_else(|| panic!("no {name} in {scores:?}")).1
}

#[test]
fn the_scorer_walks_generated_paths_on_a_hand_made_board() {
    // A . .      optimal: E E S S W W (6 moves)
    // X X .      sample: N (off the board) then optimal: 7 moves, extra 1, invalid 1
    // B . .
    let prompt = ids("A O O / X X O / B O O / Moves: /");
    let answer = ids("N E E S S W W D");
    let sample = Sample::new([prompt.clone(), answer.clone()].concat(), vec![0.0; 20], prompt.len());
    let grid = Grid::parse(&prompt).unwrap();
    assert_eq!((grid.width, grid.height, grid.start, grid.target), (3, 3, (0, 0), (2, 0)));

    let perfect = "N E E S S W W D";
    for (name, want) in [
        ("token_accuracy", 1.0),
        ("reached_target", 1.0),
        ("valid_moves", 6.0 / 7.0),
        ("extra_moves", 1.0),
        ("invalid_moves", 1.0),
        ("extra_moves_gap", 0.0),
        ("invalid_moves_gap", 0.0),
    ] {
        assert_eq!(metric(&sample, perfect, name), want, "{name}");
    }
    let optimal = "E E S S W W D";
    assert_eq!(metric(&sample, optimal, "valid_moves"), 1.0);
    assert_eq!(metric(&sample, optimal, "extra_moves"), 0.0);
    assert_eq!(metric(&sample, optimal, "extra_moves_gap"), 1.0);
    assert_eq!(metric(&sample, optimal, "invalid_moves_gap"), 1.0);
    assert!(metric(&sample, optimal, "token_accuracy") < 1.0);
    // Into the blocker below A, then around: invalid but still reaching B.
    let bump = "S E E S S W W D";
    assert_eq!(metric(&sample, bump, "invalid_moves"), 1.0);
    assert_eq!(metric(&sample, bump, "reached_target"), 1.0);
    // Stops early: B never reached; moves after D are not walked, and a path that never
    // reaches B has no extra moves (it is not a longer path to B).
    let short = "E E D S S W W";
    assert_eq!(metric(&sample, short, "reached_target"), 0.0);
    assert_eq!(grid.walk(&ids(short)).extra_moves, None);
    let scores = Pathfinding::default().score(&sample, &ids(short));
    assert!(scores.iter().all(|(n, _)| !n.starts_with("extra_moves")), "{scores:?}");
}

#[test]
fn a_failed_paths_moves_are_not_counted_as_extra_moves() {
    // A . .      a failed path of 9 moves wanders and never reaches B; counting its moves
    // X X .      against the optimal 6 would give it 3 "extra moves".
    // B . .
    let prompt = ids("A O O / X X O / B O O / Moves: /");
    let answer = ids("N E E S S W W D");
    let sample = Sample::new([prompt.clone(), answer.clone()].concat(), vec![0.0; 20], prompt.len());
    let grid = Grid::parse(&prompt).unwrap();
    let wander = ids("E E W W E E W W E D");
    let walk = grid.walk(&wander);
    assert_eq!((walk.moves, walk.reached, walk.extra_moves), (9, false, None));
    // Over a batch, extra moves average over the reached paths only, next to the reach rate.
    let task = Pathfinding::default();
    let samples = vec![sample.clone(), sample.clone()];
    let scores = vestige::data::score::score_all(&task, &samples, &[ids("N E E S S W W D"), wander]);
    let get = |name: &str| scores.iter().find(|(n, _)| *n == name).unwrap().1;
    assert_eq!(get("reached_target"), 0.5);
    assert_eq!(get("extra_moves"), 1.0, "the reached path's 1 extra move, not the mean with the failed path's 3");
    assert_eq!(get("invalid_moves"), 0.5, "defined for every path");
}

#[test]
fn walking_a_sample_answer_on_its_prompt_reproduces_the_board_conditions() {
    for task in tasks() {
        for i in 0..300 {
            let b = task.board(5, Split::Train, i);
            let s = b.sample();
            let walk = Grid::parse(s.input()).unwrap().walk(&s.answer());
            assert_eq!((walk.moves, walk.invalid), (b.total_moves(), b.invalid_moves), "{}", b.text());
            assert_eq!(walk.extra_moves, walk.reached.then_some(b.extra_moves), "{}", b.text());
            assert_eq!(walk.reached, b.moves.last() == Some(&Move::D), "{}", b.text());
        }
    }
}

/// The same task under another name-preserving variant: same boards, other rendering.
fn variant(render: Render) -> Pathfinding {
    Pathfinding { width: 6, height: 6, max_moves: 24, render, ..Default::default() }
}

#[test]
fn a_condition_prefix_writes_the_conditions_in_unary_before_the_board_without_loss() {
    let plain = variant(Render::default());
    let prefixed = variant(Render { condition_prefix: true, mirror: false });
    let mut saw = [false; 2];
    for i in 0..400 {
        let (b, p) = (plain.board(3, Split::Train, i), prefixed.board(3, Split::Train, i));
        assert_eq!((b.rows.clone(), b.moves.clone()), (p.rows.clone(), p.moves.clone()), "same board and path");
        let tokens = p.tokens();
        let n = tokens.len() - b.tokens().len();
        assert_eq!(tokens[n..], b.tokens()[..]);
        let pluses = tokens[..n].iter().filter(|&&t| t == TOK_EXTRA).count();
        let bangs = tokens[..n].iter().filter(|&&t| t == TOK_INVALID).count();
        assert_eq!((pluses, bangs), (p.extra_moves.max(0) as usize, p.invalid_moves));
        assert!(tokens[..n].windows(2).all(|w| !(w[0] == TOK_INVALID && w[1] == TOK_EXTRA)), "+ before !");
        saw[0] |= pluses > 0;
        saw[1] |= bangs > 0;
        assert_eq!(decode(&tokens), p.text());
        let s = p.sample();
        assert!(s.weights[..n].iter().all(|&w| w == 0.0), "the prefix carries no loss");
        assert_eq!(s.weights.iter().sum::<f32>(), b.sample().weights.iter().sum::<f32>());
        assert!(s.tokens.len() <= prefixed.seq_len());
        assert!(s.answer().len() <= prefixed.max_answer_len() && prefixed.max_answer_len() == 25);
        let walk = Grid::parse(s.input()).unwrap().walk(&s.answer());
        assert_eq!((walk.moves, walk.invalid), (p.total_moves(), p.invalid_moves));
    }
    assert_eq!(saw, [true, true], "both kinds of prefix token occur");
    assert_eq!(prefixed.seq_len(), plain.seq_len() + 2 * 24);
}

#[test]
fn a_mirrored_path_is_written_in_opposite_letters_and_scores_like_the_plain_one() {
    let plain = variant(Render::default());
    let mirror = variant(Render { condition_prefix: false, mirror: true });
    let mut differs = 0;
    for i in 0..200 {
        let (b, m) = (plain.sample(4, Split::Eval, i), mirror.sample(4, Split::Eval, i));
        assert_eq!(b.input(), m.input(), "same prompt");
        let flipped: Vec<u32> = b.answer().iter().map(|&t| move_of(t).map_or(t, |mv| mv.mirrored().token())).collect();
        assert_eq!(m.answer(), flipped);
        assert_eq!(plain.score(&b, &b.answer()), mirror.score(&m, &m.answer()), "a mirrored answer is as good");
        let plain_on_mirror = mirror.score(&m, &b.answer());
        differs += usize::from(plain_on_mirror != mirror.score(&m, &m.answer()));
    }
    assert!(differs > 150, "the plain letters are wrong on the mirrored task ({differs} of 200 differ)");
}

#[test]
fn density_bounds_the_drawn_cells_and_noise_one_makes_every_step_random() {
    let sparse = Pathfinding { density: 0.35, ..variant(Render::default()) };
    assert_eq!(sparse.max_m(), 13);
    let ms: Vec<usize> = (0..3000).map(|i| sparse.board(1, Split::Train, i).m).collect();
    assert!(ms.iter().all(|m| (2..=13).contains(m)));
    assert_eq!(ms.iter().max(), Some(&13));

    let random = Pathfinding { noise: [1, 1], ..variant(Render::default()) };
    let guided = variant(Render::default());
    let mean_extra = |t: &Pathfinding| {
        let boards: Vec<Board> = (0..2000).map(|i| t.board(2, Split::Train, i)).collect();
        assert!(t.noise != [1, 1] || boards.iter().all(|b| b.p == 1));
        let reached: Vec<&Board> = boards.iter().filter(|b| b.moves.last() == Some(&Move::D)).collect();
        reached.iter().map(|b| b.extra_moves as f64).sum::<f64>() / reached.len() as f64
    };
    let (r, g) = (mean_extra(&random), mean_extra(&guided));
    assert!(r > 2.0 * g + 2.0, "a random walker wastes moves: {r} against {g}");
}

#[test]
fn density_and_noise_are_validated() {
    for (bad, key) in [
        ("density = 0.0", "density"),
        ("density = 1.5", "density"),
        ("noise = [0, 3]", "noise"),
        ("noise = [4, 2]", "noise"),
    ] {
        let err = TaskSpec::parse_inline(&format!("{{ kind = \"pathfinding\", {bad} }}")).unwrap_err();
        assert!(err.contains(key), "{bad}: {err}");
    }
    assert!(TaskSpec::parse_inline("{ kind = \"pathfinding\", density = 0.35, noise = [1, 1], mirror = true }").is_ok());
}
