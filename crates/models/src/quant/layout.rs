//! How quantized weight matrices are laid out in memory: GGUF's blocks, regrouped at load time
//! into tiles of 16 rows, so that one activation row meets 16 weight rows with no horizontal sum.
//!
//! Tile `t` holds rows `16t..16t + 16`. For each block `b` of those rows (values `32b..32b + 32`
//! of each row), in order: a header of the 16 rows' f16 scales (then, for Q4_1, their 16 f16
//! minimums; Q4K and Q5K: 16 f32 scales and 16 f32 terms; Q6K: 16 f32 scales for values 0..16
//! and 16 for 16..32), then the 16 × 32 values as 16 *pair rows*. Pair row `r` holds values `2r` and
//! `2r + 1` of every weight row (row `j` at positions `2j` and `2j + 1`). Multiply-adding pair
//! row `r` with activation values `2r, 2r + 1` broadcast to every lane (`pmaddwd`) adds to lane
//! `j` a partial sum of row `j` alone: 16 such instructions give 16 rows' block sums in 16 lanes,
//! which are turned into floats, scaled and accumulated with one instruction per 8 rows.
//!
//! 4-bit payloads are 8 chunks of 32 bytes: byte `i` of chunk `c` holds value `i` of pair row `c`
//! in its low nibble and value `i` of pair row `c + 8` in its high one, so 16 bytes zero-extended
//! to 16-bit lanes unpack into 8 rows of two pair rows with one AND and one shift. 8-bit payloads
//! are the 16 pair rows of 32 signed bytes each.
//!
//! For 8-bit activations ([`Bits::Eight`]) a block's values go in 8 *quad rows* instead: quad row `r` holds values `4r..4r + 4` of each weight row, for
//! `pmaddubsw`/`vpdpbusd`, which sum four byte products per 32-bit lane. Chunk `4h + c` (32 bytes)
//! holds rows `8h..8h + 8`: byte `i` is row `8h + i/4`, value `4c + i%4` in its low nibble and
//! `16 + 4c + i%4` in its high one, so one load, two ANDs and a shift give two quad rows.
//!
//! Q5_0's nibbles are laid out as the 4-bit formats'; their fifth bits follow in a 64-byte
//! plane ([`HIGH_PLANE`]), one bit per lane of the vectors the nibbles unpack into, so that a
//! vector's fifth bits are one 16-, 32- or 64-bit load (a mask on AVX-512; [`high_bit`]).
//!
//! Weights keep their GGUF size (a tile block is 16 GGUF blocks' bytes); only the last tile of
//! a matrix whose rows are not a multiple of 16 is padded with zero rows.

use super::{Bits, Format, BLOCK};

/// Weight rows per tile.
pub const TILE: usize = 16;

/// Header bytes of a tile block: 16 f16 scales, and for Q4_1 16 f16 minimums (Q4K: 16 f32
/// scales and 16 f32 terms; Q6K: 16 f32 scales of values 0..16, then 16 of values 16..32).
pub const fn header(format: Format) -> usize {
    if second_value(format) {
        2 * TILE * scale_bytes(format)
    } else {
        TILE * scale_bytes(format)
    }
}

/// Bytes of one row's scale (and of its second value) in a tile block's header.
const fn scale_bytes(format: Format) -> usize {
    if matches!(format, Format::Q4K | Format::Q6K | Format::Q5K) {
        4
    } else {
        2
    }
}

/// Whether the header holds a second value per row after the scales (a term or a second scale).
const fn second_value(format: Format) -> bool {
    matches!(format, Format::Q4_1 | Format::Q4K | Format::Q6K | Format::Q5K)
}

/// Bytes of one tile block (16 rows × 32 values), the size of 16 GGUF blocks.
pub const fn tile_block_bytes(format: Format) -> usize {
    TILE * format.block_bytes()
}

/// Where a [`Format::Q5_0`] tile block's plane of fifth bits starts in its payload (after the
/// 256 bytes of nibbles).
pub const HIGH_PLANE: usize = 256;

/// Which bit of the plane of fifth bits holds value `p` (`< 32`) of tile row `j`'s: for 16-bit
/// activations, pair row `p / 2` takes 32 bits, lane `2j + p % 2` (the lane its nibble unpacks
/// to); for 8-bit ones, chunk `4h + c`'s low and high nibbles (values `4c..4c + 4` and
/// `16 + 4c..`) take 32 bits each, byte for byte, ordered so that rows 0..8 and 8..16 of the
/// same nibbles are one 64-bit word (`c` of 16 bytes: low h=0, low h=1, high h=0, high h=1).
pub const fn high_bit(bits: Bits, j: usize, p: usize) -> usize {
    match bits {
        Bits::Sixteen => 32 * (p / 2) + 2 * j + p % 2,
        Bits::Eight => 128 * (p % 16 / 4) + 64 * (p / 16) + 32 * (j / 8) + 4 * (j % 8) + p % 4,
    }
}

/// Where weight value `p` (`< 32`) of tile row `j` sits in a tile block's payload: `(byte,
/// high nibble)` for 4-bit formats, `(byte, false)` for Q8_0.
pub(crate) const fn payload_index(format: Format, bits: Bits, j: usize, p: usize) -> (usize, bool) {
    match (format, bits) {
        (Format::Q8_0 | Format::Q6K | Format::Q5K, Bits::Sixteen) => (32 * (p / 2) + 2 * j + p % 2, false),
        (Format::Q8_0 | Format::Q6K | Format::Q5K, Bits::Eight) => {
            (32 * (8 * (j / 8) + p / 4) + 4 * (j % 8) + p % 4, false)
        }
        (_, Bits::Sixteen) => (32 * (p / 2 % 8) + 2 * j + p % 2, p / 2 >= 8),
        (_, Bits::Eight) => (32 * (4 * (j / 8) + p % 16 / 4) + 4 * (j % 8) + p % 4, p >= 16),
    }
}

/// A GGUF matrix (`rows` rows of `nb` blocks of `format`) in tiles; the last tile is padded
/// with zero rows.
pub fn pack(format: Format, bits: Bits, rows: usize, nb: usize, gguf: &[u8]) -> Vec<u8> {
    let bb = format.block_bytes();
    assert_eq!(gguf.len(), rows * nb * bb, "pack: not rows × blocks of the format");
    let tbb = tile_block_bytes(format);
    let mut out = vec![0u8; rows.div_ceil(TILE) * nb * tbb];
    for r in 0..rows {
        let (t, j) = (r / TILE, r % TILE);
        for b in 0..nb {
            let blk = &gguf[(r * nb + b) * bb..(r * nb + b + 1) * bb];
            let dst = &mut out[(t * nb + b) * tbb..(t * nb + b + 1) * tbb];
            let sb = scale_bytes(format);
            dst[sb * j..sb * (j + 1)].copy_from_slice(&blk[..sb]);
            if second_value(format) {
                dst[sb * (TILE + j)..sb * (TILE + j + 1)].copy_from_slice(&blk[sb..2 * sb]);
            }
            let payload = &mut dst[header(format)..];
            let values = &blk[header_bytes_gguf(format)..];
            for p in 0..BLOCK {
                let (at, high) = payload_index(format, bits, j, p);
                if format.signed_bytes() {
                    payload[at] = values[p];
                } else {
                    payload[at] |= nibble(values, p) << if high { 4 } else { 0 };
                }
                if format.high_bits() && fifth_bit(blk, p) {
                    let bit = high_bit(bits, j, p);
                    payload[HIGH_PLANE + bit / 8] |= 1 << (bit % 8);
                }
            }
        }
    }
    out
}

/// Bytes before the values (the low nibbles for Q5_0) in a GGUF block (or a [`Format::Q4K`] or
/// [`Format::Q6K`] block).
const fn header_bytes_gguf(format: Format) -> usize {
    if format.high_bits() {
        6
    } else if second_value(format) {
        2 * scale_bytes(format)
    } else {
        scale_bytes(format)
    }
}

/// Whether value `p` of a GGUF Q5_0 block has its fifth bit set (the `u32` after the scale).
fn fifth_bit(blk: &[u8], p: usize) -> bool {
    blk[2 + p / 8] >> (p % 8) & 1 == 1
}

/// Value `p`'s fifth bit in a tile block's `payload`, as 16 (0 for formats without).
fn fifth(format: Format, bits: Bits, payload: &[u8], j: usize, p: usize) -> u8 {
    if !format.high_bits() {
        return 0;
    }
    let bit = high_bit(bits, j, p);
    (payload[HIGH_PLANE + bit / 8] >> (bit % 8) & 1) << 4
}

/// The GGUF bytes of row `r` of a packed matrix of `nb` blocks per row (what [`pack`] was given).
pub fn gguf_row(format: Format, bits: Bits, packed: &[u8], nb: usize, r: usize, out: &mut Vec<u8>) {
    let tbb = tile_block_bytes(format);
    let (t, j) = (r / TILE, r % TILE);
    for b in 0..nb {
        let src = &packed[(t * nb + b) * tbb..(t * nb + b + 1) * tbb];
        let sb = scale_bytes(format);
        out.extend_from_slice(&src[sb * j..sb * (j + 1)]);
        if second_value(format) {
            out.extend_from_slice(&src[sb * (TILE + j)..sb * (TILE + j + 1)]);
        }
        let payload = &src[header(format)..];
        let value = |p: usize| {
            let (at, high) = payload_index(format, bits, j, p);
            match (format.signed_bytes(), high) {
                (true, _) => payload[at],
                (_, false) => payload[at] & 0x0F,
                (_, true) => payload[at] >> 4,
            }
        };
        if format.high_bits() {
            let qh = (0..BLOCK).fold(0u32, |qh, p| qh | ((fifth(format, bits, payload, j, p) >> 4) as u32) << p);
            out.extend_from_slice(&qh.to_le_bytes());
        }
        if format.signed_bytes() {
            out.extend((0..BLOCK).map(value));
        } else {
            out.extend((0..16).map(|i| value(i) | value(i + 16) << 4));
        }
    }
}

/// 4-bit value `p` of a GGUF block's 16 payload bytes (low nibbles hold 0..16, high 16..32).
fn nibble(qs: &[u8], p: usize) -> u8 {
    if p < 16 {
        qs[p] & 0x0F
    } else {
        qs[p - 16] >> 4
    }
}

/// Block `b` of row `r`, read back: the scales of values 0..16 and 16..32 (the same but for
/// Q6K), the term `m` added per unit of activation (`w = d·q + m`; Q4_0: `−8·d`; none for
/// signed bytes), and the 32 integers in natural order.
pub struct Block {
    pub d: [f32; 2],
    pub m: f32,
    pub q: [i32; BLOCK],
}

pub fn read_block(format: Format, bits: Bits, packed: &[u8], nb: usize, r: usize, b: usize) -> Block {
    let tbb = tile_block_bytes(format);
    let (t, j) = (r / TILE, r % TILE);
    let src = &packed[(t * nb + b) * tbb..(t * nb + b + 1) * tbb];
    let f16 = |i: usize| half::f16::from_bits(u16::from_le_bytes([src[i], src[i + 1]])).to_f32();
    let f32 = |i: usize| f32::from_le_bytes(src[i..i + 4].try_into().expect("4 bytes"));
    let (d, m) = match format {
        Format::Q4_0 => ([f16(2 * j); 2], -8.0 * f16(2 * j)),
        Format::Q4_1 => ([f16(2 * j); 2], f16(2 * (TILE + j))),
        Format::Q8_0 => ([f16(2 * j); 2], 0.0),
        Format::Q5_0 => ([f16(2 * j); 2], -16.0 * f16(2 * j)),
        Format::Q4K => ([f32(4 * j); 2], f32(4 * (TILE + j))),
        Format::Q6K => ([f32(4 * j), f32(4 * (TILE + j))], 0.0),
        Format::Q5K => ([f32(4 * j); 2], f32(4 * (TILE + j))),
    };
    let payload = &src[header(format)..];
    let q = std::array::from_fn(|p| {
        let (at, high) = payload_index(format, bits, j, p);
        let nibbles = match (format.signed_bytes(), high) {
            (true, _) => return payload[at] as i8 as i32,
            (_, false) => payload[at] & 0x0F,
            (_, true) => payload[at] >> 4,
        };
        (nibbles | fifth(format, bits, payload, j, p)) as i32
    });
    Block { d, m, q }
}

/// Row `r`'s values as floats (`nb · 32`): an embedding lookup.
pub fn dequantize_row(format: Format, bits: Bits, packed: &[u8], nb: usize, r: usize, out: &mut [f32]) {
    for (b, o) in out.chunks_exact_mut(BLOCK).enumerate().take(nb) {
        let Block { d, m, q } = read_block(format, bits, packed, nb, r, b);
        for (p, (o, q)) in o.iter_mut().zip(q).enumerate() {
            *o = (q as f32).mul_add(d[p / 16], m);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payload_positions_are_a_permutation() {
        for (format, bits) in crate::quant::tests::KINDS {
            let (mut seen, mut bit_seen) = (std::collections::HashSet::new(), std::collections::HashSet::new());
            for j in 0..TILE {
                for p in 0..BLOCK {
                    let (at, high) = payload_index(format, bits, j, p);
                    assert!(at < TILE * format.block_bytes() - header(format));
                    assert!(seen.insert((at, high)), "{format:?} {bits:?} j={j} p={p}");
                    assert!(
                        high_bit(bits, j, p) < 8 * (TILE * format.block_bytes() - header(format) - HIGH_PLANE)
                            || !format.high_bits()
                    );
                    assert!(bit_seen.insert(high_bit(bits, j, p)));
                }
            }
            assert_eq!(seen.len(), TILE * BLOCK);
        }
    }

    #[test]
    fn packed_matrices_read_back_as_the_gguf_bytes_and_values() {
        for (format, bits) in crate::quant::tests::KINDS {
            for (rows, nb) in [(1, 1), (16, 3), (17, 2), (40, 18)] {
                let gguf = crate::quant::tests::random_blocks(format, rows, nb * BLOCK, (rows * nb) as u64);
                let packed = pack(format, bits, rows, nb, &gguf);
                assert_eq!(packed.len(), rows.div_ceil(TILE) * TILE * nb * format.block_bytes());
                let bb = format.block_bytes();
                for r in 0..rows {
                    let row = &gguf[r * nb * bb..(r + 1) * nb * bb];
                    let mut back = Vec::new();
                    gguf_row(format, bits, &packed, nb, r, &mut back);
                    assert_eq!(back, row, "{format:?} {rows}x{nb} row {r}");
                    let mut got = vec![0.0; nb * BLOCK];
                    dequantize_row(format, bits, &packed, nb, r, &mut got);
                    let mut want = vec![0.0; nb * BLOCK];
                    for (blk, o) in row.chunks_exact(bb).zip(want.chunks_exact_mut(BLOCK)) {
                        crate::quant::scalar::dequantize_block(format, blk, o);
                    }
                    assert_eq!(got, want, "{format:?} {rows}x{nb} row {r}");
                }
            }
        }
    }
}
