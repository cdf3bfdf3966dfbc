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
    use candle_core::quantized::{GgmlDType, QTensor};
    use candle_core::{Device, Tensor};

    use super::*;
    use crate::quant::{Bits, Matrix};

    #[test]
    fn converted_blocks_hold_the_values_ggml_decodes() {
        let (rows, cols) = (5, 512);
        let x: Vec<f32> =
            (0..rows * cols).map(|i| ((i * 7919 % 1013) as f32 / 1013.0 - 0.6) * (1 + i % 11) as f32).collect();
        let q = QTensor::quantize(&Tensor::from_vec(x, (rows, cols), &Device::Cpu).unwrap(), GgmlDType::Q6K).unwrap();
        let want: Vec<f32> = q.dequantize(&Device::Cpu).unwrap().flatten_all().unwrap().to_vec1().unwrap();
        let blocks = to_blocks(&q.data().unwrap()).unwrap();
        for bits in [Bits::Sixteen, Bits::Eight] {
            let m = Matrix::quantized(Format::Q6K, bits, rows, cols, blocks.clone()).unwrap();
            for r in 0..rows {
                let mut got = vec![0.0; cols];
                m.row_into(r, &mut got);
                assert_eq!(got, want[r * cols..(r + 1) * cols], "row {r}");
            }
        }
    }

    #[test]
    fn partial_super_blocks_are_refused() {
        assert!(to_blocks(&[0; SUPER_BYTES - 1]).unwrap_err().contains("209 bytes"));
    }
}
