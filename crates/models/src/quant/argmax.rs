//! Greedy decoding's next token without reading every bit of a large Q8_0 output projection.
//!
//! Decoding one sequence is bound by the bytes of weights it reads, and a small model's output
//! projection is most of them (Gemma 3 270M: 178 of 258 MB a token, a 262,144-token vocabulary
//! in Q8_0). A greedy sequence needs only the position of the largest logit. Each Q8_0 value
//! splits into its high five bits and low three, `q = 8·h + l` with `l` in `0..=7`, so a row's
//! logit is at most its high bits' product plus `7·d·Σ max(x, 0)` per block — and that bound is
//! one Q5_0 product ([`super::Format::Q5_0`], 22 bytes a block against 34): the high bits with
//! scale `8·d`, whose `−16·8·d` term per unit of activation is fed a block sum lowered by
//! `7/128·Σ max(x, 0)`. The exact logit of the row with the largest bound is a floor for the
//! largest logit; only the tiles of rows whose bound reaches that floor are then multiplied
//! exactly, with the same kernel and activations as the whole product (so with its bits).
//!
//! On Gemma's final hidden states (1,025 tokens of greedy stories) the bound leaves a median of
//! 30 rows (mean 150, at most 8,222) of 262,144 to compute exactly. Where the candidates are
//! many, the whole exact product runs instead: never a different token, only a slower step.
//! The bounds hold for the rounded activations in exact arithmetic; a margin covers what f32
//! rounding can move either product ([`margin`]).

use super::layout::{self, TILE};
use super::team::Team;
use super::{each_row, written, Bits, Data, Format, Matrix, Out, Rounded, BLOCK};

/// Bytes of Q8_0 weights below which the head does not pay: a matrix that the caches hold in
/// good part is not read at memory's pace, and the head's own work (a second rounding of the
/// activations, the scans for candidates, the whole product where many remain) is then not
/// repaid. `--bench generate`, greedy steps of one sequence against every logit: Gemma 3 270M
/// (178 MB, a median of 24 of 16,384 tiles left) 98 → 121 tok/s; SmolLM2-135M (30 MB; a median of
/// 37 of 3,072 tiles, a tenth of the steps past [`MOST_TILES`]) 354 → 318.
const MIN_BYTES: usize = 64 << 20;

/// The largest value of the low bits left out of the bound (`q & 7`).
const LOW: i32 = 7;

/// Activation rows up to which the head pays: it reads a third fewer bytes, but its kernel does
/// more per byte, and with more rows the product stops being bound by memory. Gemma 3 270M,
/// `--bench generate` with `AISERVE_ARGMAX_ONLY=1` against without, 2 threads, AVX-512:
/// 1 sequence 107–113 → 131–143 tok/s, 2: 203–206 → 230–245, 3: 280–284 → 286–295 (even),
/// 8: 507–519 → 454–481 (slower).
pub const MAX_ROWS: usize = 2;

/// The share of tiles past which the candidates' exact products cost more than the whole one.
const MOST_TILES: usize = 8;

/// The high bits of a Q8_0 matrix (see the module docs), for greedy steps over its products.
pub struct ArgmaxHead {
    high: Matrix,
    /// The largest scale `d` of the Q8_0 matrix, for the rounding margin.
    dmax: f32,
}

impl std::fmt::Debug for ArgmaxHead {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ArgmaxHead({:?})", self.high)
    }
}

impl ArgmaxHead {
    /// The head of `m` where it pays: a Q8_0 matrix of at least [`MIN_BYTES`] on a CPU with
    /// the native Q5_0 kernel ([`super::q5::native`]); its scales must be non-negative and
    /// finite, and stay finite as f16 times 8 (GGML's quantizer writes `max|w| / 127`).
    pub fn of(m: &Matrix) -> Option<ArgmaxHead> {
        let Data::Blocks { format: Format::Q8_0, bits, bytes } = &m.data else { return None };
        if Self::bytes_for(Format::Q8_0, m.rows, m.cols) == 0 {
            return None;
        }
        Self::build(m.rows, m.cols, *bits, bytes)
    }

    /// The head of a packed Q8_0 matrix, tile block by tile block (what [`layout::pack`] would
    /// make of the converted GGUF rows, without the detour: a 262,144-row matrix in a fraction
    /// of a second rather than seconds).
    fn build(rows: usize, cols: usize, bits: Bits, packed: &[u8]) -> Option<ArgmaxHead> {
        let (q8, q5) = (Format::Q8_0, Format::Q5_0);
        let (from, to) = (layout::tile_block_bytes(q8), layout::tile_block_bytes(q5));
        let (from_header, to_header) = (layout::header(q8), layout::header(q5));
        assert_eq!(packed.len(), rows.div_ceil(TILE) * (cols / BLOCK) * from, "not a packed Q8_0 matrix");
        // Where each of a tile block's values is read, and where its nibble and fifth bit (a
        // bit of the payload) go.
        let map: Vec<(usize, usize, u8, usize)> = (0..TILE)
            .flat_map(|j| (0..BLOCK).map(move |p| (j, p)))
            .map(|(j, p)| {
                let (at, _) = layout::payload_index(q8, bits, j, p);
                let (nibble, high) = layout::payload_index(q5, bits, j, p);
                (at, nibble, if high { 4 } else { 0 }, 8 * layout::HIGH_PLANE + layout::high_bit(bits, j, p))
            })
            .collect();
        let mut high = vec![0u8; packed.len() / from * to];
        // Tile block by tile block, a share of them per core (a quarter of a second for Gemma's
        // 262,144 rows on one).
        let convert = |src: &[u8], dst: &mut [u8]| -> Option<f32> {
            let mut dmax = 0.0f32;
            for (src, dst) in src.chunks_exact(from).zip(dst.chunks_exact_mut(to)) {
                for (s, d) in src[..from_header].chunks_exact(2).zip(dst[..to_header].chunks_exact_mut(2)) {
                    let scale = half::f16::from_le_bytes([s[0], s[1]]).to_f32();
                    let eightfold = half::f16::from_f32(8.0 * scale);
                    // Times 8 is exact in f16 unless it overflows; a negative scale would turn
                    // the low bits' bound around.
                    if !(scale >= 0.0 && eightfold.is_finite() && eightfold.to_f32() == 8.0 * scale) {
                        return None;
                    }
                    dmax = dmax.max(scale);
                    d.copy_from_slice(&eightfold.to_le_bytes());
                }
                let (values, payload) = (&src[from_header..], &mut dst[to_header..]);
                for &(at, nibble, shift, bit) in &map {
                    // Q5_0's `h + 16` for the high bits `h = q >> 3` of the signed byte.
                    let v = ((values[at] as i8 >> 3) + 16) as u8;
                    payload[nibble] |= (v & 0xF) << shift;
                    payload[bit / 8] |= (v >> 4) << (bit % 8);
                }
            }
            Some(dmax)
        };
        let per = (packed.len() / from).div_ceil(crate::compute_threads()).max(1);
        let dmax = std::thread::scope(|scope| {
            let parts: Vec<_> = packed
                .chunks(per * from)
                .zip(high.chunks_mut(per * to))
                .map(|(src, dst)| scope.spawn(move || convert(src, dst)))
                .collect();
            parts
                .into_iter()
                .map(|p| p.join().expect("no panic converting tiles"))
                .try_fold(0.0f32, |m, d| Some(m.max(d?)))
        })?;
        Some(ArgmaxHead { high: Matrix { rows, cols, data: Data::Blocks { format: q5, bits, bytes: high } }, dmax })
    }

    /// Bytes [`ArgmaxHead::of`] would hold for a `rows × cols` matrix of `format` (0 where it
    /// makes none), for memory checks before loading.
    pub fn bytes_for(format: Format, rows: usize, cols: usize) -> usize {
        let q8 = rows.div_ceil(TILE) * (cols / BLOCK) * layout::tile_block_bytes(Format::Q8_0);
        if format != Format::Q8_0 || q8 < MIN_BYTES || !super::q5::native() {
            return 0;
        }
        rows.div_ceil(TILE) * (cols / BLOCK) * layout::tile_block_bytes(Format::Q5_0)
    }

    /// Bytes the head holds beside its matrix.
    pub fn bytes(&self) -> usize {
        self.high.bytes()
    }

    /// For each activation row `i` of `x`, a row in `outs[i]` whose first largest value is at
    /// the index of the first largest of [`Matrix::matmul_rows`] with `full` (the matrix the
    /// head was made of), with the same value; every value is that product's or −∞. More than
    /// [`MAX_ROWS`] rows get the whole product.
    pub fn argmax_rows(&self, full: &Matrix, team: &mut Team, x: &[f32], outs: &mut [Vec<f32>]) {
        let (rows, cols, n) = (full.rows, full.cols, outs.len());
        assert!(self.high.rows == rows && self.high.cols == cols, "a head of another matrix");
        let Data::Blocks { bits, .. } = &full.data else { panic!("a head of an f32 matrix") };
        assert_eq!(x.len(), n * cols, "argmax_rows: x is not n x cols");
        if n == 0 || n > MAX_ROWS {
            return full.matmul_rows(team, x, outs);
        }
        let tiles = rows.div_ceil(TILE);
        let exact = Rounded::of(*bits, x, n, cols);
        let margins = self.bounds(*bits, team, x, outs);
        // The row with the largest bound, exactly: a floor for each row's largest logit.
        let tops: Vec<usize> = outs.iter().map(|o| aiserve_core::sampling::argmax(o) as usize).collect();
        let mut keep = vec![false; tiles];
        tops.iter().for_each(|t| keep[t / TILE] = true);
        let first = ranges(&keep, |_| true);
        // SAFETY (each product below): tiles of `rows`, into buffers of `rows` floats.
        unsafe { full.tiles(team, &exact, &first, &over(outs, rows)) };
        let done = keep.clone();
        for (i, o) in outs.iter().enumerate() {
            let floor = o[tops[i]] - margins[i];
            mark(o, floor, &mut keep);
        }
        if keep.iter().filter(|k| **k).count() * MOST_TILES > tiles {
            // SAFETY: as above.
            unsafe { full.tiles(team, &exact, std::slice::from_ref(&(0..tiles)), &over(outs, rows)) };
            return;
        }
        let rest = ranges(&keep, |t| !done[t]);
        if !rest.is_empty() {
            // SAFETY: as above.
            unsafe { full.tiles(team, &exact, &rest, &over(outs, rows)) };
        }
        for o in outs.iter_mut() {
            for (t, values) in o.chunks_mut(TILE).enumerate() {
                if !keep[t] {
                    values.fill(f32::NEG_INFINITY);
                }
            }
        }
    }
}

impl ArgmaxHead {
    /// Into `outs[i]`, for every row `r` of the matrix, a bound `b` with `b + margins[i] ≥` the
    /// whole product's value; returns the margins.
    fn bounds(&self, bits: Bits, team: &mut Team, x: &[f32], outs: &mut [Vec<f32>]) -> Vec<f32> {
        let (rows, cols) = (self.high.rows, self.high.cols);
        let mut bound = Rounded::of(bits, x, outs.len(), cols);
        let margins = lower_sums(&mut bound, self.dmax);
        let out = each_row(outs, rows);
        // SAFETY: `each_row` made room for `rows` floats per buffer, and the product writes
        // them all.
        unsafe {
            self.high.tiles(team, &bound, std::slice::from_ref(&(0..rows.div_ceil(TILE))), &out);
            written(outs, rows);
        }
        margins
    }
}

/// Lowers every block sum of `bound` so that a Q5_0 product of the high bits bounds the Q8_0
/// one from above (see the module docs), and returns each row's [`margin`].
fn lower_sums(bound: &mut Rounded, dmax: f32) -> Vec<f32> {
    let (n, nb) = (bound.scales().n, bound.scales().nb);
    let mut margins = vec![0.0f32; n];
    for (i, m) in margins.iter_mut().enumerate() {
        let mut magnitude = 0.0f32;
        for j in i * nb..(i + 1) * nb {
            let (mut sum, mut positive, mut abs) = (0i32, 0i32, 0i32);
            for p in 0..BLOCK {
                let v = bound.value(j, p);
                sum += v;
                positive += v.max(0);
                abs += v.abs();
            }
            let d = bound.scales().d[j];
            // Every integer here is below 2²⁴ (32 values of at most 127·257), so exact as f32,
            // and `LOW·positive / 128` too.
            bound.scales_mut().s[j] = d * (sum as f32 - (LOW * positive) as f32 / 128.0);
            magnitude += d * abs as f32;
        }
        *m = margin(nb, dmax, magnitude);
    }
    margins
}

/// What f32 rounding can move the bound and the exact product apart by, for a row of `nb`
/// blocks with `Σ d·Σ|x|` = `magnitude` and weight scales up to `dmax`: each product adds `nb`
/// blocks' terms of at most `(31·8 + 128·(1 + 7/128))·dmax·d·Σ|x| < 400·dmax·d·Σ|x|`, with a
/// rounding of at most 2⁻²⁴ of the running sum per conversion, scale product and fused add
/// (`nb + 4` of them); twice that for the two products, twice again to spare.
fn margin(nb: usize, dmax: f32, magnitude: f32) -> f32 {
    4.0 * (nb as f32 + 4.0) * 400.0 * dmax * magnitude / (1u32 << 24) as f32
}

/// An [`Out`] over the values `outs` hold (every buffer as long as the matrix's rows).
fn over(outs: &mut [Vec<f32>], rows: usize) -> Out {
    assert!(outs.iter().all(|o| o.len() == rows));
    Out::each(outs.iter_mut().map(|o| o.as_mut_ptr()).collect(), rows)
}

/// Marks the tiles of `row` that hold a value at or above `floor`.
fn mark(row: &[f32], floor: f32, keep: &mut [bool]) {
    const CHUNK: usize = 32 * TILE;
    for (c, chunk) in row.chunks(CHUNK).enumerate() {
        if aiserve_core::math::max(chunk) < floor {
            continue;
        }
        for (t, values) in chunk.chunks(TILE).enumerate() {
            if values.iter().any(|v| *v >= floor) {
                keep[c * CHUNK / TILE + t] = true;
            }
        }
    }
}

/// The runs of tiles `t` with `keep[t]` and `pick(t)`.
fn ranges(keep: &[bool], pick: impl Fn(usize) -> bool) -> Vec<std::ops::Range<usize>> {
    let mut out: Vec<std::ops::Range<usize>> = Vec::new();
    for t in (0..keep.len()).filter(|t| keep[*t] && pick(*t)) {
        match out.last_mut() {
            Some(r) if r.end == t => r.end += 1,
            _ => out.push(t..t + 1),
        }
    }
    out
}

#[cfg(test)]
mod tests;
