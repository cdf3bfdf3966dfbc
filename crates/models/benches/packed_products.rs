//! The encoders' packed f32 product alone on MiniLM's four shapes at batch 32 of 15-token texts
//! (480 rows: query-key-value 384 → 1152, output 384 → 384, feed-forward 384 → 1536 and
//! 1536 → 384) and one text's first feed-forward product (15 rows): GFLOP/s, the best of 5
//! timings of ~2 GFLOP each. The first feed-forward shape runs twice more, as the encoder runs
//! it: from its bias, once plain and once with BERT's GELU written by the tiles. `RAYON_NUM_THREADS` sets the threads (the kernels' team), and
//! `AISERVE_NO_AVX512=1` keeps to the AVX2 tiles.
//!
//!   RAYON_NUM_THREADS=1 cargo bench -p aiserve-models --bench packed_products

use std::time::Instant;

use aiserve_models::kernels::packed::{Act, PackedLinear};

fn main() {
    let shapes = [(480, 1152, 384), (480, 384, 384), (480, 1536, 384), (480, 384, 1536), (15, 1536, 384)];
    let epilogues =
        shapes.iter().map(|&s| (s, None)).chain([Act::Identity, Act::GeluErf].map(|a| ((480, 1536, 384), Some(a))));
    for ((m, n, k), act) in epilogues {
        let x: Vec<f32> = (0..m * k).map(|i| ((i * 31 % 97) as f32 - 48.0) / 50.0).collect();
        let w: Vec<f32> = (0..n * k).map(|i| ((i * 17 % 89) as f32 - 44.0) / 40.0).collect();
        let packed = PackedLinear::new(&w, n, k);
        let bias: Vec<f32> = (0..n).map(|i| (i % 7) as f32 / 10.0 - 0.3).collect();
        let mut out = vec![0.0f32; m * n];
        let product = |out: &mut [f32]| match act {
            None => packed.matmul_acc(&x, out),
            Some(act) => packed.matmul_bias(&x, &bias, act, out),
        };
        for _ in 0..3 {
            product(&mut out);
        }
        let reps = (1_000_000_000 / (m * n * k)).max(3);
        let mut best = f64::MAX;
        for _ in 0..5 {
            let t = Instant::now();
            for _ in 0..reps {
                product(&mut out);
            }
            best = best.min(t.elapsed().as_secs_f64() / reps as f64);
        }
        let what = act.map_or(String::new(), |a| format!(" (from the bias, {a:?})"));
        println!("{m:>4} x {n:>4} x {k:>4}: {:6.1} GFLOP/s{what}", 2.0 * (m * n * k) as f64 / best / 1e9);
    }
}
