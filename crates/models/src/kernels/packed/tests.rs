//! The packed products and convolutions against direct sums, the epilogues against separate
//! passes, and the AVX-512 tiles against the AVX2 ones.

use super::*;

fn naive(x: &[f32], w: &[f32], m: usize, n: usize, k: usize) -> Vec<f32> {
    let mut out = vec![0.0f64; m * n];
    for i in 0..m {
        for j in 0..n {
            out[i * n + j] = (0..k).map(|p| x[i * k + p] as f64 * w[j * k + p] as f64).sum();
        }
    }
    out.into_iter().map(|v| v as f32).collect()
}

/// Every shape class: rows below, at and past a tile and a row block, features not a
/// multiple of a panel, an inner dimension past a `KC` block; accumulates into `out`.
#[test]
fn matches_naive_products() {
    for &(m, n, k) in &[
        (1, 1, 1),
        (5, 17, 3),
        (6, 16, 300),
        (7, 33, 257),
        (121, 40, 520),
        (14, 384, 384),
        (250, 70, 9),
        (130, 20, 1600),
    ] {
        let x: Vec<f32> = (0..m * k).map(|i| ((i * 31 % 97) as f32 - 48.0) / 50.0).collect();
        let w: Vec<f32> = (0..n * k).map(|i| ((i * 17 % 89) as f32 - 44.0) / 40.0).collect();
        let packed = PackedLinear::new(&w, n, k);
        let mut out: Vec<f32> = (0..m * n).map(|i| i as f32 * 0.5).collect();
        packed.matmul_acc(&x, &mut out);
        let want = naive(&x, &w, m, n, k);
        for (i, (o, w)) in out.iter().zip(&want).enumerate() {
            let expect = w + i as f32 * 0.5;
            assert!((o - expect).abs() <= 1e-3 * (1.0 + expect.abs()), "{m}x{n}x{k} [{i}]: {o} vs {expect}");
        }
    }
}

/// `matmul_bias` gives the bits of a bias fill, `matmul_acc` and the activation as a pass
/// of its own, for every activation, one `k` block and several (rows past `MC`), partial
/// panels, and no inner dimension at all; whatever `out` held is ignored.
#[test]
fn fused_bias_and_activation_match_separate_passes() {
    for &(m, n, k) in &[(3, 40, 20), (14, 384, 384), (130, 33, 1600), (5, 7, 0)] {
        let x: Vec<f32> = (0..m * k).map(|i| ((i * 31 % 97) as f32 - 48.0) / 20.0).collect();
        let w: Vec<f32> = (0..n * k).map(|i| ((i * 17 % 89) as f32 - 44.0) / 30.0).collect();
        let bias: Vec<f32> = (0..n).map(|j| (j as f32 - 20.0) / 7.0).collect();
        let packed = PackedLinear::new(&w, n, k);
        let mut plain: Vec<f32> = bias.iter().copied().cycle().take(m * n).collect();
        packed.matmul_acc(&x, &mut plain);
        for act in [Act::Identity, Act::Relu, Act::GeluErf] {
            let mut fused = vec![f32::NAN; m * n];
            packed.matmul_bias(&x, &bias, act, &mut fused);
            let want: Vec<u32> = plain.iter().map(|v| act.apply(*v).to_bits()).collect();
            let got: Vec<u32> = fused.iter().map(|v| v.to_bits()).collect();
            assert!(got == want, "{m}x{n}x{k} {act:?}");
        }
        if k > 0 {
            assert!(plain.iter().any(|v| *v < -1.0) && plain.iter().any(|v| *v > 1.0));
        }
    }
}

/// The AVX-512 GELU gives the scalar one's bits, through the clamp and the tails.
#[cfg(target_arch = "x86_64")]
#[test]
fn vector_gelu_gives_the_scalar_bits() {
    if !std::arch::is_x86_feature_detected!("avx512f") {
        eprintln!("no AVX-512 here: nothing to compare");
        return;
    }
    let xs: Vec<f32> =
        (-4000..4000).map(|i| i as f32 * 0.0031).chain([0.0, -0.0, 1e-30, -1e-30, 40.0, -40.0]).collect();
    for chunk in xs.chunks(16) {
        let mut lanes = [0.0f32; 16];
        lanes[..chunk.len()].copy_from_slice(chunk);
        // SAFETY: AVX-512F is present (checked above); the load and store cover `lanes`.
        let out = unsafe {
            use std::arch::x86_64::*;
            let mut out = [0.0f32; 16];
            _mm512_storeu_ps(out.as_mut_ptr(), avx512::gelu_erf(_mm512_loadu_ps(lanes.as_ptr())));
            out
        };
        for (x, g) in lanes.iter().zip(out) {
            assert_eq!(g.to_bits(), aiserve_core::math::gelu_erf(*x).to_bits(), "gelu({x})");
        }
    }
}

/// A picture's convolution through the packed weight equals the direct sum, for partial
/// tiles and panels, one and several channels.
#[test]
fn convolutions_match_the_direct_sum() {
    for &(h, w, c, kh, kw, oc) in
        &[(5, 9, 1, 3, 3, 5), (13, 13, 32, 3, 3, 64), (4, 7, 3, 2, 3, 17), (5, 5, 64, 3, 3, 64)]
    {
        let img: Vec<f32> = (0..h * w * c).map(|i| ((i * 37 % 101) as f32 - 50.0) / 40.0).collect();
        let k = kh * kw * c;
        let wt: Vec<f32> = (0..oc * k).map(|i| ((i * 13 % 71) as f32 - 35.0) / 30.0).collect();
        let packed = PackedLinear::new(&wt, oc, k);
        let (oh, ow) = (h + 1 - kh, w + 1 - kw);
        let mut out = vec![0.25f32; oh * ow * oc];
        packed.conv_image(&img, w, c, kh, kw, ow, &mut out, Epilogue::Add);
        for y in 0..oh {
            for x in 0..ow {
                for o in 0..oc {
                    let mut want = 0.25f64;
                    for ky in 0..kh {
                        for kx in 0..kw {
                            for ci in 0..c {
                                let v = img[((y + ky) * w + x + kx) * c + ci] as f64;
                                want += v * wt[o * k + (ky * kw + kx) * c + ci] as f64;
                            }
                        }
                    }
                    let got = out[(y * ow + x) * oc + o] as f64;
                    assert!(
                        (got - want).abs() < 1e-3 * (1.0 + want.abs()),
                        "{h}x{w}x{c} y{y} x{x} o{o}: {got} vs {want}"
                    );
                }
            }
        }
    }
}

/// `Store` overwrites what `out` held and `BiasRelu` adds the bias and clamps, for whole
/// and partial panels (49 channels: three panels and a single column).
#[test]
fn conv_epilogues_store_and_apply_bias_relu() {
    let (h, w, c, kh, kw, oc) = (6, 9, 3, 3, 3, 49);
    let img: Vec<f32> = (0..h * w * c).map(|i| ((i * 37 % 101) as f32 - 50.0) / 40.0).collect();
    let k = kh * kw * c;
    let wt: Vec<f32> = (0..oc * k).map(|i| ((i * 13 % 71) as f32 - 35.0) / 30.0).collect();
    let bias: Vec<f32> = (0..oc).map(|o| (o as f32 - 24.0) / 10.0).collect();
    let packed = PackedLinear::new(&wt, oc, k);
    let (oh, ow) = (h + 1 - kh, w + 1 - kw);
    let mut sums = vec![0.0f32; oh * ow * oc];
    packed.conv_image(&img, w, c, kh, kw, ow, &mut sums, Epilogue::Add);
    let mut stored = vec![f32::NAN; sums.len()];
    packed.conv_image(&img, w, c, kh, kw, ow, &mut stored, Epilogue::Store);
    assert_eq!(stored, sums);
    let mut fused = vec![f32::NAN; sums.len()];
    packed.conv_image(&img, w, c, kh, kw, ow, &mut fused, Epilogue::BiasRelu(&bias));
    let want: Vec<f32> = sums.iter().enumerate().map(|(i, v)| (v + bias[i % oc]).max(0.0)).collect();
    assert_eq!(fused, want);
    assert!(want.contains(&0.0) && want.iter().any(|&v| v > 0.0));
}

/// AVX-512's tiles (one or two panels wide) give the bits of AVX2's one-panel tiles: each
/// output value is the same chain of multiply-adds. Checks nothing on a CPU without both.
#[cfg(target_arch = "x86_64")]
#[test]
fn wide_tiles_give_the_bits_of_avx2() {
    if !(std::arch::is_x86_feature_detected!("avx512f")
        && std::arch::is_x86_feature_detected!("avx2")
        && std::arch::is_x86_feature_detected!("fma"))
    {
        eprintln!("no AVX-512 here: nothing to compare");
        return;
    }
    let k = 45;
    let lda = k + 3; // rows of `x` wider than the block a tile reads
    let a: Vec<f32> = (0..MR_WIDE * lda).map(|i| (i as f32 * 0.37).sin()).collect();
    let b: Vec<f32> = (0..2 * k * NR).map(|i| (i as f32 * 0.11).cos() * 1.7).collect();
    let (b0, b1) = b.split_at(k * NR);
    let ldc = 40;
    type Wide = unsafe fn(*const f32, usize, [*const f32; 2], usize, *mut f32, usize, usize, Epi);
    type Narrow = unsafe fn(*const f32, usize, &[f32], usize, *mut f32, usize, usize, Epi);
    // A wide tile of more than 6 rows against two AVX2 tiles (6 rows, then the rest).
    let cases: [(Wide, Wide, Narrow, Option<Narrow>, usize); 5] = [
        (avx512::tile::<1, 1>, avx512::tile::<1, 2>, avx2::tile::<1>, None, 1),
        (avx512::tile::<5, 1>, avx512::tile::<5, 2>, avx2::tile::<5>, None, 5),
        (avx512::tile::<6, 1>, avx512::tile::<6, 2>, avx2::tile::<6>, None, 6),
        (avx512::tile::<7, 1>, avx512::tile::<7, 2>, avx2::tile::<6>, Some(avx2::tile::<1>), 7),
        (avx512::tile::<12, 1>, avx512::tile::<12, 2>, avx2::tile::<6>, Some(avx2::tile::<6>), 12),
    ];
    for (one, two, narrow, below, rows) in cases {
        for cols in [3, 16, 21, 32] {
            let mut wide = vec![0.5f32; rows * ldc];
            let mut want = wide.clone();
            let f = if cols > NR { two } else { one };
            // SAFETY: the CPU has AVX-512F, AVX2 and FMA (checked above); `a` holds
            // `MR_WIDE` rows of `lda >= k` values, each panel `k * NR`, and the outputs
            // `rows` rows of `ldc >= cols`.
            unsafe {
                f(a.as_ptr(), lda, [b0.as_ptr(), b1.as_ptr()], k, wide.as_mut_ptr(), ldc, cols, Epi::ADD);
                for (at, g) in [(0, Some(narrow)), (MR, below)] {
                    let Some(g) = g else { continue };
                    let (x, o) = (a.as_ptr().add(at * lda), want.as_mut_ptr().add(at * ldc));
                    g(x, lda, b0, k, o, ldc, cols.min(NR), Epi::ADD);
                    if cols > NR {
                        g(x, lda, b1, k, o.add(NR), ldc, cols - NR, Epi::ADD);
                    }
                }
            }
            assert_eq!(wide, want, "{rows} rows, {cols} columns");
        }
    }
}

/// A tile of a partial panel adds only its own columns.
#[test]
fn partial_tiles_touch_only_their_columns() {
    let (k, rows, cols, ldc, lda) = (37, 5, 11, 20, 41);
    let a: Vec<f32> = (0..rows * lda).map(|i| (i as f32 * 0.37).sin()).collect();
    let b: Vec<f32> = (0..k * NR).map(|i| (i as f32 * 0.11).cos()).collect();
    let mut out = vec![1.0f32; rows * ldc];
    // SAFETY: `out` has `rows` rows of `ldc >= cols` values.
    unsafe { tile_product(&a, lda, rows, [&b, &b], k, out.as_mut_ptr(), ldc, cols, Epi::ADD) };
    for r in 0..rows {
        for c in 0..ldc {
            let want = if c < cols { 1.0 + (0..k).map(|p| a[r * lda + p] * b[p * NR + c]).sum::<f32>() } else { 1.0 };
            assert!((out[r * ldc + c] - want).abs() < 1e-4, "[{r}][{c}] {} vs {want}", out[r * ldc + c]);
        }
    }
}
