//! The products against dequantized weights, every path against the portable reference, batch
//! invariance, rounding, stacking, and the helpers the format tests share.

use super::*;

/// Random blocks of `format` (scales kept small and positive, like real weights).
pub(crate) fn random_blocks(format: Format, rows: usize, cols: usize, seed: u64) -> Vec<u8> {
    let mut state = seed;
    let mut next = move || {
        state = state.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        (state >> 33) as u32
    };
    let bb = format.block_bytes();
    let mut out = Vec::with_capacity(rows * cols / BLOCK * bb);
    for _ in 0..rows * cols / BLOCK {
        let d = half::f16::from_f32(0.001 + (next() % 1000) as f32 * 1e-5).to_bits().to_le_bytes();
        out.extend_from_slice(&d);
        if format == Format::Q4_1 {
            let m = half::f16::from_f32(-((next() % 1000) as f32) * 1e-4).to_bits().to_le_bytes();
            out.extend_from_slice(&m);
        }
        if format == Format::Q4K {
            // f32 scale and term instead (what the f16 above becomes: its bits replaced).
            out.truncate(out.len() - 2);
            out.extend_from_slice(&(0.001 + (next() % 1000) as f32 * 1.3e-5).to_le_bytes());
            out.extend_from_slice(&(-((next() % 1000) as f32) * 1.1e-4).to_le_bytes());
        }
        if format == Format::Q5K {
            out.truncate(out.len() - 2);
            out.extend_from_slice(&(0.001 + (next() % 1000) as f32 * 1.3e-5).to_le_bytes());
            out.extend_from_slice(&(-((next() % 1000) as f32) * 1.1e-4).to_le_bytes());
        }
        if format == Format::Q6K {
            // Two f32 scales, one of them negative (Q6_K's are signed).
            out.truncate(out.len() - 2);
            out.extend_from_slice(&(0.001 + (next() % 1000) as f32 * 1.3e-5).to_le_bytes());
            out.extend_from_slice(&(-0.002 - (next() % 1000) as f32 * 0.7e-5).to_le_bytes());
        }
        let payload = bb - out.len() % bb;
        for _ in 0..payload {
            out.push(next() as u8);
        }
    }
    if format == Format::Q8_0 {
        // Signed bytes in -127..=127 as GGML writes them.
        for blk in out.chunks_exact_mut(bb) {
            for q in &mut blk[2..] {
                if *q == 0x80 {
                    *q = 0x81;
                }
            }
        }
    }
    if format == Format::Q6K {
        // Q6_K's values: -32..=31.
        for blk in out.chunks_exact_mut(bb) {
            for q in &mut blk[8..] {
                *q = ((*q as i8) >> 2) as u8;
            }
        }
    }
    if format == Format::Q5K {
        // 5-bit values: 0..=31.
        for blk in out.chunks_exact_mut(bb) {
            for q in &mut blk[8..] {
                *q >>= 3;
            }
        }
    }
    out
}

/// A fixed pattern of `rows × cols` values quantized by GGML (candle) to `dtype`: the bytes,
/// and GGML's own decoding of them.
pub(crate) fn ggml_quantized(
    dtype: candle_core::quantized::GgmlDType,
    rows: usize,
    cols: usize,
) -> (Vec<u8>, Vec<f32>) {
    use candle_core::{quantized::QTensor, Device, Tensor};
    let x: Vec<f32> =
        (0..rows * cols).map(|i| ((i * 7919 % 1013) as f32 / 1013.0 - 0.45) * (1 + i % 9) as f32).collect();
    let q = QTensor::quantize(&Tensor::from_vec(x, (rows, cols), &Device::Cpu).unwrap(), dtype).unwrap();
    let want = q.dequantize(&Device::Cpu).unwrap().flatten_all().unwrap().to_vec1().unwrap();
    (q.data().unwrap().into_owned(), want)
}

/// Checks that `blocks` of `format`, packed for either activation width, decode to `want`
/// (`rows × cols`), each value within `tolerance` of it relative to `max(|want|, 1)`: GGML
/// rounds `d·q` before adding a term, where the kernels fuse the two.
pub(crate) fn assert_decodes_to(format: Format, blocks: &[u8], rows: usize, cols: usize, want: &[f32], tolerance: f32) {
    for bits in [Bits::Sixteen, Bits::Eight] {
        let m = Matrix::quantized(format, bits, rows, cols, blocks.to_vec()).unwrap();
        for r in 0..rows {
            let mut got = vec![0.0; cols];
            m.row_into(r, &mut got);
            for (c, (g, w)) in got.iter().zip(&want[r * cols..(r + 1) * cols]).enumerate() {
                assert!((g - w).abs() <= tolerance * w.abs().max(1.0), "{format:?} ({r},{c}): {g} vs {w}");
            }
        }
    }
}

fn dense(m: &Matrix) -> Vec<f32> {
    let mut all = vec![0.0; m.rows * m.cols];
    for r in 0..m.rows {
        m.row_into(r, &mut all[r * m.cols..(r + 1) * m.cols]);
    }
    all
}

/// Every format with each activation width.
pub(crate) const KINDS: [(Format, Bits); 14] = [
    (Format::Q4_0, Bits::Sixteen),
    (Format::Q4_1, Bits::Sixteen),
    (Format::Q8_0, Bits::Sixteen),
    (Format::Q4K, Bits::Sixteen),
    (Format::Q6K, Bits::Sixteen),
    (Format::Q5K, Bits::Sixteen),
    (Format::Q5_0, Bits::Sixteen),
    (Format::Q4_0, Bits::Eight),
    (Format::Q4_1, Bits::Eight),
    (Format::Q8_0, Bits::Eight),
    (Format::Q4K, Bits::Eight),
    (Format::Q6K, Bits::Eight),
    (Format::Q5K, Bits::Eight),
    (Format::Q5_0, Bits::Eight),
];

#[test]
fn products_match_dequantized_weights_for_every_format_and_batch_size() {
    let (rows, cols) = (37, 96);
    for (format, bits) in KINDS {
        let m = Matrix::quantized(format, bits, rows, cols, random_blocks(format, rows, cols, 7)).unwrap();
        let w = dense(&m);
        let levels = if bits == Bits::Eight { 127.0 } else { int16::LEVELS as f32 };
        for n in [1, 2, 3, 4, 5, 9] {
            let x: Vec<f32> = (0..n * cols).map(|i| ((i * 37 % 101) as f32 - 50.0) / 25.0).collect();
            let mut out = vec![0.0; n * rows];
            m.matmul(&mut Team::new(2), &x, n, &mut out);
            for i in 0..n {
                let xi = &x[i * cols..(i + 1) * cols];
                for r in 0..rows {
                    let wr = &w[r * cols..(r + 1) * cols];
                    let exact: f32 = xi.iter().zip(wr).map(|(a, b)| a * b).sum();
                    // Rounding moves each activation by at most half its block's step.
                    let bound: f32 = xi
                        .chunks_exact(BLOCK)
                        .zip(wr.chunks_exact(BLOCK))
                        .map(|(xb, wb)| {
                            let step = xb.iter().fold(0.0f32, |a, v| a.max(v.abs())) / levels;
                            wb.iter().map(|v| v.abs()).sum::<f32>() * step / 2.0
                        })
                        .sum();
                    let got = out[i * rows + r];
                    assert!(
                        (got - exact).abs() <= 1.01 * bound + 1e-5,
                        "{format:?} {bits:?} n={n} ({i},{r}): {got} vs {exact}"
                    );
                }
            }
        }
    }
}

#[test]
fn block_stats_are_the_same_bits_on_every_path() {
    let mut state = 11u32;
    for k in 0..200 {
        let x: Vec<f32> = (0..BLOCK)
            .map(|_| {
                state = state.wrapping_mul(1664525).wrapping_add(1013904223);
                let v = (state >> 8) as f32 / (1 << 24) as f32 - 0.5;
                if k % 7 == 0 {
                    -0.0
                } else {
                    v * (1 << (k % 9)) as f32
                }
            })
            .collect();
        let (a, b) = (block_stats(&x), block_stats_portable(&x));
        assert_eq!((a.0.to_bits(), a.1.to_bits()), (b.0.to_bits(), b.1.to_bits()), "block {k}");
        assert_eq!(a.0, x.iter().fold(0.0f32, |m, v| m.max(v.abs())));
    }
}

#[test]
fn simd_rounding_matches_round_ties_even() {
    let x: Vec<f32> =
        (0..32).map(|i| [0.5, 1.5, 2.5, -0.5, -2.5, 7.49, -7.51, 3.0][i % 8] * (1 + i / 8) as f32).collect();
    let amax = x.iter().fold(0.0f32, |m, v| m.max(v.abs()));
    let acts = int16::Acts::quantize(&x, 1, 32);
    let id = 1.0 / (amax / int16::LEVELS as f32);
    let want: Vec<i16> = x.iter().map(|v| (v * id).round_ties_even() as i16).collect();
    assert_eq!(acts.values(0), want);
    let acts = int8::Acts::quantize(&x, 1, 32);
    let id = 1.0 / (amax / 127.0);
    let want: Vec<i8> = x.iter().map(|v| (v * id).round_ties_even() as i8).collect();
    assert_eq!(acts.values(0), want);
    let halves: Vec<f32> = (0..32).map(|i| i as f32 - 15.5).collect();
    let acts = int16::Acts::quantize(&halves, 1, 32);
    assert_eq!(acts.values(0).iter().max(), Some(&int16::LEVELS));
    let acts = int8::Acts::quantize(&halves, 1, 32);
    let v = acts.values(0);
    assert_eq!((v.iter().min(), v.iter().max()), (Some(&-127), Some(&127)));
}

#[test]
fn simd_and_portable_kernels_give_the_same_bits() {
    // One block, whole and partial tiles, rows of 18 blocks (SmolLM2's 576 columns).
    for ((format, bits), (rows, cols)) in KINDS.into_iter().flat_map(|k| [(k, (9, 32)), (k, (32, 96)), (k, (21, 576))])
    {
        let raw = random_blocks(format, rows, cols, 5);
        let packed = layout::pack(format, bits, rows, cols / BLOCK, &raw);
        let ntiles = rows.div_ceil(layout::TILE);
        // From 16 rows on, 16-bit products go through the tile-multiply unit where the CPU
        // has one, 8 rows per pass.
        for n in [1, 2, 3, 4, 8, 11, 16, 17, 35] {
            let x: Vec<f32> = (0..n * cols).map(|i| ((i * 13 % 29) as f32 - 14.0) / 7.0).collect();
            let mut outs = [(); 3].map(|_| vec![f32::NAN; rows * n]);
            let [oa, ob, oc] = outs.each_mut().map(|o| Out::strided(o.as_mut_ptr(), rows, rows));
            // SAFETY: the buffers hold n rows of `rows` values.
            unsafe {
                if bits == Bits::Eight {
                    let acts = int8::Acts::quantize(&x, n, cols);
                    tiles::dot_tiles::<int8::Eight>(format, &packed, 0..ntiles, &acts, &oa);
                    tiles::vectors::<int8::Eight>(format, &packed, 0..ntiles, &acts, &ob);
                    tiles::portable::<int8::Eight>(format, &packed, 0..ntiles, &acts, &oc);
                } else {
                    let acts = int16::Acts::quantize(&x, n, cols);
                    tiles::dot_tiles::<int16::Sixteen>(format, &packed, 0..ntiles, &acts, &oa);
                    tiles::vectors::<int16::Sixteen>(format, &packed, 0..ntiles, &acts, &ob);
                    tiles::portable::<int16::Sixteen>(format, &packed, 0..ntiles, &acts, &oc);
                }
            }
            let [a, b, c] = &outs;
            assert!(a.iter().all(|v| v.is_finite()), "{format:?} {bits:?} n={n}: an output was not written");
            assert_eq!(a, c, "{format:?} {bits:?} n={n}: dot_tiles (amx: {})", amx::available());
            assert_eq!(b, c, "{format:?} {bits:?} n={n}: vector instructions");
        }
    }
}

#[test]
fn a_row_gets_identical_bits_alone_and_in_any_batch() {
    let (rows, cols) = (9, 128);
    for (format, bits) in KINDS {
        let m = Matrix::quantized(format, bits, rows, cols, random_blocks(format, rows, cols, 3)).unwrap();
        let x: Vec<f32> = (0..7 * cols).map(|i| ((i * 13 % 29) as f32 - 14.0) / 7.0).collect();
        let mut all = vec![0.0; 7 * rows];
        m.matmul(&mut Team::new(2), &x, 7, &mut all);
        for i in 0..7 {
            let mut one = vec![0.0; rows];
            m.matmul(&mut Team::new(1), &x[i * cols..(i + 1) * cols], 1, &mut one);
            assert_eq!(one, all[i * rows..(i + 1) * rows], "{format:?} {bits:?} row {i}");
        }
    }
}

#[test]
fn f32_matrices_match_plain_sums_and_are_batch_invariant() {
    for cols in [64, 40] {
        let rows = 5;
        let w: Vec<f32> = (0..rows * cols).map(|i| ((i * 7 % 23) as f32 - 11.0) / 10.0).collect();
        let m = Matrix::f32(rows, cols, w.clone()).unwrap();
        let x: Vec<f32> = (0..3 * cols).map(|i| ((i * 5 % 17) as f32 - 8.0) / 4.0).collect();
        let mut all = vec![0.0; 3 * rows];
        m.matmul(&mut Team::new(3), &x, 3, &mut all);
        for i in 0..3 {
            let mut one = vec![0.0; rows];
            m.matmul(&mut Team::new(1), &x[i * cols..(i + 1) * cols], 1, &mut one);
            assert_eq!(one, all[i * rows..(i + 1) * rows]);
            for r in 0..rows {
                let exact: f32 = (0..cols).map(|c| x[i * cols + c] * w[r * cols + c]).sum();
                assert!((one[r] - exact).abs() < 1e-4, "{cols}: {} vs {exact}", one[r]);
            }
        }
    }
}

#[test]
fn stacking_keeps_rows_and_refuses_mixed_shapes_and_formats() {
    let a = Matrix::quantized(Format::Q8_0, Bits::Sixteen, 2, 32, random_blocks(Format::Q8_0, 2, 32, 1)).unwrap();
    let b = Matrix::quantized(Format::Q8_0, Bits::Sixteen, 3, 32, random_blocks(Format::Q8_0, 3, 32, 2)).unwrap();
    let (da, db) = (dense(&a), dense(&b));
    let s = Matrix::stack(vec![a, b]).unwrap();
    assert_eq!(s.rows(), 5);
    assert_eq!(dense(&s), [da, db].concat());
    let c = Matrix::f32(1, 32, vec![0.0; 32]).unwrap();
    let d = Matrix::quantized(Format::Q8_0, Bits::Sixteen, 1, 32, random_blocks(Format::Q8_0, 1, 32, 3)).unwrap();
    assert!(Matrix::stack(vec![c, d]).is_err());
    // Q5_0 rows stack with Q8_0 ones as Q8_0, keeping their values.
    for bits in [Bits::Sixteen, Bits::Eight] {
        let q5 = Matrix::quantized(Format::Q5_0, bits, 17, 64, random_blocks(Format::Q5_0, 17, 64, 4)).unwrap();
        let q8 = Matrix::quantized(Format::Q8_0, bits, 3, 64, random_blocks(Format::Q8_0, 3, 64, 5)).unwrap();
        let want = [dense(&q5), dense(&q8)].concat();
        let s = Matrix::stack(vec![q5, q8]).unwrap();
        assert_eq!((s.rows(), s.format_name().starts_with("Q8_0")), (20, true));
        assert_eq!(dense(&s), want);
    }
    let q4 = Matrix::quantized(Format::Q4_0, Bits::Sixteen, 1, 32, random_blocks(Format::Q4_0, 1, 32, 6)).unwrap();
    let q8 = Matrix::quantized(Format::Q8_0, Bits::Sixteen, 1, 32, random_blocks(Format::Q8_0, 1, 32, 7)).unwrap();
    assert!(Matrix::stack(vec![q4, q8]).is_err());
    assert!(Matrix::quantized(Format::Q4_1, Bits::Eight, 1, 33, vec![]).is_err());
    assert!(Matrix::quantized(Format::Q4_1, Bits::Eight, 1, 32, vec![0; 19]).is_err());
}

#[test]
fn products_into_separate_rows_are_the_products_into_one_buffer() {
    let mut team = Team::new(2);
    let (rows, cols, n) = (37, 64, 3);
    let x: Vec<f32> = (0..n * cols).map(|i| ((i * 13 % 29) as f32 - 14.0) / 7.0).collect();
    let f32s = Matrix::f32(rows, cols, (0..rows * cols).map(|i| (i % 17) as f32 - 8.0).collect()).unwrap();
    let blocks = Matrix::quantized(Format::Q5_0, Bits::Sixteen, rows, cols, random_blocks(Format::Q5_0, rows, cols, 9));
    for m in [f32s, blocks.unwrap()] {
        let mut whole = vec![0.0; n * rows];
        m.matmul(&mut team, &x, n, &mut whole);
        // Buffers that held something else, of other sizes, are replaced.
        let mut each = vec![vec![1.0; 5], Vec::new(), vec![2.0; 100]];
        m.matmul_rows(&mut team, &x, &mut each);
        assert_eq!(each.concat(), whole, "{m:?}");
    }
}
