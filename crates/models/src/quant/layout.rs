//! How quantized weight rows (and the 16-bit activations multiplied with them) are laid out in
//! memory: GGUF's blocks, regrouped at load time so that a product needs no horizontal sums.
//!
//! A row's blocks go in groups of four (then one of two and one of one for the rest). A group of
//! `g` blocks is a header of `g` f16 scales (then, for Q4_1, `g` f16 minimums) and a payload
//! of `32·g` values read as `2g` vectors of 16 `i16`. Multiply-adding these vectors pair by pair
//! (`pmaddwd`) into eight 32-bit lanes leaves in lane `l` a partial sum of block `l mod g` only,
//! so the eight lanes are scaled, turned into floats and added with one instruction each for the
//! whole group, instead of a horizontal sum and a float multiply-add for every block.
//! Weights keep their GGUF size: the same scales and 4- or 8-bit values, in another order.
//!
//! Value `t` of a group's stream (vector `t / 16`, lane `(t % 16) / 2`) holds value `p` of
//! block `b`, where, with `v = t / 16`, `l = (t % 16) / 2`, `e = t % 2`:
//! `b = l mod g` and `p = (l div g)·4g + 2v + e`. Each lane covers `4g` values of its block.
//! 4-bit payloads: byte `16c + i` holds stream value `16c + i` in its low nibble and
//! `16(c + g) + i` in its high one (`c < g`), so a 16-byte load unpacks into two vectors.

use super::{Format, BLOCK};

/// Blocks in a full group.
pub const GROUP: usize = 4;

/// `(first block, blocks)` of each group of a row of `nb` blocks.
pub fn groups(nb: usize) -> impl Iterator<Item = (usize, usize)> {
    let full = nb / GROUP;
    let rest = nb % GROUP;
    let tail = [(rest >= 2).then_some(2), (rest % 2 == 1).then_some(1)];
    let mut at = full * GROUP;
    (0..full).map(|k| (k * GROUP, GROUP)).chain(tail.into_iter().flatten().map(move |g| {
        at += g;
        (at - g, g)
    }))
}

/// Where value `p` of block `b` of a `g`-block group sits in the group's stream.
pub const fn stream_index(g: usize, b: usize, p: usize) -> usize {
    let (part, r) = (p / (4 * g), p % (4 * g));
    let (v, e, l) = (r / 2, r % 2, part * g + b);
    v * 16 + 2 * l + e
}

/// [`stream_index`] of value `i = 32·b + p` of a `G`-block group, as a table.
const fn table<const N: usize>(g: usize) -> [u8; N] {
    let mut out = [0u8; N];
    let mut i = 0;
    while i < N {
        out[i] = stream_index(g, i / BLOCK, i % BLOCK) as u8;
        i += 1;
    }
    out
}

static STREAM_1: [u8; BLOCK] = table(1);
static STREAM_2: [u8; 2 * BLOCK] = table(2);
static STREAM_4: [u8; 4 * BLOCK] = table(4);

/// The table for groups of `g` blocks.
fn stream_table(g: usize) -> &'static [u8] {
    match g {
        1 => &STREAM_1,
        2 => &STREAM_2,
        _ => &STREAM_4,
    }
}

/// Header bytes of a `g`-block group.
pub const fn header(format: Format, g: usize) -> usize {
    if matches!(format, Format::Q4_1) {
        4 * g
    } else {
        2 * g
    }
}

/// A GGUF row (`nb` blocks of `format`) regrouped; the same number of bytes.
pub fn pack_row(format: Format, row: &[u8], out: &mut Vec<u8>) {
    let bb = format.block_bytes();
    let nb = row.len() / bb;
    for (b0, g) in groups(nb) {
        let blocks: Vec<&[u8]> = (b0..b0 + g).map(|b| &row[b * bb..(b + 1) * bb]).collect();
        out.extend(blocks.iter().flat_map(|blk| [blk[0], blk[1]]));
        if format == Format::Q4_1 {
            out.extend(blocks.iter().flat_map(|blk| [blk[2], blk[3]]));
        }
        let mut stream = [0u8; GROUP * BLOCK];
        let table = stream_table(g);
        for (b, blk) in blocks.iter().enumerate() {
            for p in 0..BLOCK {
                stream[table[b * BLOCK + p] as usize] = match format {
                    Format::Q4_0 => nibble(&blk[2..], p),
                    Format::Q4_1 => nibble(&blk[4..], p),
                    Format::Q8_0 => blk[2 + p],
                };
            }
        }
        match format {
            Format::Q8_0 => out.extend_from_slice(&stream[..g * BLOCK]),
            _ => out.extend((0..16 * g).map(|i| stream[i] | stream[i + 16 * g] << 4)),
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

/// One group of a packed row, read back.
pub struct Group {
    /// Blocks in the group.
    pub g: usize,
    /// Per block: scale and the term added per unit of activation (`w = d·q + m`).
    pub d: [f32; GROUP],
    pub m: [f32; GROUP],
    /// The stream: `32·g` integers in stream order.
    pub q: [i32; GROUP * BLOCK],
}

impl Group {
    /// Block `b`'s 32 integers in their natural order.
    pub fn block(&self, b: usize) -> [i32; BLOCK] {
        std::array::from_fn(|p| self.q[stream_index(self.g, b, p)])
    }
}

/// The groups of a packed row, in order.
pub fn read_row(format: Format, row: &[u8]) -> impl Iterator<Item = Group> + '_ {
    let nb = row.len() / format.block_bytes();
    let mut at = 0;
    let f16 = |b: &[u8], i: usize| half::f16::from_bits(u16::from_le_bytes([b[i], b[i + 1]])).to_f32();
    groups(nb).map(move |(_, g)| {
        let grp = &row[at..at + g * format.block_bytes()];
        at += grp.len();
        let h = header(format, g);
        let mut out = Group { g, d: [0.0; GROUP], m: [0.0; GROUP], q: [0; GROUP * BLOCK] };
        for b in 0..g {
            out.d[b] = f16(grp, 2 * b);
            out.m[b] = match format {
                Format::Q4_0 => -8.0 * out.d[b],
                Format::Q4_1 => f16(grp, 2 * (g + b)),
                Format::Q8_0 => 0.0,
            };
        }
        let payload = &grp[h..];
        for t in 0..g * BLOCK {
            out.q[t] = match format {
                Format::Q8_0 => payload[t] as i8 as i32,
                _ if t < 16 * g => (payload[t] & 0x0F) as i32,
                _ => (payload[t - 16 * g] >> 4) as i32,
            };
        }
        out
    })
}

/// Writes a packed row's values as floats (`nb · 32`): an embedding lookup.
pub fn dequantize_row(format: Format, row: &[u8], out: &mut [f32]) {
    let mut b0 = 0;
    for grp in read_row(format, row) {
        for b in 0..grp.g {
            let q = grp.block(b);
            for (o, q) in out[(b0 + b) * BLOCK..(b0 + b + 1) * BLOCK].iter_mut().zip(q) {
                *o = (q as f32).mul_add(grp.d[b], grp.m[b]);
            }
        }
        b0 += grp.g;
    }
}

/// Activation values of one row (`nb` blocks in natural order) into group stream order.
pub fn pack_acts(q: &[i16], out: &mut [i16]) {
    for (b0, g) in groups(q.len() / BLOCK) {
        let (src, dst) = (&q[b0 * BLOCK..(b0 + g) * BLOCK], &mut out[b0 * BLOCK..(b0 + g) * BLOCK]);
        for (v, t) in src.iter().zip(stream_table(g)) {
            dst[*t as usize] = *v;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn groups_cover_every_block_once() {
        for nb in 0..12 {
            let gs: Vec<_> = groups(nb).collect();
            let mut next = 0;
            for (b0, g) in gs {
                assert_eq!(b0, next, "nb={nb}");
                assert!([1, 2, 4].contains(&g));
                next += g;
            }
            assert_eq!(next, nb);
        }
        assert_eq!(groups(18).map(|(_, g)| g).collect::<Vec<_>>(), [4, 4, 4, 4, 2]);
    }

    #[test]
    fn stream_index_is_a_permutation_with_one_block_per_lane() {
        for g in [1, 2, 4] {
            let mut seen = vec![false; g * BLOCK];
            for b in 0..g {
                for p in 0..BLOCK {
                    let t = stream_index(g, b, p);
                    assert!(!seen[t]);
                    seen[t] = true;
                    assert_eq!((t % 16) / 2 % g, b, "lane of g={g} b={b} p={p}");
                }
            }
        }
    }

    #[test]
    fn packed_rows_dequantize_to_the_gguf_values() {
        for format in [Format::Q4_0, Format::Q4_1, Format::Q8_0] {
            for nb in [1, 2, 3, 5, 7, 18] {
                let row = crate::quant::tests::random_blocks(format, 1, nb * BLOCK, nb as u64);
                let mut packed = Vec::new();
                pack_row(format, &row, &mut packed);
                assert_eq!(packed.len(), row.len());
                let mut got = vec![0.0; nb * BLOCK];
                dequantize_row(format, &packed, &mut got);
                let mut want = vec![0.0; nb * BLOCK];
                for (blk, o) in row.chunks_exact(format.block_bytes()).zip(want.chunks_exact_mut(BLOCK)) {
                    crate::quant::scalar::dequantize_block(format, blk, o);
                }
                assert_eq!(got, want, "{format:?} nb={nb}");
            }
        }
    }
}
