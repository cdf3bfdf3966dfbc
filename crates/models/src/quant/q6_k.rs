//! GGML's Q6_K (the output layer and part of the rest of `Q4_K_M` files, all of `Q6_K` ones)
//! regrouped at load time into blocks of 32 signed bytes that the 8-bit kernels multiply
//! ([`Format::Q6K`]).
//!
//! A Q6_K super-block holds 256 6-bit values (`q − 32`, in `-32..=31`) in 16 sub-blocks of 16,
//! each with a signed 8-bit scale on top of the super-block's f16 `d`: `w = d·sc·q`. A block of
//! 32 keeps its values as bytes and its two sub-blocks' scales `d·sc` as f32 (exact: an 11-bit
//! mantissa times an 8-bit integer): 40 bytes per 32 values instead of 26, a quarter of f32.

use super::{Format, BLOCK};

/// Values per Q6_K super-block.
pub const SUPER: usize = 256;
/// Bytes per Q6_K super-block: 128 bytes of low 4 bits, 64 of high 2 bits, 16 signed scales,
/// f16 `d`.
pub const SUPER_BYTES: usize = 210;

/// Q6_K super-blocks as [`Format::Q6K`] blocks: per 32 values, the f32 scales of values 0..16
/// and 16..32, then the 32 values as signed bytes.
pub fn to_blocks(q6_k: &[u8]) -> Result<Vec<u8>, String> {
    if !q6_k.len().is_multiple_of(SUPER_BYTES) {
        return Err(format!("Q6_K data of {} bytes is not whole {SUPER_BYTES}-byte super-blocks", q6_k.len()));
    }
    let mut out = Vec::with_capacity(q6_k.len() / SUPER_BYTES * (SUPER / BLOCK) * Format::Q6K.block_bytes());
    for sb in q6_k.chunks_exact(SUPER_BYTES) {
        let (ql, qh, scales) = (&sb[..128], &sb[128..192], &sb[192..208]);
        let d = half::f16::from_le_bytes([sb[208], sb[209]]).to_f32();
        for j in 0..SUPER / BLOCK {
            // Block j is quarter j % 4 of half j / 4 (GGML's `dequantize_row_q6_K`).
            let (half, quarter) = (j / 4, j % 4);
            for s in [2 * j, 2 * j + 1] {
                out.extend_from_slice(&(d * scales[s] as i8 as f32).to_le_bytes());
            }
            out.extend((0..BLOCK).map(|l| {
                let low = ql[64 * half + l + 32 * (quarter % 2)];
                let low = if quarter < 2 { low & 0xF } else { low >> 4 };
                let high = (qh[32 * half + l] >> (2 * quarter)) & 3;
                ((low | high << 4) as i8 - 32) as u8
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
        // No term to add: the very same floats.
        let (bytes, want) = ggml_quantized(GgmlDType::Q6K, 5, 512);
        assert_decodes_to(Format::Q6K, &to_blocks(&bytes).unwrap(), 5, 512, &want, 0.0);
    }

    #[test]
    fn partial_super_blocks_are_refused() {
        assert!(to_blocks(&[0; SUPER_BYTES - 1]).unwrap_err().contains("209 bytes"));
    }
}
