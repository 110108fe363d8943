//! AdamW and SGD+momentum match `torch.optim` step by step (fixture made by
//! `scripts/fixtures/make_optim_fixtures.py`, hyperparameters in its metadata).

mod common;

use common::{assert_close, fixtures, read_reference};
use vestige::engine::optim::{AdamW, Sgd};

struct Fixture {
    p0: Vec<f32>,
    grads: Vec<Vec<f32>>,
    reference: std::collections::BTreeMap<String, common::RefTensor>,
}

fn fixture() -> Fixture {
    let reference = read_reference(&fixtures().join("optim/reference.safetensors"));
    let p0 = reference["p0"].data.iter().map(|&x| x as f32).collect::<Vec<_>>();
    let n = p0.len();
    let grads = reference["grads"].data.chunks(n).map(|g| g.iter().map(|&x| x as f32).collect()).collect();
    Fixture { p0, grads, reference }
}

#[test]
fn adamw_matches_torch_for_five_steps() {
    let f = fixture();
    let n = f.p0.len();
    let mut opt = AdamW { beta1: 0.9, beta2: 0.95, eps: 1e-8, weight_decay: 0.1, ..AdamW::new(n) };
    let mut p = f.p0.clone();
    for (step, g) in f.grads.iter().enumerate() {
        opt.update(&mut p, g, 0.01);
        let want = &f.reference["adamw_steps"].data[step * n..(step + 1) * n];
        assert_close(&format!("adamw step {}", step + 1), &p, want, 1e-6);
    }
}

#[test]
fn sgd_with_momentum_and_weight_decay_matches_torch_for_five_steps() {
    let f = fixture();
    let n = f.p0.len();
    let mut opt = Sgd { momentum: 0.9, weight_decay: 0.01, ..Sgd::new(n) };
    let mut p = f.p0.clone();
    for (step, g) in f.grads.iter().enumerate() {
        opt.update(&mut p, g, 0.05);
        let want = &f.reference["sgd_steps"].data[step * n..(step + 1) * n];
        assert_close(&format!("sgd step {}", step + 1), &p, want, 1e-6);
    }
}

#[test]
fn optimizer_state_round_trips_through_clone_and_resumes_identically() {
    let f = fixture();
    let n = f.p0.len();
    let (mut a, mut pa) = (AdamW::new(n), f.p0.clone());
    for g in &f.grads[..2] {
        a.update(&mut pa, g, 0.01);
    }
    let (mut b, mut pb) = (a.clone(), pa.clone());
    for g in &f.grads[2..] {
        a.update(&mut pa, g, 0.01);
        b.update(&mut pb, g, 0.01);
    }
    assert_eq!(a, b);
    assert!(pa.iter().zip(&pb).all(|(x, y)| x.to_bits() == y.to_bits()));
}
