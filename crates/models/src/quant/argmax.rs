//! Greedy decoding's next token without reading every bit of a large Q8_0 output projection.
//!
//! Decoding one sequence is bound by the bytes of weights it reads, and a small model's output
//! projection is most of them (Gemma 3 270M: 178 of 258 MB a token, a 262,144-token vocabulary
//! in Q8_0). A greedy sequence needs only the position of the largest logit. Each Q8_0 value
//! splits into its high five bits and low three, `q = 8·h + l` with `l` in `0..=7`, so a row's
//! logit is at most its high bits' product plus `7·d·Σ max(x, 0)` per block — and that bound is
//! one Q5_0 product ([`super::Format::Q5_0`], 22 bytes a block against 34): the high bits with
//! scale `8·d`, whose `−16·8·d` term per unit of activation is fed a block sum lowered by
//! `7/128·Σ max(x, 0)`. The bound's products take 8-bit activations (twice the multiply-adds
//! per instruction) whatever the matrix's rounding, and the same lowering takes in what the two
//! roundings can differ by (`128·d·Σ|a − c|` per block). The exact logit of the row with the
//! largest bound is a floor for the largest logit; only the tiles of rows whose bound reaches
//! that floor are then multiplied exactly, with the same kernel and activations as the whole
//! product (so with its bits).
//!
//! On Gemma's final hidden states (1,025 tokens of greedy stories) the bound leaves a median of
//! 30 rows (mean 150, at most 8,222) of 262,144 to compute exactly (the Gemma benchmark's steps:
//! a median of 24 tiles of 16,384). Where the candidates are many, the whole exact product runs
//! instead: never a different token, only a slower step. The bounds hold for the rounded
//! activations in exact arithmetic; a margin covers what f32 rounding can move either product
//! ([`margin`]).

use super::layout::{self, TILE};
use super::team::{Chunks, Team};
use super::{each_row, written, Bits, Data, Format, Matrix, Out, Rounded, BLOCK};

/// Bytes of Q8_0 weights below which the head does not pay: a matrix that the caches hold in
/// good part is not read at memory's pace, and the head's own work (a second rounding of the
/// activations, the scans for candidates, the whole product where many remain) is then not
/// repaid. `--bench generate`, greedy steps against every logit, two alternated runs: Gemma 3
/// 270M (178 MB; a median of 24 of 16,384 tiles left) one sequence 95 / 93 → 130 / 112 tok/s;
/// SmolLM2-135M (30 MB; a median of 37 of 3,072 tiles, a tenth of the steps past
/// [`MOST_TILES`]) 346 / 351 → 293 / 328, and 8 sequences 941 / 899 → 789 / 806.
const MIN_BYTES: usize = 64 << 20;

/// The largest value of the low bits left out of the bound (`q & 7`).
const LOW: i32 = 7;

/// Activation rows up to which the head is measured to pay (its bound's products take 8-bit
/// activations and a third fewer bytes; the scans for candidates are shared out among the
/// threads). Gemma 3 270M, `--bench generate` with `AISERVE_ARGMAX_ONLY=1` against without,
/// 2 threads, AVX-512, two alternated runs, tok/s: 1 sequence 95.0 / 93.4 → 129.8 / 111.6, 2:
/// 175 / 178 → 242 / 209, 4: 303 / 296 → 365 / 348, 8: 469 / 459 → 503 / 495, 16: 468 / 499 →
/// 524 / 523. Where 16 rows would run on the tile-multiply unit ([`super::amx`]), not measured,
/// the whole product runs.
pub const MAX_ROWS: usize = 16;

/// Activations of the bound's products: 8 bits whatever the matrix's, for twice the
/// multiply-adds per instruction; the difference to the matrix's rounding is part of the bound.
const BOUND_BITS: Bits = Bits::Eight;

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
        // Packed for the bound's own activations, whatever the matrix's are.
        let to_bits = BOUND_BITS;
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
                let (nibble, high) = layout::payload_index(q5, to_bits, j, p);
                (at, nibble, if high { 4 } else { 0 }, 8 * layout::HIGH_PLANE + layout::high_bit(to_bits, j, p))
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
        Some(ArgmaxHead {
            high: Matrix { rows, cols, data: Data::Blocks { format: q5, bits: to_bits, bytes: high } },
            dmax,
        })
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
    /// [`MAX_ROWS`] rows (or rows for the tile-multiply unit) get the whole product.
    pub fn argmax_rows(&self, full: &Matrix, team: &mut Team, x: &[f32], outs: &mut [Vec<f32>]) {
        let (rows, cols, n) = (full.rows, full.cols, outs.len());
        assert!(self.high.rows == rows && self.high.cols == cols, "a head of another matrix");
        let Data::Blocks { bits, .. } = &full.data else { panic!("a head of an f32 matrix") };
        assert_eq!(x.len(), n * cols, "argmax_rows: x is not n x cols");
        if n == 0 || n > MAX_ROWS || (n >= super::amx::MIN_ROWS && super::amx::available()) {
            return full.matmul_rows(team, x, outs);
        }
        let tiles = rows.div_ceil(TILE);
        let exact = Rounded::of(*bits, x, n, cols);
        let margins = self.bounds(&exact, team, x, outs);
        if margins.iter().any(|m| !m.is_finite()) {
            // Activations that are not finite: no bound holds, and the whole product says what
            // such rows give.
            return full.matmul_rows(team, x, outs);
        }
        // The row with the largest bound, exactly: a floor for each row's largest logit. The
        // scans of the rows (a megabyte each for Gemma) are shared out among the team.
        let tops = std::sync::Mutex::new(vec![0; n]);
        each_buffer(team, outs, &|i, o| {
            let top = aiserve_core::sampling::argmax(o) as usize;
            tops.lock().unwrap_or_else(|e| e.into_inner())[i] = top;
        });
        let tops = tops.into_inner().unwrap_or_else(|e| e.into_inner());
        let mut keep = vec![false; tiles];
        tops.iter().for_each(|t| keep[t / TILE] = true);
        let first = ranges(&keep, |_| true);
        // SAFETY (each product below): tiles of `rows`, into buffers of `rows` floats.
        unsafe { full.tiles(team, &exact, &first, &over(outs, rows)) };
        let done = keep.clone();
        let found = std::sync::Mutex::new(Vec::new());
        each_buffer(team, outs, &|i, o| {
            let tiles = candidates(o, o[tops[i]] - margins[i]);
            found.lock().unwrap_or_else(|e| e.into_inner()).extend(tiles);
        });
        for t in found.into_inner().unwrap_or_else(|e| e.into_inner()) {
            keep[t] = true;
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
        each_buffer(team, outs, &|_, o| {
            for (t, values) in o.chunks_mut(TILE).enumerate() {
                if !keep[t] {
                    values.fill(f32::NEG_INFINITY);
                }
            }
        });
    }

    /// Into `outs[i]`, for every row `r` of the matrix, a bound `b` with `b + margins[i] ≥` the
    /// whole product's value with the activations `exact` (`x` rounded as the matrix rounds
    /// them); returns the margins.
    fn bounds(&self, exact: &Rounded, team: &mut Team, x: &[f32], outs: &mut [Vec<f32>]) -> Vec<f32> {
        let (rows, cols) = (self.high.rows, self.high.cols);
        let mut bound = Rounded::of(BOUND_BITS, x, outs.len(), cols);
        let margins = lower_sums(&mut bound, exact, self.dmax);
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

/// Lowers every block sum of `bound` so that a Q5_0 product of the high bits with its values
/// bounds the Q8_0 product with `exact`'s from above (see the module docs), and returns each
/// row's [`margin`]. Where the two round `x` differently, the bound also takes in `128·d·Σ|a − c|`
/// per block (`a`, `c` the two roundings, `|q| ≤ 128`), by the same lowering.
fn lower_sums(bound: &mut Rounded, exact: &Rounded, dmax: f32) -> Vec<f32> {
    let (n, nb) = (bound.scales().n, bound.scales().nb);
    assert_eq!((exact.scales().n, exact.scales().nb), (n, nb), "two roundings of other rows");
    let mut margins = vec![0.0f32; n];
    for (i, m) in margins.iter_mut().enumerate() {
        let mut magnitude = 0.0f32;
        for j in i * nb..(i + 1) * nb {
            let (dc, da) = (bound.scales().d[j], exact.scales().d[j]);
            let (mut sum, mut positive, mut abs, mut apart) = (0i32, 0i32, 0i32, 0.0f32);
            for p in 0..BLOCK {
                let c = bound.value(j, p);
                sum += c;
                positive += c.max(0);
                abs += c.abs();
                apart += (da * exact.value(j, p) as f32 - dc * c as f32).abs();
            }
            // Every integer here is below 2²⁴ (32 values of at most 127·257), so exact as f32,
            // and `LOW·positive / 128` too.
            bound.scales_mut().s[j] = dc * (sum as f32 - (LOW * positive) as f32 / 128.0) - apart;
            magnitude += dc * abs as f32 + apart;
        }
        *m = margin(nb, dmax, magnitude);
    }
    margins
}

/// What f32 rounding can move the bound and the exact product apart by, for a row of `nb`
/// blocks with `Σ (d·Σ|c| + Σ|a − c|)` = `magnitude` (`d` the bound's activation scales) and
/// weight scales up to `dmax`: each product adds `nb` blocks' terms of at most
/// `(31·8 + 128·(1 + 7/128) + 128)·dmax·magnitude < 600·dmax·magnitude` (per block), with a
/// rounding of at most 2⁻²⁴ of the running sum per conversion, scale product and fused add
/// (`nb + 4` of them); twice that for the two products, and as much again for the 34 roundings
/// in each block's `Σ|a − c|`, twice again to spare.
fn margin(nb: usize, dmax: f32, magnitude: f32) -> f32 {
    8.0 * (nb as f32 + 40.0) * 600.0 * dmax * magnitude / (1u32 << 24) as f32
}

/// An [`Out`] over the values `outs` hold (every buffer as long as the matrix's rows).
fn over(outs: &mut [Vec<f32>], rows: usize) -> Out {
    assert!(outs.iter().all(|o| o.len() == rows));
    Out::each(outs.iter_mut().map(|o| o.as_mut_ptr()).collect(), rows)
}

/// The tiles of `row` that hold a value at or above `floor`.
fn candidates(row: &[f32], floor: f32) -> Vec<usize> {
    const CHUNK: usize = 32 * TILE;
    let mut out = Vec::new();
    for (c, chunk) in row.chunks(CHUNK).enumerate() {
        if aiserve_core::math::max(chunk) < floor {
            continue;
        }
        for (t, values) in chunk.chunks(TILE).enumerate() {
            if values.iter().any(|v| *v >= floor) {
                out.push(c * CHUNK / TILE + t);
            }
        }
    }
    out
}

/// Runs `f(i, outs[i])` for every buffer, the buffers shared out among `team`.
fn each_buffer(team: &mut Team, outs: &mut [Vec<f32>], f: &(dyn Fn(usize, &mut [f32]) + Sync)) {
    struct Buffers(*mut Vec<f32>);
    impl Buffers {
        fn at(&self, i: usize) -> *mut Vec<f32> {
            self.0.wrapping_add(i)
        }
    }
    // SAFETY: each index is claimed by one thread only, so no buffer is reached twice.
    unsafe impl Sync for Buffers {}
    let buffers = Buffers(outs.as_mut_ptr());
    let next = Chunks::new(outs.len());
    team.run(&|_| {
        while let Some(i) = next.claim() {
            // SAFETY: `i < outs.len()`, claimed once (above), and `outs` outlives the run.
            f(i, unsafe { &mut *buffers.at(i) });
        }
    });
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
