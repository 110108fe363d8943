//! A backward pass that trains only prompt vectors computes the first block's
//! row-independent part (qkv and norm inputs, and the MLP of parallel blocks) for the
//! prompt rows alone. It must give the same prompt gradient as the full backward pass,
//! on every architecture, for prepended and mid-sequence prompts, with and without dropout.

use vestige::engine::activations::Activations;
use vestige::engine::backward::GradSinks;
use vestige::engine::batch::Batch;
use vestige::engine::kernels::dropout::Dropout;
use vestige::engine::kernels::loss::default_norm;
use vestige::engine::model::Model;

const MODELS: [&str; 5] = ["gpt_neox_parallel", "gpt_neox_sequential", "gpt2", "llama_gqa", "llama_tied"];

fn fixture_model(name: &str) -> Model {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/models").join(name).join("model");
    Model::load(&dir).unwrap().model
}

/// The prompt gradient of one forward/backward pass; `with_weights` also requests the
/// weight gradients, which makes the pass compute every row of every block.
fn prompt_grad(model: &Model, batch: &Batch, prompt: &[f32], dropout: Dropout, with_weights: bool) -> Vec<f32> {
    let mut acts = Activations { dropout, ..Default::default() };
    let norm = default_norm(&batch.targets, &batch.weights);
    model.forward(&mut acts, batch, prompt, &[], norm);
    let (mut grad, mut weights) = (vec![0.0; prompt.len()], vec![0.0; model.n_params()]);
    let sinks =
        GradSinks { prompts: Some(&mut grad), weights: with_weights.then_some(&mut weights[..]), ..Default::default() };
    model.backward(&mut acts, batch, &[], norm, sinks);
    grad
}

#[test]
fn prompt_only_backward_matches_the_full_backward_on_every_architecture() {
    let ids: Vec<u32> = (0..30).map(|i| (i * 13 % 64) as u32).collect();
    for name in MODELS {
        let model = fixture_model(name);
        let prompt: Vec<f32> =
            (0..4 * model.cfg.d_model).map(|i| ((i * 37 % 101) as f32 / 101.0 - 0.5) * 0.8).collect();
        for insert_at in [[0, 0, 0], [4, 0, 9]] {
            let batch = Batch::with_prompt(&ids, 3, 10, 4, &insert_at);
            for dropout in [Dropout::default(), Dropout { attn: 0.1, resid: 0.2, seed: 5 }] {
                let fast = prompt_grad(&model, &batch, &prompt, dropout, false);
                let full = prompt_grad(&model, &batch, &prompt, dropout, true);
                let scale = full.iter().fold(0.0f32, |m, g| m.max(g.abs()));
                let diff = fast.iter().zip(&full).fold(0.0f32, |m, (a, b)| m.max((a - b).abs()));
                assert!(scale > 0.0, "{name}: the prompt gradient is zero");
                assert!(
                    diff <= 1e-6 * scale,
                    "{name}, insert at {insert_at:?}, {dropout:?}: max diff {diff:e} against gradient scale {scale:e}"
                );
            }
        }
    }
}
