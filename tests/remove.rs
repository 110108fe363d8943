//! The removal study: every training intervention sees the budget's examples and the plan
//! counts exactly their tokens; re-elicitation fine-tunes on the number of examples it is
//! named after; variants round-trip; the twin is unpoisoned; and the backdoor's selection
//! probes are disjoint from the reported ones.

use std::path::{Path, PathBuf};
use vestige::data::Split;
use vestige::data::SELECTION_OFFSET;
use vestige::lab::experiment::{Cell, Experiment};
use vestige::lab::plan::{phase_compute, plan};
use vestige::lab::studies::remove::{Intervention, Reelicit, RemoveSpec, Variant, AXIS, REELICIT, REMOVE};
use vestige::train::build::build;
use vestige::train::config::Trainable;

/// `experiments/remove-small.toml` under `dir` with one seed.
fn small(dir: &Path) -> PathBuf {
    let text = std::fs::read_to_string("experiments/remove-small.toml").unwrap();
    let text = text
        .replacen("threads = 2", &format!("threads = 2\nout_dir = \"{}\"", dir.display()), 1)
        .replace("seed = [0, 1, 2, 3, 4]", "seed = [0]");
    let path = dir.join("exp.toml");
    std::fs::write(&path, text).unwrap();
    path
}

fn variant(c: &Cell) -> Variant {
    let name = c.point.iter().find(|(k, _)| k == AXIS).unwrap().1.as_str().unwrap();
    let v = Variant::parse(name).unwrap_or_else(|| panic!("{name} does not parse"));
    assert_eq!(v.name(), name);
    v
}

#[test]
fn every_intervention_trains_on_the_budget_and_the_plan_counts_its_tokens() {
    let tmp = tempfile::tempdir().unwrap();
    let exp = Experiment::load(&small(tmp.path())).unwrap();
    let spec: RemoveSpec = toml::from_str::<toml::Table>(&exp.text).unwrap()["remove"].clone().try_into().unwrap();
    let planned = plan(&exp).unwrap();
    let mut trained = std::collections::BTreeSet::new();
    for (cell, planned) in exp.cells.iter().zip(&planned) {
        let v = variant(cell);
        let built = build(&cell.config).unwrap();
        let phase = |name: &str| cell.config.phases.iter().find(|p| p.name == name);
        let remove = phase(REMOVE).unwrap();
        let examples = remove.steps * remove.batch_size as u64;
        let width = |p: &vestige::train::config::PhaseSpec| {
            let longest = p.mixture.keys().map(|t| built.tasks[t].seq_len()).max().unwrap() as u64;
            longest
                + p.soft_prompt.as_ref().filter(|_| p.trainable == Trainable::SoftPrompt).map_or(0, |s| s.tokens) as u64
        };
        match v.intervention {
            Intervention::None | Intervention::MeanAdd { .. } | Intervention::MeanProj { .. } => {
                assert_eq!(remove.trainable, Trainable::None, "{}", cell.id);
            }
            i => {
                assert_eq!(examples, spec.budget, "{}: {} examples", cell.id, examples);
                let (tokens, _) = phase_compute(remove, &built.tasks, planned.params);
                assert_eq!(tokens, spec.budget * width(remove), "{}", cell.id);
                trained.insert(i.family());
            }
        }
        match v.reelicit {
            Reelicit::Trigger => assert!(phase(REELICIT).is_none()),
            Reelicit::Finetune(n) => {
                let p = phase(REELICIT).unwrap();
                assert_eq!(p.steps * p.batch_size as u64, n, "{}: fine-tunes on {n} examples", cell.id);
                assert!(p.trainable.trains_weights());
            }
            Reelicit::Soft(k) => {
                let p = phase(REELICIT).unwrap();
                assert_eq!(p.soft_prompt.as_ref().map(|s| s.tokens), Some(k));
            }
        }
        if let Some(p) = phase(REELICIT) {
            let carried = p.apply_from.as_deref() == Some(REMOVE);
            assert_eq!(carried, !v.intervention.keeps_model(), "{}: a prompt or steer stays applied", cell.id);
            assert!(v.intervention.allows(v.reelicit), "{}", cell.id);
        }
    }
    assert_eq!(trained.len(), 6, "clean_full, clean_lora, anti_full, anti_gcg, detune, learned_steer: {trained:?}");
    let gcg = exp.cells.iter().find(|c| variant(c).intervention == Intervention::AntiGcg).unwrap();
    let names: Vec<&str> = gcg.config.phases.iter().map(|p| p.name.as_str()).collect();
    assert_eq!(names[..3], ["plant", "search", "remove"]);
    assert_eq!(gcg.config.phases[1].token_search.as_ref().map(|t| t.tokens), Some(2), "as long as the trigger");
    let from = gcg.config.phases[2].prefix_from.as_ref().unwrap();
    assert_eq!((from.phase.as_str(), from.tasks.as_slice()), ("search", &["bd-untriggered".to_string()][..]));
}

#[test]
fn the_twin_is_unpoisoned_and_the_selection_probes_are_disjoint_from_the_reported_ones() {
    let tmp = tempfile::tempdir().unwrap();
    let exp = Experiment::load(&small(tmp.path())).unwrap();
    for cell in &exp.cells {
        let bd = cell.config.tasks.iter().find(|t| t.name == "bd").unwrap();
        let rate = toml::Value::try_from(bd).unwrap().get("poison_rate").and_then(|v| v.as_float());
        assert_eq!(rate, Some(if variant(cell).backdoored { 0.1 } else { 0.0 }), "{}", cell.id);
    }
    let built = build(&exp.cells[0].config).unwrap();
    let bd = &built.tasks["bd"];
    let probes = bd.probes(0, 32);
    let find = |name: &str| probes.iter().find(|p| p.hits == Some(name)).unwrap();
    let (reported, selection) = (find("attack_success"), find("select_attack_success"));
    assert!(reported.samples.iter().all(|s| !selection.samples.contains(s)));
    let triggered = vestige::data::backdoor::EvalKind::Triggered;
    let vestige::data::spec::Kind::Backdoor(w) =
        &exp.cells[0].config.tasks.iter().find(|t| t.name == "bd").unwrap().kind
    else {
        unreachable!()
    };
    let b = w.spec.build("bd", w.base.spec().build().unwrap());
    let mut first = b.eval_sample(0, SELECTION_OFFSET, triggered);
    first.weights[..first.prompt_len].fill(0.0);
    assert_eq!(selection.samples[0], first);
    assert_ne!(bd.sample(0, Split::Eval, 0), bd.sample(0, Split::Eval, SELECTION_OFFSET));
}

#[test]
fn bad_remove_keys_name_the_file_line_and_key() {
    let tmp = tempfile::tempdir().unwrap();
    let good = std::fs::read_to_string(small(tmp.path())).unwrap();
    for (from, to, key) in [
        ("steer_layers = [0, 1, 2]\n", "", "remove.steer_layers"),
        ("reelicit = [\"ft10\"", "reelicit = [\"ft0\"", "remove.reelicit"),
        ("budget = 1600", "budget = 4", "remove.budget"),
        ("clean = \"web\"", "clean = \"nope\"", "remove.clean"),
    ] {
        assert!(good.contains(from), "{from}");
        let path = tmp.path().join("bad.toml");
        std::fs::write(&path, good.replace(from, to)).unwrap();
        let e = Experiment::load(&path).unwrap_err().to_string();
        assert!(e.contains(key) && e.contains("bad.toml:"), "{key}: {e}");
    }
}

#[test]
fn a_prefix_from_a_searched_prompt_is_prepended_to_the_named_tasks_training_samples_only() {
    use vestige::store::read_csv;
    use vestige::train::run::train;
    let tmp = tempfile::tempdir().unwrap();
    let run = |name: &str, prefix: &str| {
        let text = format!(
            r#"name = "{name}"
seed = 1
out_dir = "{}"
[model]
d_model = 16
n_layers = 1
n_heads = 2
max_positions = 32
[[tasks]]
name = "copy"
kind = "copy"
length = 5
vocab = 12
[[tasks]]
name = "reverse"
kind = "reverse"
length = 5
vocab = 12
[[phases]]
name = "search"
steps = 2
batch_size = 4
trainable = "tokens"
token_search = {{ tokens = 3, method = "random", width = 4 }}
mixture = {{ copy = 1.0 }}
[[phases]]
name = "train"
steps = 6
batch_size = 8
mixture = {{ copy = 0.5, reverse = 0.5 }}
{prefix}
"#,
            tmp.path().display()
        );
        let path = tmp.path().join(format!("{name}.toml"));
        std::fs::write(&path, text).unwrap();
        train(&path).unwrap();
        let rows = read_csv(&tmp.path().join(name).join("metrics.csv")).unwrap();
        let phase = |p: u32| rows.iter().filter(|r| r.phase == p).map(|r| r.tokens).max().unwrap();
        phase(1) - phase(0)
    };
    let plain = run("plain", "");
    let prefixed = run("prefixed", "prefix_from = { phase = \"search\", tasks = [\"copy\"] }");
    // The same draws; each copy sample is 3 tokens longer, reverse samples are unchanged.
    let copies = prefixed - plain;
    assert!(copies > 0 && copies % 3 == 0 && copies / 3 < 48, "{plain} → {prefixed}");
    let bad = std::fs::read_to_string(tmp.path().join("prefixed.toml"))
        .unwrap()
        .replace("phase = \"search\"", "phase = \"train\"");
    let e = vestige::train::config::RunConfig::from_toml(&bad, "bad.toml").unwrap_err().to_string();
    assert!(e.contains("prefix_from.phase"), "{e}");
}
