//! Products on the CPU's tile-multiply unit (Intel AMX-INT8) for many activation rows at once:
//! prompts (prefill) and batches of 16 or more sequences.
//!
//! One `tdpb*d` instruction multiplies up to 16 activation tile rows by a tile's 16 weight rows
//! over a whole block of 32 values. What is left per block is unpacking the weights into the
//! unit's byte layout, one tile store of the sums, and the float work, which is why it pays
//! only from [`MIN_ROWS`] rows on (SmolLM2 prefill +13–23%: `BENCHMARKS.md`).
//!
//! The unit multiplies bytes only. 16-bit activations ([`super::int16`], the default) are split
//! exactly into two signed bytes (`x = 256·hi + lo`, which is why they are rounded to
//! [`super::int16::LEVELS`] steps), stacked as one tile, and joined again in 32-bit integers: the block sums are the same integers as the vector kernels', and the float
//! work per block is the same operations in the same order ([`super::tiles`]), so a row gets
//! the same bits from either path, alone or in any batch. 8-bit activations stay on the vector
//! kernels: there one `vpdpbusd` already does 64 products, and the unit measured slower at every
//! batch size and for prompts (8 sequences 830 against 940 tokens/s, prefill 1430 against 1560).
//!
//! Rust's AMX intrinsics are unstable, so the tile instructions are inline assembly. Linux
//! hands the unit to a process only on request (`arch_prctl(ARCH_REQ_XCOMP_PERM)`);
//! [`available`] asks once. `AISERVE_NO_AMX=1` turns the unit off (the same bits either way).

use super::tiles::Scales;
use super::BLOCK;

/// Fewest activation rows worth the unit. Measured with `--bench quant_matmul` (`LAYERS=64
/// THREADS=2`, weights streaming from memory), against the vector kernels: 2 rows 3.8 against
/// 2.8 ms, 4 rows 4.9 against 4.4, 8 rows 7.0 against 7.4, 16 rows 12.1 against 14.4; on the
/// model (`--bench generate`) 8 sequences came out the same either way (−2% to +3%), 16 a
/// few percent faster, 200-token prompts 13–23%. Each block's sums leave the unit by a tile
/// store (~15 cycles whatever its rows), and tile loads and stores hold up the vector work
/// around them, so a few rows lose.
pub const MIN_ROWS: usize = 16;

/// Most activation rows per tile multiply (the unit's tile height).
const ROWS: usize = 16;

/// Whether the CPU has AMX-INT8 with AVX-512 (for the unpacking and float work), and the
/// kernel lets this process use it.
pub fn available() -> bool {
    static YES: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *YES.get_or_init(|| std::env::var_os("AISERVE_NO_AMX").is_none() && cpu_has_amx() && request_permission())
}

#[cfg(target_arch = "x86_64")]
fn cpu_has_amx() -> bool {
    use std::arch::is_x86_feature_detected as has;
    // CPUID leaf 7 exists on every CPU with AVX2, checked first.
    let leaf7 = || std::arch::x86_64::__cpuid_count(7, 0);
    super::avx2::available()
        && has!("avx512f")
        && has!("avx512bw")
        && has!("avx512vl")
        // AMX-TILE and AMX-INT8.
        && leaf7().edx & (3 << 24) == 3 << 24
}

#[cfg(not(target_arch = "x86_64"))]
fn cpu_has_amx() -> bool {
    false
}

/// Asks Linux for the tile registers' state (`ARCH_REQ_XCOMP_PERM` for `XFEATURE_XTILEDATA`);
/// it fails where the kernel does not manage them.
#[cfg(all(target_arch = "x86_64", target_os = "linux"))]
fn request_permission() -> bool {
    const ARCH_REQ_XCOMP_PERM: libc::c_long = 0x1023;
    const XFEATURE_XTILEDATA: libc::c_long = 18;
    // SAFETY: a plain system call with integer arguments.
    unsafe { libc::syscall(libc::SYS_arch_prctl, ARCH_REQ_XCOMP_PERM, XFEATURE_XTILEDATA) == 0 }
}

#[cfg(not(all(target_arch = "x86_64", target_os = "linux")))]
fn request_permission() -> bool {
    false
}

/// 16-bit activation rows as the unit reads them: each value split into two signed bytes,
/// `x = 256·hi + lo` (exact within [`super::int16::LEVELS`]), so that a row is two tile rows.
/// In passes of 8 rows: per pass and block, the pass's high bytes row after row and then its
/// low ones, 32 bytes each, so that a block's tile is up to 512 contiguous bytes.
pub struct Rows {
    bytes: Vec<i8>,
    n: usize,
    nb: usize,
}

/// Activation rows per pass (two tile rows each).
const PASS: usize = ROWS / 2;

impl Rows {
    /// Splits `n` rows of `nb` blocks of 16-bit values (block `j` at `32j` of `q`).
    pub fn split(q: &[i16], n: usize, nb: usize) -> Self {
        let mut bytes = vec![0i8; 2 * n * nb * BLOCK];
        for i0 in (0..n).step_by(PASS) {
            let m = (n - i0).min(PASS);
            for b in 0..nb {
                let tile = &mut bytes[(2 * i0 * nb + 2 * m * b) * BLOCK..][..2 * m * BLOCK];
                let (high, low) = tile.split_at_mut(m * BLOCK);
                for k in 0..m {
                    let x = &q[((i0 + k) * nb + b) * BLOCK..][..BLOCK];
                    for (p, x) in x.iter().enumerate() {
                        let hi = (x + 128) >> 8;
                        high[k * BLOCK + p] = hi as i8;
                        low[k * BLOCK + p] = (x - 256 * hi) as i8;
                    }
                }
            }
        }
        Rows { bytes, n, nb }
    }
}

/// The products of weight tiles `tiles` (packed by [`super::layout::pack`] for 16-bit
/// activations) with every activation row, on the unit.
///
/// # Safety
/// [`available`] must have returned true; otherwise as [`super::tiles::dot_tiles`].
#[cfg(target_arch = "x86_64")]
pub unsafe fn dot_tiles(
    format: super::Format,
    packed: &[u8],
    tiles: std::ops::Range<usize>,
    scales: &Scales,
    rows: &Rows,
    out: &super::Out,
) {
    use super::tiles::simd::by_format;
    assert!(rows.n == scales.n && rows.nb == scales.nb);
    assert!(!format.split_scales(), "the unit's sums cover whole blocks");
    assert!(!format.high_bits(), "the unit's weight loads have no fifth bits");
    assert!(tiles.end * scales.nb * super::layout::tile_block_bytes(format) <= packed.len());
    assert!(tiles.end * super::layout::TILE < out.rows + super::layout::TILE);
    // SAFETY: the unit is available (this function's contract), with AVX2, FMA, F16C and
    // AVX-512 F, BW and VL (`available` checks them); the bounds and the shape of `rows` are
    // asserted above.
    by_format!(format, |F| unsafe { imp::tiles::<F>(packed, tiles, scales, rows.bytes.as_ptr(), out) })
}

#[cfg(target_arch = "x86_64")]
mod imp {
    use std::arch::asm;
    use std::arch::x86_64::*;

    use super::ROWS;
    use crate::quant::layout::{self, TILE};
    use crate::quant::tiles::simd::{format, header16, signed, term};
    use crate::quant::tiles::Scales;
    use crate::quant::{Out, BLOCK};

    /// The tile registers' shapes (palette 1), two sets for two blocks in flight: `tmm0`/`tmm3`
    /// the weights (8 rows of 4 values for 16 weight rows), `tmm1`/`tmm4` the activations
    /// (`rows` rows of 32 values), `tmm2`/`tmm5` their 32-bit sums (`rows` rows of 16).
    #[repr(C, align(64))]
    struct Config([u8; 64]);

    impl Config {
        fn new(rows: usize) -> Self {
            let mut c = Config([0; 64]);
            c.0[0] = 1;
            let mut shape = |t: usize, rows: usize, bytes: u16| {
                c.0[16 + 2 * t..18 + 2 * t].copy_from_slice(&bytes.to_le_bytes());
                c.0[48 + t] = rows as u8;
            };
            for set in [0, 3] {
                shape(set, BLOCK / 4, 64);
                shape(set + 1, rows, BLOCK as u16);
                shape(set + 2, rows, 64);
            }
            c
        }
    }

    #[repr(C, align(64))]
    struct Lines<T, const N: usize>([T; N]);

    /// Blocks per group (one phase each of unpacking, products and float work): one pair,
    /// multiplied by the two register sets (groups of 6 measured the same).
    const GROUP: usize = 2;
    /// Bytes of a tile block's weights in the unit's layout: row `q` holds values `4q..4q + 4`
    /// of each of the 16 weight rows.
    const WEIGHTS: usize = 64 * BLOCK / 4;
    /// 32-bit sums of a block: up to 16 tile rows × 16 weight rows.
    const SUMS: usize = ROWS * TILE;
    type B = Lines<u8, { 2 * GROUP * WEIGHTS }>;
    type C = Lines<i32, { 2 * GROUP * SUMS }>;

    /// Rows `c` and `c + 4` of a tile block's weights in the unit's layout, from a payload
    /// packed for 16-bit activations ([`layout`]): pair rows `2q` and `2q + 1` side by side,
    /// interleaved by 16-bit word, so that word `2j` holds row `j`'s values `4q, 4q + 1` and
    /// word `2j + 1` its values `4q + 2, 4q + 3`.
    ///
    /// # Safety
    /// `payload` must point at a whole tile block's payload of format `F`, `c` be below 4, and
    /// the CPU must have AVX-512 F and BW.
    #[inline(always)]
    unsafe fn weight_rows<const F: u8>(payload: *const u8, c: usize) -> [__m512i; 2] {
        // SAFETY: the 64-byte loads read at `64c` and `64(c + 4)` (byte formats, 512-byte
        // payloads) or at `64c` (4-bit ones, 256 bytes), inside the payload as `c < 4`; the
        // CPU has the features (both this function's contract).
        unsafe {
            let load = |at: usize| _mm512_loadu_si512(payload.add(at) as *const __m512i);
            let words = _mm512_set_epi16(
                31, 15, 30, 14, 29, 13, 28, 12, 27, 11, 26, 10, 25, 9, 24, 8, 23, 7, 22, 6, 21, 5, 20, 4, 19, 3, 18, 2,
                17, 1, 16, 0,
            );
            let join = |v: __m512i| _mm512_permutexvar_epi16(words, v);
            if signed(F) {
                // Pair rows 2c, 2c + 1 and 2c + 8, 2c + 9.
                return [join(load(64 * c)), join(load(64 * (c + 4)))];
            }
            // Chunks 2c and 2c + 1: pair rows 2c, 2c + 1 in low nibbles, 2c + 8, 2c + 9 in high.
            let v = load(64 * c);
            let low = _mm512_set1_epi8(0x0F);
            [join(_mm512_and_si512(v, low)), join(_mm512_and_si512(_mm512_srli_epi16::<4>(v), low))]
        }
    }

    /// Unpacks tile block `blk` into the unit's layout at `b`.
    ///
    /// # Safety
    /// `blk` must point at a whole tile block of format `F`, `b` at [`WEIGHTS`] bytes valid for
    /// writes and aligned to 64, and the CPU must have AVX-512 F and BW.
    #[inline(always)]
    unsafe fn unpack<const F: u8>(blk: *const u8, b: *mut u8) {
        // SAFETY: the payload follows the header, inside the block (this function's contract).
        let payload = unsafe { blk.add(layout::header(format(F))) };
        for c in 0..BLOCK / 8 {
            // SAFETY: `c < 4`, as `weight_rows` needs; the aligned stores write 64-byte lines `c`
            // and `c + 4` of the 8 at `b`; the CPU has the features (this function's contract).
            unsafe {
                let [r0, r1] = weight_rows::<F>(payload, c);
                _mm512_store_si512(b.add(64 * c) as *mut __m512i, r0);
                _mm512_store_si512(b.add(64 * (c + 4)) as *mut __m512i, r1);
            }
        }
    }

    /// The block sums of the weights at `b` (and of the next block's at `b + WEIGHTS` when
    /// `TWO`) with the activation tile of 32-byte rows at `a` (and the next block's at
    /// `a + next`), into `c` (and `c + SUMS`), as configured. Activations are signed bytes, and
    /// so are the weights of byte formats; 4-bit weights are unsigned.
    ///
    /// # Safety
    /// The CPU must have AMX-INT8, granted to this process, with the tiles configured by
    /// [`Config::new`] for `rows` tile rows; `b` (and `b + WEIGHTS`) must be valid for reads of
    /// [`WEIGHTS`] bytes, `a` (and `a + next`) of `rows` rows of 32 bytes, and `c` (and
    /// `c + SUMS`) for writes of `rows` rows of 16 `i32`.
    #[inline(always)]
    unsafe fn multiply<const F: u8, const TWO: bool>(b: *const u8, a: *const u8, next: usize, c: *mut i32) {
        macro_rules! run {
            ($dp:literal) => {
                if TWO {
                    asm!(
                        "tileloadd tmm0, [{b} + {sb}*1]",
                        "tileloadd tmm1, [{a} + {sa}*1]",
                        "tilezero tmm2",
                        "tileloadd tmm3, [{b1} + {sb}*1]",
                        "tileloadd tmm4, [{a1} + {sa}*1]",
                        "tilezero tmm5",
                        concat!($dp, " tmm2, tmm1, tmm0"),
                        concat!($dp, " tmm5, tmm4, tmm3"),
                        "tilestored [{c} + {sc}*1], tmm2",
                        "tilestored [{c1} + {sc}*1], tmm5",
                        b = in(reg) b, b1 = in(reg) b.add(WEIGHTS), sb = in(reg) 64usize,
                        a = in(reg) a, a1 = in(reg) a.add(next), sa = in(reg) BLOCK,
                        c = in(reg) c, c1 = in(reg) c.add(SUMS), sc = in(reg) 4 * TILE,
                        options(nostack, preserves_flags),
                    )
                } else {
                    asm!(
                        "tileloadd tmm0, [{b} + {sb}*1]",
                        "tileloadd tmm1, [{a} + {sa}*1]",
                        "tilezero tmm2",
                        concat!($dp, " tmm2, tmm1, tmm0"),
                        "tilestored [{c} + {sc}*1], tmm2",
                        b = in(reg) b, sb = in(reg) 64usize, a = in(reg) a, sa = in(reg) BLOCK,
                        c = in(reg) c, sc = in(reg) 4 * TILE, options(nostack, preserves_flags),
                    )
                }
            };
        }
        // SAFETY: the tile loads read, and the tile stores write, only the memory this
        // function's contract names (the offsets are the next block's, inside it too), on the
        // unit the contract grants; the assembly touches no stack, flags or other registers.
        unsafe {
            if signed(F) {
                run!("tdpbssd")
            } else {
                run!("tdpbsud")
            }
        }
    }

    /// [`super::dot_tiles`] for format `F`: activation rows in passes of 8 (as [`super::Rows`]
    /// holds them), each over the claimed tiles, blocks in groups.
    ///
    /// # Safety
    /// As [`super::dot_tiles`] after its checks (the CPU has the unit, granted, and AVX-512 F,
    /// BW and VL; the bounds are asserted there), and `acts` must be the split rows of `scales`.
    #[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl")]
    pub unsafe fn tiles<const F: u8>(
        packed: &[u8],
        tiles: std::ops::Range<usize>,
        scales: &Scales,
        acts: *const i8,
        out: &Out,
    ) {
        let Scales { n, nb, d: dx, s: sx } = scales;
        let (n, nb) = (*n, *nb);
        let tbb = layout::tile_block_bytes(format(F));
        let mut weights: B = Lines([0; 2 * GROUP * WEIGHTS]);
        let mut sums: C = Lines([0; 2 * GROUP * SUMS]);
        let (w, c) = (weights.0.as_mut_ptr(), sums.0.as_mut_ptr());
        // Work in units of a group of blocks of one tile, in tile order. Each unit's weights are
        // unpacked one unit ahead, into the other half of `weights`: a tile load of lines just
        // written by vector stores waits for them to reach the cache (~80 cycles measured),
        // while a unit later they are there.
        let groups = nb.div_ceil(GROUP);
        let units = tiles.len() * groups;
        // SAFETY: tile `t < tiles.end` lies inside `packed` (asserted in `super::dot_tiles`).
        let unit = |u: usize| {
            let (t, b0) = (tiles.start + u / groups, u % groups * GROUP);
            (t, unsafe { packed.as_ptr().add(t * nb * tbb) }, b0..(b0 + GROUP).min(nb))
        };
        let mut i0 = 0;
        while i0 < n {
            let m = (n - i0).min(super::PASS);
            let config = Config::new(2 * m);
            // SAFETY: `config` is a valid palette-1 configuration (64 bytes, aligned); the CPU
            // has the unit, granted to this process (this function's contract).
            unsafe { asm!("ldtilecfg [{}]", in(reg) config.0.as_ptr(), options(nostack, preserves_flags)) };
            // SAFETY: the pass's rows start at row `i0 < n` of the split rows, `2·nb·32` bytes
            // per row (this function's contract).
            let rows = unsafe { acts.add(2 * i0 * nb * BLOCK) } as *const u8;
            let tile_bytes = 2 * m * BLOCK;
            let unpack_unit = |u: usize| {
                let (_, tile, blocks) = unit(u);
                for (g, b) in blocks.enumerate() {
                    // SAFETY: block `b < nb` of the tile, inside it; the unit's half of
                    // `weights` (`u % 2`) has a `WEIGHTS`-long, 64-aligned line per block
                    // `g < GROUP`; the CPU has AVX-512 F and BW (this function's features).
                    unsafe {
                        let blk = tile.add(b * tbb);
                        if i0 == 0 {
                            crate::quant::avx2::prefetch(blk, tbb);
                        }
                        unpack::<F>(blk, w.add((u % 2 * GROUP + g) * WEIGHTS));
                    }
                }
            };
            let multiply_unit = |u: usize| {
                let (_, _, blocks) = unit(u);
                // SAFETY: the unit's halves of `weights` and `sums`, blocks `g` (and `g + 1`
                // when `TWO`) of up to `GROUP` in them; the pass's activation tile of block
                // `blocks.start + g` (and the next, `tile_bytes` on), `2m` rows of 32 bytes;
                // the tiles are configured for `2m` rows above (this function's contract).
                unsafe {
                    let (w, c) = (w.add(u % 2 * GROUP * WEIGHTS), c.add(u % 2 * GROUP * SUMS));
                    for g in (0..blocks.len()).step_by(2) {
                        let (w, a, c) =
                            (w.add(g * WEIGHTS), rows.add((blocks.start + g) * tile_bytes), c.add(g * SUMS));
                        if g + 1 < blocks.len() {
                            multiply::<F, true>(w, a, tile_bytes, c);
                        } else {
                            multiply::<F, false>(w, a, tile_bytes, c);
                        }
                    }
                }
            };
            let mut acc = [_mm512_setzero_ps(); ROWS];
            let mut finish_unit = |u: usize| {
                let (t, tile, blocks) = unit(u);
                for (g, b) in blocks.clone().enumerate() {
                    // SAFETY: block `b < nb` of the tile, inside it; the unit's sums of block
                    // `g` (`2m` rows of 16, 64-byte aligned) in `sums`; `j < n·nb`, the length
                    // of `dx` and `sx`; the CPU has AVX-512 F (this function's features).
                    unsafe {
                        let blk = tile.add(b * tbb);
                        // The same float work as the vector kernels (`tiles::rows_zmm`).
                        let (dw, mw) = header16::<F>(blk);
                        let c = c.add(u % 2 * GROUP * SUMS).add(g * SUMS);
                        for (k, acc) in acc.iter_mut().enumerate().take(m) {
                            let j = (i0 + k) * nb + b;
                            let high = _mm512_load_si512(c.add(TILE * k) as *const __m512i);
                            let low = _mm512_load_si512(c.add(TILE * (m + k)) as *const __m512i);
                            let sum = _mm512_add_epi32(_mm512_slli_epi32::<8>(high), low);
                            let scale = _mm512_mul_ps(dw, _mm512_set1_ps(*dx.get_unchecked(j)));
                            let mut a = _mm512_fmadd_ps(_mm512_cvtepi32_ps(sum), scale, *acc);
                            if term(F) {
                                a = _mm512_fmadd_ps(mw, _mm512_set1_ps(*sx.get_unchecked(j)), a);
                            }
                            *acc = a;
                        }
                    }
                }
                if blocks.end == nb {
                    let valid = (out.rows - t * TILE).min(TILE);
                    let mask: __mmask16 = if valid == TILE { !0 } else { (1 << valid) - 1 };
                    for (k, o) in acc.iter_mut().enumerate().take(m) {
                        // SAFETY: the store writes row `i0 + k < n`, columns `16t..16t + valid`
                        // of `out` (`16t + valid ≤ out.rows`; the mask leaves the rest), valid
                        // for writes and this thread's alone (the contract).
                        unsafe { _mm512_mask_storeu_ps(out.row(i0 + k).add(t * TILE), mask, *o) };
                        *o = _mm512_setzero_ps();
                    }
                }
            };
            // A pipeline of three units: while the unit multiplies one, the vector units unpack
            // the next and finish the one before.
            if units > 0 {
                unpack_unit(0);
            }
            for u in 0..=units {
                if u + 1 < units {
                    unpack_unit(u + 1);
                }
                if u < units {
                    multiply_unit(u);
                }
                if u > 0 {
                    finish_unit(u - 1);
                }
            }
            i0 += m;
        }
        // SAFETY: releases the tile state configured above; the CPU has the unit (the contract).
        unsafe { asm!("tilerelease", options(nostack, preserves_flags)) };
    }
}
