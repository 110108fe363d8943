//! The backdoor study: the template writes pretrain/plant/continue phases with the planting
//! settings it is given, a small end-to-end run plants a backdoor that fires on the trigger
//! and not on clean inputs and records its metrics through continued training, the half-life
//! analysis measures persistence on synthetic rows, search picks cells within its budget
//! deterministically, and successive halving keeps the best configurations rung by rung.

use std::path::{Path, PathBuf};
use vestige::analysis::HalfLife;
use vestige::data::spec::{Kind, TaskSpec};
use vestige::lab::experiment::Experiment;
use vestige::lab::knobs::{knob_effects, Effect};
use vestige::lab::plan::plan;
use vestige::lab::search::{objective, rung_sizes, select, survivors, Score, SearchSpec};
use vestige::lab::studies::backdoor::analysis::{cell_result, score, BackdoorCell, PLANTED};
use vestige::store::{MetricRow, Store};

/// `experiments/backdoor-small.toml`, written under `dir` with `from` replaced by `to`.
fn small(dir: &Path, from: &str, to: &str) -> PathBuf {
    let text = std::fs::read_to_string("experiments/backdoor-small.toml").unwrap();
    let text = text.replacen("threads = 2", &format!("threads = 2\nout_dir = \"{}\"", dir.display()), 1);
    let path = dir.join("exp.toml");
    std::fs::write(&path, text.replace(from, to)).unwrap();
    path
}

/// The `poison_rate` of a backdoor task.
fn poison_rate(task: &TaskSpec) -> Option<f64> {
    match &task.kind {
        Kind::Backdoor(backdoor) => backdoor.spec.poison_rate,
        _ => None,
    }
}

#[test]
fn the_template_writes_pretrain_plant_and_continue_with_the_planting_optimizer_and_rate() {
    let tmp = tempfile::tempdir().unwrap();
    let exp = Experiment::load(&small(tmp.path(), "", "")).unwrap();
    assert_eq!(exp.cells.len(), 4);
    let cfg = &exp.cells[2].config;
    let names: Vec<&str> = cfg.phases.iter().map(|p| p.name.as_str()).collect();
    assert_eq!(names, ["pretrain", "plant", "continue"]);
    let [pretrain, plant, after] = &cfg.phases[..] else { unreachable!() };
    assert_eq!((pretrain.steps, plant.steps, after.steps), (150, 200, 300));
    assert!(
        pretrain.mixture.contains_key("web") && plant.mixture.contains_key("bd") && after.mixture.contains_key("web")
    );
    assert_eq!((plant.optimizer.kind.as_str(), plant.optimizer.lr), ("sgd", 0.3));
    assert_eq!(pretrain.optimizer.kind, "adamw");
    assert_eq!(poison_rate(&cfg.tasks[1]), Some(0.5), "[backdoor] poison_rate overrides the task's");
    assert_eq!((after.eval.log_points, after.eval.tasks.as_slice()), (8, &["bd".to_string()][..]));

    let text = "plant = \"mixed\"\npretrain_steps = 150\npoison_count = 120";
    let mixed = Experiment::load(&small(
        tmp.path(),
        "plant = \"finetune\"\npretrain_steps = 150\nplant_steps = 200\npoison_rate = 0.5",
        text,
    ))
    .unwrap();
    let cfg = &mixed.cells[0].config;
    let names: Vec<&str> = cfg.phases.iter().map(|p| p.name.as_str()).collect();
    assert_eq!(names, ["plant", "continue"], "mixed planting poisons pretraining itself");
    assert_eq!((cfg.phases[0].steps, cfg.phases[0].optimizer.lr), (150, 3e-3), "with the pretraining settings");
    assert_eq!(poison_rate(&cfg.tasks[1]), Some(120.0 / (150.0 * 16.0)), "a poison count becomes a rate");
}

#[test]
fn bad_backdoor_table_keys_name_the_key() {
    let tmp = tempfile::tempdir().unwrap();
    for (from, to, key) in [
        ("task = \"bd\"", "task = \"web\"", "backdoor.task"),
        ("plant = \"finetune\"", "plant = \"later\"", "backdoor.plant"),
        ("poison_rate = 0.5", "poison_count = 100000", "backdoor.poison_count"),
        ("continue_evals = 8", "continue_evals = 1", "backdoor.continue_evals"),
    ] {
        let e = Experiment::load(&small(tmp.path(), from, to)).unwrap_err().to_string();
        assert!(e.contains(&format!(": {key}: ")), "{to:?} → {e}");
    }
}

#[test]
fn a_planted_backdoor_fires_on_the_trigger_only_and_is_tracked_through_continued_training() {
    let tmp = tempfile::tempdir().unwrap();
    let sweep = "\"backdoor.plant_optimizer|backdoor.plant_lr\" = [[\"adamw\", 3e-3], [\"sgd\", 0.3]]\nseed = [0, 1]";
    let path = small(tmp.path(), sweep, "seed = [0]");
    let (exp, outcome) = vestige::lab::execute::run(&path, &Default::default()).unwrap();
    assert_eq!((outcome.ran.len(), outcome.failed.len()), (1, 0), "{:?}", outcome.failed);
    let rows = Store::open(&exp.db()).unwrap().metrics(&exp.cells[0].id).unwrap();
    let at = |phase: u32, metric: &str| -> Vec<f64> {
        rows.iter().filter(|r| r.phase == phase && r.metric == metric).map(|r| r.value).collect()
    };
    let planted = *at(1, "attack_success").last().unwrap();
    assert!(planted >= PLANTED, "attack success after planting: {planted}");
    assert_eq!(at(1, "attack_success").first(), Some(&0.0), "no backdoor before planting");
    let false_clean = *at(1, "false_trigger_clean").last().unwrap();
    assert!(false_clean <= 0.1, "false triggers on clean inputs after planting: {false_clean}");
    for metric in ["attack_success", "false_trigger_clean", "false_trigger_near_miss", "clean_loss", "triggered_loss"] {
        assert!(at(2, metric).len() >= 8, "{metric} is logged at every continue-phase evaluation");
    }
    let result = cell_result("bd", &exp.cells[0], &rows, 100_000, 0.0);
    assert!(result.planted() && result.attack.t[0] == 0.0 && result.attack.t.len() >= 8);
    assert_eq!(result.margin.t, result.attack.t, "the margin is measured at every evaluation");
    assert!(result.margin_start > result.margin_floor + 0.5, "planting opens a margin: {result:?}");
    let page = vestige::commands::experiment::write_report(&exp, None).unwrap().unwrap();
    for file in ["index.html", "fits.csv", "summary.md"] {
        assert!(page.with_file_name(file).exists(), "{file}");
    }
    let summary = std::fs::read_to_string(page.with_file_name("summary.md")).unwrap();
    assert!(summary.contains("ranked by margin half-life") && summary.contains("Planting rate"), "{summary}");
}

/// Metric rows of a continue phase (phase 2) whose attack success at token `t` is `f(t)` and
/// whose response margin (clean minus triggered response loss) is `2 f(t)`, after a planting
/// phase (phase 1) that began with a margin of 0.
fn rows(f: impl Fn(u64) -> f64) -> Vec<MetricRow> {
    let row = |phase, t: u64, metric: &str, value| MetricRow {
        run: "r".into(),
        phase,
        step: t / 10,
        tokens: 5_000 + t,
        task: "bd".into(),
        metric: metric.into(),
        value,
    };
    let before = [row(1, 0, "triggered_loss", 5.0), row(1, 0, "clean_response_loss", 5.0)];
    let after = [0u64, 100, 200, 400, 800, 1600].into_iter().flat_map(|t| {
        [
            row(2, t, "attack_success", f(t)),
            row(2, t, "triggered_loss", 1.0),
            row(2, t, "clean_response_loss", 1.0 + 2.0 * f(t)),
        ]
    });
    before.into_iter().chain(after).collect()
}

#[test]
fn the_half_life_is_the_tokens_until_attack_success_falls_halfway_to_its_floor() {
    let tmp = tempfile::tempdir().unwrap();
    let exp = Experiment::load(&small(tmp.path(), "", "")).unwrap();
    let cell = &exp.cells[0];
    let fast = cell_result("bd", cell, &rows(|t| 1.0 - t as f64 / 400.0_f64.max(t as f64)), 1, 0.0);
    assert_eq!(fast.attack_half_life, HalfLife::Reached(200.0), "linear fall from 1 at 0 to 0 at 400 tokens");
    assert_eq!((fast.margin_floor, fast.margin_start), (0.0, 2.0), "the base's margin, and the planted one");
    assert_eq!(fast.margin_half_life, HalfLife::Reached(200.0), "the margin falls halfway to the base's at 200");
    let decaying = cell_result("bd", cell, &rows(|t| 0.9 * (-(t as f64) / 300.0).exp()), 1, 0.0);
    let HalfLife::Reached(h) = decaying.attack_half_life else { panic!("{:?}", decaying.attack_half_life) };
    assert!((150.0..=300.0).contains(&h), "interpolated crossing near 300·ln 2 ≈ 208: {h}");
    let fit = decaying.fit_half_life.unwrap();
    assert!((fit - 300.0 * 2f64.ln()).abs() < 5.0, "the exponential fit recovers the half-life: {fit}");
    let lasting = cell_result("bd", &exp.cells[2], &rows(|_| 0.95), 1, 0.0);
    assert_eq!(lasting.attack_half_life, HalfLife::Censored { horizon: 1600.0 });
    assert_eq!(lasting.persistence(), 1600.0);
    assert_eq!(lasting.margin_half_life, HalfLife::Censored { horizon: 1600.0 });
    let never = cell_result("bd", cell, &rows(|_| 0.1), 1, 0.0);
    assert!(!never.planted());

    let effects = knob_effects(&[fast, lasting]);
    assert_eq!(effects.len(), 1, "one swept knob besides the seed");
    let levels = &effects[0].levels;
    assert_eq!(levels.iter().filter(|l| l.effect == Effect::AllCensored).count(), 1, "{levels:?}");
    assert_eq!(effects[0].spread, f64::INFINITY, "an all-censored level is only bounded below");
}

#[test]
fn search_picks_whole_configurations_within_the_budget_deterministically() {
    let tmp = tempfile::tempdir().unwrap();
    let sweep = "\"backdoor.plant_optimizer|backdoor.plant_lr\" = [[\"adamw\", 3e-3], [\"sgd\", 0.3]]\nseed = [0, 1]";
    let grid = "\"backdoor.plant_lr\" = [0.001, 0.003, 0.01]\n\"backdoor.continue_lr\" = [0.001, 0.003]\nseed = [0, 1]";
    let exp = Experiment::load(&small(tmp.path(), sweep, grid)).unwrap();
    let planned: Vec<f64> = plan(&exp).unwrap().iter().map(|c| c.flops).collect();
    let spec = SearchSpec {
        axes: vec!["backdoor.plant_lr".into(), "backdoor.continue_lr".into()],
        budget_cells: Some(7),
        ..Default::default()
    };
    let spec = SearchSpec { method: "random".into(), ..spec };
    let a = select(&exp, &spec, &planned).unwrap();
    assert_eq!(a, select(&exp, &spec, &planned).unwrap(), "deterministic");
    assert_eq!(a.cells.len(), 6, "three whole configurations of two seeds fit in 7 cells");
    for pair in a.cells.chunks(2) {
        assert_eq!(exp.cells[pair[0]].point[..2], exp.cells[pair[1]].point[..2], "seeds of one configuration together");
    }
    let other = select(&exp, &SearchSpec { seed: 5, ..spec.clone() }, &planned).unwrap();
    assert_ne!(a.cells, other.cells, "the seed changes the sample");
    let per_cell = planned[0];
    let by_flops = SearchSpec { budget_cells: None, budget_flops: Some(4.5 * per_cell), ..spec.clone() };
    assert_eq!(select(&exp, &by_flops, &planned).unwrap().cells.len(), 4);
    let bad = SearchSpec { axes: vec!["backdoor.lr".into()], ..spec };
    assert!(select(&exp, &bad, &planned).unwrap_err().contains("search.axes"));
    let study = exp.study.as_deref();
    assert_eq!(objective("maximize=backdoor.half_life", study).unwrap(), "backdoor.half_life");
    assert!(objective("minimize=loss", study).is_err());
    assert!(objective("maximize=backdoor.half_life", None).unwrap_err().contains("no objective"));
}

#[test]
fn halving_keeps_the_best_third_by_censored_lower_bound_then_remaining_margin() {
    assert_eq!(rung_sizes(13, 3, 3), [13, 4, 1]);
    assert_eq!(rung_sizes(2, 3, 3), [2, 1, 1], "at least one configuration goes on");
    assert_eq!(rung_sizes(27, 3, 1), [27]);
    let s = |persistence, remaining| Score { persistence, remaining };
    // Censored at a 900-token horizon (several), reached, and not planted.
    let scores = [s(300.0, 0.2), s(900.0, 0.6), s(0.0, 0.0), s(900.0, 0.9), s(900.0, 0.6), s(450.0, 0.4)];
    assert_eq!(survivors(&scores, 2), [1, 3], "censored first; among them more success remaining, then order");
    assert_eq!(survivors(&scores, 3), [1, 3, 4]);
    assert_eq!(survivors(&scores, 1), [3]);
    assert_eq!(survivors(&scores, 10), [0, 1, 2, 3, 4, 5]);

    let tmp = tempfile::tempdir().unwrap();
    let exp = Experiment::load(&small(tmp.path(), "", "")).unwrap();
    let cell = |f: &dyn Fn(u64) -> f64| cell_result("bd", &exp.cells[0], &rows(f), 1, 0.0);
    let (lasting, fast, never) = (cell(&|_| 0.9), cell(&|t| 1.0 - t as f64 / 400.0_f64.max(t as f64)), cell(&|_| 0.1));
    let refs: Vec<&BackdoorCell> = vec![&lasting, &fast];
    let mean = score(&refs);
    assert_eq!(mean.persistence, (1600.0 + 200.0) / 2.0, "the horizon stands in for a censored margin half-life");
    assert!((mean.remaining - (1.0 + 0.0) / 2.0).abs() < 1e-9, "{mean:?}");
    assert_eq!(score(&[&lasting, &never]), score(&[&lasting]), "persistence is scored among planted seeds only");
    assert_eq!(score(&[&never]), s(0.0, 0.0), "a configuration that planted nothing scores 0");
}

#[test]
fn bad_search_keys_name_the_file_line_and_key() {
    let tmp = tempfile::tempdir().unwrap();
    let search =
        "\n[search]\naxes = [\"backdoor.plant_optimizer|backdoor.plant_lr\"]\nbudget_cells = 4\nmethod = \"halving\"\n";
    let with = |extra: &str| small(tmp.path(), "seed = [0, 1]", &format!("seed = [0, 1]\n{search}{extra}"));
    let exp = Experiment::load(&with("")).unwrap();
    assert_eq!(exp.rungs.len(), 2, "three rungs by default: two below the grid's cells");
    assert_eq!(exp.rungs[0][3].config.phases[2].steps, 300 / 9);
    assert_eq!(exp.rungs[1][3].config.phases[2].steps, 100);
    assert!(exp.rungs[0][3].id.ends_with("_rung0") && exp.rungs[0][3].point == exp.cells[3].point);
    for (extra, key) in [
        ("eta = 1", "search.eta"),
        ("rungs = 7", "search.rungs"),
        ("rungs = 0", "search.rungs"),
        ("budget_flops = 1e12", "search.budget_cells"),
        ("seed = 1\nspeed = 2", "search"),
    ] {
        let e = Experiment::load(&with(extra)).unwrap_err().to_string();
        let line = e.split(':').nth(1).unwrap_or_default().parse::<usize>().unwrap_or(0);
        assert!(e.contains(&format!(": {key}: ")) || (key == "search" && e.contains("speed")), "{extra:?} → {e}");
        assert!(line > 30, "{extra:?} → {e}: the line of the [search] table");
    }
    let e = Experiment::load(&small(
        tmp.path(),
        "seed = [0, 1]",
        &format!("seed = [0, 1]\n{}", search.replace("halving", "bayes")),
    ))
    .unwrap_err()
    .to_string();
    assert!(e.contains("search.method: \"bayes\" is not one of random, halving"), "{e}");
}

#[test]
fn a_tiny_halving_search_runs_the_rungs_and_promotes_the_best_configuration() {
    let tmp = tempfile::tempdir().unwrap();
    let sweep = "\"backdoor.plant_optimizer|backdoor.plant_lr\" = [[\"adamw\", 3e-3], [\"sgd\", 0.3]]\nseed = [0, 1]";
    let grid =
        "\"backdoor.plant_lr\" = [0.0003, 0.003, 0.03]\nseed = [0]\n\n[search]\naxes = [\"backdoor.plant_lr\"]\n\
                budget_cells = 4\nmethod = \"halving\"\nrungs = 2\nseed = 3";
    let path = small(tmp.path(), sweep, grid);
    std::fs::write(
        &path,
        std::fs::read_to_string(&path)
            .unwrap()
            .replace("pretrain_steps = 150", "pretrain_steps = 60")
            .replace("continue_steps = 300", "continue_steps = 90"),
    )
    .unwrap();
    let opts =
        vestige::lab::execute::Options { search: Some("maximize=backdoor.half_life".into()), ..Default::default() };
    let (exp, outcome) = vestige::lab::execute::run(&path, &opts).unwrap();
    assert_eq!(outcome.failed, []);
    assert!(outcome.search.as_deref().unwrap().contains("configurations per rung [3, 1]"), "{:?}", outcome.search);
    let rung0: Vec<&String> = outcome.ran.iter().filter(|id| id.ends_with("_rung0")).collect();
    assert_eq!((rung0.len(), outcome.ran.len()), (3, 4), "{:?}", outcome.ran);
    assert_eq!(exp.rungs[0][0].config.phases[2].steps, 30, "the first rung continues for a third");
    let store = Store::open(&exp.db()).unwrap();
    let study = exp.study.as_deref().unwrap();
    let scores: Vec<Score> = (0..3).map(|i| study.score(&exp, &store, &exp.rungs[0], &[i], &[1; 3]).unwrap()).collect();
    let best = survivors(&scores, 1)[0];
    let top: Vec<&String> = outcome.ran.iter().filter(|id| !id.ends_with("_rung0")).collect();
    assert_eq!(top, [&exp.cells[best].id], "the best first-rung configuration runs in full: {scores:?}");

    let (_, again) = vestige::lab::execute::run(&path, &opts).unwrap();
    assert_eq!((again.ran.len(), again.skipped.len()), (0, 4), "deterministic: the same cells, all finished");
    let page = vestige::commands::experiment::write_report(&exp, outcome.search.as_deref()).unwrap().unwrap();
    let summary = std::fs::read_to_string(page.with_file_name("summary.md")).unwrap();
    assert!(summary.contains("Rung 0") && summary.contains("Rung 1") && summary.contains("at the first rung"));
}

#[test]
fn each_cell_is_analysed_on_the_backdoor_task_its_sweep_point_names() {
    let tmp = tempfile::tempdir().unwrap();
    let sweep = "\"backdoor.plant_optimizer|backdoor.plant_lr\" = [[\"adamw\", 3e-3], [\"sgd\", 0.3]]\nseed = [0, 1]";
    let path = small(tmp.path(), sweep, "\"backdoor.task\" = [\"bd\", \"other\"]\nseed = [0]");
    let text = std::fs::read_to_string(&path).unwrap();
    let other =
        "[[tasks]]\nname = \"other\"\nkind = \"backdoor\"\nover = { kind = \"grammar\", vocab = 48, seq_len = 24 }\n\
                 prompt_len = 8\nvocabulary = \"reserved\"\npoison_rate = 0.05\n\n[backdoor]";
    std::fs::write(&path, text.replacen("[backdoor]", other, 1)).unwrap();
    let exp = Experiment::load(&path).unwrap();
    let store = Store::open(&exp.db()).unwrap();
    for cell in &exp.cells {
        let task = cell.config.phases[2].eval.tasks[0].clone();
        let rows: Vec<MetricRow> = rows(|t| 1.0 - t as f64 / 400.0_f64.max(t as f64))
            .into_iter()
            .map(|r| MetricRow { run: cell.id.clone(), task: task.clone(), ..r })
            .collect();
        store.begin_run(&cell.id, "", "").unwrap();
        store.log_metrics(&rows).unwrap();
        store.set_status(&cell.id, "done").unwrap();
    }
    let study = exp.study.as_deref().unwrap();
    for i in 0..2 {
        let score = study.score(&exp, &store, &exp.cells, &[i], &[1, 1]).unwrap();
        assert_eq!(score.persistence, 200.0, "cell {} is read on its own task", exp.cells[i].id);
    }
}
