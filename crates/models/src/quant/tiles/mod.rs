//! Products of [`layout`]'s weight tiles with activation rows of either width ([`int16`] or
//! [`int8`], through [`Width`]): the loop over tiles and rows, the float work per block, and the
//! portable reference the SIMD path must equal bit for bit.
//!
//! For weight row `j` and activation row `i`, each block `b` adds, in block order and in this
//! order, `Σq·(dw·dx)` and `m·s` to one float with fused multiply-adds: `Σq` is the exact
//! integer sum of the block's products, `dw`, `dx` the scales, `m` the weight term added per
//! unit of activation (Q4_1: its minimum; Q4_0: `−8·dw`; Q8_0: none) and `s` the activation
//! block's exact float sum. The integer part is exact, so every instruction set, tile size and
//! batch gives the same bits for a row.
//!
//! [`int16`]: super::int16
//! [`int8`]: super::int8

use super::layout::{self, TILE};
use super::{Bits, Format, Out, BLOCK};

/// What activation rows of any width keep beside their integers: the shape, and per block the
/// scale `d` and the exact sum `s` of its values before rounding.
pub struct Scales {
    pub n: usize,
    pub nb: usize,
    pub d: Vec<f32>,
    pub s: Vec<f32>,
}

impl Scales {
    /// Rounds `x` (`n × cols`, `cols` a multiple of 32) block by block to `levels` steps on each
    /// side of zero: `round(j, block, 1 / d)` writes block `j`'s integers for the scale
    /// `d = max|x| / levels`.
    pub fn quantize(x: &[f32], n: usize, cols: usize, levels: f32, mut round: impl FnMut(usize, &[f32], f32)) -> Self {
        let nb = cols / BLOCK;
        let mut a = Scales { n, nb, d: vec![0.0; n * nb], s: vec![0.0; n * nb] };
        for (j, xb) in x.chunks_exact(BLOCK).enumerate().take(n * nb) {
            let (amax, sum) = super::block_stats(xb);
            let d = amax / levels;
            round(j, xb, if d > 0.0 { 1.0 / d } else { 0.0 });
            a.d[j] = d;
            a.s[j] = sum;
        }
        a
    }
}

/// An activation width: how its rows are stored, and how a block of weights meets them.
pub trait Width: Wide {
    const BITS: Bits;
    /// Activation rows rounded to this width.
    type Acts: Sync;
    /// Their shape, scales and sums.
    fn scales(a: &Self::Acts) -> &Scales;
    /// Value `p` of block `j` (blocks row after row).
    fn value(a: &Self::Acts, j: usize, p: usize) -> i32;

    /// Block `j`'s values as 32-bit words (2 or 4 values each), the unit broadcast to a tile.
    #[cfg(target_arch = "x86_64")]
    fn words(a: &Self::Acts, j: usize) -> *const i32;
    /// Steps per block: step `c` multiplies two weight vectors per half tile with words `c` and
    /// `c + SECOND`.
    #[cfg(target_arch = "x86_64")]
    const STEPS: usize;
    #[cfg(target_arch = "x86_64")]
    const SECOND: usize;
    /// The two weight vectors of step `c` for rows `8h..8h + 8` of a tile block's `payload`.
    ///
    /// # Safety
    /// `payload` must point at a whole tile block's payload of format `F`, and the CPU must have
    /// AVX2.
    #[cfg(target_arch = "x86_64")]
    unsafe fn weights<const F: u8>(payload: *const u8, h: usize, c: usize) -> [std::arch::x86_64::__m256i; 2];
    /// `acc` plus, per 32-bit lane, the sum of the products of `w`'s and `x`'s values (exact),
    /// for weights of format `F`.
    ///
    /// # Safety
    /// The CPU must have AVX2, and with `VNNI` AVX-512 VNNI and VL.
    #[cfg(target_arch = "x86_64")]
    unsafe fn dot<const F: u8, const VNNI: bool>(
        acc: std::arch::x86_64::__m256i,
        w: std::arch::x86_64::__m256i,
        x: std::arch::x86_64::__m256i,
    ) -> std::arch::x86_64::__m256i;
    /// Runs [`dot_tiles`] on the tile-multiply unit ([`super::amx`]) if the CPU has it and
    /// these rows gain from it; whether it did.
    ///
    /// # Safety
    /// As [`dot_tiles`], after its checks.
    #[cfg(target_arch = "x86_64")]
    unsafe fn amx(_: Format, _: &[u8], _: std::ops::Range<usize>, _: &Self::Acts, _: &Out) -> bool {
        false
    }
}

/// How a width's values meet a tile on 512-bit vectors (AVX-512 with VNNI), which every width's
/// products run on where the CPU has them: one multiply-add covers a whole tile, and the
/// unpacking and float work take half the instructions. Measured with `--bench quant_matmul`
/// and `--bench generate`: 8-bit activations gain (prefill +15%, 8 rows 0.99 → 0.78 ns per row
/// and 128 multiply-adds), and so do 16-bit ones (one thread, 8 rows: Q8_0 1.60 → 1.20 ns, Q4_K
/// 1.85 → 1.31, Q6_K 1.87 → 1.21; Gemma 3 270M prefill +33%, 8 sequences +15%) once `vpdpwssd`
/// is written out ([`simd::vpdpwssd512`]): as LLVM emitted it, two instructions, they had
/// measured slower.
pub trait Wide {
    /// The two weight vectors of step `c` for all 16 rows of a tile block's `payload`.
    ///
    /// # Safety
    /// As [`Width::weights`]; the CPU must have AVX-512 F and BW.
    #[cfg(target_arch = "x86_64")]
    unsafe fn weights16<const F: u8>(payload: *const u8, c: usize) -> [std::arch::x86_64::__m512i; 2];
    /// [`Width::dot`] on 512-bit vectors, with AVX-512 VNNI.
    ///
    /// # Safety
    /// The CPU must have AVX-512 F, BW and VNNI.
    #[cfg(target_arch = "x86_64")]
    unsafe fn dot16<const F: u8>(
        acc: std::arch::x86_64::__m512i,
        w: std::arch::x86_64::__m512i,
        x: std::arch::x86_64::__m512i,
    ) -> std::arch::x86_64::__m512i;
}

/// The products of weight tiles `tiles` (packed by [`layout::pack`] for `W`) with every
/// activation row, written to `out`.
///
/// # Safety
/// `out.row(i)` must be valid for writes of `out.rows` floats for every activation row `i`, and
/// no other thread may write the columns of these tiles meanwhile.
pub unsafe fn dot_tiles<W: Width>(
    format: Format,
    packed: &[u8],
    tiles: std::ops::Range<usize>,
    acts: &W::Acts,
    out: &Out,
) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: as this function's contract.
    if unsafe { W::amx(format, packed, tiles.clone(), acts, out) } {
        return;
    }
    // SAFETY: as this function's contract.
    unsafe { vectors::<W>(format, packed, tiles, acts, out) }
}

/// [`dot_tiles`] on vector instructions only (the tile-multiply unit left out).
///
/// # Safety
/// As [`dot_tiles`].
pub unsafe fn vectors<W: Width>(
    format: Format,
    packed: &[u8],
    tiles: std::ops::Range<usize>,
    acts: &W::Acts,
    out: &Out,
) {
    let nb = W::scales(acts).nb;
    assert!(tiles.end * nb * layout::tile_block_bytes(format) <= packed.len());
    assert!(tiles.end * TILE < out.rows + TILE);
    #[cfg(target_arch = "x86_64")]
    if super::avx2::available() {
        // SAFETY: the CPU has the features (checked above) and the bounds were asserted.
        unsafe { simd::dot_tiles::<W>(format, packed, tiles, acts, out) };
        return;
    }
    // SAFETY: as this function's contract.
    unsafe { portable::<W>(format, packed, tiles, acts, out) }
}

/// The same sums in the same order without SIMD (and the reference the SIMD path must equal).
///
/// # Safety
/// As [`dot_tiles`].
pub unsafe fn portable<W: Width>(
    format: Format,
    packed: &[u8],
    tiles: std::ops::Range<usize>,
    acts: &W::Acts,
    out: &Out,
) {
    let Scales { n, nb, d, s } = W::scales(acts);
    let (n, nb) = (*n, *nb);
    for r in tiles.start * TILE..(tiles.end * TILE).min(out.rows) {
        let blocks: Vec<_> = (0..nb).map(|b| layout::read_block(format, W::BITS, packed, nb, r, b)).collect();
        for i in 0..n {
            let mut acc = 0.0f32;
            for (b, blk) in blocks.iter().enumerate() {
                let j = i * nb + b;
                let sum = |p: std::ops::Range<usize>| -> i32 { p.map(|p| blk.q[p] * W::value(acts, j, p)).sum() };
                if format.split_scales() {
                    acc = (sum(0..16) as f32).mul_add(blk.d[0] * d[j], acc);
                    acc = (sum(16..BLOCK) as f32).mul_add(blk.d[1] * d[j], acc);
                } else {
                    acc = (sum(0..BLOCK) as f32).mul_add(blk.d[0] * d[j], acc);
                }
                if format.has_term() {
                    acc = blk.m.mul_add(s[j], acc);
                }
            }
            // SAFETY: row `i`, column `r < rows`, inside `out` by the contract.
            unsafe { *out.row(i).add(r) = acc };
        }
    }
}

#[cfg(target_arch = "x86_64")]
pub(crate) mod simd;

#[cfg(target_arch = "x86_64")]
pub use simd::{high, signed, Q4K, Q4_0, Q4_1, Q5K, Q5_0, Q6K, Q8_0};
