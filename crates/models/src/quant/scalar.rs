//! Block decoding without SIMD: a row of any format as floats (embedding lookups, and the
//! dense reference in tests).

use super::{Format, BLOCK};

fn f16_at(b: &[u8], at: usize) -> f32 {
    half::f16::from_bits(u16::from_le_bytes([b[at], b[at + 1]])).to_f32()
}

fn f32_at(b: &[u8], at: usize) -> f32 {
    f32::from_le_bytes(b[at..at + 4].try_into().expect("4 bytes"))
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
        Format::Q5_0 => {
            let qh = u32::from_le_bytes(blk[2..6].try_into().expect("4 bytes"));
            (0..BLOCK).for_each(|j| {
                let q = nibble(&blk[6..], j) + 16.0 * ((qh >> j) & 1) as f32;
                out[j] = q.mul_add(d, -16.0 * d)
            });
        }
        Format::Q4K => {
            let (d, m) = (f32_at(blk, 0), f32_at(blk, 4));
            (0..BLOCK).for_each(|j| out[j] = nibble(&blk[8..], j).mul_add(d, m));
        }
        Format::Q5K => {
            let (d, m) = (f32_at(blk, 0), f32_at(blk, 4));
            (0..BLOCK).for_each(|j| out[j] = (blk[8 + j] as f32).mul_add(d, m));
        }
        Format::Q6K => {
            let d = [f32_at(blk, 0), f32_at(blk, 4)];
            (0..BLOCK).for_each(|j| out[j] = d[j / 16] * blk[8 + j] as i8 as f32);
        }
    }
}
