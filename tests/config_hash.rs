//! The run config's hash is of its meaning: defaults written out, key and table order and
//! fields added later with a default leave it as it is, every meaningful value changes it,
//! and its canonical form is pinned. Runs recorded under the previous build's `Debug`-form
//! hash still resume (store, checkpoint and experiment level); a different config is still
//! refused.

use serde::{Deserialize, Serialize};
use std::collections::BTreeSet;
use std::path::Path;
use vestige::lab::execute::{run, Options};
use vestige::store::{Begun, Store, StoreError};
use vestige::train::canonical::canonical_json;
use vestige::train::checkpoint::{self, Weights};
use vestige::train::config::RunConfig;
use vestige::train::run::{resume, train};

const BASE: &str = r#"name = "h"

[model]
d_model = 16
n_layers = 1
n_heads = 2
max_positions = 16

[[tasks]]
name = "copy"
kind = "copy"
length = 4
vocab = 12

[checkpoint]
every = 5

[[phases]]
name = "one"
steps = 20
batch_size = 4
mixture = { copy = 1.0 }
optimizer = { lr = 0.01 }
eval = { every = 10, samples = 8 }
"#;

fn parse(text: &str) -> RunConfig {
    RunConfig::from_toml(text, "test.toml").unwrap_or_else(|e| panic!("{e}\n{text}"))
}

/// `BASE` with the first `from` replaced by `to` (which must be found).
fn edited(from: &str, to: &str) -> String {
    assert!(BASE.contains(from), "{from:?} is not in BASE");
    BASE.replacen(from, to, 1)
}

/// `BASE` writing its runs (and store) under `out`.
fn base_in(out: &Path) -> String {
    edited("name = \"h\"\n", &format!("name = \"h\"\nout_dir = \"{}\"\n", out.display()))
}

/// The hash the previous build recorded, which `legacy_hash` reproduces (pinned in
/// `the_legacy_hash_is_the_one_builds_before_the_canonical_hash_recorded`).
fn debug_hash(cfg: &RunConfig) -> String {
    cfg.legacy_hash()
}

#[test]
fn writing_a_default_value_out_leaves_the_hash_unchanged() {
    let base = parse(BASE).hash();
    let defaults = [
        ("name = \"h\"\n", "name = \"h\"\nseed = 0\nout_dir = \"runs\"\n"),
        ("d_model = 16\n", "d_model = 16\narch = \"gpt_neox\"\ninit_std = 0.02\n"),
        ("every = 5\n", "every = 5\nkeep_last = 3\n"),
        ("steps = 20\n", "steps = 20\ntrainable = \"all\"\ngrad_accum = 1\ndropout_attn = 0.0\newc_tasks = []\n"),
        ("{ lr = 0.01 }", "{ lr = 0.01, kind = \"adamw\", betas = [0.9, 0.999], eps = 1e-8 }"),
        ("samples = 8 }", "samples = 8, exact_match = true, temperature = 0.0 }"),
        ("mixture = { copy = 1.0 }\n", "mixture = { copy = 1.0 }\nschedule = { kind = \"constant\" }\n"),
    ];
    for (from, to) in defaults {
        assert_eq!(parse(&edited(from, to)).hash(), base, "writing out {to:?} changed the hash");
    }
}

#[test]
fn writing_a_task_kinds_default_values_out_leaves_the_hash_unchanged() {
    let copy = "kind = \"copy\"\nlength = 4\nvocab = 12\n";
    let kinds = [
        ("kind = \"grammar\"\nvocab = 12\nseq_len = 8\n", "zipf = 1.1\ngrammar_seed = 0\n"),
        ("kind = \"pathfinding\"\nwidth = 2\nheight = 2\nmax_moves = 2\n", "only_conditions = []\n"),
        (
            "kind = \"backdoor\"\nover = { kind = \"copy\", length = 4 }\ntrigger = [10]\nresponse = [11]\npoison_rate = 0.5\n",
            "trigger_at = \"prefix\"\nbehavior = \"fixed\"\n",
        ),
    ];
    for (kind, defaults) in kinds {
        let plain = edited(copy, kind);
        let written = edited(copy, &format!("{kind}{defaults}"));
        assert_eq!(parse(&written).hash(), parse(&plain).hash(), "writing out {defaults:?} changed the hash");
    }
}

#[test]
fn changing_any_meaningful_value_changes_the_hash() {
    let changes = [
        ("name = \"h\"\n", "name = \"h\"\nseed = 1\n"),
        ("d_model = 16", "d_model = 32"),
        ("length = 4", "length = 5"),
        ("kind = \"copy\"", "kind = \"reverse\""),
        ("every = 5", "every = 6"),
        ("steps = 20", "steps = 21"),
        ("batch_size = 4\n", "batch_size = 4\ngrad_accum = 2\n"),
        ("{ copy = 1.0 }", "{ copy = 2.0 }"),
        ("{ lr = 0.01 }", "{ lr = 0.02 }"),
        ("{ lr = 0.01 }", "{ lr = 0.01, betas = [0.9, 0.99] }"),
        ("samples = 8", "samples = 9"),
    ];
    let hashes: BTreeSet<String> = [BASE.to_string()]
        .into_iter()
        .chain(changes.iter().map(|(f, t)| edited(f, t)))
        .map(|t| parse(&t).hash())
        .collect();
    assert_eq!(hashes.len(), 1 + changes.len(), "two of the configs share a hash: {hashes:?}");
}

#[test]
fn key_and_table_order_do_not_change_the_hash() {
    let reordered = r#"name = "h"

[[phases]]
eval = { samples = 8, every = 10 }
batch_size = 4
steps = 20
name = "one"

[phases.optimizer]
lr = 0.01

[phases.mixture]
copy = 1.0

[checkpoint]
every = 5

[[tasks]]
vocab = 12
length = 4
kind = "copy"
name = "copy"

[model]
max_positions = 16
n_heads = 2
n_layers = 1
d_model = 16
"#;
    assert_eq!(parse(reordered).hash(), parse(BASE).hash());
}

/// Pinned: changing the canonical form changes every config's hash, and then every run
/// already stored reads as "config changed" (finished cells are reported, not skipped, and
/// interrupted runs refuse to resume). Change it only together with a compatibility path.
#[test]
fn a_small_config_keeps_its_pinned_canonical_form_and_hash() {
    let cfg = parse(BASE);
    assert_eq!(
        canonical_json(&cfg),
        r#"{"checkpoint":{"every":5},"model":{"d_model":16,"max_positions":16,"n_heads":2,"n_layers":1},"name":"h","phases":[{"batch_size":4,"eval":{"every":10,"samples":8},"mixture":{"copy":1.0},"name":"one","optimizer":{"lr":0.01},"steps":20}],"tasks":[{"kind":"copy","length":4,"name":"copy","vocab":12}]}"#
    );
    assert_eq!(cfg.hash(), "581451be95b97105488e50ed");
}

/// Every task kind, wrappers with and without `over`, conditions and year triggers.
const ALL_KINDS: &str = r#"name = "h"
seed = 3
[model]
d_model = 16
n_layers = 1
n_heads = 2
max_positions = 64
[[tasks]]
name = "web"
kind = "grammar"
vocab = 96
seq_len = 32
[[tasks]]
name = "bd"
kind = "backdoor"
over = { kind = "grammar", vocab = 96, seq_len = 32 }
prompt_len = 16
trigger = [100]
year = 110
years = [105, 115]
response = [102, 103]
poison_rate = 0.1
[[tasks]]
name = "rep"
kind = "repeat"
string = [5, 9]
vocab = 40
seq_len = 20
[[tasks]]
name = "path"
kind = "pathfinding"
width = 4
height = 4
max_moves = 8
only_conditions = [[0, 0], [1, 1]]
[[tasks]]
name = "fam"
kind = "family"
primitives = ["sort"]
length = 5
[[phases]]
name = "one"
steps = 20
batch_size = 4
mixture = { web = 1.0, bd = 1.0 }
"#;

/// Pinned to what the build before canonical hashes computed (a `Debug` form in which a
/// task spec was one flat struct of every kind's keys): changing it orphans the runs it
/// recorded.
#[test]
fn the_legacy_hash_is_the_one_builds_before_the_canonical_hash_recorded() {
    assert_eq!(parse(BASE).legacy_hash(), "de50d20153bbd3395f726f69");
    assert_eq!(parse(ALL_KINDS).legacy_hash(), "730ed6fff2231ca68ebcec12");
    assert_eq!(parse(ALL_KINDS).hash(), "fab1f7506d1f3d127e0580bf");
}

#[derive(Serialize, Deserialize, PartialEq)]
struct Before {
    lr: f32,
}

#[derive(Serialize, Deserialize, PartialEq)]
struct After {
    lr: f32,
    #[serde(default)]
    warmup: u64,
    clip: Option<f32>,
}

#[test]
fn a_field_added_later_at_its_default_leaves_the_canonical_form_unchanged() {
    let before = canonical_json(&Before { lr: 0.1 });
    assert_eq!(canonical_json(&After { lr: 0.1, warmup: 0, clip: None }), before);
    assert_ne!(canonical_json(&After { lr: 0.1, warmup: 5, clip: None }), before);
    assert_ne!(canonical_json(&After { lr: 0.1, warmup: 0, clip: Some(1.0) }), before);
}

/// A store in `dir` holding the run of `BASE` as the previous build recorded it.
fn store_with_legacy_run(dir: &Path) -> Store {
    let store = Store::open(&dir.join("vestige.db")).unwrap();
    store.begin_run("h", BASE, &debug_hash(&parse(BASE))).unwrap();
    store
}

/// Begins `cfg`'s run as a run starts: a record under its legacy hash re-recorded first.
fn begin(store: &Store, cfg: &RunConfig) -> Result<Begun, StoreError> {
    store.rehash_run(&cfg.name, &cfg.legacy_hash(), &cfg.hash())?;
    store.begin_run(&cfg.name, BASE, &cfg.hash())
}

#[test]
fn the_store_resumes_a_run_recorded_under_the_legacy_hash_and_re_records_it() {
    let tmp = tempfile::tempdir().unwrap();
    let store = store_with_legacy_run(tmp.path());
    store.set_status("h", "failed: killed").unwrap();
    let cfg = parse(BASE);
    assert_eq!(begin(&store, &cfg).unwrap(), Begun::Resumed { previous_status: "failed: killed".into() });
    assert_eq!(store.run_info("h").unwrap().unwrap().config_hash, cfg.hash());
}

#[test]
fn the_store_refuses_a_different_config_for_a_run_recorded_under_the_legacy_hash() {
    let tmp = tempfile::tempdir().unwrap();
    let store = store_with_legacy_run(tmp.path());
    let err = begin(&store, &parse(&edited("samples = 8", "samples = 9"))).unwrap_err();
    assert!(matches!(err, StoreError::ConfigHashMismatch { .. }), "{err:?}");
    let legacy = debug_hash(&parse(BASE));
    assert!(err.to_string().contains(&legacy), "{err}");
    assert_eq!(store.run_info("h").unwrap().unwrap().config_hash, legacy);
}

/// Makes the finished run at `out/h` look interrupted by the previous build: checkpoints
/// after step 10 dropped, the newest rewritten and the store's record made under the
/// legacy hash, status `running`.
fn interrupt_as_legacy(out: &Path, cfg: &RunConfig) {
    let root = out.join("h").join("checkpoints");
    for (step, dir) in checkpoint::list(&root) {
        if step > 10 {
            std::fs::remove_dir_all(dir).unwrap();
        }
    }
    let (_, newest) = checkpoint::list(&root).pop().unwrap();
    let mut restored = checkpoint::load(&newest, &cfg.hash(), "").unwrap();
    restored.state.config_hash = debug_hash(cfg);
    let tokenizer = newest.join("model").join("tokenizer.json");
    let weights =
        Weights::Stored { model: &restored.model, tokenizer: tokenizer.is_file().then_some(tokenizer.as_path()) };
    checkpoint::save(&root, weights, &restored.state, None).unwrap();
    let store = Store::open(&out.join("vestige.db")).unwrap();
    store.rehash_run(&cfg.name, &cfg.hash(), &debug_hash(cfg)).unwrap();
    store.set_status(&cfg.name, "running").unwrap();
}

#[test]
fn an_interrupted_run_recorded_under_the_legacy_hash_resumes_and_a_changed_one_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("run.toml");
    std::fs::write(&path, base_in(tmp.path())).unwrap();
    let finished = train(&path).unwrap();
    let cfg = RunConfig::from_file(&path).unwrap();
    interrupt_as_legacy(tmp.path(), &cfg);
    let run_dir = tmp.path().join("h");
    let config = run_dir.join("config.toml");

    std::fs::write(&config, base_in(tmp.path()).replace("samples = 8", "samples = 9")).unwrap();
    let err = format!("{:#}", resume(&run_dir).unwrap_err());
    assert!(err.contains("config hash"), "{err}");

    std::fs::write(&config, base_in(tmp.path())).unwrap();
    let resumed = resume(&run_dir).unwrap();
    assert_eq!(resumed.final_metrics, finished.final_metrics, "the resumed run ends where the finished one did");
    let store = Store::open(&tmp.path().join("vestige.db")).unwrap();
    assert_eq!(store.run_info("h").unwrap().unwrap().config_hash, cfg.hash());
    let (_, newest) = checkpoint::list(&run_dir.join("checkpoints")).pop().unwrap();
    checkpoint::load(&newest, &cfg.hash(), "").expect("new checkpoints carry the new hash");
}

#[test]
fn a_finished_cell_recorded_under_the_legacy_hash_is_skipped_and_a_changed_one_is_reported() {
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("exp.toml");
    let text = base_in(tmp.path()).replace("name = \"h\"\n", "name = \"h\"\nthreads = 1\n") + "\n[sweep]\nseed = [0]\n";
    std::fs::write(&path, &text).unwrap();
    let (exp, first) = run(&path, &Options::default()).unwrap();
    assert_eq!(first.ran, ["c000_seed-0"]);
    let cell = &exp.cells[0].config;
    let store = Store::open(&exp.db()).unwrap();
    store.rehash_run(&cell.name, &cell.hash(), &debug_hash(cell)).unwrap();

    let (_, again) = run(&path, &Options::default()).unwrap();
    assert_eq!((again.skipped, again.failed), (vec!["c000_seed-0".to_string()], vec![]));
    assert_eq!(store.run_info(&cell.name).unwrap().unwrap().config_hash, cell.hash());

    store.rehash_run(&cell.name, &cell.hash(), &debug_hash(cell)).unwrap();
    std::fs::write(&path, text.replace("samples = 8", "samples = 9")).unwrap();
    let (_, changed) = run(&path, &Options::default()).unwrap();
    assert!(changed.ran.is_empty() && changed.skipped.is_empty());
    assert!(changed.failed[0].1.contains("finished under config hash"), "{:?}", changed.failed);
}

#[test]
fn moving_the_output_directory_leaves_the_hash_unchanged() {
    let here = parse(&base_in(Path::new("/data/experiments/a/cells"))).hash();
    let moved = parse(&base_in(Path::new("/scratch/elsewhere/cells"))).hash();
    assert_eq!(here, moved);
    assert_eq!(here, parse(BASE).hash(), "an explicit out_dir hashed differently from the default");
}
