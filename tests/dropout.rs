//! Dropout is deterministic in its seed, drops the requested fraction, and is off by
//! default (an evaluation arena reproduces the dropout-free loss).

use vestige::engine::activations::Activations;
use vestige::engine::batch::Batch;
use vestige::engine::kernels::dropout::{Dropout, Mask};
use vestige::engine::kernels::loss::default_norm;
use vestige::engine::model::Model;

fn model_and_batch() -> (Model, Batch) {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/models/gpt_neox_parallel/model");
    let model = Model::load(&dir).unwrap().model;
    let ids: Vec<u32> = (0..24).map(|i| (i * 17 % 64) as u32).collect();
    (model, Batch::language_model(&ids, 2, 12))
}

fn loss(model: &Model, batch: &Batch, dropout: Dropout) -> f32 {
    let mut acts = Activations { dropout, ..Default::default() };
    model.forward(&mut acts, batch, &[], &[], default_norm(&batch.targets, &batch.weights))
}

#[test]
fn same_seed_gives_identical_bits_and_another_seed_differs() {
    let (model, batch) = model_and_batch();
    let d = |seed| Dropout { attn: 0.2, resid: 0.2, seed };
    assert_eq!(loss(&model, &batch, d(1)).to_bits(), loss(&model, &batch, d(1)).to_bits());
    assert_ne!(loss(&model, &batch, d(1)), loss(&model, &batch, d(2)));
    assert_ne!(loss(&model, &batch, d(1)), loss(&model, &batch, Dropout::default()));
}

#[test]
fn zero_probability_is_exactly_no_dropout() {
    let (model, batch) = model_and_batch();
    let plain = loss(&model, &batch, Dropout::default());
    assert_eq!(plain.to_bits(), loss(&model, &batch, Dropout { attn: 0.0, resid: 0.0, seed: 9 }).to_bits());
}

#[test]
fn mask_drops_the_requested_fraction_and_rescales_the_rest() {
    for p in [0.1f32, 0.5, 0.9] {
        let m = Mask::new(p, 42, 3);
        let n = 200_000;
        let factors: Vec<f32> = (0..n).map(|i| m.factor(i)).collect();
        let dropped = factors.iter().filter(|&&f| f == 0.0).count() as f64 / n as f64;
        assert!((dropped - p as f64).abs() < 0.005, "p={p}: dropped {dropped}");
        assert!(factors.iter().all(|&f| f == 0.0 || (f - 1.0 / (1.0 - p)).abs() < 1e-6));
        let mean = factors.iter().map(|&f| f as f64).sum::<f64>() / n as f64;
        assert!((mean - 1.0).abs() < 0.02, "p={p}: inverted dropout keeps the mean at 1, got {mean}");
    }
}
