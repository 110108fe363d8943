//! The decay template's design knobs: the measured-floor arm, phase 1 run to a criterion,
//! phase 2's optimizer state and warm-up, learning rates scaled with width, and the rule that
//! a shipped decay experiment's two tasks never share an input.

mod common;

use common::experiment;
use std::collections::BTreeSet;
use vestige::data::spec::TaskSpec;
use vestige::data::Split;
use vestige::lab::experiment::Experiment;
use vestige::train::config::{OptimizerStart, TaskNames};

const EXPERIMENT: &str = r#"name = "decay-knobs"
template = "decay"
threads = 2

[model]
scale = "100k"
max_positions = 16

[[tasks]]
name = "copy"
kind = "copy"
length = 4
vocab = 12
marker = 12

[[tasks]]
name = "reverse"
kind = "reverse"
length = 4
vocab = 12
marker = 13

[decay]
a = "copy"
b = "reverse"
together_steps = 40
together_until = 0.9
together_evals = 4
after_steps = 20
eval_samples = 8
batch_size = 8
lr = 4e-3
lr_after = 1e-3

[sweep]
"model.scale" = ["100k", "300k"]
seed = [0, 1]
"#;

fn load(text: &str) -> Experiment {
    let tmp = tempfile::tempdir().unwrap();
    Experiment::load(&experiment(tmp.path(), text)).unwrap()
}

#[test]
fn a_measured_floor_adds_a_twin_per_cell_trained_on_a_alone_for_phase_one_only() {
    let exp = load(EXPERIMENT);
    assert_eq!(exp.cells.len(), 8, "2 scales × 2 arms × 2 seeds");
    let (floor, decay): (Vec<_>, Vec<_>) = exp.cells.iter().partition(|c| c.id.contains("arm-floor"));
    assert_eq!((floor.len(), decay.len()), (4, 4));
    for c in &floor {
        let [together] = &c.config.phases[..] else { panic!("{}: one phase", c.id) };
        assert_eq!(together.mixture.keys().collect::<Vec<_>>(), ["copy"], "{}", c.id);
        assert!(together.stop.is_none(), "{}: a twin has no B to learn and runs the whole cap", c.id);
    }
    for c in &decay {
        let [together, after] = &c.config.phases[..] else { panic!("{}: two phases", c.id) };
        assert_eq!(together.mixture.len(), 2);
        let stop = together.stop.as_ref().unwrap();
        assert_eq!(stop.task, TaskNames::One("reverse".into()), "the criterion is B's");
        assert_eq!((stop.metric.as_str(), stop.at_least), ("exact_match", Some(0.9)));
        assert_eq!(after.optimizer_state, OptimizerStart::Carry, "the template carries AdamW's state");
        assert!(after.stop.is_none());
    }
    // The twin shares everything else: its phase 1 equals the decay cell's but for A's mixture.
    let name = |id: &str| id.split_once('_').unwrap().1.replace("arm-decay", "arm-floor");
    let twin = |id: &str| exp.cells.iter().find(|c| name(&c.id) == name(id)).unwrap();
    let d = decay[0];
    let f = twin(&d.id);
    assert_eq!((f.config.seed, f.config.model.d_model), (d.config.seed, d.config.model.d_model));
    assert_eq!(f.config.phases[0].optimizer, d.config.phases[0].optimizer);
    let chance = load(&EXPERIMENT.replace("lr_after = 1e-3", "lr_after = 1e-3\nfloor = \"chance\""));
    assert_eq!(chance.cells.len(), 4, "a chance floor has no twins");
}

#[test]
fn reset_with_warm_up_and_inverse_width_learning_rates_are_written_into_each_cell() {
    let text = EXPERIMENT.replace(
        "lr_after = 1e-3",
        "lr_after = 1e-3\noptimizer_state = \"reset\"\nwarmup_after_steps = 5\nlr_scaling = \"inverse_width\"\nfloor = \"chance\"",
    );
    let exp = load(&text);
    for c in &exp.cells {
        let [together, after] = &c.config.phases[..] else { panic!("two phases") };
        assert_eq!(after.optimizer_state, OptimizerStart::Reset);
        assert_eq!(after.schedule.warmup_steps, 5);
        let factor = 64.0 / c.config.model.d_model as f32;
        assert!((together.optimizer.lr - 4e-3 * factor).abs() < 1e-9, "{}: {}", c.id, together.optimizer.lr);
        assert!((after.optimizer.lr - 1e-3 * factor).abs() < 1e-9, "{}: {}", c.id, after.optimizer.lr);
    }
    let widths: BTreeSet<usize> = exp.cells.iter().map(|c| c.config.model.d_model).collect();
    assert_eq!(widths.len(), 2, "both widths are covered");
}

#[test]
fn bad_design_knobs_are_refused_naming_the_key() {
    for (from, to, key) in [
        ("together_until = 0.9", "together_until = 1.5", "decay.together_until"),
        ("lr_after = 1e-3", "lr_after = 1e-3\nwarmup_after_steps = 50", "decay.warmup_after_steps"),
        ("lr_after = 1e-3", "lr_after = 1e-3\nlr_scaling = \"sqrt\"", "unknown variant `sqrt`"),
        ("lr_after = 1e-3", "lr_after = 1e-3\nfloor = \"chance\"\narm = \"floor\"", "decay.arm"),
    ] {
        let tmp = tempfile::tempdir().unwrap();
        let e = Experiment::load(&experiment(tmp.path(), &EXPERIMENT.replace(from, to))).unwrap_err().to_string();
        assert!(e.contains(key), "{to}: {e}");
    }
}

/// The tasks of an experiment's first cell, by name.
fn tasks_of(exp: &Experiment, names: [&str; 2]) -> [TaskSpec; 2] {
    names.map(|n| exp.cells[0].config.tasks.iter().find(|t| t.name == n).unwrap().clone())
}

/// Whether two tasks can pose the same prompt: same prompt length and, at every position,
/// a token that both use there (over `n` held-out samples each). A position whose token sets
/// are disjoint (a task marker, a disjoint alphabet) tells the prompts apart.
fn can_share_an_input(a: &TaskSpec, b: &TaskSpec, n: u64) -> bool {
    let positions = |spec: &TaskSpec| {
        let task = spec.build().unwrap();
        let mut sets: Vec<BTreeSet<u32>> = Vec::new();
        let mut lengths = BTreeSet::new();
        for i in 0..n {
            let s = task.sample(0, Split::Eval, i);
            lengths.insert(s.prompt_len);
            for (p, t) in s.tokens[..s.prompt_len].iter().enumerate() {
                if sets.len() <= p {
                    sets.push(BTreeSet::new());
                }
                sets[p].insert(*t);
            }
        }
        (lengths, sets)
    };
    let ((la, sa), (lb, sb)) = (positions(a), positions(b));
    la.intersection(&lb).next().is_some() && sa.iter().zip(&sb).all(|(x, y)| x.intersection(y).next().is_some())
}

#[test]
fn the_check_for_shared_inputs_catches_unmarked_copy_and_reverse() {
    let exp = load(&EXPERIMENT.replace("marker = 12\n", "").replace("marker = 13\n", ""));
    let [a, b] = tasks_of(&exp, ["copy", "reverse"]);
    assert!(can_share_an_input(&a, &b, 300), "copy and reverse without markers pose the same prompts");
}

#[test]
fn no_two_tasks_of_a_shipped_decay_experiment_share_an_input() {
    let mut checked = 0;
    for entry in std::fs::read_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/experiments")).unwrap() {
        let path = entry.unwrap().path();
        let text = std::fs::read_to_string(&path).unwrap();
        if !text.lines().any(|l| l.trim() == "template = \"decay\"") {
            continue;
        }
        let exp = Experiment::load(&path).unwrap();
        for cell in &exp.cells {
            let names: Vec<&str> = cell.config.tasks.iter().map(|t| t.name.as_str()).collect();
            for (i, a) in cell.config.tasks.iter().enumerate() {
                for b in &cell.config.tasks[i + 1..] {
                    assert!(
                        !can_share_an_input(a, b, 200),
                        "{}: {} and {} of {names:?}",
                        path.display(),
                        a.name,
                        b.name
                    );
                }
            }
        }
        checked += 1;
    }
    assert!(checked >= 2, "the quickstart and the scaling study are decay experiments");
}

#[test]
fn half_life_is_measured_towards_the_twins_never_learned_level_read_from_the_store() {
    let tmp = tempfile::tempdir().unwrap();
    let text = EXPERIMENT
        .replace("\"model.scale\" = [\"100k\", \"300k\"]\nseed = [0, 1]", "seed = [0]")
        .replace("after_steps = 20", "after_steps = 12\nafter_evals = 4");
    let path = experiment(tmp.path(), &text);
    vestige::commands::experiment::run(&path, &vestige::lab::execute::Options::default()).unwrap();
    let root = tmp.path().join("decay-knobs");
    let store = vestige::store::Store::open(&root.join("vestige.db")).unwrap();
    let twin_rows = store.metrics("c001_arm-floor_seed-0").unwrap();
    let last_step = twin_rows.iter().map(|r| r.step).max().unwrap();
    let twin_b = twin_rows.iter().find(|r| r.step == last_step && r.task == "reverse" && r.metric == "loss").unwrap();
    assert!(twin_rows.iter().all(|r| r.phase == 0), "a twin has phase 1 only");
    let fits = std::fs::read_to_string(root.join("report").join("fits.csv")).unwrap();
    let header: Vec<&str> = fits.lines().next().unwrap().split(',').collect();
    let floor_col = header.iter().position(|h| *h == "floor").unwrap();
    let rows: Vec<&str> = fits.lines().skip(1).collect();
    assert_eq!(rows.len(), 1, "the twin is not a decay cell:\n{fits}");
    let floor: f64 = rows[0].split(',').nth(floor_col).unwrap().parse().unwrap();
    assert!((floor - twin_b.value).abs() < 1e-3, "floor {floor} vs twin's reverse loss {}", twin_b.value);
    assert!(twin_b.value > (26f64).ln() * 0.5, "a model that never saw reverse is far from solving it");
    let summary = std::fs::read_to_string(root.join("report").join("summary.md")).unwrap();
    assert!(summary.contains("2 of 2 cells finished (1 decay cells and 1 floor twins)"), "{summary}");
    assert!(summary.contains("B in floor twin"), "{summary}");
    assert!(summary.contains("Kalajdzievski (2024)'s joint form"), "one size: the table is there, without rows");
}

#[test]
fn a_decay_search_samples_whole_configurations_ranks_them_and_refuses_halving() {
    let tmp = tempfile::tempdir().unwrap();
    let searched = EXPERIMENT
        .replace(
            "\"model.scale\" = [\"100k\", \"300k\"]\nseed = [0, 1]",
            "\"decay.lr_after\" = [1e-3, 3e-2]\nseed = [0]",
        )
        .replace("after_steps = 20", "after_steps = 12\nafter_evals = 4")
        + "\n[search]\naxes = [\"decay.lr_after\"]\nbudget_cells = 3\n";
    let path = experiment(tmp.path(), &searched);
    let wrong =
        vestige::lab::execute::Options { search: Some("maximize=backdoor.half_life".into()), ..Default::default() };
    let e = vestige::lab::execute::run(&path, &wrong).unwrap_err().to_string();
    assert!(e.contains("expected maximize=decay.half_life"), "{e}");

    let opts = vestige::lab::execute::Options { search: Some("maximize=decay.half_life".into()), ..Default::default() };
    let (exp, outcome) = vestige::lab::execute::run(&path, &opts).unwrap();
    assert_eq!(outcome.failed, []);
    assert_eq!(
        outcome.ran.len(),
        2,
        "one configuration (a decay cell and its floor twin) fits 3 cells: {:?}",
        outcome.ran
    );
    let lr = |id: &String| exp.cells.iter().find(|c| &c.id == id).unwrap().point[0].1.clone();
    assert_eq!(lr(&outcome.ran[0]), lr(&outcome.ran[1]), "a configuration's twin runs with it");
    let page = vestige::commands::experiment::write_report(&exp, outcome.search.as_deref()).unwrap().unwrap();
    let summary = std::fs::read_to_string(page.with_file_name("summary.md")).unwrap();
    assert!(summary.contains("Search ranking") && summary.contains("| 1 | lr_after="), "{summary}");
    assert!(summary.contains("The search did not select the other 2 cells of the grid."), "{summary}");
    assert!(!summary.contains("(not run)"), "unselected cells are counted, not listed: {summary}");

    let halving = path.with_file_name("halving.toml");
    std::fs::write(&halving, std::fs::read_to_string(&path).unwrap() + "method = \"halving\"\n").unwrap();
    let e = Experiment::load(&halving).unwrap_err().to_string();
    assert!(e.contains("search.method") && e.contains("method = \"random\""), "{e}");
}
