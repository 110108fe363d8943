use std::time::Instant;
use vestige::engine::activations::Activations;
use vestige::engine::backward::GradSinks;
use vestige::engine::batch::Batch;
use vestige::engine::config::ModelConfig;
use vestige::engine::model::Model;
use vestige::engine::optim::AdamW;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let (d, l, seq, b, ff) = if args.get(1).map(|s| s.as_str()) == Some("tiny") { (64, 2, 64, 32, 256) } else { (256, 4, 128, 16, 1024) };
    let cfg = serde_json::json!({"model_type":"gpt_neox","vocab_size":512,"hidden_size":d,"num_hidden_layers":l,"num_attention_heads":4,"intermediate_size":ff,"max_position_embeddings":2048});
    let cfg = ModelConfig::from_json(cfg, "bench").unwrap();
    let mut model = Model::init(cfg, 0.02, 0);
    let ids: Vec<u32> = (0..b * seq).map(|i| ((i * 7919) % 512) as u32).collect();
    let batch = Batch::language_model(&ids, b, seq);
    let mut acts = Activations::default();
    let mut grads = vec![0.0; model.layout.total];
    let mut opt = AdamW::new(model.layout.total);
    let norm = (b * (seq - 1)) as f32;
    let mut times = vec![];
    for step in 0..15 {
        let t = Instant::now();
        let t0 = Instant::now();
        let loss = model.forward(&mut acts, &batch, &[], &[], norm);
        let tf = t0.elapsed();
        grads.fill(0.0);
        model.backward(&mut acts, &batch, &[], norm, GradSinks { weights: Some(&mut grads), ..Default::default() });
        let tb = t0.elapsed();
        opt.update(&mut model.weights, &grads, 1e-3);
        let e = t.elapsed().as_secs_f64();
        if step >= 3 { times.push(e); }
        eprintln!("step {step} loss {loss:.4} {:.1}ms fwd {:.1} bwd {:.1}", e * 1e3, tf.as_secs_f64()*1e3, (tb-tf).as_secs_f64()*1e3);
    }
    let mean = times.iter().sum::<f64>() / times.len() as f64;
    println!("tokens/s {:.0}", (b * seq) as f64 / mean);
}
