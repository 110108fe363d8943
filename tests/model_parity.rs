//! Parity with Hugging Face `transformers` (float64 reference, committed fixtures made by
//! `scripts/fixtures/make_model_fixtures.py`): logits, loss, weighted loss, every weight
//! gradient, and soft-prompt logits, loss and gradient, for each architecture.

mod common;

use common::{assert_close, fixtures, read_reference, RefTensor};
use std::collections::BTreeMap;
use vestige::engine::activations::Activations;
use vestige::engine::backward::GradSinks;
use vestige::engine::batch::Batch;
use vestige::engine::hf_names::export_all;
use vestige::engine::kernels::loss::default_norm;
use vestige::engine::model::Model;

const TOL: f64 = 1e-4;

struct Case {
    model: Model,
    reference: BTreeMap<String, RefTensor>,
    ids: Vec<u32>,
    batch: usize,
    seq: usize,
}

fn load(case: &str) -> Case {
    let dir = fixtures().join("models").join(case);
    let model = Model::load(&dir.join("model")).unwrap().model;
    let reference = read_reference(&dir.join("reference.safetensors"));
    let ids_t = &reference["input_ids"];
    let ids = ids_t.data.iter().map(|&x| x as u32).collect();
    let (batch, seq) = (ids_t.shape[0], ids_t.shape[1]);
    Case { model, reference, ids, batch, seq }
}

fn scalar(c: &Case, key: &str) -> f64 {
    c.reference[key].data[0]
}

fn check_logits_loss_and_weight_grads(case: &str) {
    let c = load(case);
    let batch = Batch::language_model(&c.ids, c.batch, c.seq);
    let norm = default_norm(&batch.targets, &batch.weights);
    let mut acts = Activations::default();
    let loss = c.model.forward(&mut acts, &batch, &[], &[], norm);
    assert_close("logits", &acts.logits, &c.reference["logits"].data, TOL);
    assert!(
        (loss as f64 - scalar(&c, "loss")).abs() < TOL * scalar(&c, "loss"),
        "loss {loss} vs {}",
        scalar(&c, "loss")
    );

    let mut grads = vec![0.0; c.model.layout.total];
    c.model.backward(&mut acts, &batch, &[], norm, GradSinks { weights: Some(&mut grads), ..Default::default() });
    let exported = export_all(&c.model.cfg, &c.model.layout, &grads);
    let mut compared = 0;
    for (name, reference) in c.reference.iter().filter_map(|(k, v)| k.strip_prefix("grad.").map(|n| (n, v))) {
        let ours = exported
            .get(checkpoint_name(case, name))
            .unwrap_or_else(|| panic!("{case}: no gradient exported for {name}"));
        assert_eq!(ours.shape, reference.shape, "{case}: shape of grad {name}");
        assert_close(&format!("{case}: grad {name}"), &ours.data, &reference.data, TOL);
        compared += 1;
    }
    assert_eq!(compared, exported.len(), "{case}: every parameter's gradient is compared");
}

/// `transformers` 5 calls GPT-NeoX's head `lm_head` in memory but `embed_out` on disk.
fn checkpoint_name<'a>(case: &str, param: &'a str) -> &'a str {
    if case.starts_with("gpt_neox") && param == "lm_head.weight" {
        "embed_out.weight"
    } else {
        param
    }
}

fn check_weighted_loss(case: &str) {
    let c = load(case);
    let mut batch = Batch::language_model(&c.ids, c.batch, c.seq);
    // Fixture weight [b, t] weighs the prediction OF token t, made at slot t − 1.
    let w = &c.reference["loss_weights"].data;
    for b in 0..c.batch {
        for t in 1..c.seq {
            batch.weights[b * c.seq + t - 1] = w[b * c.seq + t] as f32;
        }
    }
    let norm = default_norm(&batch.targets, &batch.weights);
    let loss = c.model.forward(&mut Activations::default(), &batch, &[], &[], norm);
    let want = scalar(&c, "weighted_loss");
    assert!((loss as f64 - want).abs() < TOL * want, "{case}: weighted loss {loss} vs {want}");
}

fn check_soft_prompt(case: &str) {
    let c = load(case);
    let sp = &c.reference["soft_prompt"];
    let prompt: Vec<f32> = sp.data.iter().map(|&x| x as f32).collect();
    let batch = Batch::with_prompt(&c.ids, c.batch, c.seq, sp.shape[0], &vec![0; c.batch]);
    let norm = default_norm(&batch.targets, &batch.weights);
    let mut acts = Activations::default();
    let loss = c.model.forward(&mut acts, &batch, &prompt, &[], norm);
    assert_close(&format!("{case}: sp_logits"), &acts.logits, &c.reference["sp_logits"].data, TOL);
    let want = scalar(&c, "sp_loss");
    assert!((loss as f64 - want).abs() < TOL * want, "{case}: sp loss {loss} vs {want}");
    let mut dprompt = vec![0.0; prompt.len()];
    c.model.backward(&mut acts, &batch, &[], norm, GradSinks { prompts: Some(&mut dprompt), ..Default::default() });
    assert_close(&format!("{case}: sp_grad"), &dprompt, &c.reference["sp_grad"].data, TOL);
}

macro_rules! parity_tests {
    ($($case:ident),*) => {$(
        mod $case {
            #[test]
            fn logits_loss_and_every_weight_gradient_match_transformers() {
                super::check_logits_loss_and_weight_grads(stringify!($case));
            }
            #[test]
            fn weighted_loss_matches_transformers() {
                super::check_weighted_loss(stringify!($case));
            }
            #[test]
            fn soft_prompt_logits_loss_and_gradient_match_transformers() {
                super::check_soft_prompt(stringify!($case));
            }
        }
    )*};
}

parity_tests!(gpt_neox_parallel, gpt_neox_sequential, gpt2, llama_gqa, llama_tied);
