//! GGML's Q4_K (the bulk of the widespread `Q4_K_M` GGUF files) regrouped at load time into
//! blocks of 32 values that the 4-bit kernels multiply ([`Format::Q4K`]).
//!
//! A Q4_K super-block holds 256 values in 8 sub-blocks of 32, each with a 6-bit scale `sc` and
//! minimum `m` on top of the super-block's f16 `d` and `dmin`: `w = d·sc·q − dmin·m`. That is a
//! Q4_1 block per sub-block whose scale `d·sc` and term `−dmin·m` are exact as f32 (an 11-bit
//! mantissa times a 6-bit integer) but not as f16, so they are kept as f32: 24 bytes per 32
//! values instead of Q4_K's 18, still 5× smaller than f32 weights.

use super::{Format, BLOCK};

/// Values per Q4_K super-block.
pub const SUPER: usize = 256;
/// Bytes per Q4_K super-block: f16 `d`, f16 `dmin`, 12 bytes of 6-bit scales and minimums,
/// 128 bytes of 4-bit values.
pub const SUPER_BYTES: usize = 144;

/// Scale and minimum of sub-block `j` from the 12 packed bytes (GGML's `get_scale_min_k4`).
pub(crate) fn scale_min(j: usize, q: &[u8]) -> (u8, u8) {
    if j < 4 {
        (q[j] & 63, q[j + 4] & 63)
    } else {
        ((q[j + 4] & 0xF) | ((q[j - 4] >> 6) << 4), (q[j + 4] >> 4) | ((q[j] >> 6) << 4))
    }
}

/// Q4_K super-blocks as [`Format::Q4K`] blocks: per 32 values, f32 scale, f32 term, and 16
/// bytes of 4-bit values (value `p` in the low nibble of byte `p`, value `p + 16` in the high
/// one, as Q4_1).
pub fn to_blocks(q4_k: &[u8]) -> Result<Vec<u8>, String> {
    if !q4_k.len().is_multiple_of(SUPER_BYTES) {
        return Err(format!("Q4_K data of {} bytes is not whole {SUPER_BYTES}-byte super-blocks", q4_k.len()));
    }
    let mut out = Vec::with_capacity(q4_k.len() / SUPER_BYTES * (SUPER / BLOCK) * Format::Q4K.block_bytes());
    for sb in q4_k.chunks_exact(SUPER_BYTES) {
        let f16 = |at: usize| half::f16::from_le_bytes([sb[at], sb[at + 1]]).to_f32();
        let (d, dmin) = (f16(0), f16(2));
        let (scales, qs) = (&sb[4..16], &sb[16..]);
        for j in 0..SUPER / BLOCK {
            let (sc, m) = scale_min(j, scales);
            out.extend_from_slice(&(d * sc as f32).to_le_bytes());
            out.extend_from_slice(&(-(dmin * m as f32)).to_le_bytes());
            // Sub-blocks 2i and 2i + 1 are the low and high nibbles of bytes 32i..32i + 32.
            let src = &qs[32 * (j / 2)..32 * (j / 2) + 32];
            let value = |p: usize| if j % 2 == 0 { src[p] & 0x0F } else { src[p] >> 4 };
            out.extend((0..16).map(|p| value(p) | value(p + 16) << 4));
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
        let (bytes, want) = ggml_quantized(GgmlDType::Q4K, 5, 512);
        assert_decodes_to(Format::Q4K, &to_blocks(&bytes).unwrap(), 5, 512, &want, 1e-6);
    }

    #[test]
    fn partial_super_blocks_are_refused() {
        assert!(to_blocks(&[0; SUPER_BYTES + 1]).unwrap_err().contains("145 bytes"));
    }
}
