//! Discrete prompt search and the elicitation study: GCG's one-hot gradient is the
//! derivative of the loss through the embedding, the universal loss is the batch mean of the
//! per-input losses, GCG recovers a planted trigger with far fewer scored candidates than
//! there are prompts, and the study's variants, budgets and splits are what it says.

use std::path::Path;
use std::sync::Arc;
use vestige::data::{Sample, Split, Task};
use vestige::engine::activations::Activations;
use vestige::engine::kernels::loss::default_norm;
use vestige::engine::model::Model;
use vestige::engine::shards::ShardedPass;
use vestige::train::batching::batch_at;
use vestige::train::build::build;
use vestige::train::checkpoint::{find_pinned, load_model};
use vestige::train::config::RunConfig;
use vestige::train::run::{run_or_resume, RunPaths};
use vestige::train::token_search::{
    embedding_rows, one_hot_gradient, prompt_gradient, score, Method, TokenSearch, TokenSearchCfg,
};

fn fixture_model(name: &str) -> Model {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/models").join(name).join("model");
    Model::load(&dir).unwrap().model
}

/// Three samples of 8 tokens whose last 3 are the scored answer.
fn samples(vocab: u32) -> Vec<Sample> {
    (0..3u32)
        .map(|s| {
            let tokens: Vec<u32> = (0..8).map(|i| 2 + (s * 7 + i * 5) % (vocab - 2)).collect();
            let weights = [0.0, 0.0, 0.0, 0.0, 0.0, 1.0, 1.0, 1.0].to_vec();
            Sample::new(tokens, weights, 5)
        })
        .collect()
}

/// A search of `tokens`-token prompts scoring `width` candidates per step (GCG: among the top
/// 4 tokens per position), prepended, over ids from 2.
fn search_cfg(method: Method, tokens: usize, width: usize) -> TokenSearchCfg {
    TokenSearchCfg { tokens, method, width, top_k: 4, first_token: 2, init: Vec::new(), insert: Default::default() }
}

/// The loss of `samples` under prompt rows `rows`, prepended.
fn loss_with_rows(model: &Model, samples: &[Sample], rows: &[f32]) -> f64 {
    let k = rows.len() / model.cfg.d_model;
    let batch = batch_at(samples, k, &vec![0; samples.len()]);
    let norm = default_norm(&batch.targets, &batch.weights);
    model.forward(&mut Activations::default(), &batch, rows, &[], norm) as f64
}

#[test]
fn gcg_one_hot_gradient_is_the_finite_difference_of_the_loss_through_the_embedding() {
    for name in ["gpt2", "llama_gqa"] {
        let model = fixture_model(name);
        let (d, v) = (model.cfg.d_model, model.cfg.vocab_size);
        let samples = samples(v as u32);
        let current = [5u32, 11];
        let rows = embedding_rows(&model, &current);
        let (_, grad) = prompt_gradient(&model, &mut ShardedPass::default(), &samples, &[0, 0, 0], &rows);
        let onehot = one_hot_gradient(&model, &grad);
        assert_eq!(onehot.len(), 2 * v);
        let wte = embedding_rows(&model, &(0..v as u32).collect::<Vec<_>>());
        let h = 1e-2f32;
        let mut checked = 0;
        for (p, other) in [(0usize, 3u32), (0, 17), (1, 9), (1, 30)] {
            // Move slot p along the segment from its token's row to `other`'s: the one-hot
            // point x = e_current + h·(e_other − e_current), whose derivative in h is
            // ∂L/∂x[p, other] − ∂L/∂x[p, current].
            let at = |h: f32| {
                let mut r = rows.clone();
                for j in 0..d {
                    let (a, b) = (wte[current[p] as usize * d + j], wte[other as usize * d + j]);
                    r[p * d + j] = a + h * (b - a);
                }
                loss_with_rows(&model, &samples, &r)
            };
            let fd = (at(h) - at(-h)) / (2.0 * h as f64);
            let analytic = (onehot[p * v + other as usize] - onehot[p * v + current[p] as usize]) as f64;
            assert!(
                (fd - analytic).abs() <= 2e-3 + 2e-2 * analytic.abs(),
                "{name}, slot {p}, token {other}: finite difference {fd:.6} against one-hot gradient {analytic:.6}"
            );
            checked += (analytic.abs() > 1e-4) as usize;
        }
        assert!(checked >= 2, "{name}: the gradients checked are too small to mean anything");
    }
}

#[test]
fn the_universal_loss_and_gradient_are_the_batch_mean_of_each_inputs_own() {
    let model = fixture_model("gpt2");
    let samples = samples(model.cfg.vocab_size as u32);
    let prompt = vec![4u32, 9, 13];
    let mut pass = ShardedPass::default();
    let rows = embedding_rows(&model, &prompt);
    let (loss, grad) = prompt_gradient(&model, &mut pass, &samples, &[0, 0, 0], &rows);
    let together = score(&model, &samples, &[0, 0, 0], std::slice::from_ref(&prompt))[0];
    assert!((together - loss).abs() <= 1e-5 * loss.abs(), "scoring {together} against the pass's {loss}");
    // Every sample scores 3 tokens at weight 1, so the batch loss is the mean of the samples'.
    let mut mean_grad = vec![0.0f32; grad.len()];
    let mut mean_loss = 0.0;
    for s in &samples {
        let (l, g) = prompt_gradient(&model, &mut pass, std::slice::from_ref(s), &[0], &rows);
        mean_loss += l / 3.0;
        mean_grad.iter_mut().zip(&g).for_each(|(m, g)| *m += g / 3.0);
        let alone = score(&model, std::slice::from_ref(s), &[0], std::slice::from_ref(&prompt))[0];
        assert!((alone - l).abs() <= 1e-5 * l.abs());
    }
    assert!((mean_loss - loss).abs() <= 1e-5 * loss.abs(), "mean {mean_loss} against batch {loss}");
    let scale = grad.iter().fold(0.0f32, |m, g| m.max(g.abs()));
    let diff = grad.iter().zip(&mean_grad).fold(0.0f32, |m, (a, b)| m.max((a - b).abs()));
    assert!(scale > 0.0 && diff <= 1e-4 * scale, "gradient differs by {diff:e} at scale {scale:e}");
    // Scoring many candidates at once equals scoring each alone.
    let many: Vec<Vec<u32>> = (0..40u32).map(|i| vec![2 + i, 9, 13]).collect();
    let batched = score(&model, &samples, &[0, 0, 0], &many);
    for (c, &b) in many.iter().zip(&batched).step_by(13) {
        let alone = score(&model, &samples, &[0, 0, 0], std::slice::from_ref(c))[0];
        assert!((alone - b).abs() <= 1e-5 * b.abs(), "{c:?}: {b} batched against {alone} alone");
    }
}

#[test]
fn exhaustive_search_enumerates_every_prompt_once_and_keeps_the_best() {
    let model = fixture_model("gpt2");
    let v = model.cfg.vocab_size;
    let samples = samples(v as u32);
    let cfg = search_cfg(Method::Exhaustive, 1, 7);
    let steps = cfg.exhaustive_steps(v);
    assert_eq!(steps, (v as u64 - 2).div_ceil(7));
    let mut search = TokenSearch::new(cfg, v, 0, None);
    let mut pass = ShardedPass::default();
    for step in 0..steps {
        search.step(&model, &mut pass, &samples, &[0, 0, 0], step, 1);
    }
    let all: Vec<Vec<u32>> = (2..v as u32).map(|t| vec![t]).collect();
    let losses = score(&model, &samples, &[0, 0, 0], &all);
    let best = (0..all.len()).min_by(|&a, &b| losses[a].total_cmp(&losses[b])).unwrap();
    assert_eq!(search.tokens, all[best], "the best single token");
    assert_eq!(search.best, losses[best]);
}

/// A 100k-parameter model (the `100k` scale) pretrained on grammar documents over 96 tokens, 10% of them
/// poisoned with a 2-token prefix trigger that makes the answer a fixed 3-token response;
/// returns the model and the elicitation task (clean inputs answered with the response).
fn backdoored(dir: &Path) -> (Model, Arc<dyn Task>, Vec<u32>) {
    let text = r#"
name = "plant"
seed = 3
[model]
d_model = 64
n_layers = 2
n_heads = 4
max_positions = 40
[[tasks]]
name = "bd"
kind = "backdoor"
over = { kind = "grammar", vocab = 96, seq_len = 24 }
prompt_len = 8
poison_rate = 0.1
[[tasks]]
name = "target"
kind = "backdoor"
over = { kind = "grammar", vocab = 96, seq_len = 24 }
prompt_len = 8
poison_rate = 0.1
elicit = "response"
[[phases]]
name = "plant"
steps = 800
batch_size = 16
mixture = { bd = 1.0 }
optimizer = { lr = 3e-3 }
eval = { tasks = ["bd"], every = 800, samples = 32 }
"#;
    let cfg: RunConfig = toml::from_str(text).unwrap();
    let built = build(&cfg).unwrap();
    let target = built.tasks["target"].clone();
    let paths = RunPaths::in_dir(dir.to_path_buf(), dir.join("db"));
    let summary = run_or_resume(cfg.clone(), built, text.to_string(), paths).unwrap();
    let attack = summary.final_metrics["plant/bd/attack_success"];
    assert!(attack >= 0.8, "the backdoor did not plant (attack success {attack})");
    let model = load_model(&find_pinned(&dir.join("checkpoints"), "plant").unwrap()).unwrap();
    let spec: vestige::data::spec::TaskSpec = toml::from_str(
        "name = \"bd\"\nkind = \"backdoor\"\nover = { kind = \"grammar\", vocab = 96, seq_len = 24 }\nprompt_len = 8\npoison_rate = 0.1",
    )
    .unwrap();
    let vestige::data::spec::Kind::Backdoor(w) = &spec.kind else { unreachable!() };
    let trigger = w.spec.build("bd", w.base.spec().build().unwrap()).trigger.tokens().to_vec();
    (model, target, trigger)
}

/// In how many of `restarts` restarts `method` recovers `trigger` with `steps` steps of
/// `width` candidates on batches of 8 elicitation samples.
fn recoveries(model: &Model, target: &dyn Task, trigger: &[u32], method: Method, width: usize, steps: u64) -> usize {
    let mut pass = ShardedPass::default();
    let mut found = 0;
    for restart in 0..RESTARTS {
        let mut search = TokenSearch::new(search_cfg(method, 2, width), model.cfg.vocab_size, 100 + restart, None);
        for step in 0..steps {
            let first = step * 8;
            let samples: Vec<Sample> = (first..first + 8).map(|i| target.sample(restart, Split::Train, i)).collect();
            search.step(model, &mut pass, &samples, &[0; 8], step, restart);
        }
        found += (search.tokens == trigger) as usize;
    }
    found
}

const RESTARTS: u64 = 4;

#[test]
fn gcg_recovers_a_planted_two_token_trigger_where_random_search_at_the_same_budget_does_not() {
    let tmp = tempfile::tempdir().unwrap();
    let (model, target, trigger) = backdoored(tmp.path());
    let v = model.cfg.vocab_size;
    // 94² = 8836 two-token prompts; each step scores 8 of the 186 single-token swaps, and
    // 20 steps score 160 prompts in all (1.8%): enumeration alone cannot find the trigger.
    let (width, steps) = (8, 20u64);
    assert!(width * 20 < 2 * (v - 3) && (width as u64) * steps * 50 < ((v - 2) * (v - 2)) as u64);
    let gcg = recoveries(&model, target.as_ref(), &trigger, Method::Gcg, width, steps);
    let random = recoveries(&model, target.as_ref(), &trigger, Method::Random, width, steps);
    assert!(gcg >= 3, "GCG recovered the trigger {trigger:?} in {gcg} of {RESTARTS} restarts");
    assert!(random < gcg, "random search recovered it as often ({random}) as GCG ({gcg}): the gradient did no work");
    eprintln!("trigger {trigger:?}: GCG {gcg}, random search {random} of {RESTARTS} restarts");
}

mod study {
    use std::path::{Path, PathBuf};
    use vestige::data::SELECTION_OFFSET;
    use vestige::data::{Split, Task};
    use vestige::lab::experiment::Experiment;
    use vestige::lab::plan::{phase_compute, plan};
    use vestige::lab::studies::elicit::{ElicitSpec, MethodArm, Variant, AXIS};
    use vestige::train::build::build;

    /// `experiments/elicit-small.toml` under `dir`, with `from` replaced by `to`.
    fn small(dir: &Path, from: &str, to: &str) -> PathBuf {
        let text = std::fs::read_to_string("experiments/elicit-small.toml").unwrap();
        assert!(text.contains(from), "the shipped experiment changed; update this test");
        let text =
            text.replacen("threads = 2", &format!("threads = 2\nout_dir = \"{}\"", dir.display()), 1).replace(from, to);
        let path = dir.join("exp.toml");
        std::fs::write(&path, text).unwrap();
        path
    }

    fn spec(exp: &Experiment) -> ElicitSpec {
        let table = toml::from_str::<toml::Table>(&exp.text).unwrap()["elicit"].clone();
        table.try_into().unwrap()
    }

    #[test]
    fn soft_prompts_gcg_and_random_search_spend_the_same_budget_and_the_plan_says_so() {
        let tmp = tempfile::tempdir().unwrap();
        let exp = Experiment::load(&small(tmp.path(), "seed = [0, 1, 2, 3, 4]", "seed = [0]")).unwrap();
        let s = spec(&exp);
        let planned = plan(&exp).unwrap();
        let mut seen = std::collections::BTreeSet::new();
        for (cell, planned) in exp.cells.iter().zip(&planned) {
            let name = cell.point.iter().find(|(k, _)| k == AXIS).unwrap().1.as_str().unwrap().to_string();
            let v = Variant::parse(&name).unwrap_or_else(|| panic!("{name} does not parse back"));
            assert_eq!(v.name(), name);
            let elicit = cell.config.phases.last().unwrap();
            let built = build(&cell.config).unwrap();
            let flops = phase_compute(elicit, &built.tasks, planned.params).1;
            let width = (built.tasks[&s.target_task(&v.target)].seq_len() + v.method.tokens()) as f64;
            // One sequence pass of the batch's width at 2·N FLOPs per token.
            let pass = 2.0 * planned.params as f64 * width;
            match v.method {
                MethodArm::Soft { .. } | MethodArm::Gcg { .. } | MethodArm::Random { .. } => {
                    let spent = flops / pass;
                    let step = s.per_step(&v.method) as f64;
                    assert!(
                        spent <= s.budget as f64 && spent > s.budget as f64 - step,
                        "{name}: {spent} sequence passes for a budget of {} ({step} per step)",
                        s.budget
                    );
                    seen.insert(v.method.family());
                }
                MethodArm::Exhaustive { tokens } => {
                    let prompts = (built.model.vocab_size as f64 - 2.0).powi(tokens as i32);
                    let spent = flops / pass / s.search_batch as f64;
                    assert!(spent >= prompts && spent < prompts + s.exhaustive_width as f64, "{name}: {spent}");
                }
                MethodArm::None => {}
            }
        }
        assert_eq!(seen.len(), 3, "soft, gcg and random cells were checked");
    }

    #[test]
    fn the_twin_is_unpoisoned_and_the_reported_and_selection_sets_are_disjoint() {
        let tmp = tempfile::tempdir().unwrap();
        let exp = Experiment::load(&small(tmp.path(), "seed = [0, 1, 2, 3, 4]", "seed = [0]")).unwrap();
        let s = spec(&exp);
        let variant = |c: &vestige::lab::experiment::Cell| {
            Variant::parse(c.point.iter().find(|(k, _)| k == AXIS).unwrap().1.as_str().unwrap()).unwrap()
        };
        let poison = |c: &vestige::lab::experiment::Cell| {
            let t = c.config.tasks.iter().find(|t| t.name == s.task).unwrap();
            toml::Value::try_from(t).unwrap().get("poison_rate").and_then(|v| v.as_float())
        };
        for cell in exp.cells.iter() {
            let expected = if variant(cell).model.backdoored { 0.1 } else { 0.0 };
            assert_eq!(poison(cell), Some(expected), "{}", cell.id);
        }
        let task = |target: &str| {
            let cell = exp.cells.iter().find(|c| variant(c).target == target).unwrap();
            (build(&cell.config).unwrap().tasks[&format!("bd-{target}")].clone(), cell)
        };
        let ((response, cell), (null, _)) = (task("response"), task("null_response"));
        let probes = response.probes(0, 64);
        assert_eq!(probes.len(), 2);
        let reported: Vec<&Vec<u32>> = probes[0].samples.iter().map(|s| &s.tokens).collect();
        let selection: Vec<&Vec<u32>> = probes[1].samples.iter().map(|s| &s.tokens).collect();
        assert!(reported.iter().all(|r| !selection.contains(r)), "a reported input is also a selection input");
        for (k, s) in probes[0].samples.iter().enumerate() {
            assert_eq!(s, &response.sample(0, Split::Eval, k as u64), "the reported set is eval samples 0..n");
        }
        assert_eq!(probes[1].samples[0], response.sample(0, Split::Eval, SELECTION_OFFSET));
        // The null response: as long as the response, sharing no token with it or the trigger.
        let answer = |t: &dyn Task| {
            let s = t.sample(0, Split::Eval, 0);
            s.tokens[s.prompt_len..].to_vec()
        };
        let (r, n) = (answer(response.as_ref()), answer(null.as_ref()));
        assert_eq!(r.len(), n.len());
        let trigger = {
            let bd = cell.config.tasks.iter().find(|t| t.name == s.task).unwrap();
            let vestige::data::spec::Kind::Backdoor(w) = &bd.kind else { unreachable!() };
            w.spec.build("bd", w.base.spec().build().unwrap()).trigger.tokens().to_vec()
        };
        assert!(n.iter().all(|t| !r.contains(t) && !trigger.contains(t) && *t >= 2 && *t < 96), "{n:?} vs {r:?}");
    }

    #[test]
    fn bad_elicit_keys_name_the_file_line_and_key() {
        let tmp = tempfile::tempdir().unwrap();
        for (from, to, key) in [
            ("restarts = 3", "restarts = 3\ntrajectory = [\"soft\"]", "elicit.trajectory"),
            ("budget = 8192", "budget = 10", "elicit.budget"),
            ("poison_rate = 0.1\n\n[elicit]", "poison_rate = 0.1\nbehavior = \"repeat\"\n\n[elicit]", "elicit.task"),
            ("clean = \"web\"\n", "", "elicit.clean"),
        ] {
            let e = Experiment::load(&small(tmp.path(), from, to)).unwrap_err().to_string();
            assert!(e.contains(key) && e.contains("exp.toml:"), "{key}: {e}");
        }
    }
}

#[test]
fn trigger_recovery_counts_contiguous_ordered_and_bag_matches() {
    use vestige::lab::studies::elicit::analysis::recovery;
    let r = recovery(&[7, 36, 9, 4], &[36, 9]);
    assert!(r.exact && r.ordered == 1.0 && r.bag == 1.0, "{r:?}");
    let r = recovery(&[9, 36], &[36, 9]);
    assert!(!r.exact && r.ordered == 0.5 && r.bag == 1.0, "reversed: both present, one in place at best: {r:?}");
    let r = recovery(&[36, 5], &[36, 9]);
    assert!(!r.exact && r.ordered == 0.5 && r.bag == 0.5, "{r:?}");
    let r = recovery(&[36, 36, 36], &[36, 36]);
    assert!(r.exact && r.bag == 1.0, "{r:?}");
    let r = recovery(&[36], &[36, 36]);
    assert!(!r.exact && r.ordered == 0.5 && r.bag == 0.5, "multiplicity counts: {r:?}");
    let r = recovery(&[1, 2], &[36, 9]);
    assert!(!r.exact && r.ordered == 0.0 && r.bag == 0.0);
}

#[test]
fn a_token_search_resumed_from_a_checkpoint_ends_in_the_bits_of_an_uninterrupted_one() {
    use vestige::train::checkpoint;
    use vestige::train::run::{resume, train};
    let config = |out: &Path, method: &str| -> std::path::PathBuf {
        let text = format!(
            r#"name = "t"
seed = 5
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
[checkpoint]
every = 4
keep_last = 100
[[phases]]
name = "pretrain"
steps = 30
batch_size = 8
mixture = {{ copy = 1.0 }}
eval = {{ every = 10, samples = 8 }}
[[phases]]
name = "search"
steps = 12
batch_size = 4
trainable = "tokens"
token_search = {{ tokens = 2, method = "{method}", width = 5, top_k = 3 }}
mixture = {{ copy = 1.0 }}
eval = {{ log_points = 4, samples = 8 }}
"#,
            out.display()
        );
        std::fs::create_dir_all(out).unwrap();
        let path = out.join("run.toml");
        std::fs::write(&path, text).unwrap();
        path
    };
    let tmp = tempfile::tempdir().unwrap();
    for method in ["gcg", "random", "exhaustive"] {
        let (whole, cut) = (tmp.path().join(format!("whole-{method}")), tmp.path().join(format!("cut-{method}")));
        train(&config(&whole, method)).unwrap();
        train(&config(&cut, method)).unwrap();
        let run = cut.join("t");
        for (s, dir) in checkpoint::list(&run.join("checkpoints")) {
            if s > 36 {
                std::fs::remove_dir_all(dir).unwrap();
            }
        }
        resume(&run).unwrap();
        let read = |dir: &Path, file: &str| std::fs::read(dir.join("t").join(file)).unwrap();
        assert!(read(&whole, "metrics.csv") == read(&cut, "metrics.csv"), "{method}: metrics.csv differs");
        let tokens = "prompt_tokens.search.safetensors";
        assert_eq!(read(&whole, tokens), read(&cut, tokens), "{method}: the found prompt differs");
        let csv = String::from_utf8(read(&whole, "metrics.csv")).unwrap();
        assert!(csv.contains("prompt_token_1") && csv.contains("best_candidate"), "{method}: {csv}");
    }
}
