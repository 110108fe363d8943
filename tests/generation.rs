//! KV-cached generation against the full forward pass, for every architecture: per-step
//! logits, greedy decoding, soft prompts (prepended, appended, mid-sequence), steering,
//! ragged batches, eos, seeded top-p sampling and length errors.

mod common;

use common::{assert_close, fixtures, rel_err};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use vestige::engine::activations::Activations;
use vestige::engine::batch::Batch;
use vestige::engine::generate::{Decoder, GenerateError, GenerateRequest, InputSlot, Sampling};
use vestige::engine::model::{standard_normal, Model, Steer};

const TOL: f64 = 1e-4;
const N_PROMPT: usize = 4;

fn load(case: &str) -> Model {
    Model::load(&fixtures().join("models").join(case).join("model")).unwrap().model
}

/// `n` deterministic pseudo-random tokens.
fn tokens(model: &Model, n: usize, salt: u32) -> Vec<InputSlot> {
    let v = model.cfg.vocab_size as u32;
    (0..n as u32).map(|i| InputSlot::Token((i * 37 + salt * 11 + 5) % v)).collect()
}

/// `rows × d` normal(0, scale) values, deterministic in `seed`.
fn random_rows(model: &Model, rows: usize, scale: f32, seed: u64) -> Vec<f32> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    (0..rows * model.cfg.d_model).map(|_| scale * standard_normal(&mut rng)).collect()
}

/// `N_PROMPT` soft-prompt rows at the scale of the token embeddings.
fn soft_prompt(model: &Model) -> Vec<f32> {
    let wte = model.w(&model.layout.wte);
    let rms = (wte.iter().map(|x| x * x).sum::<f32>() / wte.len() as f32).sqrt();
    random_rows(model, N_PROMPT, rms, 7)
}

fn prompt_slots() -> Vec<InputSlot> {
    (0..N_PROMPT as u32).map(InputSlot::Prompt).collect()
}

/// `[S, V]` logits of `Model::forward` on one sequence.
fn full_logits(model: &Model, slots: &[InputSlot], prompts: &[f32], steers: &[Steer]) -> Vec<f32> {
    let s = slots.len();
    let batch = Batch { batch: 1, seq: s, slots: slots.to_vec(), targets: vec![-1; s], weights: vec![0.0; s] };
    let mut acts = Activations::default();
    model.forward(&mut acts, &batch, prompts, steers, 1.0);
    acts.logits[..s * model.cfg.vocab_size].to_vec()
}

/// Row `pos` of `[S, V]` logits, as f64 references.
fn row(logits: &[f32], pos: usize, v: usize) -> Vec<f64> {
    logits[pos * v..(pos + 1) * v].iter().map(|&x| x as f64).collect()
}

fn argmax(row: &[f32]) -> u32 {
    (0..row.len()).fold(0, |best, i| if row[i] > row[best] { i } else { best }) as u32
}

fn request<'a>(
    inputs: &'a [Vec<InputSlot>],
    prompts: &'a [f32],
    steers: &'a [Steer],
    n: usize,
    sampling: Sampling,
) -> GenerateRequest<'a> {
    GenerateRequest {
        inputs,
        prompt_vectors: prompts,
        steers,
        max_new_tokens: n,
        sampling,
        eos: None,
        banned: &[],
        seed: 0,
    }
}

/// Greedy decoding by repeated full forwards: the argmax at the last slot, appended.
fn full_forward_greedy(model: &Model, input: &[InputSlot], prompts: &[f32], steers: &[Steer], n: usize) -> Vec<u32> {
    let (mut seq, mut out) = (input.to_vec(), Vec::new());
    let v = model.cfg.vocab_size;
    for _ in 0..n {
        let logits = full_logits(model, &seq, prompts, steers);
        let t = argmax(&logits[(seq.len() - 1) * v..]);
        out.push(t);
        seq.push(InputSlot::Token(t));
    }
    out
}

/// Feeds `inputs` then `continuations` (one chunk per step, per sequence) through a
/// decoder and checks every returned logits row against the full forward at that
/// position; sequences with an empty chunk must keep their previous logits.
fn assert_steps_match_full(
    model: &Model,
    inputs: &[Vec<InputSlot>],
    steps: &[Vec<Vec<InputSlot>>],
    prompts: &[f32],
    steers: &[Steer],
) {
    let (b_n, v) = (inputs.len(), model.cfg.vocab_size);
    let total = |b: usize| inputs[b].len() + steps.iter().map(|s| s[b].len()).sum::<usize>();
    let capacity = (0..b_n).map(total).max().unwrap();
    let mut dec = Decoder::new(model, b_n, capacity).unwrap();
    let mut seqs: Vec<Vec<InputSlot>> = vec![Vec::new(); b_n];
    let mut before = vec![0.0; b_n * v];
    for (k, chunks) in std::iter::once(inputs).chain(steps.iter().map(Vec::as_slice)).enumerate() {
        let refs: Vec<&[InputSlot]> = chunks.iter().map(Vec::as_slice).collect();
        let logits = dec.step(&refs, prompts, steers).unwrap().to_vec();
        for b in 0..b_n {
            let got = &logits[b * v..(b + 1) * v];
            if chunks[b].is_empty() {
                assert_eq!(got, &before[b * v..(b + 1) * v], "step {k}, seq {b}: untouched row changed");
                continue;
            }
            seqs[b].extend_from_slice(&chunks[b]);
            let full = full_logits(model, &seqs[b], prompts, steers);
            assert_close(
                &format!("step {k}, seq {b}, position {}", seqs[b].len() - 1),
                got,
                &row(&full, seqs[b].len() - 1, v),
                TOL,
            );
        }
        assert_eq!(dec.cache().lens(), seqs.iter().map(Vec::len).collect::<Vec<_>>());
        before = logits;
    }
}

/// One token per step for every sequence.
fn single_token_steps(model: &Model, b_n: usize, n: usize) -> Vec<Vec<Vec<InputSlot>>> {
    (0..n).map(|k| (0..b_n).map(|b| tokens(model, 1, (k * 3 + b) as u32 + 50)).collect()).collect()
}

fn check_incremental_logits(case: &str) {
    let m = load(case);
    let inputs = vec![tokens(&m, 7, 1), tokens(&m, 3, 2)];
    let mut steps = single_token_steps(&m, 2, 6);
    // A multi-token chunk for one sequence while the other idles, then single tokens.
    steps.push(vec![tokens(&m, 3, 9), vec![]]);
    steps.push(vec![vec![], tokens(&m, 1, 4)]);
    steps.extend(single_token_steps(&m, 2, 2));
    assert_steps_match_full(&m, &inputs, &steps, &[], &[]);
    // A long prefill (several attention blocks of queries) with a long continuation.
    let long = vec![tokens(&m, 45, 3)];
    assert_steps_match_full(&m, &long, &single_token_steps(&m, 1, 5), &[], &[]);
}

fn check_greedy_equals_repeated_full_forward(case: &str) {
    let m = load(case);
    for input in [tokens(&m, 5, 1), tokens(&m, 1, 2)] {
        let inputs = vec![input.clone()];
        let got = m.generate(&request(&inputs, &[], &[], 8, Sampling::Greedy)).unwrap();
        assert_eq!(got, vec![full_forward_greedy(&m, &input, &[], &[], 8)], "{case}: input of {}", input.len());
    }
}

/// Greedy generation from `input` equals full-forward decoding, its first token is the
/// argmax at the last input slot, and its step logits match the full forward.
fn check_soft_prompt_input(m: &Model, input: Vec<InputSlot>, prompts: &[f32], what: &str) {
    let v = m.cfg.vocab_size;
    let inputs = vec![input.clone()];
    let got = m.generate(&request(&inputs, prompts, &[], 5, Sampling::Greedy)).unwrap();
    let full = full_logits(m, &input, prompts, &[]);
    let last = input.len() - 1;
    assert_eq!(
        got[0][0],
        argmax(&full[last * v..(last + 1) * v]),
        "{what}: first token is the argmax at the last input slot"
    );
    assert_eq!(got[0], full_forward_greedy(m, &input, prompts, &[], 5), "{what}: greedy continuation");
    let steps: Vec<Vec<Vec<InputSlot>>> = got[0][..4].iter().map(|&t| vec![vec![InputSlot::Token(t)]]).collect();
    assert_steps_match_full(m, &inputs, &steps, prompts, &[]);
    // The prefill logits are those of the last slot, not of the last soft-prompt slot.
    let mut dec = Decoder::new(m, 1, input.len()).unwrap();
    let first = dec.step(&[&input], prompts, &[]).unwrap().to_vec();
    let soft_last = input.iter().rposition(|s| matches!(s, InputSlot::Prompt(_))).unwrap();
    if soft_last != last {
        assert!(
            rel_err(&first, &row(&full, soft_last, v), 1e-12) > 1e-2,
            "{what}: prefill logits are not the soft-prompt slot's"
        );
    }
}

fn check_soft_prompts(case: &str) {
    let m = load(case);
    let sp = soft_prompt(&m);
    let ids = tokens(&m, 6, 3);
    let prepended: Vec<InputSlot> = prompt_slots().into_iter().chain(ids.clone()).collect();
    check_soft_prompt_input(&m, prepended, &sp, "prepended");
    let appended: Vec<InputSlot> = ids.iter().copied().chain(prompt_slots()).collect();
    check_soft_prompt_input(&m, appended, &sp, "appended");
    let raw: Vec<u32> = ids.iter().map(|s| if let InputSlot::Token(t) = s { *t } else { unreachable!() }).collect();
    let mid = Batch::with_prompt(&raw, 1, raw.len(), N_PROMPT, &[2]).slots;
    assert!(matches!(mid[2], InputSlot::Prompt(0)) && matches!(mid[mid.len() - 1], InputSlot::Token(_)));
    check_soft_prompt_input(&m, mid, &sp, "mid-sequence");
}

fn check_steering(case: &str) {
    let m = load(case);
    let l = m.cfg.n_layers;
    let mk = |layer, coef, start, end, seed| Steer {
        layer,
        coef,
        start,
        end,
        vector: random_rows(&m, 1, 1.0, seed),
        project: false,
    };
    // Spans covering only the prompt, prompt and generation, only generation, everything.
    let steers = vec![mk(0, 0.5, 1, 3, 1), mk(1, 2.0, 3, 9, 2), mk(l, 1.5, 7, 100, 3), mk(1, -1.0, 0, 100, 4)];
    let inputs = vec![tokens(&m, 5, 6)];
    let got = m.generate(&request(&inputs, &[], &steers, 7, Sampling::Greedy)).unwrap();
    assert_eq!(got[0], full_forward_greedy(&m, &inputs[0], &[], &steers, 7), "{case}: steered greedy");
    let steps: Vec<Vec<Vec<InputSlot>>> = got[0][..6].iter().map(|&t| vec![vec![InputSlot::Token(t)]]).collect();
    assert_steps_match_full(&m, &inputs, &steps, &[], &steers);
    // The steers do change the logits of generated positions.
    let seq: Vec<InputSlot> = inputs[0].iter().copied().chain(got[0].iter().map(|&t| InputSlot::Token(t))).collect();
    let (plain, steered) = (full_logits(&m, &seq, &[], &[]), full_logits(&m, &seq, &[], &steers));
    let v = m.cfg.vocab_size;
    assert!(rel_err(&plain[8 * v..9 * v], &row(&steered, 8, v), 1e-12) > 1e-2, "{case}: steering is active");
}

fn check_ragged_batch(case: &str) {
    let m = load(case);
    let sp = soft_prompt(&m);
    let inputs = vec![tokens(&m, 2, 1), prompt_slots().into_iter().chain(tokens(&m, 7, 2)).collect(), tokens(&m, 4, 3)];
    let batched = m.generate(&request(&inputs, &sp, &[], 6, Sampling::Greedy)).unwrap();
    for (b, input) in inputs.iter().enumerate() {
        let alone = m.generate(&request(std::slice::from_ref(input), &sp, &[], 6, Sampling::Greedy)).unwrap();
        assert_eq!(batched[b], alone[0], "{case}: sequence {b} batched vs alone");
    }
    // An eos stops each sequence at its first occurrence (kept); the others run on.
    let eos = batched[1][2];
    let stopped =
        m.generate(&GenerateRequest { eos: Some(eos), ..request(&inputs, &sp, &[], 6, Sampling::Greedy) }).unwrap();
    for b in 0..inputs.len() {
        let want = match batched[b].iter().position(|&t| t == eos) {
            Some(i) => &batched[b][..=i],
            None => &batched[b][..],
        };
        assert_eq!(stopped[b], want, "{case}: sequence {b} with eos {eos}");
    }
    assert!(stopped[1].len() <= 3);
}

macro_rules! per_architecture {
    ($($case:ident),*) => {$(
        mod $case {
            #[test]
            fn incremental_logits_match_full_forward_at_every_step() {
                super::check_incremental_logits(stringify!($case));
            }
            #[test]
            fn greedy_generation_equals_argmax_of_repeated_full_forwards() {
                super::check_greedy_equals_repeated_full_forward(stringify!($case));
            }
            #[test]
            fn first_token_comes_from_last_input_slot_with_prepended_appended_and_mid_soft_prompts() {
                super::check_soft_prompts(stringify!($case));
            }
            #[test]
            fn steering_applies_by_absolute_position_in_prefill_and_generated_steps() {
                super::check_steering(stringify!($case));
            }
            #[test]
            fn batched_ragged_generation_equals_each_sequence_alone_and_eos_stops_each() {
                super::check_ragged_batch(stringify!($case));
            }
        }
    )*};
}

per_architecture!(gpt_neox_parallel, gpt_neox_sequential, gpt2, llama_gqa, llama_tied);

const HOT: Sampling = Sampling::TopP { temperature: 5.0, top_p: 0.98 };

fn sample(m: &Model, inputs: &[Vec<InputSlot>], sampling: Sampling, seed: u64) -> Vec<Vec<u32>> {
    m.generate(&GenerateRequest { seed, ..request(inputs, &[], &[], 20, sampling) }).unwrap()
}

#[test]
fn top_p_sampling_is_deterministic_in_the_seed_and_varies_across_seeds() {
    let m = load("llama_gqa");
    let inputs = vec![tokens(&m, 4, 1), tokens(&m, 6, 2)];
    let a = sample(&m, &inputs, HOT, 11);
    assert_eq!(a, sample(&m, &inputs, HOT, 11), "same seed, same tokens");
    let b = sample(&m, &inputs, HOT, 12);
    // At temperature 5 over 64 tokens, two seeds agreeing on 20 draws is vanishingly rare.
    assert_ne!(a[0], b[0]);
    assert_ne!(a[1], b[1]);
    // Identical inputs in one batch draw from different streams.
    let twins = sample(&m, &[inputs[0].clone(), inputs[0].clone()], HOT, 11);
    assert_ne!(twins[0], twins[1]);
}

#[test]
fn each_sequence_samples_independently_of_the_rest_of_the_batch() {
    let m = load("gpt_neox_parallel");
    let (x, y, z) = (tokens(&m, 4, 1), tokens(&m, 6, 2), tokens(&m, 2, 3));
    let xy = sample(&m, &[x.clone(), y.clone()], HOT, 5);
    let xz = sample(&m, &[x.clone(), z.clone()], HOT, 5);
    let zy = sample(&m, &[z, y], HOT, 5);
    assert_eq!(xy[0], xz[0], "sequence 0 does not depend on sequence 1");
    assert_eq!(xy[1], zy[1], "sequence 1 does not depend on sequence 0");
    assert_eq!(xy[0], sample(&m, &[x], HOT, 5)[0], "sequence 0 batched equals alone");
}

#[test]
fn top_p_near_zero_is_greedy() {
    for case in ["gpt2", "llama_tied"] {
        let m = load(case);
        let inputs = vec![tokens(&m, 3, 1), tokens(&m, 8, 2)];
        let tiny = Sampling::TopP { temperature: 1.5, top_p: 1e-7 };
        assert_eq!(sample(&m, &inputs, tiny, 3), sample(&m, &inputs, Sampling::Greedy, 0), "{case}");
    }
}

#[test]
fn exceeding_max_positions_is_an_error() {
    let m = load("gpt2");
    let max = m.cfg.max_positions;
    let inputs = vec![tokens(&m, 3, 1), tokens(&m, max - 4, 2)];
    assert_eq!(
        m.generate(&request(&inputs, &[], &[], 4, Sampling::Greedy)).unwrap()[1].len(),
        4,
        "exactly max positions fits"
    );
    let err = m.generate(&request(&inputs, &[], &[], 5, Sampling::Greedy)).unwrap_err();
    assert_eq!(err, GenerateError::TooLong { seq: 1, prompt: max - 4, new_tokens: 5, needed: max + 1, max });
    assert!(err.to_string().contains("max_position_embeddings of 64"), "{err}");
    let too_long = vec![tokens(&m, max + 1, 1)];
    assert!(matches!(
        m.generate(&request(&too_long, &[], &[], 1, Sampling::Greedy)),
        Err(GenerateError::TooLong { .. })
    ));
    assert!(matches!(Decoder::new(&m, 1, max + 1), Err(GenerateError::CapacityTooLarge { .. })));
    let mut dec = Decoder::new(&m, 1, 4).unwrap();
    dec.step(&[&tokens(&m, 3, 1)], &[], &[]).unwrap();
    assert_eq!(
        dec.step(&[&tokens(&m, 2, 1)], &[], &[]).unwrap_err(),
        GenerateError::CacheFull { seq: 0, len: 3, chunk: 2, capacity: 4 }
    );
}

#[test]
fn invalid_requests_are_errors() {
    let m = load("llama_gqa");
    let ok = vec![tokens(&m, 3, 1)];
    let gen = |inputs: &[Vec<InputSlot>], prompts: &[f32], steers: &[Steer], sampling| {
        m.generate(&request(inputs, prompts, steers, 2, sampling)).unwrap_err()
    };
    assert_eq!(gen(&[vec![]], &[], &[], Sampling::Greedy), GenerateError::EmptyInput { seq: 0 });
    let bad_token = vec![vec![InputSlot::Token(m.cfg.vocab_size as u32)]];
    assert!(matches!(gen(&bad_token, &[], &[], Sampling::Greedy), GenerateError::TokenOutOfRange { .. }));
    let one_row = &soft_prompt(&m)[..m.cfg.d_model];
    let err = gen(&[prompt_slots()], one_row, &[], Sampling::Greedy);
    assert!(matches!(err, GenerateError::PromptRowOutOfRange { row: 1, .. }), "{err}");
    let steer = Steer {
        layer: m.cfg.n_layers + 1,
        coef: 1.0,
        start: 0,
        end: 1,
        vector: vec![0.0; m.cfg.d_model],
        project: false,
    };
    assert!(matches!(gen(&ok, &[], &[steer], Sampling::Greedy), GenerateError::BadSteer { index: 0, .. }));
    for (temperature, top_p) in [(0.0, 0.9), (1.0, 0.0), (1.0, 1.5)] {
        assert!(matches!(gen(&ok, &[], &[], Sampling::TopP { temperature, top_p }), GenerateError::BadSampling(_)));
    }
}

#[test]
fn a_decoder_is_reused_across_requests() {
    let m = load("gpt_neox_sequential");
    let inputs = vec![tokens(&m, 5, 1), tokens(&m, 2, 2)];
    let want = m.generate(&request(&inputs, &[], &[], 6, Sampling::Greedy)).unwrap();
    let mut dec = Decoder::new(&m, 2, 16).unwrap();
    for _ in 0..2 {
        assert_eq!(dec.generate(&request(&inputs, &[], &[], 6, Sampling::Greedy)).unwrap(), want);
    }
    // A larger request grows the decoder.
    let three = vec![inputs[0].clone(), inputs[1].clone(), tokens(&m, 30, 3)];
    assert_eq!(dec.generate(&request(&three, &[], &[], 6, Sampling::Greedy)).unwrap()[..2], want[..]);
}

/// Reading the residual stream during generation gives the full forward's residual at
/// each sequence's last slot, at every layer, steered or not.
#[test]
fn residual_tap_during_generation_matches_full_forward() {
    use vestige::engine::activations::Activations;
    use vestige::engine::batch::Batch;
    use vestige::engine::generate::Decoder;
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/models/llama_gqa/model");
    let model = vestige::engine::model::Model::load(&dir).unwrap().model;
    let d = model.cfg.d_model;
    let steers =
        [vestige::engine::model::Steer { layer: 1, coef: 2.0, start: 3, end: 6, vector: vec![0.3; d], project: false }];
    let ids: Vec<u32> = (0..8).map(|i| (i * 5 % 64) as u32).collect();
    for layer in 0..=model.cfg.n_layers {
        let mut acts = Activations::default();
        model.forward(&mut acts, &Batch::language_model(&ids, 1, 8), &[], &steers, 1.0);
        let mut dec = Decoder::new(&model, 1, 8).unwrap();
        dec.set_tap(Some(layer));
        for (t, &id) in ids.iter().enumerate() {
            dec.step(&[&[vestige::engine::generate::InputSlot::Token(id)]], &[], &steers).unwrap();
            let want = &acts.residual(layer)[t * d..(t + 1) * d];
            let err = dec.tapped().iter().zip(want).map(|(a, b)| (a - b).abs()).fold(0.0f32, f32::max);
            assert!(err < 1e-4, "layer {layer} position {t}: tap differs by {err}");
        }
    }
}
