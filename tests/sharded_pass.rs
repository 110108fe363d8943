//! A training pass split into data-parallel shards of whole sequences (`ShardedPass`) must
//! give the loss and gradients of one unsplit forward/backward pass, for every trainable
//! set (weights, LoRA, a mid-sequence soft prompt, per-sequence prompts, a steering
//! vector), and the same bits on one thread as on two.

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use vestige::engine::activations::Activations;
use vestige::engine::backward::GradSinks;
use vestige::engine::batch::Batch;
use vestige::engine::kernels::dropout::Dropout;
use vestige::engine::kernels::loss::default_norm;
use vestige::engine::lora::{Lora, LoraSpec, Proj};
use vestige::engine::model::{Model, Steer};
use vestige::engine::shards::{shard_count, ShardedPass};

const MODELS: [&str; 5] = ["gpt_neox_parallel", "gpt_neox_sequential", "gpt2", "llama_gqa", "llama_tied"];
/// Sequences, tokens per sequence and prompt vectors: 9 × 60 = 540 rows (576 with a
/// prompt), split into shards of 5 and 4 sequences.
const B: usize = 9;
const T: usize = 60;
const P: usize = 4;

fn fixture_model(name: &str) -> Model {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/models").join(name).join("model");
    Model::load(&dir).unwrap().model
}

/// What one case trains.
#[derive(Clone, Copy, Debug)]
enum Trained {
    Weights,
    Lora,
    Prompt,
    PerSequencePrompts,
    Steer,
}

/// The model (with an adapter for `Lora`), batch, prompt rows and steering vectors of a case.
fn case(name: &str, trained: Trained) -> (Model, Batch, Vec<f32>, Vec<Steer>) {
    let mut model = fixture_model(name);
    let d = model.cfg.d_model;
    let mut rng = ChaCha8Rng::seed_from_u64(3);
    let ids: Vec<u32> = (0..B * T).map(|_| rng.random_range(0..64)).collect();
    let at: Vec<usize> = (0..B).map(|b| b * 5 % T).collect();
    let (batch, rows) = match trained {
        Trained::Prompt => (Batch::with_prompt(&ids, B, T, P, &at), P),
        Trained::PerSequencePrompts => (Batch::with_prompt(&ids, B, T, P, &at).per_sequence_prompts(P), B * P),
        _ => (Batch::language_model(&ids, B, T), 0),
    };
    let prompts: Vec<f32> = (0..rows * d).map(|_| rng.random::<f32>() - 0.5).collect();
    if let Trained::Lora = trained {
        let mut lora = Lora::new(&model, LoraSpec { rank: 2, alpha: 4.0, targets: Proj::ALL.to_vec() }, 4);
        lora.params.iter_mut().for_each(|p| *p += 0.1 * (rng.random::<f32>() - 0.5));
        model.lora = Some(lora);
    }
    let steers = match trained {
        Trained::Steer => {
            let vector = (0..d).map(|_| rng.random::<f32>() - 0.5).collect();
            vec![Steer { layer: 1, coef: 0.7, start: 3, end: 20, vector, project: false }]
        }
        _ => Vec::new(),
    };
    (model, batch, prompts, steers)
}

/// Gradient buffers for `trained`, and sinks over them.
struct Grads {
    flat: Vec<f32>,
    steers: Vec<Vec<f32>>,
}

impl Grads {
    fn new(model: &Model, prompts: &[f32], trained: Trained) -> Self {
        let flat = match trained {
            Trained::Weights => model.n_params(),
            Trained::Lora => model.lora.as_ref().unwrap().n_params(),
            Trained::Prompt | Trained::PerSequencePrompts => prompts.len(),
            Trained::Steer => 0,
        };
        Grads { flat: vec![0.0; flat], steers: vec![vec![0.0; model.cfg.d_model]] }
    }

    fn sinks(&mut self, trained: Trained) -> GradSinks<'_> {
        let flat = Some(&mut self.flat[..]);
        match trained {
            Trained::Weights => GradSinks { weights: flat, ..Default::default() },
            Trained::Lora => GradSinks { lora: flat, ..Default::default() },
            Trained::Prompt | Trained::PerSequencePrompts => GradSinks { prompts: flat, ..Default::default() },
            Trained::Steer => GradSinks { steers: Some(&mut self.steers), ..Default::default() },
        }
    }

    /// Every gradient value, flat.
    fn values(&self) -> Vec<f32> {
        self.flat.iter().chain(self.steers.iter().flatten()).copied().collect()
    }
}

/// Loss and gradients through `ShardedPass` (twice, to exercise reused arenas).
fn sharded(
    model: &Model,
    batch: &Batch,
    prompts: &[f32],
    steers: &[Steer],
    trained: Trained,
    drop: Dropout,
) -> (f32, Vec<f32>) {
    let norm = default_norm(&batch.targets, &batch.weights);
    let mut pass = ShardedPass::default();
    let mut out = (0.0, Vec::new());
    for _ in 0..2 {
        let mut g = Grads::new(model, prompts, trained);
        let loss = pass.run(model, batch, prompts, steers, norm, drop, g.sinks(trained));
        out = (loss, g.values());
    }
    out
}

/// Loss and gradients of one unsplit forward/backward pass.
fn unsplit(model: &Model, batch: &Batch, prompts: &[f32], steers: &[Steer], trained: Trained) -> (f32, Vec<f32>) {
    let norm = default_norm(&batch.targets, &batch.weights);
    let mut acts = Activations::default();
    let loss = model.forward(&mut acts, batch, prompts, steers, norm);
    let mut g = Grads::new(model, prompts, trained);
    model.backward(&mut acts, batch, steers, norm, g.sinks(trained));
    (loss, g.values())
}

const ALL: [Trained; 5] =
    [Trained::Weights, Trained::Lora, Trained::Prompt, Trained::PerSequencePrompts, Trained::Steer];

#[test]
fn sharded_pass_matches_one_unsplit_pass_for_every_trainable_set_and_architecture() {
    for name in MODELS {
        for trained in ALL {
            let (model, batch, prompts, steers) = case(name, trained);
            assert_eq!(shard_count(&batch, 1), 2, "the case must actually be split");
            let (loss, grads) = sharded(&model, &batch, &prompts, &steers, trained, Dropout::default());
            let (ref_loss, ref_grads) = unsplit(&model, &batch, &prompts, &steers, trained);
            assert!((loss - ref_loss).abs() <= 1e-6 * ref_loss.abs(), "{name} {trained:?}: loss {loss} vs {ref_loss}");
            let scale = ref_grads.iter().fold(0.0f32, |m, g| m.max(g.abs()));
            let diff = grads.iter().zip(&ref_grads).fold(0.0f32, |m, (a, b)| m.max((a - b).abs()));
            assert!(scale > 0.0, "{name} {trained:?}: the gradient is zero");
            assert!(diff <= 1e-5 * scale, "{name} {trained:?}: max diff {diff:e} against gradient scale {scale:e}");
        }
    }
}

#[test]
fn sharded_pass_gives_the_same_bits_on_one_and_two_threads_with_dropout() {
    let drop = Dropout { attn: 0.1, resid: 0.1, seed: 11 };
    for trained in [Trained::Weights, Trained::Prompt] {
        let (model, batch, prompts, steers) = case("gpt_neox_parallel", trained);
        let on = |threads: usize| {
            let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().unwrap();
            pool.install(|| sharded(&model, &batch, &prompts, &steers, trained, drop))
        };
        let (one, two) = (on(1), on(2));
        assert_eq!(one.0.to_bits(), two.0.to_bits(), "{trained:?}: loss differs");
        let bits = |g: &[f32]| g.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
        assert!(bits(&one.1) == bits(&two.1), "{trained:?}: gradients differ between 1 and 2 threads");
        // The shards draw distinct dropout masks: the pass differs from the dropout-free one.
        let plain = sharded(&model, &batch, &prompts, &steers, trained, Dropout::default());
        assert_ne!(plain.0.to_bits(), one.0.to_bits(), "{trained:?}: dropout had no effect");
    }
}

#[test]
fn small_batches_and_large_trained_sets_are_not_split() {
    let ids = vec![1u32; 8 * 16];
    assert_eq!(shard_count(&Batch::language_model(&ids, 8, 16), 1), 1, "128 rows are too few to split");
    let one_sequence = vec![1u32; 600];
    assert_eq!(shard_count(&Batch::language_model(&one_sequence, 1, 600), 1), 1, "one sequence cannot be split");
    let ids = vec![1u32; 4 * 256];
    let batch = Batch::language_model(&ids, 4, 256);
    assert_eq!(shard_count(&batch, 1000), 2);
    assert_eq!(shard_count(&batch, 1 << 25), 1, "a 32M-value trained set is not copied per shard");
}
