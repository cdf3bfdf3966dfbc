//! The quantized product alone on SmolLM2-135M's shapes (576 → 1536 and back) with seeded random
//! Q4_1 weights (or `FORMAT`'s): nanoseconds per activation row and 128 multiply-adds for 1, 2,
//! 4, 8 and 16 rows, the fastest of 15 timings. The weights of 8 layers (7 MB) exceed L2;
//! `LAYERS=64` (70 MB) makes them stream from memory as a model's do. `THREADS=2` shares each
//! product among two threads (one by default), `SHAPE=up` or `SHAPE=down` keeps one direction
//! only, `SHAPE=small` uses 64-row matrices (per-call costs show), `AISERVE_NO_AMX=1` keeps 16
//! rows and more off the tile-multiply unit, `AISERVE_NO_VNNI=1` the AVX2 multiply-adds,
//! `AISERVE_ACTIVATION_BITS=8` the 8-bit activations, `FORMAT=q4k` Q4_K's weights as loaded (f32
//! scales per 32 values), `FORMAT=f32` the same values unquantized, `FORMAT=q6k` Q6_K's as
//! loaded (signed bytes, f32 scales per 16 values), `FORMAT=q8_0` Q8_0's (f16 scale, signed
//! bytes), `FORMAT=q5_0` Q5_0's, `FORMAT=q5k` Q5_K's and Q5_1's (bytes, f32
//! scale and term per 32).
//!
//!   cargo bench -p aiserve-models --bench quant_matmul

use std::time::Instant;

use aiserve_models::quant::team::Team;
use aiserve_models::quant::{Bits, Format, Matrix};

fn main() {
    let mut state = 7u64;
    let mut next = move || {
        state = state.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        (state >> 33) as u32
    };
    let (rows, cols) = match std::env::var("SHAPE").as_deref() {
        Ok("small") => (64, 576),
        _ => (1536, 576),
    };
    // Matrices in both directions per layer, as a model's.
    let bits = match std::env::var("AISERVE_ACTIVATION_BITS").as_deref() {
        Ok("8") => Bits::Eight,
        _ => Bits::Sixteen,
    };
    let format = std::env::var("FORMAT").unwrap_or_else(|_| "q4_1".into());
    let layers: usize = std::env::var("LAYERS").ok().and_then(|v| v.parse().ok()).unwrap_or(8);
    let mats: Vec<(Matrix, usize)> = (0..layers)
        .flat_map(|_| match std::env::var("SHAPE").as_deref() {
            Ok("up") | Ok("small") => [(rows, cols), (rows, cols)],
            Ok("down") => [(cols, rows), (cols, rows)],
            _ => [(rows, cols), (cols, rows)],
        })
        .map(|(r, c)| {
            let mut bytes = Vec::with_capacity(r * c / 32 * 40);
            if format == "q6k" || format == "q5k" {
                // Q6K: two scales and values -32..=31; Q5K: a scale, a term and values 0..=31.
                for _ in 0..r * c / 32 {
                    bytes.extend_from_slice(&(0.001 + (next() % 1000) as f32 * 1e-5).to_le_bytes());
                    bytes.extend_from_slice(&(-((next() % 1000) as f32) * 1e-4).to_le_bytes());
                    let shift = if format == "q6k" { 2 } else { 3 };
                    bytes.extend(
                        (0..32).map(|_| if shift == 2 { ((next() as i8) >> 2) as u8 } else { next() as u8 >> 3 }),
                    );
                }
                let f = if format == "q6k" { Format::Q6K } else { Format::Q5K };
                return (Matrix::quantized(f, bits, r, c, bytes).unwrap(), c);
            }
            if format == "q8_0" || format == "q5_0" {
                // An f16 scale, then 32 signed bytes (Q8_0) or 32 fifth bits and 16 bytes of
                // nibbles (Q5_0).
                let (f, payload) = if format == "q8_0" { (Format::Q8_0, 32) } else { (Format::Q5_0, 20) };
                for _ in 0..r * c / 32 {
                    let d = 0.001 + (next() % 1000) as f32 * 1e-5;
                    bytes.extend_from_slice(&half::f16::from_f32(d).to_bits().to_le_bytes());
                    bytes.extend((0..payload).map(|_| next() as u8));
                }
                return (Matrix::quantized(f, bits, r, c, bytes).unwrap(), c);
            }
            for _ in 0..r * c / 32 {
                let (d, m) = (0.001 + (next() % 1000) as f32 * 1e-5, -((next() % 1000) as f32) * 1e-4);
                if format == "q4_1" {
                    bytes.extend_from_slice(&half::f16::from_f32(d).to_bits().to_le_bytes());
                    bytes.extend_from_slice(&half::f16::from_f32(m).to_bits().to_le_bytes());
                } else {
                    bytes.extend_from_slice(&d.to_le_bytes());
                    bytes.extend_from_slice(&m.to_le_bytes());
                }
                bytes.extend((0..16).map(|_| next() as u8));
            }
            let m = match format.as_str() {
                "q4_1" => Matrix::quantized(Format::Q4_1, bits, r, c, bytes),
                "q4k" => Matrix::quantized(Format::Q4K, bits, r, c, bytes),
                // What a format without a kernel becomes: its values as f32.
                _ => {
                    let q = Matrix::quantized(Format::Q4K, bits, r, c, bytes).unwrap();
                    let mut values = vec![0.0; r * c];
                    values.chunks_exact_mut(c).enumerate().for_each(|(i, row)| q.row_into(i, row));
                    Matrix::f32(r, c, values)
                }
            };
            (m.unwrap(), c)
        })
        .collect();
    let macs_per_pass: usize = mats.iter().map(|(m, _)| m.rows() * m.cols()).sum();
    let mut team = Team::new(std::env::var("THREADS").ok().and_then(|v| v.parse().ok()).unwrap_or(1));
    let mut base = 0.0;
    for n in [1usize, 2, 4, 8, 16] {
        let xs: Vec<Vec<f32>> =
            [cols, rows].iter().map(|c| (0..n * c).map(|i| ((i * 37 % 101) as f32 - 50.0) / 25.0).collect()).collect();
        let mut out = vec![0.0; n * rows];
        let mut pass = |out: &mut Vec<f32>| {
            for (m, c) in &mats {
                let x = if *c == cols { &xs[0] } else { &xs[1] };
                m.matmul(&mut team, x, n, &mut out[..n * m.rows()]);
            }
        };
        pass(&mut out);
        // The fastest of 15 timings of 4 passes: the least disturbed by other work on the machine.
        let s = (0..15)
            .map(|_| {
                let t = Instant::now();
                for _ in 0..4 {
                    pass(&mut out);
                }
                t.elapsed().as_secs_f64() / 4.0
            })
            .fold(f64::INFINITY, f64::min);
        let per_group = s * 1e9 / (n * macs_per_pass / 128) as f64;
        let rate = n as f64 / s;
        if n == 1 {
            base = rate;
        }
        println!(
            "n={n:2}: {:.2} ms per pass, {per_group:.2} ns per row and 128 MACs, {:.1} GMAC/s, {:.2}x rows/s of n=1",
            s * 1e3,
            (n * macs_per_pass) as f64 / s / 1e9,
            rate / base
        );
    }
}
