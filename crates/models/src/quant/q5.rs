//! GGML's 5-bit formats with a term regrouped at load time for the kernels: Q5_1 and Q5_K become
//! [`Format::Q5K`] (values `0..=31` as bytes, f32 scale and term per 32), exactly; `Q5_K_M`
//! files hold Q5_K and Q6_K. Q5_0 has a kernel of its own ([`Format::Q5_0`]) where it pays
//! ([`native`]), and becomes Q8_0 elsewhere and where it is stacked with Q8_0 rows.

use super::{Format, BLOCK};

/// Bytes per Q5_1 block: f16 `d`, f16 `m`, 32 high bits, 16 bytes of low nibbles.
pub const Q5_1_BYTES: usize = 24;
/// Values and bytes per Q5_K super-block: f16 `d` and `dmin`, 12 bytes of 6-bit scales and
/// minimums, 32 bytes of high bits, 128 of low nibbles.
pub const SUPER: usize = 256;
pub const Q5_K_BYTES: usize = 176;

fn whole(data: &[u8], size: usize, what: &str) -> Result<(), String> {
    if data.len().is_multiple_of(size) {
        Ok(())
    } else {
        Err(format!("{what} data of {} bytes is not whole {size}-byte blocks", data.len()))
    }
}

/// Value `j` of a Q5_0 or Q5_1 block: low nibble from `qs`, fifth bit `j` of `qh`.
fn value_32(qh: u32, qs: &[u8], j: usize) -> u8 {
    let low = if j < 16 { qs[j] & 0xF } else { qs[j - 16] >> 4 };
    low | (((qh >> j) & 1) as u8) << 4
}

/// Whether Q5_0 weights run on their own kernel ([`Format::Q5_0`], 5.5 bits a weight) rather
/// than widened to Q8_0 at load (8.5 bits): where the 512-bit kernels run, a vector's fifth
/// bits cost one masked add; on AVX2 alone their unpacking costs more than the bytes save
/// (`FORMAT=q5_0` against `q8_0`, `--bench quant_matmul`, 2 threads streaming: 1 row 5.6 vs 5.0
/// ns, 8 rows 1.9 vs 1.46 ns per row and 128 multiply-adds; with 512-bit kernels 3.2 vs 5.0 and
/// 0.94 vs 1.01).
pub fn native() -> bool {
    #[cfg(target_arch = "x86_64")]
    return super::tiles::simd::avx512();
    #[cfg(not(target_arch = "x86_64"))]
    false
}

/// Q5_0 blocks (`w = d·(q − 16)`) as Q8_0 blocks with the same scale (their values minus 16
/// are signed bytes): where Q5_0 has no fast kernel ([`native`]), and for stacking them with
/// Q8_0 rows ([`super::Matrix::stack`]).
pub fn q5_0_to_q8_0(q5_0: &[u8]) -> Result<Vec<u8>, String> {
    whole(q5_0, Format::Q5_0.block_bytes(), "Q5_0")?;
    let mut out = Vec::with_capacity(q5_0.len() / Format::Q5_0.block_bytes() * Format::Q8_0.block_bytes());
    for b in q5_0.chunks_exact(Format::Q5_0.block_bytes()) {
        let qh = u32::from_le_bytes([b[2], b[3], b[4], b[5]]);
        out.extend_from_slice(&b[..2]);
        out.extend((0..BLOCK).map(|j| (value_32(qh, &b[6..], j) as i8 - 16) as u8));
    }
    Ok(out)
}

/// Q5_1 blocks (`w = d·q + m`) as [`Format::Q5K`] blocks.
pub fn q5_1_to_blocks(q5_1: &[u8]) -> Result<Vec<u8>, String> {
    whole(q5_1, Q5_1_BYTES, "Q5_1")?;
    let mut out = Vec::with_capacity(q5_1.len() / Q5_1_BYTES * Format::Q5K.block_bytes());
    for b in q5_1.chunks_exact(Q5_1_BYTES) {
        let f16 = |at: usize| half::f16::from_le_bytes([b[at], b[at + 1]]).to_f32();
        let qh = u32::from_le_bytes([b[4], b[5], b[6], b[7]]);
        out.extend_from_slice(&f16(0).to_le_bytes());
        out.extend_from_slice(&f16(2).to_le_bytes());
        out.extend((0..BLOCK).map(|j| value_32(qh, &b[8..], j)));
    }
    Ok(out)
}

/// Q5_K super-blocks (`w = d·sc·q − dmin·m` per sub-block of 32) as [`Format::Q5K`] blocks.
pub fn q5_k_to_blocks(q5_k: &[u8]) -> Result<Vec<u8>, String> {
    whole(q5_k, Q5_K_BYTES, "Q5_K")?;
    let mut out = Vec::with_capacity(q5_k.len() / Q5_K_BYTES * (SUPER / BLOCK) * Format::Q5K.block_bytes());
    for sb in q5_k.chunks_exact(Q5_K_BYTES) {
        let f16 = |at: usize| half::f16::from_le_bytes([sb[at], sb[at + 1]]).to_f32();
        let (d, dmin) = (f16(0), f16(2));
        let (scales, qh, qs) = (&sb[4..16], &sb[16..48], &sb[48..]);
        for j in 0..SUPER / BLOCK {
            let (sc, m) = super::q4_k::scale_min(j, scales);
            out.extend_from_slice(&(d * sc as f32).to_le_bytes());
            out.extend_from_slice(&(-(dmin * m as f32)).to_le_bytes());
            // Sub-blocks 2i and 2i + 1: low and high nibbles of bytes 32i..32i + 32; fifth bits
            // are bit j of `qh[l]`.
            out.extend((0..BLOCK).map(|l| {
                let low = qs[32 * (j / 2) + l];
                let low = if j % 2 == 0 { low & 0xF } else { low >> 4 };
                low | ((qh[l] >> j) & 1) << 4
            }));
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use candle_core::quantized::GgmlDType;

    use super::*;
    use crate::quant::tests::{assert_decodes_to, ggml_quantized};

    #[test]
    fn converted_blocks_hold_the_values_ggml_decodes() {
        let cases: [(GgmlDType, Format, crate::quant::Regroup); 4] = [
            (GgmlDType::Q5_0, Format::Q5_0, |b| Ok(b.to_vec())),
            (GgmlDType::Q5_0, Format::Q8_0, q5_0_to_q8_0),
            (GgmlDType::Q5_1, Format::Q5K, q5_1_to_blocks),
            (GgmlDType::Q5K, Format::Q5K, q5_k_to_blocks),
        ];
        for (dtype, format, convert) in cases {
            let (bytes, want) = ggml_quantized(dtype, 5, 512);
            assert_decodes_to(format, &convert(&bytes).unwrap(), 5, 512, &want, 1e-6);
        }
    }

    #[test]
    fn partial_blocks_are_refused() {
        assert!(q5_0_to_q8_0(&[0; 23]).unwrap_err().contains("23 bytes"));
        assert!(q5_1_to_blocks(&[0; 23]).unwrap_err().contains("Q5_1"));
        assert!(q5_k_to_blocks(&[0; 175]).unwrap_err().contains("176-byte"));
    }
}
