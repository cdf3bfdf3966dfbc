//! The greedy head against the whole product: the same first largest value at the same index,
//! every other value the product's or −∞, with pruning, with its fallback, with ties, for both
//! activation widths and several rows at once.

use super::*;
use crate::quant::tests::random_blocks;

const ROWS: usize = 2000;
const COLS: usize = 256;

/// Activations near row `planted`'s weights (times `strength`) plus a fixed pattern.
fn activations(m: &Matrix, planted: Option<usize>, strength: f32, seed: usize) -> Vec<f32> {
    let mut w = vec![0.0; m.cols];
    let noise = (0..m.cols).map(|c| (((c + 7 * seed) * 7919 % 1013) as f32 / 1013.0 - 0.5) * 3.0);
    if let Some(r) = planted {
        m.row_into(r, &mut w);
    }
    noise.zip(&w).map(|(n, w)| n + strength * w).collect()
}

fn check(head: &ArgmaxHead, m: &Matrix, x: &[f32], n: usize) -> usize {
    let mut team = Team::new(2);
    let mut full = vec![Vec::new(); n];
    m.matmul_rows(&mut team, x, &mut full);
    let mut got = vec![vec![3.0; 7]; n];
    head.argmax_rows(m, &mut team, x, &mut got);
    let mut pruned = 0;
    for (g, f) in got.iter().zip(&full) {
        assert_eq!(g.len(), f.len());
        let (a, b) = (aiserve_core::sampling::argmax(g), aiserve_core::sampling::argmax(f));
        assert_eq!(a, b, "the head's greedy token");
        assert_eq!(g[a as usize].to_bits(), f[b as usize].to_bits());
        for (k, (gv, fv)) in g.iter().zip(f).enumerate() {
            assert!(*gv == f32::NEG_INFINITY || gv.to_bits() == fv.to_bits(), "value {k}: {gv} vs {fv}");
        }
        pruned += g.iter().filter(|v| **v == f32::NEG_INFINITY).count();
    }
    pruned
}

#[test]
fn the_head_picks_the_whole_products_token_for_both_widths() {
    for bits in [Bits::Sixteen, Bits::Eight] {
        let blocks = random_blocks(Format::Q8_0, ROWS, COLS, 11);
        let m = Matrix::quantized(Format::Q8_0, bits, ROWS, COLS, blocks).unwrap();
        let Data::Blocks { bytes, .. } = &m.data else { unreachable!() };
        let head = ArgmaxHead::build(ROWS, COLS, bits, bytes).expect("a head");
        // A clear winner (as a confident model's next token) leaves most tiles out.
        for (seed, planted) in [(1, 5), (2, 777), (3, ROWS - 1)] {
            let x = activations(&m, Some(planted), 400.0, seed);
            let pruned = check(&head, &m, &x, 1);
            assert!(pruned > ROWS / 2, "{bits:?}: only {pruned} of {ROWS} values left out");
        }
        // No winner: many candidates, then the whole product (the same token either way).
        for seed in 4..8 {
            check(&head, &m, &activations(&m, None, 0.0, seed), 1);
        }
        // Two and three rows at once, one of them without a winner.
        let x = [
            activations(&m, Some(100), 400.0, 8),
            activations(&m, None, 0.0, 9),
            activations(&m, Some(1500), 300.0, 10),
        ]
        .concat();
        check(&head, &m, &x[..2 * COLS], 2);
        check(&head, &m, &x, 3);
        // Activations that are not finite: the same token and values as the whole product.
        for bad in [f32::NAN, f32::INFINITY, f32::NEG_INFINITY] {
            let mut x = activations(&m, Some(5), 400.0, 1);
            x[17] = bad;
            check(&head, &m, &x, 1);
        }
        // No rows, and more rows than pay: the whole product.
        assert_eq!(check(&head, &m, &[], 0), 0);
        let many = x[..COLS].repeat(MAX_ROWS + 1);
        assert_eq!(check(&head, &m, &many, MAX_ROWS + 1), 0);
        // Clear winners in every row leave most tiles out.
        let x = [activations(&m, Some(100), 400.0, 8), activations(&m, Some(1999), 300.0, 10)].concat();
        assert!(check(&head, &m, &x, 2) > ROWS, "two clear winners leave most tiles out");
        // (This matrix has 125 tiles: an eighth of them is 15, so a few rows.)
        let x: Vec<f32> = (0..4).flat_map(|i| activations(&m, Some(97 * i + 3), 400.0, i)).collect();
        assert!(check(&head, &m, &x, 4) > 4 * ROWS / 2);
    }
}

#[test]
fn ties_go_to_the_first_row_as_in_the_whole_product() {
    let mut blocks = random_blocks(Format::Q8_0, ROWS, COLS, 12);
    let bb = COLS / BLOCK * Format::Q8_0.block_bytes();
    // Row 1200 is row 300 again (another tile): equal logits.
    let copy = blocks[300 * bb..301 * bb].to_vec();
    blocks[1200 * bb..1201 * bb].copy_from_slice(&copy);
    let m = Matrix::quantized(Format::Q8_0, Bits::Sixteen, ROWS, COLS, blocks).unwrap();
    let Data::Blocks { bytes, .. } = &m.data else { unreachable!() };
    let head = ArgmaxHead::build(ROWS, COLS, Bits::Sixteen, bytes).unwrap();
    let x = activations(&m, Some(1200), 400.0, 1);
    check(&head, &m, &x, 1);
    let mut team = Team::new(1);
    let mut got = vec![Vec::new()];
    head.argmax_rows(&m, &mut team, &x, &mut got);
    assert_eq!(aiserve_core::sampling::argmax(&got[0]), 300);
}

#[test]
fn heads_only_for_large_q8_0_matrices_with_plain_scales() {
    let small = Matrix::quantized(Format::Q8_0, Bits::Sixteen, 64, 64, random_blocks(Format::Q8_0, 64, 64, 1));
    assert!(ArgmaxHead::of(&small.unwrap()).is_none());
    let f32s = Matrix::f32(4096, 32, vec![0.5; 4096 * 32]).unwrap();
    assert!(ArgmaxHead::of(&f32s).is_none());
    // Gemma 3's output projection gets one (its high bits take 22 of every 34 bytes), SmolLM2's
    // (30 MB) and other formats none.
    let gemma = ArgmaxHead::bytes_for(Format::Q8_0, 262_144, 640);
    assert_eq!(gemma, if crate::quant::q5::native() { 262_144 * 640 / 32 * 22 } else { 0 });
    assert_eq!(ArgmaxHead::bytes_for(Format::Q8_0, 49_152, 576), 0);
    assert_eq!(ArgmaxHead::bytes_for(Format::Q4_0, 262_144, 640), 0);
    // The smallest that pays, made for real.
    let rows = MIN_BYTES / (32 / BLOCK * Format::Q8_0.block_bytes()) + TILE;
    let q8 = Matrix::quantized(Format::Q8_0, Bits::Sixteen, rows, 32, random_blocks(Format::Q8_0, rows, 32, 3));
    let head = ArgmaxHead::of(&q8.unwrap());
    assert_eq!(head.map(|h| h.bytes()), crate::quant::q5::native().then(|| rows.div_ceil(TILE) * TILE * 22));
    // A negative scale, or one whose eightfold overflows f16, keeps the plain product.
    for d in [-0.01f32, 9000.0] {
        let mut blocks = random_blocks(Format::Q8_0, 16, 32, 4);
        blocks[34 * 5..34 * 5 + 2].copy_from_slice(&half::f16::from_f32(d).to_le_bytes());
        let m = Matrix::quantized(Format::Q8_0, Bits::Sixteen, 16, 32, blocks).unwrap();
        let Data::Blocks { bytes, .. } = &m.data else { unreachable!() };
        assert!(ArgmaxHead::build(16, 32, Bits::Sixteen, bytes).is_none(), "scale {d}");
    }
}

#[test]
fn every_bound_holds_within_its_margin() {
    for bits in [Bits::Sixteen, Bits::Eight] {
        let mut blocks = random_blocks(Format::Q8_0, ROWS, COLS, 13);
        let plain = Matrix::quantized(Format::Q8_0, bits, ROWS, COLS, blocks.clone()).unwrap();
        let x = [activations(&plain, None, 0.0, 1), activations(&plain, Some(9), 50.0, 2)].concat();
        // Row 42's low bits are as large as the bound allows where the first row's activations
        // are positive and 0 elsewhere: there the bound is tight.
        let bb = Format::Q8_0.block_bytes();
        for (b, blk) in blocks[42 * COLS / BLOCK * bb..43 * COLS / BLOCK * bb].chunks_exact_mut(bb).enumerate() {
            for (p, q) in blk[2..].iter_mut().enumerate() {
                *q = (*q & !7) | if x[b * BLOCK + p] > 0.0 { 7 } else { 0 };
            }
        }
        // Row 43 also has its high bits where the matrix's rounding of those activations is
        // above the bound's 8-bit one and its lowest where below: only the bound's share for
        // the two roundings keeps it above.
        let (a, c) = (Rounded::of(bits, &x[..COLS], 1, COLS), Rounded::of(BOUND_BITS, &x[..COLS], 1, COLS));
        for (b, blk) in blocks[43 * COLS / BLOCK * bb..44 * COLS / BLOCK * bb].chunks_exact_mut(bb).enumerate() {
            for (p, q) in blk[2..].iter_mut().enumerate() {
                let above = a.scales().d[b] * a.value(b, p) as f32 > c.scales().d[b] * c.value(b, p) as f32;
                let low = if x[b * BLOCK + p] > 0.0 { 7 } else { 0 };
                *q = ((if above { 15i8 } else { -16 } << 3) as u8) | low;
            }
        }
        let m = Matrix::quantized(Format::Q8_0, bits, ROWS, COLS, blocks).unwrap();
        let Data::Blocks { bytes, .. } = &m.data else { unreachable!() };
        let head = ArgmaxHead::build(ROWS, COLS, bits, bytes).unwrap();
        let mut team = Team::new(2);
        let mut full = vec![Vec::new(); 2];
        m.matmul_rows(&mut team, &x, &mut full);
        let mut bounds = vec![Vec::new(); 2];
        let margins = head.bounds(&Rounded::of(bits, &x, 2, COLS), &mut team, &x, &mut bounds);
        let mut slack = 0.0f32;
        for i in 0..2 {
            assert!(margins[i] > 0.0 && margins[i] < 1e-3 * full[i].iter().fold(0.0f32, |a, v| a.max(v.abs())));
            for (r, (b, f)) in bounds[i].iter().zip(&full[i]).enumerate() {
                assert!(b + margins[i] >= *f, "{bits:?} row {i}, {r}: bound {b} below {f}");
                slack = slack.max(b - f);
            }
        }
        // Where the bound rounds as the matrix does (8 bits), it is tight there.
        let tight = bounds[0][42] - full[0][42];
        if bits == BOUND_BITS {
            assert!(tight.abs() <= margins[0], "{bits:?}: the tight row is {tight} under its bound");
        }
        // The bound is not loose either: the low bits' share, not the value itself.
        assert!(slack > 0.0 && slack < full.concat().iter().fold(0.0f32, |a, v| a.max(v.abs())), "{slack}");
    }
}

#[test]
fn the_high_bits_are_the_q8_0_values_shifted_in_q5_0_tiles() {
    for bits in [Bits::Sixteen, Bits::Eight] {
        // 37 rows: a padded last tile.
        let (rows, cols) = (37, 96);
        let blocks = random_blocks(Format::Q8_0, rows, cols, 14);
        let m = Matrix::quantized(Format::Q8_0, bits, rows, cols, blocks.clone()).unwrap();
        let Data::Blocks { bytes, .. } = &m.data else { unreachable!() };
        let head = ArgmaxHead::build(rows, cols, bits, bytes).unwrap();
        // Each value `8·d·(q >> 3)`.
        for r in 0..rows {
            let mut got = vec![0.0; cols];
            head.high.row_into(r, &mut got);
            for (c, g) in got.iter().enumerate() {
                let blk = &blocks[(r * cols + c) / BLOCK * 34..][..34];
                let d = half::f16::from_le_bytes([blk[0], blk[1]]).to_f32();
                let want = 8.0 * d * ((blk[2 + c % BLOCK] as i8 >> 3) as f32);
                assert_eq!(*g, want, "{bits:?} ({r}, {c})");
            }
        }
    }
}
