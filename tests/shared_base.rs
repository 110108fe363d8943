//! A first phase shared between runs: a run that adopts a published base ends in the same
//! bits as one that trains the phase itself; the cells of a study share one base per
//! (model, seed), and a change to the base's config trains a new one.

use std::path::{Path, PathBuf};
use vestige::lab::experiment::Experiment;
use vestige::store::read_csv;
use vestige::train::build::build;
use vestige::train::config::RunConfig;
use vestige::train::run::{run_or_resume, RunPaths};
use vestige::train::shared_base::key;

/// `experiments/backdoor-small.toml` under `dir` with its sweep replaced by `sweep`.
fn small(dir: &Path, sweep: &str) -> PathBuf {
    let text = std::fs::read_to_string("experiments/backdoor-small.toml").unwrap();
    let old = "\"backdoor.plant_optimizer|backdoor.plant_lr\" = [[\"adamw\", 3e-3], [\"sgd\", 0.3]]\nseed = [0, 1]";
    assert!(text.contains(old), "the shipped sweep changed; update this test");
    let text = text
        .replacen("threads = 2", &format!("threads = 2\nout_dir = \"{}\"", dir.display()), 1)
        .replace(old, sweep)
        .replace("continue_steps = 300", "continue_steps = 40");
    let path = dir.join("exp.toml");
    std::fs::write(&path, text).unwrap();
    path
}

/// Runs `cfg` into `dir`, sharing first phases through `bases` when given.
fn run(cfg: &RunConfig, dir: &Path, bases: Option<&Path>) {
    let text = toml::to_string(cfg).unwrap();
    let paths = RunPaths { bases: bases.map(Path::to_path_buf), ..RunPaths::in_dir(dir.to_path_buf(), dir.join("db")) };
    run_or_resume(cfg.clone(), build(cfg).unwrap(), text, paths).unwrap();
}

/// `(phase, step, tokens, task, metric, value bits)` of a run's metrics.csv, sorted (the
/// order of the rows logged at one step is not part of the record).
fn rows(dir: &Path) -> Vec<(u32, u64, u64, String, String, u64)> {
    let rows = read_csv(&dir.join("metrics.csv")).unwrap();
    let mut rows: Vec<_> =
        rows.into_iter().map(|r| (r.phase, r.step, r.tokens, r.task, r.metric, r.value.to_bits())).collect();
    rows.sort();
    rows
}

/// The published bases in a bases folder.
fn bases(dir: &Path) -> usize {
    std::fs::read_dir(dir).unwrap().filter(|e| e.as_ref().unwrap().path().is_dir()).count()
}

#[test]
fn a_run_that_adopts_a_published_base_ends_in_the_bits_of_one_that_trains_it() {
    let tmp = tempfile::tempdir().unwrap();
    let sweep = "\"backdoor.plant_optimizer|backdoor.plant_lr\" = [[\"adamw\", 3e-3], [\"sgd\", 0.3]]\nseed = [0]";
    let exp = Experiment::load(&small(tmp.path(), sweep)).unwrap();
    let (a, b) = (&exp.cells[0].config, &exp.cells[1].config);
    let shared = tmp.path().join("bases");
    run(a, &tmp.path().join("a"), Some(&shared));
    assert_eq!(bases(&shared), 1, "the first run publishes its pretraining");
    run(b, &tmp.path().join("b-adopted"), Some(&shared));
    assert_eq!(bases(&shared), 1, "the second planting arm adopts it instead of training another");
    run(b, &tmp.path().join("b-alone"), None);
    let (adopted, alone) = (rows(&tmp.path().join("b-adopted")), rows(&tmp.path().join("b-alone")));
    assert!(adopted.iter().any(|r| r.0 == 2) && adopted.iter().any(|r| r.0 == 0), "every phase is logged");
    let first = adopted.iter().zip(&alone).position(|(a, b)| a != b);
    assert_eq!(first.map(|i| (&adopted[i], &alone[i])), None, "adopting the base is bit-identical to training it");
    assert_eq!(adopted.len(), alone.len());
    let pretrain =
        |rows: &[(u32, u64, u64, String, String, u64)]| rows.iter().filter(|r| r.0 == 0).cloned().collect::<Vec<_>>();
    assert_eq!(pretrain(&rows(&tmp.path().join("a"))), pretrain(&alone), "both arms saw the same base");
}

#[test]
fn a_study_shares_one_base_per_scale_and_seed_and_a_changed_base_config_keys_a_new_one() {
    let tmp = tempfile::tempdir().unwrap();
    let sweep = "\"backdoor.plant_optimizer|backdoor.plant_lr\" = [[\"adamw\", 3e-3], [\"sgd\", 0.3]]\n\
                 \"model.scale\" = [\"100k\", \"300k\"]\nseed = [0, 1]";
    let exp = Experiment::load(&small(tmp.path(), sweep)).unwrap();
    assert_eq!(exp.cells.len(), 8);
    let key_of = |cfg: &RunConfig| key(cfg, &build(cfg).unwrap().model).unwrap();
    let mut keys: Vec<String> = exp.cells.iter().map(|c| key_of(&c.config)).collect();
    keys.sort();
    keys.dedup();
    assert_eq!(keys.len(), 4, "one base per (scale, seed), shared by both planting arms");
    let planned = vestige::lab::plan::plan(&exp).unwrap();
    let pretrain = |c: &vestige::lab::plan::PlannedCell| 6.0 * c.params as f64 * (150 * 16 * 24) as f64;
    let sum: f64 = planned.iter().map(|c| c.flops).sum();
    let once: f64 = planned.iter().map(pretrain).sum::<f64>() / 2.0;
    let total = vestige::lab::plan::total_flops(&planned);
    assert!(
        (total - (sum - once)).abs() < 1e-6 * sum,
        "the plan counts each shared pretraining once: {total} vs {sum}"
    );

    let base = exp.cells[0].config.clone();
    let mut changed = base.clone();
    changed.phases[0].optimizer.lr *= 2.0;
    assert_ne!(key_of(&changed), key_of(&base), "a changed pretraining LR is another base");
    let mut changed = base.clone();
    changed.phases[0].steps += 1;
    assert_ne!(key_of(&changed), key_of(&base), "so is a longer pretraining");
    let mut later = base.clone();
    later.phases[1].optimizer.lr *= 2.0;
    later.phases[2].steps += 1;
    assert_eq!(key_of(&later), key_of(&base), "later phases do not change the base");
    let mut carry = base.clone();
    carry.phases[1].optimizer_state = vestige::train::config::OptimizerStart::Carry;
    assert_ne!(key_of(&carry), key_of(&base), "a next phase that carries the optimizer state needs it saved");

    let one = "\"backdoor.plant_optimizer|backdoor.plant_lr\" = [[\"adamw\", 3e-3], [\"sgd\", 0.3]]\nseed = [0]";
    let (exp, outcome) = vestige::lab::execute::run(&small(tmp.path(), one), &Default::default()).unwrap();
    assert_eq!((outcome.ran.len(), outcome.failed.len()), (2, 0), "{:?}", outcome.failed);
    assert_eq!(bases(&exp.bases_dir()), 1, "the lab trains the shared pretraining once");
}

#[test]
fn a_worker_passes_over_cells_whose_base_another_worker_is_still_training() {
    use std::cell::RefCell;
    use vestige::lab::execute::Queue;
    let key = |k: &str| Some(k.to_string());
    let bases = [key("a"), key("a"), key("b"), None, key("a")];
    let published = RefCell::new(Vec::<String>::new());
    let is_published = |k: &str| published.borrow().iter().any(|p| p == k);
    let mut q = Queue { pending: (0..bases.len()).collect(), training: Vec::new() };
    assert_eq!(q.take(&bases, &is_published), Some((0, key("a"))), "the first to need base a trains it");
    assert_eq!(q.take(&bases, &is_published), Some((2, key("b"))), "cell 1 would wait on a's lock: passed over");
    assert_eq!(q.take(&bases, &is_published), Some((3, None)), "no base");
    assert_eq!(q.take(&bases, &is_published), Some((1, None)), "nothing else to start: it waits on a's lock");
    published.borrow_mut().push("a".into());
    assert_eq!(q.take(&bases, &is_published), Some((4, None)), "a published while its trainer's cell runs on");
    q.done(key("a"));
    q.done(key("b"));
    assert!(q.training.is_empty() && q.take(&bases, &is_published).is_none());
}
