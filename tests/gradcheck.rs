//! Finite-difference gradient checks: for every kernel (norms, attention with grouped
//! heads, rotary, activations, weighted cross-entropy) and for every trainable set of the
//! whole model (weights of each architecture, soft prompt, LoRA, conditional prompt MLP,
//! steering vector), the analytic directional derivative along random directions matches
//! a central difference.

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use vestige::engine::activations::Activations;
use vestige::engine::backward::GradSinks;
use vestige::engine::batch::Batch;
use vestige::engine::cond_prompt::{CondPrompt, CondPromptShape};
use vestige::engine::config::Activation;
use vestige::engine::kernels::act::{act_backward, act_forward};
use vestige::engine::kernels::attention::{attention_backward, attention_forward, AttnShape};
use vestige::engine::kernels::dropout::{Dropout, Mask};
use vestige::engine::kernels::loss::{cross_entropy, default_norm};
use vestige::engine::kernels::norm::{norm_backward, norm_forward, partials_len, NormKind};
use vestige::engine::kernels::rope::{rope_row, RopeTable};
use vestige::engine::lora::{Lora, LoraSpec, Proj};
use vestige::engine::model::{Model, Steer};

fn rand_vec(rng: &mut ChaCha8Rng, n: usize, scale: f32) -> Vec<f32> {
    (0..n).map(|_| scale * (rng.random::<f32>() * 2.0 - 1.0)).collect()
}

/// Compares `grad · v` with a Richardson-extrapolated central difference of `f` along three
/// random directions.
#[track_caller]
fn check_directional(name: &str, f: &mut dyn FnMut(&[f32]) -> f64, x: &[f32], grad: &[f32], eps: f32, tol: f64) {
    let mut rng = ChaCha8Rng::seed_from_u64(99);
    for dir in 0..3 {
        let v = rand_vec(&mut rng, x.len(), 1.0);
        let mut central = |h: f32| {
            let shifted = |sign: f32| x.iter().zip(&v).map(|(a, b)| a + sign * h * b).collect::<Vec<f32>>();
            (f(&shifted(1.0)) - f(&shifted(-1.0))) / (2.0 * h as f64)
        };
        // Richardson extrapolation of two central differences cancels the O(eps²) term, so
        // eps can stay large enough that f32 rounding of `f` does not dominate.
        let numeric = (4.0 * central(eps / 2.0) - central(eps)) / 3.0;
        let analytic: f64 = grad.iter().zip(&v).map(|(g, v)| *g as f64 * *v as f64).sum();
        let err = (numeric - analytic).abs() / analytic.abs().max(numeric.abs()).max(1e-3);
        assert!(
            err < tol,
            "{name} direction {dir}: analytic {analytic:.6e} vs numeric {numeric:.6e} (rel err {err:.2e})"
        );
    }
}

/// `Σ r ⊙ y` in f64: a scalar whose gradient with respect to `y` is `r`.
fn project(y: &[f32], r: &[f32]) -> f64 {
    y.iter().zip(r).map(|(a, b)| *a as f64 * *b as f64).sum()
}

fn check_norm(centred: bool) {
    let (n, d) = (130, 24);
    let kind = NormKind { centred, eps: 1e-5 };
    let mut rng = ChaCha8Rng::seed_from_u64(1);
    let (x, w, b, r) = (
        rand_vec(&mut rng, n * d, 2.0),
        rand_vec(&mut rng, d, 1.5),
        rand_vec(&mut rng, d, 0.5),
        rand_vec(&mut rng, n * d, 1.0),
    );
    let bias = centred.then_some(b.as_slice());
    let run = |x: &[f32], w: &[f32], b: Option<&[f32]>| {
        let (mut y, mut m, mut s) = (vec![0.0; n * d], vec![0.0; n], vec![0.0; n]);
        norm_forward(&mut y, &mut m, &mut s, x, w, b, kind);
        (project(&y, &r), m, s)
    };
    let (_, m, s) = run(&x, &w, bias);
    let (mut dx, mut dw, mut db, mut partials) =
        (vec![0.0; n * d], vec![0.0; d], vec![0.0; d], vec![0.0; partials_len(n, d)]);
    norm_backward(&mut dx, Some((&mut dw, centred.then_some(&mut db[..]))), &mut partials, &r, &x, &m, &s, &w, kind);
    check_directional("norm dx", &mut |x| run(x, &w, bias).0, &x, &dx, 1e-2, 1e-3);
    check_directional("norm dw", &mut |w| run(&x, w, bias).0, &w, &dw, 1e-2, 1e-3);
    if centred {
        check_directional("norm db", &mut |b| run(&x, &w, Some(b)).0, &b, &db, 1e-2, 1e-3);
    }
}

#[test]
fn layernorm_gradients_match_finite_differences() {
    check_norm(true);
}

#[test]
fn rmsnorm_gradients_match_finite_differences() {
    check_norm(false);
}

fn check_attention(mask: Option<Mask>) {
    // 70 rows spans three query blocks, so block edges and the masked diagonal are covered.
    let sh = AttnShape { batch: 2, seq: 70, heads: 4, kv_heads: 2, head_dim: 8 };
    let width = (sh.heads + 2 * sh.kv_heads) * sh.head_dim;
    let n = sh.batch * sh.seq;
    let mut rng = ChaCha8Rng::seed_from_u64(2);
    let (qkv, r) = (rand_vec(&mut rng, n * width, 1.0), rand_vec(&mut rng, n * sh.heads * sh.head_dim, 1.0));
    let (mut probs, mut scratch) = (vec![0.0; sh.batch * sh.heads * sh.seq * sh.seq], vec![0.0; sh.scratch_len()]);
    let mut run = |qkv: &[f32], probs: &mut Vec<f32>| {
        let mut out = vec![0.0; n * sh.heads * sh.head_dim];
        attention_forward(&mut out, probs, &mut scratch, qkv, sh, mask);
        project(&out, &r)
    };
    run(&qkv, &mut probs);
    // NaN to start with: the backward pass must overwrite every element (an accumulate
    // into a stale value, or a skipped one, would leave NaN in the gradient).
    let mut dqkv = vec![f32::NAN; n * width];
    attention_backward(&mut dqkv, &mut probs.clone(), &mut vec![0.0; sh.scratch_len()], &r, &qkv, sh, mask);
    check_directional("attention dqkv", &mut |x| run(x, &mut probs), &qkv, &dqkv, 1e-2, 1e-3);
}

#[test]
fn causal_grouped_query_attention_gradient_matches_finite_differences() {
    check_attention(None);
}

#[test]
fn attention_with_dropout_gradient_matches_finite_differences() {
    check_attention(Some(Mask::new(0.3, 5, 1)));
}

#[test]
fn rotary_inverse_is_the_transpose_of_rotary() {
    // Rotation is linear, so its gradient is its transpose: <R x, y> = <x, Rᵀ y>.
    let (heads, hd, pos) = (3, 8, 17);
    let table = RopeTable::new(4, 10000.0, 64);
    let mut rng = ChaCha8Rng::seed_from_u64(3);
    let (x, y) = (rand_vec(&mut rng, heads * hd, 1.0), rand_vec(&mut rng, heads * hd, 1.0));
    let (mut rx, mut rty) = (x.clone(), y.clone());
    rope_row(&mut rx, &table, pos, heads, hd, false);
    rope_row(&mut rty, &table, pos, heads, hd, true);
    assert_ne!(rx, x, "rotation must change the vector");
    assert!((project(&rx, &y) - project(&x, &rty)).abs() < 1e-5);
}

fn check_activation(act: Activation) {
    let (n, d_ff) = (70, 12);
    let fc = if act == Activation::SwiGlu { 2 * d_ff } else { d_ff };
    let mut rng = ChaCha8Rng::seed_from_u64(4);
    let (pre, r) = (rand_vec(&mut rng, n * fc, 3.0), rand_vec(&mut rng, n * d_ff, 1.0));
    let bias = rand_vec(&mut rng, fc, 1.0);
    let forward = |pre: &[f32]| {
        let (mut out, mut saved) = (vec![0.0; n * d_ff], pre.to_vec());
        act_forward(&mut out, &mut saved, Some(&bias), d_ff, act);
        (out, saved)
    };
    let (out, saved) = forward(&pre);
    // The bias is added before the nonlinearity, exactly.
    let biased: Vec<f32> = pre.chunks_exact(fc).flat_map(|row| row.iter().zip(&bias).map(|(p, b)| p + b)).collect();
    let mut unbiased_out = vec![0.0; n * d_ff];
    act_forward(&mut unbiased_out, &mut biased.clone(), None, d_ff, act);
    assert_eq!(out, unbiased_out, "{act:?}: a fused bias must equal a pre-added one");
    let mut dpre = vec![0.0; n * fc];
    act_backward(&mut dpre, &r, &saved, d_ff, act);
    let mut run = |pre: &[f32]| project(&forward(pre).0, &r);
    check_directional(&format!("{act:?}"), &mut run, &pre, &dpre, 1e-2, 1e-3);
}

#[test]
fn gelu_exact_gradient_matches_finite_differences() {
    check_activation(Activation::GeluExact);
}

#[test]
fn gelu_tanh_gradient_matches_finite_differences() {
    check_activation(Activation::GeluTanh);
}

#[test]
fn swiglu_gradient_matches_finite_differences() {
    check_activation(Activation::SwiGlu);
}

#[test]
fn weighted_cross_entropy_gradient_matches_finite_differences() {
    let (n, v) = (67, 11);
    let mut rng = ChaCha8Rng::seed_from_u64(5);
    let logits = rand_vec(&mut rng, n * v, 3.0);
    let targets: Vec<i32> = (0..n).map(|i| if i % 7 == 3 { -1 } else { (i * 5 % v) as i32 }).collect();
    let weights: Vec<f32> = (0..n).map(|i| [0.0, 0.5, 1.0, 2.0, -0.7][i % 5]).collect();
    let norm = default_norm(&targets, &weights);
    let mut run = |l: &[f32]| cross_entropy(&mut l.to_vec(), &mut vec![0.0; n], &targets, &weights, norm, false) as f64;
    let mut grad = logits.clone();
    cross_entropy(&mut grad, &mut vec![0.0; n], &targets, &weights, norm, true);
    check_directional("cross-entropy", &mut run, &logits, &grad, 3e-2, 3e-3);
}

// ---- whole-model checks ----

fn fixture_model(case: &str) -> Model {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/models").join(case).join("model");
    Model::load(&dir).unwrap().model
}

fn lm_batch(model: &Model, seed: u64) -> Batch {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let (b, t) = (2, 9);
    let ids: Vec<u32> = (0..b * t).map(|_| rng.random_range(0..model.cfg.vocab_size as u32)).collect();
    Batch::language_model(&ids, b, t)
}

fn loss_of(model: &Model, batch: &Batch, prompts: &[f32], steers: &[Steer]) -> f64 {
    let norm = default_norm(&batch.targets, &batch.weights);
    model.forward(&mut Activations::default(), batch, prompts, steers, norm) as f64
}

fn check_all_weights(case: &str) {
    check_weights_with_dropout(case, Dropout::default());
}

fn check_weights_with_dropout(case: &str, dropout: Dropout) {
    let model = fixture_model(case);
    let batch = lm_batch(&model, 6);
    let norm = default_norm(&batch.targets, &batch.weights);
    let new_acts = || Activations { dropout, ..Default::default() };
    let mut acts = new_acts();
    model.forward(&mut acts, &batch, &[], &[], norm);
    let mut grads = vec![0.0; model.layout.total];
    model.backward(&mut acts, &batch, &[], norm, GradSinks { weights: Some(&mut grads), ..Default::default() });
    let mut probe = model.clone();
    check_directional(
        &format!("{case} weights"),
        &mut |w| {
            probe.weights.copy_from_slice(w);
            probe.forward(&mut new_acts(), &batch, &[], &[], norm) as f64
        },
        &model.weights,
        &grads,
        1e-3,
        2e-2,
    );
}

#[test]
fn weight_gradients_with_attention_and_residual_dropout_match_finite_differences() {
    check_weights_with_dropout("gpt_neox_sequential", Dropout { attn: 0.2, resid: 0.3, seed: 17 });
    check_weights_with_dropout("gpt2", Dropout { attn: 0.1, resid: 0.1, seed: 3 });
}

#[test]
fn gpt_neox_weight_gradients_match_finite_differences() {
    check_all_weights("gpt_neox_parallel");
    check_all_weights("gpt_neox_sequential");
}

#[test]
fn gpt2_weight_gradients_match_finite_differences() {
    check_all_weights("gpt2");
}

#[test]
fn llama_weight_gradients_match_finite_differences() {
    check_all_weights("llama_gqa");
    check_all_weights("llama_tied");
}

#[test]
fn mid_sequence_soft_prompt_gradient_matches_finite_differences() {
    let model = fixture_model("llama_gqa");
    let ids: Vec<u32> = (0..20).map(|i| (i * 13 % 64) as u32).collect();
    let batch = Batch::with_prompt(&ids, 2, 10, 3, &[4, 0]);
    let mut rng = ChaCha8Rng::seed_from_u64(7);
    let prompt = rand_vec(&mut rng, 3 * model.cfg.d_model, 0.5);
    let norm = default_norm(&batch.targets, &batch.weights);
    let mut acts = Activations::default();
    model.forward(&mut acts, &batch, &prompt, &[], norm);
    let mut grad = vec![0.0; prompt.len()];
    model.backward(&mut acts, &batch, &[], norm, GradSinks { prompts: Some(&mut grad), ..Default::default() });
    // A step of 1e-2 as in the other model-level checks (with Richardson extrapolation): at
    // 1e-3 one f32 ulp of a loss near 4 is already ~5e-3 of this directional derivative.
    check_directional("soft prompt", &mut |p| loss_of(&model, &batch, p, &[]), &prompt, &grad, 1e-2, 5e-3);
}

#[test]
fn lora_gradients_match_finite_differences() {
    let mut model = fixture_model("gpt_neox_parallel");
    let spec = LoraSpec { rank: 3, alpha: 6.0, targets: Proj::ALL.to_vec() };
    let mut lora = Lora::new(&model, spec, 8);
    let mut rng = ChaCha8Rng::seed_from_u64(8);
    // B starts at zero; give it values so that dA is exercised too.
    lora.params.iter_mut().for_each(|p| *p += 0.1 * (rng.random::<f32>() - 0.5));
    model.lora = Some(lora);
    let batch = lm_batch(&model, 9);
    let norm = default_norm(&batch.targets, &batch.weights);
    let mut acts = Activations::default();
    model.forward(&mut acts, &batch, &[], &[], norm);
    let mut grad = vec![0.0; model.lora.as_ref().unwrap().n_params()];
    model.backward(&mut acts, &batch, &[], norm, GradSinks { lora: Some(&mut grad), ..Default::default() });
    let params = model.lora.as_ref().unwrap().params.clone();
    check_directional(
        "lora",
        &mut |p| {
            model.lora.as_mut().unwrap().params.copy_from_slice(p);
            loss_of(&model, &batch, &[], &[])
        },
        &params,
        &grad,
        1e-2,
        5e-3,
    );
}

#[test]
fn conditional_prompt_mlp_gradient_matches_finite_differences() {
    let model = fixture_model("gpt2");
    let shape = CondPromptShape { conditions: 2, tokens: 3, hidden: 5, d_model: model.cfg.d_model };
    let mut mlp = CondPrompt::new(shape, 10);
    let conditions = [0.3f32, -1.2, 1.5, 0.4];
    let ids: Vec<u32> = (0..16).map(|i| (i * 11 % 64) as u32).collect();
    let batch = Batch::with_prompt(&ids, 2, 8, 3, &[0, 0]).per_sequence_prompts(3);
    let norm = default_norm(&batch.targets, &batch.weights);
    let mut prompts = vec![0.0; 2 * 3 * model.cfg.d_model];
    let run = |mlp: &mut CondPrompt, prompts: &mut Vec<f32>| {
        mlp.forward(&conditions, prompts);
        loss_of(&model, &batch, prompts, &[])
    };
    run(&mut mlp, &mut prompts);
    let mut acts = Activations::default();
    model.forward(&mut acts, &batch, &prompts, &[], norm);
    let mut dprompts = vec![0.0; prompts.len()];
    model.backward(&mut acts, &batch, &[], norm, GradSinks { prompts: Some(&mut dprompts), ..Default::default() });
    let mut grad = vec![0.0; mlp.n_params()];
    mlp.backward(&conditions, &dprompts, &mut grad);
    let params = mlp.params.clone();
    let mut probe = mlp.clone();
    check_directional(
        "conditional prompt",
        &mut |p| {
            probe.params.copy_from_slice(p);
            run(&mut probe, &mut prompts)
        },
        &params,
        &grad,
        1e-3,
        5e-3,
    );
}

#[test]
fn steering_vector_gradient_matches_finite_differences() {
    let model = fixture_model("gpt_neox_sequential");
    let batch = lm_batch(&model, 11);
    let mut rng = ChaCha8Rng::seed_from_u64(12);
    let d = model.cfg.d_model;
    let steer = |v: &[f32]| vec![Steer { layer: 1, coef: 1.5, start: 2, end: 7, vector: v.to_vec(), project: false }];
    let vector = rand_vec(&mut rng, d, 0.5);
    let norm = default_norm(&batch.targets, &batch.weights);
    let mut acts = Activations::default();
    model.forward(&mut acts, &batch, &[], &steer(&vector), norm);
    let mut grads = vec![vec![0.0; d]];
    model.backward(
        &mut acts,
        &batch,
        &steer(&vector),
        norm,
        GradSinks { steers: Some(&mut grads), ..Default::default() },
    );
    check_directional("steering", &mut |v| loss_of(&model, &batch, &[], &steer(v)), &vector, &grads[0], 1e-2, 5e-3);
}

#[test]
fn merged_lora_gives_the_same_logits_as_attached_adapters() {
    let mut model = fixture_model("llama_gqa");
    let spec = LoraSpec { rank: 2, alpha: 4.0, targets: vec![Proj::Qkv, Proj::Down] };
    let mut lora = Lora::new(&model, spec, 21);
    let mut rng = ChaCha8Rng::seed_from_u64(22);
    lora.params.iter_mut().for_each(|p| *p += 0.2 * (rng.random::<f32>() - 0.5));
    let batch = lm_batch(&model, 23);
    let mut merged = model.clone();
    lora.merge_into(&mut merged);
    model.lora = Some(lora);
    let (mut a, mut b) = (Activations::default(), Activations::default());
    let (la, lb) = (model.forward(&mut a, &batch, &[], &[], 1.0), merged.forward(&mut b, &batch, &[], &[], 1.0));
    let err = a.logits.iter().zip(&b.logits).map(|(x, y)| (x - y).abs()).fold(0.0f32, f32::max);
    assert!(err < 1e-4 && (la - lb).abs() < 1e-4, "merged LoRA differs: logits {err}, loss {la} vs {lb}");
    assert_ne!(merged.weights, fixture_model("llama_gqa").weights, "merging must change the weights");
}
