//! The training step reuses its preallocated activation arena: after the first step, no
//! buffer of the arena is reallocated (their addresses are stable), for full-weight
//! training with dropout and for a mid-sequence soft prompt. (The `gemm` crate still
//! allocates a small packing workspace per product, and rayon may allocate job-queue blocks;
//! those are outside vestige's code.)

use vestige::engine::activations::Activations;
use vestige::engine::backward::GradSinks;
use vestige::engine::batch::Batch;
use vestige::engine::kernels::dropout::Dropout;
use vestige::engine::kernels::loss::default_norm;
use vestige::engine::model::Model;
use vestige::engine::optim::AdamW;

/// The address of every buffer in the arena.
fn addresses(a: &Activations) -> Vec<usize> {
    let mut v: Vec<usize> = a.resid.iter().map(|r| r.as_ptr() as usize).collect();
    for b in &a.blocks {
        for buf in [&b.ln1, &b.qkv, &b.probs, &b.attn, &b.mid, &b.ln2, &b.fc, &b.act] {
            v.push(buf.as_ptr() as usize);
        }
    }
    let g = &a.grad;
    for buf in [&a.logits, &a.lnf, &a.attn_scratch, &g.dres, &g.dln1, &g.dln2, &g.dqkv, &g.dattn, &g.dfc, &g.dact] {
        v.push(buf.as_ptr() as usize);
    }
    v
}

#[test]
fn activation_arena_is_reused_across_training_and_soft_prompt_steps() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/models/llama_gqa/model");
    let mut model = Model::load(&dir).unwrap().model;
    let ids: Vec<u32> = (0..2 * 40).map(|i| (i * 7 % 64) as u32).collect();
    let lm = Batch::language_model(&ids, 2, 40);
    let sp = Batch::with_prompt(&ids, 2, 40, 4, &[0, 9]);
    let mut acts = Activations { dropout: Dropout { attn: 0.1, resid: 0.1, seed: 1 }, ..Default::default() };
    let mut sp_acts = Activations::default();
    let mut grads = vec![0.0; model.n_params()];
    let mut opt = AdamW::new(model.n_params());
    let mut prompt = vec![0.01; 4 * model.cfg.d_model];
    let mut dprompt = vec![0.0; prompt.len()];
    let mut sp_opt = AdamW::new(prompt.len());
    let mut seen: Option<(Vec<usize>, Vec<usize>)> = None;
    for _ in 0..3 {
        let norm = default_norm(&lm.targets, &lm.weights);
        model.forward(&mut acts, &lm, &[], &[], norm);
        grads.fill(0.0);
        model.backward(&mut acts, &lm, &[], norm, GradSinks { weights: Some(&mut grads), ..Default::default() });
        opt.update(&mut model.weights, &grads, 1e-3);
        let norm = default_norm(&sp.targets, &sp.weights);
        model.forward(&mut sp_acts, &sp, &prompt, &[], norm);
        dprompt.fill(0.0);
        model.backward(&mut sp_acts, &sp, &[], norm, GradSinks { prompts: Some(&mut dprompt), ..Default::default() });
        sp_opt.update(&mut prompt, &dprompt, 1e-3);
        let now = (addresses(&acts), addresses(&sp_acts));
        if let Some(before) = &seen {
            assert_eq!(before, &now, "an arena buffer was reallocated");
        }
        seen = Some(now);
    }
}
