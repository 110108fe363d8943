//! Times each kernel of one `main`-workload training step in isolation, to see where the
//! step's time goes: `cargo run --release --example kernel_times [-- THREADS [main|tiny]]`.

use std::time::Instant;
use vestige::engine::config::Activation;
use vestige::engine::kernels::act::{act_backward, act_forward};
use vestige::engine::kernels::attention::{attention_backward, attention_forward, AttnShape};
use vestige::engine::kernels::linear::{
    column_sums_into, linear_backward_input, linear_backward_params, linear_forward,
};
use vestige::engine::kernels::loss::cross_entropy;
use vestige::engine::kernels::norm::{norm_backward, norm_forward, partials_len, NormKind};

/// Fastest of `reps` runs of `f` (after one warm-up), in milliseconds. On a shared machine
/// contention only ever slows a run, so the fastest is the least disturbed figure.
fn time(reps: usize, mut f: impl FnMut()) -> f64 {
    f();
    (0..reps)
        .map(|_| {
            let t = Instant::now();
            f();
            t.elapsed().as_secs_f64() * 1e3
        })
        .fold(f64::INFINITY, f64::min)
}

fn main() {
    if let Some(n) = std::env::args().nth(1).and_then(|s| s.parse().ok()) {
        rayon::ThreadPoolBuilder::new().num_threads(n).build_global().unwrap();
    }
    let tiny = std::env::args().nth(2).as_deref() == Some("tiny");
    let (n, d, ff, v, batch, seq) = if tiny { (2048, 64, 256, 512, 32, 64) } else { (2048, 256, 1024, 512, 16, 128) };
    let buf = |len: usize| (0..len).map(|i| ((i * 7919 % 1000) as f32 / 1000.0 - 0.5) * 0.2).collect::<Vec<f32>>();
    let report = |name: &str, ms: f64, flops: f64| println!("{name:<28} {ms:8.2} ms  {:7.1} GFLOP/s", flops / ms / 1e6);
    for (name, out, inp) in [("qkv", 3 * d, d), ("attn_out", d, d), ("fc", ff, d), ("down", d, ff), ("head", v, d)] {
        let (x, w, mut y) = (buf(n * inp), buf(out * inp), buf(n * out));
        let flops = 2.0 * (n * inp * out) as f64;
        report(&format!("{name} forward"), time(10, || linear_forward(&mut y, &x, &w, None, n, inp, out)), flops);
        let (dy, mut dx, mut dw) = (buf(n * out), buf(n * inp), buf(out * inp));
        report(
            &format!("{name} backward input"),
            time(10, || linear_backward_input(&mut dx, &dy, &w, n, inp, out, 1.0, false)),
            flops,
        );
        report(
            &format!("{name} backward weight"),
            time(10, || linear_backward_params(&mut dw, None, &dy, &x, n, inp, out, 1.0)),
            flops,
        );
    }
    let sh = AttnShape { batch, seq, heads: 4, kv_heads: 4, head_dim: d / 4 };
    let (qkv, mut out, mut probs, mut scratch) =
        (buf(n * 3 * d), buf(n * d), buf(batch * 4 * seq * seq), buf(sh.scratch_len()));
    let attn_flops = 2.0 * 2.0 * (batch * 4 * seq * (seq + 1) / 2 * (d / 4)) as f64;
    report(
        "attention forward",
        time(10, || attention_forward(&mut out, &mut probs, &mut scratch, &qkv, sh, None)),
        attn_flops,
    );
    let (dout, mut dqkv) = (buf(n * d), buf(n * 3 * d));
    report(
        "attention backward",
        time(10, || attention_backward(&mut dqkv, &mut probs, &mut scratch, &dout, &qkv, sh, None)),
        2.0 * attn_flops,
    );
    let (x, w, b) = (buf(n * d), buf(d), buf(d));
    let (mut y, mut m, mut r) = (buf(n * d), buf(n), buf(n));
    let kind = NormKind { centred: true, eps: 1e-5 };
    report("layernorm forward", time(20, || norm_forward(&mut y, &mut m, &mut r, &x, &w, Some(&b), kind)), 0.0);
    let (mut dx, mut dw, mut db, mut part) = (buf(n * d), buf(d), buf(d), buf(partials_len(n, d)));
    report(
        "layernorm backward",
        time(20, || norm_backward(&mut dx, Some((&mut dw, Some(&mut db))), &mut part, &y, &x, &m, &r, &w, kind)),
        0.0,
    );
    // The forward pass overwrites `pre` with the derivative (bounded, so repeated calls stay
    // in range; the kernels are branch-free, so their cost does not depend on the values).
    let (mut pre, mut act, bias) = (buf(n * ff), buf(n * ff), buf(ff));
    report(
        "gelu+bias forward",
        time(20, || act_forward(&mut act, &mut pre, Some(&bias), ff, Activation::GeluExact)),
        0.0,
    );
    let mut dpre = buf(n * ff);
    report("gelu backward", time(20, || act_backward(&mut dpre, &act, &pre, ff, Activation::GeluExact)), 0.0);
    let targets: Vec<i32> = (0..n as i32).map(|i| i % v as i32).collect();
    let weights = vec![1.0; n];
    let mut logits = buf(n * v);
    let mut rl = buf(n);
    report(
        "cross-entropy + grad",
        time(20, || {
            cross_entropy(&mut logits, &mut rl, &targets, &weights, n as f32, true);
        }),
        0.0,
    );
    // One layer's bias gradients: qkv, attn_out, fc and down.
    let grads: Vec<(Vec<f32>, usize)> = [3 * d, d, ff, d].into_iter().map(|w| (buf(n * w), w)).collect();
    let mut acc = buf(ff);
    report(
        "bias column sums",
        time(20, || grads.iter().for_each(|(g, w)| column_sums_into(&mut acc[..*w], g, *w))),
        0.0,
    );
}
