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
        matches!(self, Format::Q4_0 | Format::Q4_1 | Format::Q4K | Format::Q5K)
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

/// Where a product's results go: row `i` of the output starts at `i * stride`; only the rows
/// of the matrix (not a last tile's padding) are written.
pub struct Out {
    pub ptr: *mut f32,
    pub stride: usize,
    /// Weight rows of the matrix.
    pub rows: usize,
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
    /// product). All parts must share the column count and storage format.
    pub fn stack(parts: Vec<Matrix>) -> Result<Matrix, String> {
        let cols = parts.first().map(|p| p.cols).ok_or("nothing to stack")?;
        let rows = parts.iter().map(|p| p.rows).sum();
        if parts.iter().any(|p| p.cols != cols) {
            return Err("stacked matrices must have the same number of columns".into());
        }
        let data = match &parts[0].data {
            Data::Blocks { format, bits, .. } => {
                // Back to GGUF rows and packed again: a part's last tile may be padded.
                let (format, bits) = (*format, *bits);
                let mut all = Vec::new();
                for p in parts {
                    match p.data {
                        Data::Blocks { format: f, bits: b, bytes } if f == format && b == bits => {
                            (0..p.rows).for_each(|r| layout::gguf_row(format, bits, &bytes, cols / BLOCK, r, &mut all))
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
    pub fn matmul(&self, team: &Team, x: &[f32], n: usize, out: &mut [f32]) {
        assert_eq!(x.len(), n * self.cols, "matmul: x is not n x cols");
        assert_eq!(out.len(), n * self.rows, "matmul: out is not n x rows");
        let (rows, cols) = (self.rows, self.cols);
        match &self.data {
            Data::Blocks { format, bits, bytes } => {
                let tiles = Ranges::new(rows.div_ceil(layout::TILE), team.threads(), 1);
                let dst = Out { ptr: out.as_mut_ptr(), stride: rows, rows };
                let run = |product: &(dyn Fn(std::ops::Range<usize>) + Sync)| {
                    team.run(&|_| {
                        while let Some(t) = tiles.claim() {
                            product(t);
                        }
                    })
                };
                // SAFETY (both): `out` holds n × rows values and outlives `run`; claimed tile
                // ranges are disjoint, so no two threads write the same element.
                match bits {
                    Bits::Eight => {
                        let acts = int8::Acts::quantize(x, n, cols);
                        run(&|t| unsafe { tiles::dot_tiles::<int8::Eight>(*format, bytes, t, &acts, &dst) });
                    }
                    Bits::Sixteen => {
                        let acts = int16::Acts::quantize(x, n, cols);
                        run(&|t| unsafe { tiles::dot_tiles::<int16::Sixteen>(*format, bytes, t, &acts, &dst) });
                    }
                }
            }
            Data::F32(w) => {
                let per = rows_per_chunk(rows, n, team.threads());
                let chunks = Chunks::new(rows.div_ceil(per));
                let dst = OutPtr(out.as_mut_ptr());
                team.run(&|_| {
                    let dst = &dst;
                    let mut buf = Vec::new();
                    while let Some(c) = chunks.claim() {
                        let (r0, r1) = (c * per, ((c + 1) * per).min(rows));
                        buf.resize((r1 - r0) * n, 0.0);
                        dot_rows_f32(w, cols, r0..r1, x, n, &mut buf);
                        for i in 0..n {
                            for k in 0..r1 - r0 {
                                // SAFETY: `out` has n × rows values and outlives `run`; chunks
                                // are disjoint row ranges, so no two threads write the same
                                // element.
                                unsafe { *dst.0.add(i * rows + r0 + k) = buf[k * n + i] };
                            }
                        }
                    }
                });
            }
        }
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

/// The output buffer shared by the team's threads, each writing its own rows.
struct OutPtr(*mut f32);
// SAFETY: only used inside `Matrix::matmul`, where writes go to disjoint elements.
unsafe impl Sync for OutPtr {}

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
mod tests {
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
    pub(crate) fn assert_decodes_to(
        format: Format,
        blocks: &[u8],
        rows: usize,
        cols: usize,
        want: &[f32],
        tolerance: f32,
    ) {
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
    pub(crate) const KINDS: [(Format, Bits); 12] = [
        (Format::Q4_0, Bits::Sixteen),
        (Format::Q4_1, Bits::Sixteen),
        (Format::Q8_0, Bits::Sixteen),
        (Format::Q4K, Bits::Sixteen),
        (Format::Q6K, Bits::Sixteen),
        (Format::Q5K, Bits::Sixteen),
        (Format::Q4_0, Bits::Eight),
        (Format::Q4_1, Bits::Eight),
        (Format::Q8_0, Bits::Eight),
        (Format::Q4K, Bits::Eight),
        (Format::Q6K, Bits::Eight),
        (Format::Q5K, Bits::Eight),
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
                m.matmul(&Team::new(2), &x, n, &mut out);
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
        for ((format, bits), (rows, cols)) in
            KINDS.into_iter().flat_map(|k| [(k, (9, 32)), (k, (32, 96)), (k, (21, 576))])
        {
            let raw = random_blocks(format, rows, cols, 5);
            let packed = layout::pack(format, bits, rows, cols / BLOCK, &raw);
            let ntiles = rows.div_ceil(layout::TILE);
            // From 16 rows on, 16-bit products go through the tile-multiply unit where the CPU
            // has one, 8 rows per pass.
            for n in [1, 2, 3, 4, 8, 11, 16, 17, 35] {
                let x: Vec<f32> = (0..n * cols).map(|i| ((i * 13 % 29) as f32 - 14.0) / 7.0).collect();
                let mut outs = [(); 3].map(|_| vec![f32::NAN; rows * n]);
                let [oa, ob, oc] = outs.each_mut().map(|o| Out { ptr: o.as_mut_ptr(), stride: rows, rows });
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
            m.matmul(&Team::new(2), &x, 7, &mut all);
            for i in 0..7 {
                let mut one = vec![0.0; rows];
                m.matmul(&Team::new(1), &x[i * cols..(i + 1) * cols], 1, &mut one);
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
            m.matmul(&Team::new(3), &x, 3, &mut all);
            for i in 0..3 {
                let mut one = vec![0.0; rows];
                m.matmul(&Team::new(1), &x[i * cols..(i + 1) * cols], 1, &mut one);
                assert_eq!(one, all[i * rows..(i + 1) * rows]);
                for r in 0..rows {
                    let exact: f32 = (0..cols).map(|c| x[i * cols + c] * w[r * cols + c]).sum();
                    assert!((one[r] - exact).abs() < 1e-4, "{cols}: {} vs {exact}", one[r]);
                }
            }
        }
    }

    #[test]
    fn stacking_keeps_rows_and_refuses_mixed_shapes() {
        let a = Matrix::quantized(Format::Q8_0, Bits::Sixteen, 2, 32, random_blocks(Format::Q8_0, 2, 32, 1)).unwrap();
        let b = Matrix::quantized(Format::Q8_0, Bits::Sixteen, 3, 32, random_blocks(Format::Q8_0, 3, 32, 2)).unwrap();
        let (da, db) = (dense(&a), dense(&b));
        let s = Matrix::stack(vec![a, b]).unwrap();
        assert_eq!(s.rows(), 5);
        assert_eq!(dense(&s), [da, db].concat());
        let c = Matrix::f32(1, 32, vec![0.0; 32]).unwrap();
        let d = Matrix::quantized(Format::Q8_0, Bits::Sixteen, 1, 32, random_blocks(Format::Q8_0, 1, 32, 3)).unwrap();
        assert!(Matrix::stack(vec![c, d]).is_err());
        assert!(Matrix::quantized(Format::Q4_1, Bits::Eight, 1, 33, vec![]).is_err());
        assert!(Matrix::quantized(Format::Q4_1, Bits::Eight, 1, 32, vec![0; 19]).is_err());
    }
}
