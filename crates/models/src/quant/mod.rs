//! Weight matrices in GGML's block formats (as stored in GGUF files) and the products a decoder
//! runs on them, on the CPU.
//!
//! Why our own kernels: candle 0.11 has no SIMD dot product for Q4_1 (its scalar fallback decoded
//! SmolLM2-135M Q4_1 at ~1 token/s), and dequantizing to f32 at load time reads 6× more memory
//! per token, which is what bounds decoding. Here weights keep their GGUF size and bits, regrouped
//! at load time into tiles of 16 rows ([`layout`]), and each tile block is unpacked in registers
//! right before use. Activations are rounded to 16 bits per block of 32 by default ([`int16`]):
//! integer multiply-adds do twice the work of float FMAs per instruction, which is what bounds
//! prefill and batched decoding, and SmolLM2 still answers as transformers' f32 does. 8 bits
//! ([`int8`], llama.cpp's choice, [`Bits::Eight`]) double that again but change small models'
//! answers. [`tiles`] runs the products for either width; from 16 activation rows on (prompts,
//! big batches), 16-bit products run on the tile-multiply unit where the CPU has one ([`amx`]),
//! with the same bits. Every activation row meets each unpacked weight vector, so a batch of
//! sequences reads the weights once, and each row's arithmetic is the same in any batch.
//! Q4_K and Q6_K super-blocks become blocks of 32 with f32 scales at load time ([`q4_k`],
//! [`q6_k`]); formats without a kernel here are dequantized to f32 by candle at load time.

pub mod amx;
pub mod argmax;
mod avx2;
pub mod int16;
pub mod int8;
pub mod layout;
pub mod q4_k;
pub mod q5;
pub mod q6_k;
#[cfg(test)]
mod scalar;
pub mod team;
pub mod tiles;

use team::{Chunks, Ranges, Team};

/// Turns GGUF blocks of one format into a kernel format's blocks ([`q4_k`], [`q5`], [`q6_k`]).
pub type Regroup = fn(&[u8]) -> Result<Vec<u8>, String>;

/// Values per quantization block (every format here).
pub const BLOCK: usize = 32;

/// GGML block formats with a kernel here.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    /// f16 scale `d`, 32 4-bit values: `w = d·(q − 8)`.
    Q4_0,
    /// f16 scale `d` and minimum `m`, 32 4-bit values: `w = d·q + m`.
    Q4_1,
    /// f16 scale `d`, 32 signed bytes: `w = d·q`.
    Q8_0,
    /// f16 scale `d`, 32 5-bit values: `w = d·(q − 16)`, GGML's Q5_0 (llama.cpp's K-quant files
    /// use it where rows are not whole super-blocks). In tiles, low nibbles as the 4-bit formats'
    /// and a plane of the fifth bits ([`layout::HIGH_PLANE`]).
    Q5_0,
    /// f32 scale `d` and term `m`, 32 4-bit values: `w = d·q + m`; what GGML's Q4_K
    /// super-blocks become at load time ([`q4_k`]).
    Q4K,
    /// f32 scales `d₀` (values 0..16) and `d₁` (16..32), 32 signed bytes: `w = dₕ·q`; what
    /// GGML's Q6_K super-blocks become at load time ([`q6_k`]).
    Q6K,
    /// f32 scale `d` and term `m`, 32 values as bytes (`0..=31`): `w = d·q + m`; what GGML's
    /// Q5_K super-blocks and Q5_1 blocks become at load time ([`q5`]).
    Q5K,
}

impl Format {
    pub const fn block_bytes(self) -> usize {
        match self {
            Format::Q4_0 => 18,
            Format::Q4_1 => 20,
            Format::Q8_0 => 34,
            Format::Q5_0 => 22,
            Format::Q4K => 24,
            Format::Q6K => 40,
            Format::Q5K => 40,
        }
    }

    /// Whether values are (signed) bytes, else unsigned 4-bit values.
    pub const fn signed_bytes(self) -> bool {
        matches!(self, Format::Q8_0 | Format::Q6K | Format::Q5K)
    }

    /// Whether each block adds a term per unit of activation (`w = d·q + m`; Q4_0: `m = −8·d`).
    pub const fn has_term(self) -> bool {
        matches!(self, Format::Q4_0 | Format::Q4_1 | Format::Q4K | Format::Q5K | Format::Q5_0)
    }

    /// Whether values have a fifth bit beside their nibbles ([`layout::HIGH_PLANE`]).
    pub const fn high_bits(self) -> bool {
        matches!(self, Format::Q5_0)
    }

    /// Whether a block's halves (values 0..16 and 16..32) have scales of their own.
    pub const fn split_scales(self) -> bool {
        matches!(self, Format::Q6K)
    }
}

/// Bits that activations are rounded to (per block of 32, with a float scale) before their
/// integer products with quantized weights.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Bits {
    /// llama.cpp's choice: twice the multiply-adds per instruction. It moves SmolLM2-135M's
    /// logits by up to a few units (of 23–33), which changes greedy answers: "Which city is
    /// the capital of France?" gets "Le Grand Château…" instead of "The capital of France is
    /// Paris.".
    Eight,
    /// 256× finer: SmolLM2-135M answers token for token as transformers does in f32.
    #[default]
    Sixteen,
}

/// Where a product's results go: activation row `i`'s start at [`Out::row`]`(i)`, `rows` floats
/// (only the rows of the matrix, not a last tile's padding, are written).
pub struct Out {
    starts: Starts,
    /// Weight rows of the matrix.
    pub rows: usize,
}

enum Starts {
    /// Row `i` at `ptr + i·stride`, `stride ≥ rows`.
    Strided { ptr: *mut f32, stride: usize },
    /// Each row where it lies (one buffer per sequence, say).
    Each(Vec<*mut f32>),
}

impl Out {
    /// Rows `stride` floats apart from `ptr`.
    pub fn strided(ptr: *mut f32, stride: usize, rows: usize) -> Out {
        assert!(rows <= stride, "rows of {stride} floats cannot hold {rows} results");
        Out { starts: Starts::Strided { ptr, stride }, rows }
    }

    /// Row `i` at `starts[i]`.
    pub fn each(starts: Vec<*mut f32>, rows: usize) -> Out {
        Out { starts: Starts::Each(starts), rows }
    }

    /// Where activation row `i`'s results start.
    #[inline(always)]
    pub fn row(&self, i: usize) -> *mut f32 {
        match &self.starts {
            Starts::Strided { ptr, stride } => ptr.wrapping_add(i * stride),
            Starts::Each(starts) => starts[i],
        }
    }
}

// SAFETY: threads writing through the same `Out` write disjoint tiles (see `tiles::dot_tiles`).
unsafe impl Sync for Out {}

enum Data {
    Blocks { format: Format, bits: Bits, bytes: Vec<u8> },
    F32(Vec<f32>),
}

/// A `rows × cols` weight matrix (a linear layer's `[out, in]`), row-major.
pub struct Matrix {
    rows: usize,
    cols: usize,
    data: Data,
}

impl std::fmt::Debug for Matrix {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Matrix({}x{} {})", self.rows, self.cols, self.format_name())
    }
}

impl Matrix {
    /// A matrix of GGML blocks: each row is `cols / 32` blocks of `format`, as GGUF stores
    /// them. The rows are regrouped for the kernels ([`layout`]); the size stays the same.
    /// Products round activations to `bits`.
    pub fn quantized(format: Format, bits: Bits, rows: usize, cols: usize, bytes: Vec<u8>) -> Result<Self, String> {
        if !cols.is_multiple_of(BLOCK) {
            return Err(format!("{format:?} rows must hold a multiple of {BLOCK} values, got {cols}"));
        }
        let want = rows * cols / BLOCK * format.block_bytes();
        if bytes.len() != want {
            return Err(format!("{format:?} {rows}x{cols} takes {want} bytes, got {}", bytes.len()));
        }
        let packed = layout::pack(format, bits, rows, cols / BLOCK, &bytes);
        Ok(Self { rows, cols, data: Data::Blocks { format, bits, bytes: packed } })
    }

    pub fn f32(rows: usize, cols: usize, values: Vec<f32>) -> Result<Self, String> {
        if values.len() != rows * cols {
            return Err(format!("a {rows}x{cols} matrix takes {} values, got {}", rows * cols, values.len()));
        }
        Ok(Self { rows, cols, data: Data::F32(values) })
    }

    pub fn rows(&self) -> usize {
        self.rows
    }

    pub fn cols(&self) -> usize {
        self.cols
    }

    /// Bytes the weights take (what one full product reads; quantized rows padded to whole tiles).
    pub fn bytes(&self) -> usize {
        match &self.data {
            Data::Blocks { bytes, .. } => bytes.len(),
            Data::F32(v) => v.len() * 4,
        }
    }

    pub fn format_name(&self) -> String {
        match &self.data {
            Data::Blocks { format, bits: Bits::Eight, .. } => format!("{format:?} (8-bit activations)"),
            Data::Blocks { format, .. } => format!("{format:?}"),
            Data::F32(_) => "F32".into(),
        }
    }

    /// The rows of `parts` one under the other (e.g. the query, key and value projections as one
    /// product). All parts must share the column count and storage format, except that Q5_0
    /// parts stack with Q8_0 ones as Q8_0 (exactly; llama.cpp's K-quant files mix the two in
    /// attention layers).
    pub fn stack(parts: Vec<Matrix>) -> Result<Matrix, String> {
        let cols = parts.first().map(|p| p.cols).ok_or("nothing to stack")?;
        let rows = parts.iter().map(|p| p.rows).sum();
        if parts.iter().any(|p| p.cols != cols) {
            return Err("stacked matrices must have the same number of columns".into());
        }
        let data = match &parts[0].data {
            Data::Blocks { bits, .. } => {
                let bits = *bits;
                let formats: Vec<Option<Format>> = parts
                    .iter()
                    .map(|p| match p.data {
                        Data::Blocks { format, .. } => Some(format),
                        Data::F32(_) => None,
                    })
                    .collect();
                let format = match formats[0] {
                    Some(Format::Q5_0) if formats.contains(&Some(Format::Q8_0)) => Format::Q8_0,
                    f => f.expect("a block matrix"),
                };
                // Back to GGUF rows and packed again: a part's last tile may be padded.
                let mut all = Vec::new();
                for p in parts {
                    match p.data {
                        Data::Blocks { format: f, bits: b, bytes } if f == format && b == bits => {
                            (0..p.rows).for_each(|r| layout::gguf_row(format, bits, &bytes, cols / BLOCK, r, &mut all))
                        }
                        Data::Blocks { format: Format::Q5_0, bits: b, bytes }
                            if format == Format::Q8_0 && b == bits =>
                        {
                            let mut q5 = Vec::new();
                            (0..p.rows)
                                .for_each(|r| layout::gguf_row(Format::Q5_0, bits, &bytes, cols / BLOCK, r, &mut q5));
                            all.extend(q5::q5_0_to_q8_0(&q5)?);
                        }
                        _ => return Err("stacked matrices must have the same format".into()),
                    }
                }
                Data::Blocks { format, bits, bytes: layout::pack(format, bits, rows, cols / BLOCK, &all) }
            }
            Data::F32(_) => {
                let mut all = Vec::new();
                for p in parts {
                    match p.data {
                        Data::F32(v) => all.extend_from_slice(&v),
                        _ => return Err("stacked matrices must have the same format".into()),
                    }
                }
                Data::F32(all)
            }
        };
        Ok(Matrix { rows, cols, data })
    }

    /// Writes row `r` as floats into `out` (`cols` long): an embedding lookup.
    pub fn row_into(&self, r: usize, out: &mut [f32]) {
        assert!(r < self.rows && out.len() == self.cols);
        match &self.data {
            Data::F32(v) => out.copy_from_slice(&v[r * self.cols..(r + 1) * self.cols]),
            Data::Blocks { format, bits, bytes } => {
                layout::dequantize_row(*format, *bits, bytes, self.cols / BLOCK, r, out)
            }
        }
    }

    /// `out` (`n × rows`) = `x` (`n × cols`) · selfᵀ, the weight rows shared out among `team`
    /// in chunks.
    pub fn matmul(&self, team: &mut Team, x: &[f32], n: usize, out: &mut [f32]) {
        assert_eq!(out.len(), n * self.rows, "matmul: out is not n x rows");
        // SAFETY: `out` holds n rows of `self.rows` values and outlives the call.
        unsafe { self.product(team, x, n, &Out::strided(out.as_mut_ptr(), self.rows, self.rows)) }
    }

    /// [`Matrix::matmul`] with activation row `i`'s results in `outs[i]` (replacing what it
    /// held), which saves a model's logits a zero fill and a copy per sequence.
    pub fn matmul_rows(&self, team: &mut Team, x: &[f32], outs: &mut [Vec<f32>]) {
        let out = each_row(outs, self.rows);
        // SAFETY: `each_row` made room for `self.rows` floats in every buffer, which outlive
        // the call.
        unsafe { self.product(team, x, outs.len(), &out) };
        // SAFETY: the product wrote all `self.rows` values of every row.
        unsafe { written(outs, self.rows) };
    }

    /// The product of [`Matrix::matmul`] into `dst`.
    ///
    /// # Safety
    /// `dst.row(i)` must be valid for writes of `self.rows` floats for `i < n`, and `dst.rows`
    /// be `self.rows`.
    unsafe fn product(&self, team: &mut Team, x: &[f32], n: usize, dst: &Out) {
        assert_eq!(x.len(), n * self.cols, "matmul: x is not n x cols");
        assert_eq!(dst.rows, self.rows);
        let (rows, cols) = (self.rows, self.cols);
        match &self.data {
            Data::Blocks { bits, .. } => {
                let acts = Rounded::of(*bits, x, n, cols);
                // SAFETY: as this function's contract.
                unsafe { self.tiles(team, &acts, std::slice::from_ref(&(0..rows.div_ceil(layout::TILE))), dst) }
            }
            Data::F32(w) => {
                let per = rows_per_chunk(rows, n, team.threads());
                let chunks = Chunks::new(rows.div_ceil(per));
                team.run(&|_| {
                    let mut buf = Vec::new();
                    while let Some(c) = chunks.claim() {
                        let (r0, r1) = (c * per, ((c + 1) * per).min(rows));
                        buf.resize((r1 - r0) * n, 0.0);
                        dot_rows_f32(w, cols, r0..r1, x, n, &mut buf);
                        for i in 0..n {
                            for k in 0..r1 - r0 {
                                // SAFETY: row `i < n`, column `r0 + k < rows` of `dst`, valid
                                // for writes (the contract); chunks are disjoint row ranges, so
                                // no two threads write the same element.
                                unsafe { *dst.row(i).add(r0 + k) = buf[k * n + i] };
                            }
                        }
                    }
                });
            }
        }
    }

    /// The products of tile ranges `tiles` (of [`layout::TILE`] rows) of a block matrix with
    /// the rounded activation rows `acts`, into `dst`, the tiles shared out among `team`.
    ///
    /// # Safety
    /// `dst.row(i)` must be valid for writes of `self.rows` floats for every activation row
    /// `i`, and `dst.rows` be `self.rows`.
    unsafe fn tiles(&self, team: &mut Team, acts: &Rounded, tiles: &[std::ops::Range<usize>], dst: &Out) {
        let Data::Blocks { format, bits, bytes } = &self.data else { panic!("tile products of an f32 matrix") };
        assert_eq!(*bits, acts.bits(), "activations rounded for another width");
        assert_eq!(acts.scales().nb * BLOCK, self.cols, "activations of another width");
        assert_eq!(dst.rows, self.rows);
        assert!(tiles.iter().all(|t| t.end <= self.rows.div_ceil(layout::TILE)), "tiles past the matrix");
        // One range is shared out in shrinking pieces; several (scattered tiles) one by one.
        let whole = (tiles.len() == 1).then(|| Ranges::new(tiles[0].len(), team.threads(), 1));
        let list = Chunks::new(tiles.len());
        let next = || match &whole {
            Some(r) => r.claim().map(|t| tiles[0].start + t.start..tiles[0].start + t.end),
            None => list.claim().map(|c| tiles[c].clone()),
        };
        let mut run = |product: &(dyn Fn(std::ops::Range<usize>) + Sync)| {
            team.run(&|_| {
                while let Some(t) = next() {
                    product(t);
                }
            })
        };
        // SAFETY (both): `dst`'s rows are valid for writes (this function's contract); claimed
        // tile ranges are disjoint, so no two threads write the same element.
        match acts {
            Rounded::Eight(a) => run(&|t| unsafe { tiles::dot_tiles::<int8::Eight>(*format, bytes, t, a, dst) }),
            Rounded::Sixteen(a) => run(&|t| unsafe { tiles::dot_tiles::<int16::Sixteen>(*format, bytes, t, a, dst) }),
        }
    }
}

/// Activation rows rounded for a block matrix's products, at its [`Bits`].
enum Rounded {
    Eight(int8::Acts),
    Sixteen(int16::Acts),
}

impl Rounded {
    /// `x` (`n × cols`) rounded to `bits`.
    fn of(bits: Bits, x: &[f32], n: usize, cols: usize) -> Self {
        match bits {
            Bits::Eight => Rounded::Eight(int8::Acts::quantize(x, n, cols)),
            Bits::Sixteen => Rounded::Sixteen(int16::Acts::quantize(x, n, cols)),
        }
    }

    fn bits(&self) -> Bits {
        match self {
            Rounded::Eight(_) => Bits::Eight,
            Rounded::Sixteen(_) => Bits::Sixteen,
        }
    }

    fn scales(&self) -> &tiles::Scales {
        match self {
            Rounded::Eight(a) => &a.scales,
            Rounded::Sixteen(a) => &a.scales,
        }
    }

    fn scales_mut(&mut self) -> &mut tiles::Scales {
        match self {
            Rounded::Eight(a) => &mut a.scales,
            Rounded::Sixteen(a) => &mut a.scales,
        }
    }

    /// Value `p` of block `j` (blocks row after row), as an integer.
    fn value(&self, j: usize, p: usize) -> i32 {
        use tiles::Width;
        match self {
            Rounded::Eight(a) => int8::Eight::value(a, j, p),
            Rounded::Sixteen(a) => int16::Sixteen::value(a, j, p),
        }
    }
}

/// An [`Out`] writing activation row `i`'s `rows` results at the start of `outs[i]`, whose
/// contents it drops (room for `rows` floats is reserved; see [`written`]).
fn each_row(outs: &mut [Vec<f32>], rows: usize) -> Out {
    let starts = outs
        .iter_mut()
        .map(|o| {
            o.clear();
            o.reserve_exact(rows);
            o.spare_capacity_mut().as_mut_ptr() as *mut f32
        })
        .collect();
    Out::each(starts, rows)
}

/// Marks the `rows` floats that a product wrote through [`each_row`] as each buffer's contents.
///
/// # Safety
/// Every one of the first `rows` floats of each buffer must have been written.
unsafe fn written(outs: &mut [Vec<f32>], rows: usize) {
    for o in outs {
        // SAFETY: room was reserved by `each_row`, and the values written (the contract).
        unsafe { o.set_len(rows) };
    }
}

/// Largest magnitude and sum of a block of 32 activations. The sum runs in eight lanes, then
/// halves (`((l0+l4)+(l2+l6)) + ((l1+l5)+(l3+l7))`), the order both paths use: a sum in one
/// chain would wait 32 additions long.
fn block_stats(x: &[f32]) -> (f32, f32) {
    #[cfg(target_arch = "x86_64")]
    if avx2::available() {
        // SAFETY: the CPU has AVX2 (checked above).
        return unsafe { avx2::block_stats(x) };
    }
    block_stats_portable(x)
}

fn block_stats_portable(x: &[f32]) -> (f32, f32) {
    let mut l: [f32; 8] = x[..8].try_into().expect("a block of 32");
    let mut amax = l.iter().fold(0.0f32, |m, v| m.max(v.abs()));
    for c in x[8..BLOCK].chunks_exact(8) {
        for j in 0..8 {
            l[j] += c[j];
            amax = amax.max(c[j].abs());
        }
    }
    (amax, ((l[0] + l[4]) + (l[2] + l[6])) + ((l[1] + l[5]) + (l[3] + l[7])))
}

/// Weight rows per claimed chunk: several chunks per thread so uneven cores even out, fewer
/// (bigger) ones when many activation rows make each weight row expensive anyway.
fn rows_per_chunk(rows: usize, n: usize, threads: usize) -> usize {
    let min_rows = if n >= 16 { 4 } else { 16 };
    rows.div_ceil(threads * 4).max(min_rows)
}

/// Products with f32 weights: the SIMD kernel when rows are whole blocks, else plain sums
/// (either way each output depends on its own row only, so batching never changes it).
fn dot_rows_f32(w: &[f32], cols: usize, rows: std::ops::Range<usize>, x: &[f32], n: usize, out_t: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    if cols.is_multiple_of(BLOCK) && avx2::available() {
        // SAFETY: the CPU has the features (checked above); `w` holds whole rows of `cols`.
        unsafe { avx2::dot_rows_f32(w, cols, rows, x, n, out_t) };
        return;
    }
    for (k, r) in rows.enumerate() {
        let wr = &w[r * cols..(r + 1) * cols];
        for i in 0..n {
            out_t[k * n + i] = wr.iter().zip(&x[i * cols..(i + 1) * cols]).map(|(a, b)| a * b).sum();
        }
    }
}

#[cfg(test)]
mod tests;
