//! Portable block kernels: the reference the SIMD ones are tested against, and the path on CPUs
//! without AVX2.

use super::{Format, BLOCK};

fn f16_at(b: &[u8], at: usize) -> f32 {
    half::f16::from_bits(u16::from_le_bytes([b[at], b[at + 1]])).to_f32()
}

/// 4-bit value `j` of a block's 16 payload bytes (low nibbles hold 0..16, high ones 16..32).
fn nibble(qs: &[u8], j: usize) -> f32 {
    (if j < 16 { qs[j] & 0x0F } else { qs[j - 16] >> 4 }) as f32
}

pub fn dequantize_block(format: Format, blk: &[u8], out: &mut [f32]) {
    let d = f16_at(blk, 0);
    match format {
        Format::Q4_0 => (0..BLOCK).for_each(|j| out[j] = nibble(&blk[2..], j).mul_add(d, -8.0 * d)),
        Format::Q4_1 => {
            let m = f16_at(blk, 2);
            (0..BLOCK).for_each(|j| out[j] = nibble(&blk[4..], j).mul_add(d, m));
        }
        Format::Q8_0 => (0..BLOCK).for_each(|j| out[j] = d * blk[2 + j] as i8 as f32),
    }
}

pub fn dot_rows(
    format: Format,
    bytes: &[u8],
    cols: usize,
    rows: std::ops::Range<usize>,
    x: &[f32],
    n: usize,
    out_t: &mut [f32],
) {
    let bb = format.block_bytes();
    let row_bytes = cols / BLOCK * bb;
    let mut w = vec![0.0f32; cols];
    for (k, r) in rows.enumerate() {
        for (blk, o) in bytes[r * row_bytes..(r + 1) * row_bytes].chunks_exact(bb).zip(w.chunks_exact_mut(BLOCK)) {
            dequantize_block(format, blk, o);
        }
        for i in 0..n {
            out_t[k * n + i] = w.iter().zip(&x[i * cols..(i + 1) * cols]).map(|(a, b)| a * b).sum();
        }
    }
}
