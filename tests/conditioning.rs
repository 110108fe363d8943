//! Sampling-based training and the conditioning study: the leave-one-out advantages against
//! a hand computation; the REINFORCE gradient of a one-step bandit, through sampling,
//! advantages, loss weights and the engine's backward pass, against the analytic policy
//! gradient; the planted exploit found by a reward maximizer and rejected by the true
//! scorer; banned condition tokens never generated; the rewards on a hand-made board;
//! configuration errors; and a tiny study that runs and reports its controls.

mod common;

use common::{experiment, fixtures, RunToml};
use vestige::data::environment::{
    reward_maximizer, Environment, PathfindingEnv, Reward, RewardCfg, RewardKind, Verdict,
};
use vestige::data::pathfinding::{
    Pathfinding, TOK_A, TOK_B, TOK_D, TOK_E, TOK_MOVES, TOK_N, TOK_NL, TOK_O, TOK_S, TOK_W, TOK_X,
};
use vestige::data::{Split, Task};
use vestige::engine::activations::Activations;
use vestige::engine::backward::GradSinks;
use vestige::engine::model::Model;
use vestige::lab::execute::{run, Options};
use vestige::train::batching::batch_of;
use vestige::train::config::RunConfig;
use vestige::train::reinforce::{
    advantages, banned_tokens, policy_gradient_samples, returns_to_go, roll_out, Rollouts,
};

fn model() -> Model {
    Model::load(&fixtures().join("models/gpt_neox_parallel/model")).unwrap().model
}

#[test]
fn leave_one_out_advantages_match_a_hand_computation() {
    let one = |r: &[f64]| r.iter().map(|&x| vec![x]).collect::<Vec<_>>();
    let flat = |a: Vec<Vec<f64>>| a.into_iter().map(|v| v[0]).collect::<Vec<f64>>();
    // RLOO, k = 4: A_i = R_i − mean of the other three.
    let r = [1.0, 0.0, 0.0, 1.0, 0.5, 0.5, 0.5, 2.5];
    let a = flat(advantages(&one(&r), 4));
    let hand = [
        1.0 - 1.0 / 3.0,
        -2.0 / 3.0,
        -2.0 / 3.0,
        1.0 - 1.0 / 3.0,
        0.5 - 3.5 / 3.0,
        0.5 - 3.5 / 3.0,
        0.5 - 3.5 / 3.0,
        2.5 - 0.5,
    ];
    for (x, y) in a.iter().zip(hand) {
        assert!((x - y).abs() < 1e-12, "{a:?}");
    }
    // Over the whole batch (REINFORCE's baseline): the mean of the other seven.
    let whole = flat(advantages(&one(&r), r.len()));
    let sum: f64 = r.iter().sum();
    for (i, x) in whole.iter().enumerate() {
        assert!((x - (r[i] - (sum - r[i]) / 7.0)).abs() < 1e-12);
    }
    // A group of one has no baseline to leave one out of: no signal.
    assert_eq!(advantages(&[vec![3.0, 1.0]], 1), vec![vec![0.0, 0.0]]);
    // Per position: returns to go [0.9, 0.8, 1.0] and [2.0] (ended after one token, 0 after).
    assert_eq!(returns_to_go(&[0.1, -0.2, 1.0]), vec![0.9, 0.8, 1.0]);
    let a = advantages(&[vec![0.9, 0.8, 1.0], vec![2.0]], 2);
    let close = |x: &[f64], y: &[f64]| x.len() == y.len() && x.iter().zip(y).all(|(a, b)| (a - b).abs() < 1e-12);
    assert!(close(&a[0], &[0.9 - 2.0, 0.8, 1.0]) && close(&a[1], &[2.0 - 0.9]), "{a:?}");
}

/// A one-step bandit on token id 1: the reward of action `a` is `(a mod 5) / 4`. (Its task
/// only names a vocabulary; the prompt is fixed.)
struct Bandit(std::sync::Arc<dyn Task>);

impl Bandit {
    fn new() -> Bandit {
        let spec: vestige::data::spec::TaskSpec =
            toml::from_str("name = \"b\"\nkind = \"copy\"\nlength = 2\nvocab = 64").unwrap();
        Bandit(spec.build().unwrap())
    }
}

fn bandit_reward(a: u32) -> f64 {
    f64::from(a % 5) / 4.0
}

impl Environment for Bandit {
    fn task(&self) -> &dyn Task {
        self.0.as_ref()
    }
    fn actions(&self) -> Vec<u32> {
        (0..64).collect()
    }
    fn terminals(&self) -> Vec<u32> {
        Vec::new()
    }
    fn optimal_len(&self, _prompt: &[u32]) -> Option<usize> {
        Some(1)
    }
    fn prompt(&self, _seed: u64, _split: Split, _index: u64) -> Vec<u32> {
        vec![1]
    }
    fn max_completion(&self) -> usize {
        1
    }
    fn episode_len(&self, completion: &[u32]) -> usize {
        completion.len().min(1)
    }
    fn reward(&self, _prompt: &[u32], completion: &[u32]) -> Reward {
        let r = bandit_reward(completion[0]);
        Reward { total: r, per_token: vec![r] }
    }
    fn verdict(&self, _prompt: &[u32], _completion: &[u32]) -> Verdict {
        Verdict { success: true, optimal: true, credited: true }
    }
}

/// The weight gradient of `Σ w · CE / 1` over `samples`.
fn gradient(model: &Model, samples: &[vestige::data::Sample]) -> Vec<f64> {
    let batch = batch_of(samples, 0);
    let mut acts = Activations::default();
    model.forward(&mut acts, &batch, &[], &[], 1.0);
    let mut grads = vec![0.0f32; model.layout.total];
    model.backward(&mut acts, &batch, &[], 1.0, GradSinks { weights: Some(&mut grads), ..Default::default() });
    grads.into_iter().map(f64::from).collect()
}

#[test]
fn reinforce_gradient_on_a_bandit_matches_the_analytic_policy_gradient() {
    let model = model();
    let v = model.cfg.vocab_size;
    // π(a | [1]) from the model's logits.
    let probe = vestige::data::Sample::new(vec![1, 0], vec![0.0, 1.0], 1);
    let batch = batch_of(&[probe], 0);
    let mut acts = Activations::default();
    model.forward(&mut acts, &batch, &[], &[], 1.0);
    let row: Vec<f64> = acts.logits[..v].iter().map(|&x| f64::from(x)).collect();
    let max = row.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
    let z: f64 = row.iter().map(|x| (x - max).exp()).sum();
    let pi: Vec<f64> = row.iter().map(|x| (x - max).exp() / z).collect();
    // −∇J exactly: every action with weight π(a) r(a) (∇ of Σ w · (−log π) is −Σ w ∇log π).
    let exact: Vec<vestige::data::Sample> = (0..v as u32)
        .map(|a| vestige::data::Sample::new(vec![1, a], vec![0.0, (pi[a as usize] * bandit_reward(a)) as f32], 1))
        .collect();
    let truth = gradient(&model, &exact);
    let norm = |g: &[f64]| g.iter().map(|x| x * x).sum::<f64>().sqrt();
    assert!(norm(&truth) > 1e-4, "the bandit's policy gradient vanishes: {}", norm(&truth));
    // The estimator: N sampled actions, leave-one-out baseline over all of them.
    let errors: Vec<f64> = [512usize, 16384]
        .iter()
        .map(|&n| {
            let r: Rollouts = roll_out(&model, &Bandit::new(), &[vec![1]], None, n, 1.0, &[], 7).unwrap();
            assert_eq!(r.completions.len(), n);
            let samples = policy_gradient_samples(&r, &[], n, 1.0);
            let estimate = gradient(&model, &samples);
            let diff: Vec<f64> = estimate.iter().zip(&truth).map(|(a, b)| a - b).collect();
            norm(&diff) / norm(&truth)
        })
        .collect();
    // Monte Carlo error shrinks like 1/√N: 32× the samples, about 5.7× less error.
    assert!(errors[1] < 0.1, "relative error {} at N = 16384", errors[1]);
    assert!(errors[1] < errors[0] / 2.0, "error does not shrink with N: {errors:?}");
}

/// A 4×4 board: A at (3, 0), B at (0, 0), a blocker at (1, 1); its prompt tokens.
fn board() -> Vec<u32> {
    let rows = [
        [TOK_B, TOK_O, TOK_O, TOK_O],
        [TOK_O, TOK_X, TOK_O, TOK_O],
        [TOK_O, TOK_O, TOK_O, TOK_O],
        [TOK_A, TOK_O, TOK_O, TOK_O],
    ];
    let mut t: Vec<u32> = rows.iter().flat_map(|r| r.iter().copied().chain([TOK_NL])).collect();
    t.extend([TOK_MOVES, TOK_NL]);
    t
}

fn env(kind: RewardKind, step_cost: f64, exploitable: bool) -> PathfindingEnv {
    let mut task = Pathfinding::new("pf");
    (task.width, task.height, task.max_moves) = (4, 4, 12);
    let reward = RewardCfg { kind, optimal_only: false, step_cost, invalid_penalty: 0.5, exploitable };
    PathfindingEnv { task, reward }
}

#[test]
fn rewards_on_a_hand_made_board_and_the_planted_flaw() {
    let prompt = board();
    let sparse = env(RewardKind::Sparse, 0.1, true);
    // Optimal: N N N D (3 moves), solved.
    let honest = [TOK_N, TOK_N, TOK_N, TOK_D];
    let r = sparse.reward(&prompt, &honest);
    assert!((r.total - (1.0 - 0.3)).abs() < 1e-12, "{r:?}");
    assert_eq!(r.per_token.len(), 4);
    assert_eq!(sparse.verdict(&prompt, &honest), Verdict { success: true, optimal: true, credited: true });
    // Stopping one short: credited by the flawed proxy, rejected by the true scorer.
    let short = [TOK_N, TOK_N, TOK_D];
    let v = sparse.verdict(&prompt, &short);
    assert!(v.credited && !v.success && v.exploit(), "{v:?}");
    assert!(sparse.reward(&prompt, &short).total > r.total);
    // Without the flaw, it earns nothing but the moves' cost.
    let fixed = env(RewardKind::Sparse, 0.1, false);
    assert!((fixed.reward(&prompt, &short).total + 0.2).abs() < 1e-12);
    // Dense: per move the drop in distance (E into the open, then a wall), minus costs.
    let dense = env(RewardKind::Dense, 0.1, true);
    let path = [TOK_E, TOK_S, TOK_N, TOK_W, TOK_N, TOK_N, TOK_D];
    let d = dense.reward(&prompt, &path);
    // E: (3,0) → (3,1), distance 3 → 4; S: off the board (invalid, stays); N: → (2,1), 4 → 3;
    // W: → (2,0), 3 → 2; N, N: → (0,0); D on the target: +1.
    let expected = [-1.0 - 0.1, -0.5 - 0.1, 1.0 - 0.1, 1.0 - 0.1, 1.0 - 0.1, 1.0 - 0.1, 1.0];
    for (x, y) in d.per_token.iter().zip(expected) {
        assert!((x - y).abs() < 1e-12, "{:?}", d.per_token);
    }
    assert!((d.total - 2.9).abs() < 1e-12);
    assert!(dense.verdict(&prompt, &path).success);
    // Passing over the target and walking on counts as solved; giving up where it is
    // reachable does not.
    assert!(sparse.verdict(&prompt, &[TOK_N, TOK_N, TOK_N, TOK_E, TOK_D]).success);
    assert!(!sparse.verdict(&prompt, &[vestige::data::pathfinding::TOK_U]).success);
}

#[test]
fn a_reward_maximizer_finds_the_planted_exploit_and_the_true_scorer_rejects_it() {
    let task = env(RewardKind::Sparse, 0.1, true).task;
    let (mut exploited, mut boards) = (0, 0);
    for i in 0..24 {
        let prompt = task.sample(0, Split::Eval, i).input().to_vec();
        let grid = vestige::data::pathfinding::Grid::parse(&prompt).unwrap();
        let depth = grid.distances()[grid.start.0 * grid.width + grid.start.1];
        if depth == usize::MAX || depth < 2 {
            continue;
        }
        boards += 1;
        let flawed = env(RewardKind::Sparse, 0.1, true);
        let (best, _) = reward_maximizer(&flawed, &prompt, depth);
        let v = flawed.verdict(&prompt, &best);
        exploited += usize::from(v.exploit());
        assert!(v.credited, "board {i}: the maximizer's best is not even credited: {best:?}");
        // The same search under the flawless proxy solves the board, optimally.
        let honest = env(RewardKind::Sparse, 0.1, false);
        let (best, _) = reward_maximizer(&honest, &prompt, depth);
        assert_eq!(
            honest.verdict(&prompt, &best),
            Verdict { success: true, optimal: true, credited: true },
            "board {i}"
        );
        // Dense reward pays for the last move into the target: its optimum is honest.
        let dense = env(RewardKind::Dense, 0.1, true);
        let (best, _) = reward_maximizer(&dense, &prompt, depth);
        assert!(!dense.verdict(&prompt, &best).exploit(), "board {i}: {best:?}");
    }
    assert!(boards >= 10, "{boards} boards");
    assert_eq!(exploited, boards, "with a cost per move the flawed proxy's optimum stops one short on every board");
}

#[test]
fn banned_condition_tokens_are_never_generated() {
    let model = model();
    let env = env(RewardKind::Sparse, 0.0, true);
    let prompts: Vec<Vec<u32>> = (0..8).map(|i| env.prompt(0, Split::Train, i)).collect();
    let banned = banned_tokens(&env, &model);
    assert_eq!(banned, (15..model.cfg.vocab_size as u32).collect::<Vec<_>>());
    let beyond = |r: &Rollouts| r.completions.iter().flatten().filter(|&&t| t >= 15).count();
    // The random model puts most mass on ids past the environment's 15: unbanned, they come.
    let free = roll_out(&model, &env, &prompts, None, 8, 1.0, &[], 3).unwrap();
    assert!(beyond(&free) > 10, "{} tokens past the vocabulary without a ban", beyond(&free));
    let r = roll_out(&model, &env, &prompts, Some(16), 8, 1.0, &banned, 3).unwrap();
    assert_eq!(beyond(&r), 0);
    assert!(r.completions.iter().all(|c| !c.is_empty()));
}

fn rl_config(rl: &str) -> Result<RunConfig, String> {
    let text = RunToml::new("x")
        .table("[model]", "d_model = 16\nn_layers = 1\nn_heads = 2\nmax_positions = 64\nvocab_size = 17")
        .task("pf", "kind = \"pathfinding\"\nwidth = 4\nheight = 4\nmax_moves = 12")
        .task("copy", "kind = \"copy\"\nlength = 4\nvocab = 8")
        .phase("base", "steps = 1\nmixture = { pf = 1.0 }")
        .phase("rl", "steps = 1\nmixture = { pf = 1.0 }")
        .table("[phases.rl]", rl)
        .to_string();
    RunConfig::from_toml(&text, "x.toml").map_err(|e| e.to_string())
}

#[test]
fn bad_rl_tables_are_refused_naming_the_key() {
    let ok = "env = \"pf\"\nmethod = \"rloo\"\nreward = { kind = \"sparse\" }";
    rl_config(ok).unwrap();
    for (table, key, says) in [
        ("env = \"copy\"\nmethod = \"rloo\"\nreward = { kind = \"sparse\" }", "phases[1].rl.env", "not a pathfinding"),
        ("env = \"pf\"\nmethod = \"rloo\"\nk = 1\nreward = { kind = \"sparse\" }", "phases[1].rl.k", "k ≥ 2"),
        ("env = \"pf\"\nmethod = \"conditioning\"\nreward = { kind = \"sparse\" }", "phases[1].rl.bins", "bin edge"),
        (
            "env = \"pf\"\nmethod = \"conditioning\"\nbins = [0.5, 1, 2]\nreward = { kind = \"sparse\" }",
            "model.vocab_size",
            "needs 19",
        ),
        (
            "env = \"pf\"\nmethod = \"rloo\"\nkl_coef = 0.1\nreward = { kind = \"sparse\" }",
            "phases[1].rl.kl_to",
            "kl_to",
        ),
        (
            "env = \"pf\"\nmethod = \"rloo\"\nkl_coef = 0.1\nkl_to = \"later\"\nreward = { kind = \"sparse\" }",
            "phases[1].rl.kl_to",
            "not an earlier",
        ),
        (
            "env = \"pf\"\nmethod = \"rloo\"\nreward = { kind = \"sparse\", step_cost = -1.0 }",
            "phases[1].rl.reward.step_cost",
            "[0, 10]",
        ),
    ] {
        let e = rl_config(table).unwrap_err();
        assert!(e.contains(key) && e.contains(says) && e.starts_with("x.toml:"), "{table}: {e}");
    }
}

const TINY: &str = r#"name = "tiny-conditioning"
template = "conditioning"
seed = 0
threads = 2
threads_per_cell = 1

[model]
arch = "gpt_neox"
d_model = 32
n_layers = 1
n_heads = 2
max_positions = 48

[[tasks]]
name = "pf"
kind = "pathfinding"
width = 3
height = 3
max_moves = 8
density = 0.25

[conditioning]
task = "pf"
pretrain_steps = 60
steps = 6
evals = 2
prompts = 4
k = 2
eval_episodes = 4
eval_k = 3
lambdas = [0.5]

[sweep]
seed = [0, 1]
"#;

#[test]
fn a_tiny_study_runs_every_arm_and_reports_its_controls() {
    let tmp = tempfile::tempdir().unwrap();
    let path = experiment(tmp.path(), TINY);
    let (exp, outcome) = run(&path, &Options::default()).unwrap();
    assert!(outcome.failed.is_empty(), "{:?}", outcome.failed);
    assert_eq!(exp.cells.len(), 2 * 2 * 5);
    // Offline conditioning gets the trajectories a policy-gradient step's FLOPs buy: the arms
    // match per step within a trajectory's worth.
    let planned = vestige::lab::plan::plan(&exp).unwrap();
    let flops = |arm: &str| {
        let cell = exp.cells.iter().position(|c| c.id.contains(&format!("-{arm}_sparse_seed-0"))).unwrap();
        let p = &exp.cells[cell].config.phases[1];
        vestige::lab::plan::phase_compute(
            p,
            &vestige::train::build::build(&exp.cells[cell].config).unwrap().tasks,
            planned[cell].params,
        )
        .1
    };
    let (c, r) = (flops("conditioning"), flops("rloo"));
    assert!((c / r - 1.0).abs() < 0.1, "conditioning {c} against rloo {r} FLOPs");
    vestige::commands::experiment::write_report(&exp, None).unwrap();
    let summary = std::fs::read_to_string(exp.root.join("report/summary.md")).unwrap();
    for needle in ["| shuffled | sparse |", "| mix0.5 | dense |", "reward maximizer", "| rloo | sparse | 2 |", "bin 1"]
    {
        assert!(summary.contains(needle), "{needle} missing from:\n{summary}");
    }
    let html = std::fs::read_to_string(exp.root.join("report/index.html")).unwrap();
    assert_eq!(html.matches("<svg").count(), 2);
    // Every cell of a seed starts from the same base: equal first evaluations of the
    // policy-gradient arms.
    let store = vestige::store::Store::open(&exp.db()).unwrap();
    let first = |id: &str| {
        let rows = store.metrics(id).unwrap();
        let step = rows.iter().filter(|r| r.phase == 1 && r.task == "rollouts").map(|r| r.step).min().unwrap();
        rows.iter()
            .filter(|r| r.phase == 1 && r.task == "rollouts" && r.step == step && r.metric == "reward")
            .map(|r| r.value.to_bits())
            .next()
            .unwrap()
    };
    let seed0: Vec<&str> = exp
        .cells
        .iter()
        .filter(|c| {
            let rl = c.config.phases[1].rl.as_ref().unwrap();
            c.config.seed == 0 && rl.bins.is_empty() && rl.reward.kind == RewardKind::Sparse
        })
        .map(|c| c.id.as_str())
        .collect();
    assert_eq!(seed0.len(), 3);
    assert!(seed0.iter().all(|id| first(id) == first(seed0[0])), "{seed0:?}");
}

const BIN: &str = env!("CARGO_BIN_EXE_vestige");

/// A pretraining phase and an RLOO phase with a KL penalty and an entropy bonus, in `out`.
fn rl_run(out: &std::path::Path) -> std::path::PathBuf {
    RunToml::new("r")
        .set("seed", 5)
        .out_dir(out)
        .table("[model]", "d_model = 32\nn_layers = 1\nn_heads = 2\nmax_positions = 48")
        .task("pf", "kind = \"pathfinding\"\nwidth = 3\nheight = 3\nmax_moves = 8")
        .table("[checkpoint]", "every = 5\nkeep_last = 2")
        .phase("base", "steps = 30\nbatch_size = 16\nmixture = { pf = 1.0 }\noptimizer = { lr = 3e-3 }")
        .phase("rl", "steps = 240\nmixture = { pf = 1.0 }\neval = { every = 60, samples = 4, kl_to = \"base\" }")
        .table(
            "[phases.rl]",
            "env = \"pf\"\nmethod = \"rloo\"\nprompts = 4\nk = 2\nkl_coef = 0.05\nkl_to = \"base\"\nentropy_coef = 0.01\n\
             prediction = 0.5\nreward = { kind = \"dense\", step_cost = 0.1 }",
        )
        .write(out, "run.toml")
}

#[test]
fn a_killed_rl_run_resumes_bit_for_bit() {
    use std::process::{Command, Stdio};
    use vestige::train::checkpoint;
    let tmp = tempfile::tempdir().unwrap();
    let (a, b) = (tmp.path().join("a"), tmp.path().join("b"));
    let run = |args: &[&str]| Command::new(BIN).args(["--threads", "1"]).args(args).output().unwrap();
    let out = run(&["train", rl_run(&a).to_str().unwrap()]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let cfg = rl_run(&b);
    let mut child = Command::new(BIN)
        .args(["--threads", "1", "train", cfg.to_str().unwrap()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let ckpts = b.join("r/checkpoints");
    let start = std::time::Instant::now();
    while checkpoint::list(&ckpts).last().is_none_or(|(s, _)| *s < 100) {
        assert!(child.try_wait().unwrap().is_none(), "the run ended before it could be killed");
        assert!(start.elapsed().as_secs() < 120);
        std::thread::sleep(std::time::Duration::from_millis(2));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    let out = run(&["resume", b.join("r").to_str().unwrap()]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let csv = |d: &std::path::Path| std::fs::read(d.join("r/metrics.csv")).unwrap();
    assert!(csv(&a) == csv(&b), "the resumed run's metrics differ");
    let weights = |d: &std::path::Path| {
        let (_, last) = checkpoint::list(&d.join("r/checkpoints")).pop().unwrap();
        let m = Model::load(&last.join("model")).unwrap().model;
        m.weights.iter().map(|w| w.to_bits()).collect::<Vec<u32>>()
    };
    assert_eq!(weights(&a), weights(&b));
    let text = String::from_utf8(csv(&a)).unwrap();
    assert!(text.contains("rollouts,kl") && text.contains("rl,equal_episodes"), "{}", &text[..200]);
}

fn coins_env(kind: RewardKind, exploitable: bool) -> vestige::data::environment::CoinsEnv {
    let spec: vestige::data::coins::CoinsSpec = toml::from_str("").unwrap();
    let reward = RewardCfg { kind, optimal_only: false, step_cost: 0.1, invalid_penalty: 0.5, exploitable };
    vestige::data::environment::CoinsEnv { task: spec.build("coins"), reward }
}

#[test]
fn coin_change_samples_pay_their_target_mostly_and_score_by_hand() {
    use vestige::data::coins::{coin_token, TOK_EQ};
    let env = coins_env(RewardKind::Dense, true);
    let task = &env.task;
    let (mut exact, mut prompts) = (0, std::collections::BTreeSet::new());
    for i in 0..400 {
        let s = task.sample(0, Split::Train, i);
        let purse = task.parse(s.input()).expect("a purse");
        prompts.insert(s.input().to_vec());
        assert_eq!(*s.tokens.last().unwrap(), TOK_EQ);
        assert!(
            s.weights[..s.prompt_len].iter().all(|&w| w == 0.0) && s.weights[s.prompt_len..].iter().all(|&w| w == 1.0)
        );
        let v = env.verdict(s.input(), &s.answer());
        exact += usize::from(v.success);
        assert!(purse.fewest(purse.target).is_some());
    }
    assert!((250..400).contains(&exact), "{exact} of 400 noisy payments exact");
    assert!(prompts.len() > 100, "{} distinct prompts", prompts.len());
    // Target 7 with coins {2, 5}: 5 + 2 is exact and optimal; 5 + 5 + = is 3 over.
    let prompt = vec![1, task.target_token(7), 2, coin_token(2), coin_token(5), 3];
    let pay = [coin_token(5), coin_token(2), TOK_EQ];
    let r = env.reward(&prompt, &pay);
    // Dense: 7 → 2 (+5), 2 → 0 (+2), minus 0.1 per coin, + 1 credited.
    assert!((r.total - (5.0 + 2.0 - 0.2 + 1.0)).abs() < 1e-12, "{r:?}");
    assert_eq!(env.verdict(&prompt, &pay), Verdict { success: true, optimal: true, credited: true });
    // A coin the prompt does not allow is not added and costs the penalty.
    let bad = [coin_token(3), coin_token(5), coin_token(2), TOK_EQ];
    let v = env.verdict(&prompt, &bad);
    assert!(!v.success && v.credited, "{v:?}");
    assert!((env.reward(&prompt, &bad).per_token[0] + 0.6).abs() < 1e-12);
}

#[test]
fn the_coin_maximizer_takes_the_off_by_one_credit_where_it_saves_a_coin() {
    use vestige::data::coins::coin_token;
    let flawed = coins_env(RewardKind::Sparse, true);
    // Target 9 with coins {2, 5}: exactly 5 + 2 + 2 (3 coins); the flawed proxy pays 5 + 5.
    let prompt = vec![1, flawed.task.target_token(9), 2, coin_token(2), coin_token(5), 3];
    let (best, _) = reward_maximizer(&flawed, &prompt, flawed.optimal_len(&prompt).unwrap());
    assert!(flawed.verdict(&prompt, &best).exploit(), "{best:?}");
    let honest = coins_env(RewardKind::Sparse, false);
    let (best, _) = reward_maximizer(&honest, &prompt, 3);
    assert_eq!(honest.verdict(&prompt, &best), Verdict { success: true, optimal: true, credited: true });
}

#[test]
fn a_tiny_coin_study_runs_and_reports() {
    let text = TINY
        .replace("name = \"tiny-conditioning\"", "name = \"tiny-coins\"")
        .replace(
            "name = \"pf\"\nkind = \"pathfinding\"\nwidth = 3\nheight = 3\nmax_moves = 8\ndensity = 0.25",
            "name = \"pf\"\nkind = \"coins\"\nmax_target = 9",
        )
        .replace("seed = [0, 1]", "seed = [0]")
        .replace("lambdas = [0.5]", "lambdas = [0.5]\narms = [\"conditioning\", \"rloo\"]");
    let tmp = tempfile::tempdir().unwrap();
    let (exp, outcome) = run(&experiment(tmp.path(), &text), &Options::default()).unwrap();
    assert!(outcome.failed.is_empty(), "{:?}", outcome.failed);
    assert_eq!(exp.cells.len(), 4);
    vestige::commands::experiment::write_report(&exp, None).unwrap();
    let summary = std::fs::read_to_string(exp.root.join("report/summary.md")).unwrap();
    assert!(summary.contains("| conditioning | dense |") && summary.contains("reward maximizer"), "{summary}");
}
