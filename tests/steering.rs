//! Contrastive steering: the mean-difference vector is the hand-computed difference of tapped
//! residual means at the answer positions; projection removes a direction's component
//! exactly (partially for a coefficient below 1), only at the steered rows; and the backward
//! pass through a projection gives the gradient finite differences give.

use std::path::Path;
use vestige::data::Sample;
use vestige::engine::activations::Activations;
use vestige::engine::backward::GradSinks;
use vestige::engine::batch::Batch;
use vestige::engine::kernels::loss::default_norm;
use vestige::engine::model::{Model, Steer};
use vestige::train::batching::batch_of;
use vestige::train::steering::mean_difference;

fn fixture_model(name: &str) -> Model {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/models").join(name).join("model");
    Model::load(&dir).unwrap().model
}

/// Samples of `len` tokens with a `prompt`-token prompt.
fn samples(n: u32, len: u32, prompt: usize, salt: u32) -> Vec<Sample> {
    (0..n)
        .map(|s| {
            let tokens: Vec<u32> = (0..len).map(|i| 2 + (s * 11 + i * 7 + salt) % 60).collect();
            let weights = (0..len as usize).map(|i| if i >= prompt { 1.0 } else { 0.0 }).collect();
            Sample::new(tokens, weights, prompt)
        })
        .collect()
}

/// A run `name` under `dir`: pre-training on copy and reverse, then a fixed steering phase
/// `steer` with `steering` (an inline table), then `rest` (more phase tables).
fn steered_run(dir: &Path, name: &str, steering: &str, rest: &str) -> std::path::PathBuf {
    let text = format!(
        r#"name = "{name}"
seed = 2
out_dir = "{}"
[model]
d_model = 16
n_layers = 2
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
name = "pretrain"
steps = 20
batch_size = 8
mixture = {{ copy = 0.5, reverse = 0.5 }}
[[phases]]
name = "steer"
steps = 1
batch_size = 1
trainable = "none"
mixture = {{ copy = 1.0 }}
steering = {steering}
eval = {{ every = 1, samples = 8 }}
{rest}"#,
        dir.display()
    );
    let path = dir.join(format!("{name}.toml"));
    std::fs::write(&path, text).unwrap();
    path
}

#[test]
fn the_mean_difference_vector_is_the_hand_computed_difference_of_tapped_answer_means() {
    let model = fixture_model("gpt2");
    let d = model.cfg.d_model;
    // Different lengths and prompt lengths, so that padding and row choice both matter.
    let with: Vec<Sample> = samples(3, 9, 5, 1).into_iter().chain(samples(2, 7, 3, 4)).collect();
    let without = samples(4, 8, 4, 9);
    for layer in 0..=model.cfg.n_layers {
        let got = mean_difference(&model, &with, &without, layer);
        let hand = |set: &[Sample]| {
            let mut sum = vec![0.0f64; d];
            let mut rows = 0;
            for s in set {
                let batch = batch_of(std::slice::from_ref(s), 0);
                let mut acts = Activations::default();
                model.forward(&mut acts, &batch, &[], &[], 1.0);
                let tap = acts.residual(layer);
                // Positions prompt_len − 1 .. len − 1 predict the answer tokens.
                for t in s.prompt_len - 1..s.tokens.len() - 1 {
                    sum.iter_mut().zip(&tap[t * d..(t + 1) * d]).for_each(|(a, x)| *a += *x as f64);
                    rows += 1;
                }
            }
            sum.into_iter().map(|x| x / rows as f64).collect::<Vec<f64>>()
        };
        let (a, b) = (hand(&with), hand(&without));
        let scale = a.iter().chain(&b).fold(0.0f64, |m, x| m.max(x.abs()));
        for (i, g) in got.iter().enumerate() {
            let want = a[i] - b[i];
            assert!((*g as f64 - want).abs() <= 1e-5 * scale, "layer {layer}, dim {i}: {g} against {want}");
        }
        assert!(got.iter().any(|x| x.abs() > 1e-3 * scale as f32), "layer {layer}: the sets differ, so must the means");
    }
}

/// The residual stream `layer` of `model` on `batch` under `steers`.
fn tapped(model: &Model, batch: &Batch, steers: &[Steer], layer: usize) -> Vec<f32> {
    let mut acts = Activations::default();
    model.forward(&mut acts, batch, &[], steers, 1.0);
    acts.residual(layer).to_vec()
}

#[test]
fn projection_removes_the_component_exactly_and_only_at_the_steered_rows() {
    let model = fixture_model("llama_gqa");
    let d = model.cfg.d_model;
    let batch = batch_of(&samples(2, 10, 4, 3), 0);
    let vector: Vec<f32> = (0..d).map(|i| ((i * 37 % 17) as f32 - 8.0) / 5.0).collect();
    let norm = vector.iter().map(|x| x * x).sum::<f32>().sqrt();
    let along = |row: &[f32]| row.iter().zip(&vector).map(|(a, b)| a * b).sum::<f32>() / norm;
    let plain = tapped(&model, &batch, &[], 1);
    for coef in [1.0f32, 0.5] {
        let steer = Steer { layer: 1, coef, start: 3, end: 8, vector: vector.clone(), project: true };
        let steered = tapped(&model, &batch, &[steer], 1);
        for (r, (x, y)) in steered.chunks_exact(d).zip(plain.chunks_exact(d)).enumerate() {
            let magnitude = y.iter().map(|v| v * v).sum::<f32>().sqrt();
            if (3..8).contains(&(r % batch.seq)) {
                let left = (1.0 - coef) * along(y);
                assert!((along(x) - left).abs() <= 1e-5 * magnitude, "row {r}: {} left, want {left}", along(x));
                // Everything orthogonal to the vector is kept.
                for (i, (a, b)) in x.iter().zip(y).enumerate() {
                    let want = b - coef * along(y) * vector[i] / norm;
                    assert!((a - want).abs() <= 1e-5 * magnitude, "row {r}, dim {i}");
                }
            } else {
                assert_eq!(x, y, "row {r} lies outside the steered rows");
            }
        }
    }
}

#[test]
fn the_backward_pass_through_a_projection_matches_finite_differences() {
    let model = fixture_model("gpt2");
    let d = model.cfg.d_model;
    let batch = Batch::with_prompt(
        &samples(2, 8, 3, 5).iter().flat_map(|s| s.tokens.clone()).collect::<Vec<_>>(),
        2,
        8,
        2,
        &[0, 0],
    );
    let vector: Vec<f32> = (0..d).map(|i| ((i * 13 % 11) as f32 - 5.0) / 4.0).collect();
    let steers = [Steer { layer: 1, coef: 0.8, start: 0, end: 6, vector, project: true }];
    let prompt: Vec<f32> = (0..2 * d).map(|i| ((i * 29 % 23) as f32 / 23.0 - 0.5) * 0.5).collect();
    let norm = default_norm(&batch.targets, &batch.weights);
    let loss = |p: &[f32]| model.forward(&mut Activations::default(), &batch, p, &steers, norm) as f64;
    let mut acts = Activations::default();
    model.forward(&mut acts, &batch, &prompt, &steers, norm);
    let mut grad = vec![0.0; prompt.len()];
    model.backward(&mut acts, &batch, &steers, norm, GradSinks { prompts: Some(&mut grad), ..Default::default() });
    let h = 1e-2f32;
    for i in [0, 5, d + 3, 2 * d - 1] {
        let (mut up, mut down) = (prompt.clone(), prompt.clone());
        up[i] += h;
        down[i] -= h;
        let fd = (loss(&up) - loss(&down)) / (2.0 * h as f64);
        assert!(
            (fd - grad[i] as f64).abs() <= 2e-3 + 2e-2 * fd.abs(),
            "prompt coordinate {i}: {fd} against {}",
            grad[i]
        );
    }
    assert!(grad.iter().any(|g| g.abs() > 1e-4), "the gradient is not trivially zero");
}

#[test]
fn a_fixed_contrastive_steering_phase_applies_the_mean_difference_and_records_where_it_was_read() {
    use vestige::data::Split;
    use vestige::hf::io::{read_safetensors, read_safetensors_metadata};
    use vestige::train::build::build;
    use vestige::train::checkpoint::{find_pinned, load_model};
    use vestige::train::config::RunConfig;
    use vestige::train::run::train;
    let tmp = tempfile::tempdir().unwrap();
    let steering =
        r#"{ layer = 2, read_layer = 1, coef = 1.0, project = true, from = ["reverse", "copy"], samples = 16 }"#;
    let path = steered_run(tmp.path(), "s", steering, "");
    let text = std::fs::read_to_string(&path).unwrap();
    train(&path).unwrap();
    let run = tmp.path().join("s");
    let file = run.join("steering.steer.safetensors");
    let saved = read_safetensors(&file).unwrap()["steering"].data.clone();
    let meta = read_safetensors_metadata(&file).unwrap();
    assert_eq!(meta["read_layer"], "1");
    assert_eq!(meta["applied_layer"], "2");
    assert_eq!(meta["operation"], "project_out");
    assert!(meta["read_from"].contains("reverse − copy"), "{meta:?}");
    // The vector is the mean difference on the pretrained model, from the phase's samples.
    let model = load_model(&find_pinned(&run.join("checkpoints"), "pretrain").unwrap()).unwrap();
    let cfg = RunConfig::from_toml(&text, "run.toml").unwrap();
    let tasks = build(&cfg).unwrap().tasks;
    let seed = vestige::data::mix(2 ^ vestige::data::mix(2));
    let draw = |t: &str| -> Vec<Sample> { (0..16).map(|k| tasks[t].sample(seed, Split::Train, k)).collect() };
    let want = mean_difference(&model, &draw("reverse"), &draw("copy"), 1);
    assert_eq!(saved, want, "the saved vector is the mean difference drawn with the phase's seed");
}

#[test]
fn the_wrong_way_fraction_counts_the_inputs_whose_loss_a_steer_lowers() {
    use vestige::data::spec::TaskSpec;
    use vestige::train::eval::{steering_wrong_way, Adaptation};
    let model = fixture_model("gpt2");
    let spec: TaskSpec = toml::from_str(
        "name = \"bd\"\nkind = \"backdoor\"\nover = { kind = \"grammar\", vocab = 48, seq_len = 12 }\nprompt_len = 4\npoison_rate = 0.1",
    )
    .unwrap();
    let task = spec.build().unwrap();
    assert!(task.vocab_size() <= model.cfg.vocab_size);
    let d = model.cfg.d_model;
    let vector: Vec<f32> = (0..d).map(|i| ((i * 7 % 13) as f32 - 6.0) / 6.0).collect();
    let steer = |coef| [Steer { layer: 1, coef, start: 0, end: usize::MAX, vector: vector.clone(), project: false }];
    let fraction = |coef: f32| {
        let steers = steer(coef);
        let adapt = Adaptation { steers: &steers, ..Default::default() };
        let out = steering_wrong_way(&model, task.as_ref(), 0, 32, &adapt);
        out.iter().find(|(m, _)| m == "triggered_loss_wrong_way").unwrap().1
    };
    // A tiny push moves each input's loss linearly: the two signs lower complementary sets.
    let (up, down) = (fraction(1e-2), fraction(-1e-2));
    assert!((up + down - 1.0).abs() < 0.1, "{up} + {down}");
    assert!(up > 0.0 && down > 0.0, "a random direction helps some inputs and hurts others: {up}, {down}");
    let none = Adaptation::default();
    assert!(steering_wrong_way(&model, task.as_ref(), 0, 32, &none).is_empty(), "nothing to compare without a steer");
}

#[test]
fn apply_from_keeps_an_earlier_phases_steering_vector_applied_while_the_weights_train() {
    use vestige::store::read_csv;
    use vestige::train::run::train;
    let tmp = tempfile::tempdir().unwrap();
    let run = |name: &str, apply: &str| {
        let steering = r#"{ layer = 1, coef = -2.0, from = ["reverse", "copy"], samples = 16 }"#;
        let rest = format!("[[phases]]\nname = \"tune\"\nsteps = 4\nbatch_size = 8\nmixture = {{ copy = 1.0 }}\neval = {{ every = 4, samples = 8 }}\n{apply}\n");
        let path = steered_run(tmp.path(), name, steering, &rest);
        train(&path).unwrap();
        let rows = read_csv(&tmp.path().join(name).join("metrics.csv")).unwrap();
        let loss = |phase: u32, first: bool| {
            let mine = rows.iter().filter(|r| r.phase == phase && r.task == "copy" && r.metric == "loss");
            let pick = if first { mine.min_by_key(|r| r.step) } else { mine.max_by_key(|r| r.step) };
            pick.unwrap().value
        };
        (loss(1, false), loss(2, true), loss(2, false))
    };
    let (steered, carried_start, carried_end) = run("carried", "apply_from = \"steer\"");
    let (_, plain_start, plain_end) = run("plain", "");
    assert_eq!(steered, carried_start, "the carried vector acts from the phase's first evaluation");
    assert_ne!(carried_start, plain_start, "without apply_from the model runs unsteered");
    assert_ne!(carried_end, plain_end, "and trains unsteered");
    let bad = vestige::train::config::RunConfig::from_toml(
        &std::fs::read_to_string(tmp.path().join("carried.toml"))
            .unwrap()
            .replace("apply_from = \"steer\"", "apply_from = \"pretrain\""),
        "bad.toml",
    );
    assert!(bad.unwrap_err().to_string().contains("leaves no soft prompt or steering vector"));
}
