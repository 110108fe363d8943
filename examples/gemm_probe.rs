use std::time::Instant;
use vestige::engine::kernels::matmul::{matmul, Mat, MatMut, Threads};
fn main() {
    let t: usize = std::env::args().nth(1).and_then(|s| s.parse().ok()).unwrap_or(1);
    rayon::ThreadPoolBuilder::new().num_threads(t).build_global().unwrap();
    for (m, k, n, at, bt) in [
        (1024, 1024, 1024, false, false),
        (2048, 256, 1024, false, true),
        (2048, 256, 1024, false, false),
        (2048, 1024, 256, false, false),
        (1024, 2048, 256, true, false),
        (256, 2048, 1024, true, false),
    ] {
        let a = vec![0.5f32; m * k];
        let b = vec![0.25f32; k * n];
        let mut c = vec![0f32; m * n];
        let am = if at { Mat::new(&a, k, m).t() } else { Mat::new(&a, m, k) };
        let bm = if bt { Mat::new(&b, n, k).t() } else { Mat::new(&b, k, n) };
        matmul(MatMut::new(&mut c, m, n), am, bm, 1.0, false, Threads::Pool);
        let s = Instant::now();
        let reps = 10;
        for _ in 0..reps {
            matmul(MatMut::new(&mut c, m, n), am, bm, 1.0, false, Threads::Pool);
        }
        let e = s.elapsed().as_secs_f64() / reps as f64;
        println!("m{m} k{k} n{n} at{at} bt{bt}: {:.1} GFLOP/s", 2.0 * (m * k * n) as f64 / e / 1e9);
    }
}
