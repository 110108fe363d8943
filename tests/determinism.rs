//! Same model, data, seed and thread count give the same bits: two identical training runs
//! (full weights with dropout, then a soft prompt) end with bit-identical weights and losses.

use vestige::engine::activations::Activations;
use vestige::engine::backward::GradSinks;
use vestige::engine::batch::Batch;
use vestige::engine::kernels::dropout::Dropout;
use vestige::engine::kernels::loss::default_norm;
use vestige::engine::model::Model;
use vestige::engine::optim::AdamW;

/// Trains for a few steps and returns every loss and the final weights and prompt.
fn run() -> (Vec<u32>, Vec<u32>, Vec<u32>) {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/models/gpt_neox_parallel/model");
    let mut model = Model::load(&dir).unwrap().model;
    let mut losses = Vec::new();
    let mut opt = AdamW::new(model.n_params());
    let mut grads = vec![0.0; model.n_params()];
    for step in 0..4u64 {
        let ids: Vec<u32> = (0..4 * 33).map(|i| ((i as u64 * 31 + step * 7) % 64) as u32).collect();
        let batch = Batch::language_model(&ids, 4, 33);
        let norm = default_norm(&batch.targets, &batch.weights);
        let mut acts = Activations { dropout: Dropout { attn: 0.1, resid: 0.1, seed: step }, ..Default::default() };
        losses.push(model.forward(&mut acts, &batch, &[], &[], norm).to_bits());
        grads.fill(0.0);
        model.backward(&mut acts, &batch, &[], norm, GradSinks { weights: Some(&mut grads), ..Default::default() });
        opt.update(&mut model.weights, &grads, 1e-3);
    }
    let ids: Vec<u32> = (0..2 * 20).map(|i| (i * 5 % 64) as u32).collect();
    let batch = Batch::with_prompt(&ids, 2, 20, 3, &[0, 6]);
    let norm = default_norm(&batch.targets, &batch.weights);
    let mut prompt = vec![0.05f32; 3 * model.cfg.d_model];
    let (mut dp, mut sp_opt) = (vec![0.0; prompt.len()], AdamW::new(prompt.len()));
    let mut acts = Activations::default();
    for _ in 0..3 {
        losses.push(model.forward(&mut acts, &batch, &prompt, &[], norm).to_bits());
        dp.fill(0.0);
        model.backward(&mut acts, &batch, &[], norm, GradSinks { prompts: Some(&mut dp), ..Default::default() });
        sp_opt.update(&mut prompt, &dp, 1e-2);
    }
    let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<u32>>();
    (losses, bits(&model.weights), bits(&prompt))
}

#[test]
fn identical_runs_give_identical_bits() {
    let (a, b) = (run(), run());
    assert_eq!(a.0, b.0, "losses differ between identical runs");
    assert!(a.1 == b.1, "weights differ between identical runs");
    assert!(a.2 == b.2, "soft prompts differ between identical runs");
}
