//! `out += x · wᵀ` against a linear layer's weight packed once at load: the encoder's products.
//!
//! The weight (`n x k`, PyTorch's `[out_features, in_features]`) is stored as panels of
//! [`NR`] output features, each `k x NR` with the features side by side, so the product's inner
//! loop reads one contiguous row of the panel per step and multiplies it into [`MR`] (or
//! [`MR_WIDE`]) rows of `x` at once, each `x` value broadcast straight from its row (no
//! horizontal sums, no per-call packing of either side). This is the register tile of a
//! BLIS/MLAS SGEMM (6 x 16 with AVX2 and FMA: 12 accumulators; 12 x 32, two panels side by
//! side, with AVX-512: 24 accumulators of twice the width), with the weight side packed ahead
//! of time as ONNX Runtime does for its initialisers. Each output value is the same chain of
//! multiply-adds in either, so the bits are the same; `AISERVE_NO_AVX512=1` keeps to AVX2.
//!
//! Loops, per thread of the [`super::team`] (threads take contiguous ranges of panels, so each
//! writes its own output columns): `k` in blocks of [`KC`] (for an encoder, all of it: each
//! output is written once), rows in blocks of [`MC`] (the `x` block stays in L2 across the
//! panels; a tile's panel block comes from L2, prefetched, and stays in L1 for the block's
//! row tiles), then register tiles. A text of 14 tokens is one row block: the weight is read
//! exactly once.
//! Without AVX2/FMA the same loops run plain arithmetic.

use super::{avx512, nested, SendPtr};

/// Output features per panel (two 8-wide vectors).
pub const NR: usize = 16;
/// Rows of `x` (pixels of an output row) per register tile without AVX-512.
pub const MR: usize = 6;
/// Rows per register tile with AVX-512 (its 32 registers hold 12 x 2 accumulators): each
/// weight value loaded feeds twice the multiply-adds of a 6-row tile, and a single text's 15
/// tokens stream each panel from memory once (12 + 3 rows) instead of 6 + 6 + 3. Measured
/// against 6 rows: MiniLM one sentence 3.6 -> 3.1 ms, batch 32 +5-8%; digits CNN +4-5%.
pub const MR_WIDE: usize = 12;
/// Inner-dimension block. Measured at batch 32 on MiniLM's products against 256 (one panel
/// block in L1, but the outputs read and written once per block): 1536 gave +2-4% on one
/// thread and +6-15% on two, AVX2 and AVX-512 alike; a tile's `KC x 32` block then sits in
/// L2 (192 KiB) and streams into L1 ahead of the steps.
const KC: usize = 1536;
/// Rows per L2 block of `x` (`MC x KC` is 720 KiB at most).
const MC: usize = 120;
/// Products below this many multiply-adds run on the calling thread.
const PARALLEL_MIN_MACS: usize = 1 << 18;

/// Rows of `x` (or pixels of an output row) one register tile covers.
fn rows_per_tile() -> usize {
    if avx512() {
        MR_WIDE
    } else {
        MR
    }
}

/// The `R`-row instance (`R` = `rows`, 1 to [`MR_WIDE`]) of a `P`-panel AVX-512 tile kernel.
#[cfg(target_arch = "x86_64")]
macro_rules! by_wide_rows {
    ($($f:ident)::+, $rows:expr, $p:literal) => {
        match $rows {
            1 => $($f)::+::<1, $p>,
            2 => $($f)::+::<2, $p>,
            3 => $($f)::+::<3, $p>,
            4 => $($f)::+::<4, $p>,
            5 => $($f)::+::<5, $p>,
            6 => $($f)::+::<6, $p>,
            7 => $($f)::+::<7, $p>,
            8 => $($f)::+::<8, $p>,
            9 => $($f)::+::<9, $p>,
            10 => $($f)::+::<10, $p>,
            11 => $($f)::+::<11, $p>,
            _ => $($f)::+::<12, $p>,
        }
    };
}

/// Panels one register tile covers: two with AVX-512 (32 output features), else one.
fn panels_per_tile() -> usize {
    if avx512() {
        2
    } else {
        1
    }
}

/// What a convolution's register tiles do with their sums (see [`PackedLinear::conv_image`]).
#[derive(Clone, Copy, Debug)]
pub enum Epilogue<'a> {
    /// `out += sums` (`out` holds earlier sums).
    Add,
    /// `out = sums` (nothing to clear first).
    Store,
    /// `out = max(sums + bias, 0)`, one bias value per output channel (no pass of its own).
    BiasRelu(&'a [f32]),
}

/// The activation a product's register tiles apply as they write (see
/// [`PackedLinear::matmul_bias`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Act {
    Identity,
    Relu,
    /// BERT's `gelu` ([`aiserve_core::math::gelu_erf`], the same bits as a pass of its own).
    GeluErf,
}

impl Act {
    fn apply(self, v: f32) -> f32 {
        match self {
            Act::Identity => v,
            Act::Relu => v.max(0.0),
            Act::GeluErf => aiserve_core::math::gelu_erf(v),
        }
    }
}

/// What a tile's sums are added to.
#[derive(Clone, Copy)]
enum Start {
    /// What `out` holds.
    Old,
    /// Nothing (`out` is overwritten).
    Zero,
    /// A bias, one value per column from the tile's first column on.
    Bias(*const f32),
}

/// How one register tile writes its sums: `out = act(start + sums)`.
#[derive(Clone, Copy)]
struct Epi {
    start: Start,
    act: Act,
}

impl Epi {
    const ADD: Self = Self { start: Start::Old, act: Act::Identity };

    /// The value column `c` of a tile gets from its sum `sum` where the output held `old`.
    ///
    /// # Safety
    /// A bias pointer must hold at least `c + 1` values.
    #[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
    unsafe fn apply(self, old: f32, sum: f32, c: usize) -> f32 {
        let v = match self.start {
            Start::Old => old + sum,
            Start::Zero => sum,
            // SAFETY: the caller's contract.
            Start::Bias(b) => sum + unsafe { *b.add(c) },
        };
        self.act.apply(v)
    }
}

/// A linear layer's weight in panels (see the module docs).
#[derive(Clone)]
pub struct PackedLinear {
    n: usize,
    k: usize,
    /// `ceil(n / NR)` panels of `k x NR` values; the last panel's missing features are zeros.
    panels: Vec<f32>,
}

impl std::fmt::Debug for PackedLinear {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "PackedLinear({} x {})", self.n, self.k)
    }
}

impl PackedLinear {
    pub fn n(&self) -> usize {
        self.n
    }

    pub fn k(&self) -> usize {
        self.k
    }

    /// Packs `w` (`n x k`, row-major).
    pub fn new(w: &[f32], n: usize, k: usize) -> Self {
        assert_eq!(w.len(), n * k, "packed: weight is not n x k");
        let count = n.div_ceil(NR);
        let mut panels = vec![0.0f32; count * k * NR];
        for (j, row) in w.chunks_exact(k.max(1)).enumerate().take(n) {
            let (panel, col) = (j / NR, j % NR);
            let base = panel * k * NR;
            for (p, &v) in row.iter().enumerate() {
                panels[base + p * NR + col] = v;
            }
        }
        Self { n, k, panels }
    }

    /// `out (m x n) += x (m x k) · wᵀ`.
    pub fn matmul_acc(&self, x: &[f32], out: &mut [f32]) {
        self.matmul_with(x, None, Act::Identity, out);
    }

    /// `out (m x n) = act(x (m x k) · wᵀ + bias)`, whatever `out` held: the register tiles
    /// start from the bias and apply the activation as they write, so neither takes a pass of
    /// its own over `out` (a bias fill and a GELU pass were 4–5% of a MiniLM encode).
    pub fn matmul_bias(&self, x: &[f32], bias: &[f32], act: Act, out: &mut [f32]) {
        assert_eq!(bias.len(), self.n, "packed: one bias value per output feature");
        self.matmul_with(x, Some(bias), act, out);
    }

    /// `out = act(start + x · wᵀ)`, `start` the bias or (without one) what `out` holds.
    fn matmul_with(&self, x: &[f32], bias: Option<&[f32]>, act: Act, out: &mut [f32]) {
        let (n, k) = (self.n, self.k);
        if n == 0 {
            return;
        }
        if k == 0 {
            // No products: each row is `act(start)`.
            for row in out.chunks_exact_mut(n) {
                for (c, v) in row.iter_mut().enumerate() {
                    *v = act.apply(bias.map_or(*v, |b| b[c]));
                }
            }
            return;
        }
        let m = x.len() / k;
        assert_eq!(x.len(), m * k, "packed: x is not m x k");
        assert_eq!(out.len(), m * n, "packed: out is not m x n");
        let panels = n.div_ceil(NR);
        let threads = if m * n * k >= PARALLEL_MIN_MACS && !nested() { rayon::current_num_threads() } else { 1 };
        let tasks = threads.min(panels).max(1);
        let len = out.len();
        let out_ptr = SendPtr(out.as_mut_ptr());
        let step = panels_per_tile();
        let run = |t: usize| {
            // Tasks start on a whole tile's panels.
            let edge = |t: usize| (panels * t / tasks).next_multiple_of(step).min(panels);
            let (from, to) = (edge(t), edge(t + 1));
            // SAFETY: task `t` writes only the output columns of panels `from..to`, which no
            // other task writes; every index stays below `m * n` (checked above), and `out` is
            // not otherwise used until every task has finished.
            unsafe { self.panels_range(x, m, (from, to), (bias, act), out_ptr.get(), len) };
        };
        if tasks == 1 {
            run(0);
        } else {
            super::team::run(tasks, &run);
        }
    }

    /// A whole picture's convolution as an implicit GEMM, read straight from the picture (no
    /// patch matrix): `out[(y * ow + x) * n + o] (+)= Σ w[o][(ky * kw + kx) * c + ci] ·
    /// img[((y + ky) * width + x + kx) * c + ci]` for every output pixel, with this weight packed
    /// from the kernel as `n x (kh * kw * c)` (output channels by taps). `img` is one NHWC
    /// picture `width` wide (`ow` may be less than `width + 1 - kw`: the columns past it are
    /// not computed); `out` holds its `oh x ow` output pixels of `n` channels. A register tile
    /// takes up to [`MR`] ([`MR_WIDE`] with AVX-512) output pixels in reading order, across row
    /// ends; `epi` says how its sums reach `out`.
    #[allow(clippy::too_many_arguments)]
    pub fn conv_image(
        &self,
        img: &[f32],
        width: usize,
        c: usize,
        kh: usize,
        kw: usize,
        ow: usize,
        out: &mut [f32],
        epi: Epilogue<'_>,
    ) {
        let n = self.n;
        if let Epilogue::BiasRelu(b) = epi {
            assert_eq!(b.len(), n, "packed: one bias value per output channel");
        }
        assert_eq!(self.k, kh * kw * c, "packed: kernel taps do not match the weight");
        assert!(n > 0 && ow > 0 && out.len().is_multiple_of(n * ow), "packed: the output is not whole rows of pixels");
        let oh = out.len() / (n * ow);
        // The last value any tile reads: the bottom-right tap of the last pixel.
        let last = ((oh - 1 + kh - 1) * width + ow - 1 + kw - 1) * c + c - 1;
        assert!(kw - 1 + ow <= width && last < img.len(), "packed: the convolution reads past the picture");
        let (panels, step, mr) = (n.div_ceil(NR), panels_per_tile(), rows_per_tile());
        // Panels outermost: a tile's panel block (`k x 32` values) stays in L1 for every row of
        // the picture instead of alternating with the other panels' blocks (7% of the digits
        // CNN's forward pass).
        for panel in (0..panels).step_by(step) {
            let count = step.min(panels - panel);
            let b = &self.panels[panel * self.k * NR..(panel + count) * self.k * NR];
            let cols = (count * NR).min(n - panel * NR);
            let tile_epi = match epi {
                Epilogue::Add => Epi::ADD,
                Epilogue::Store => Epi { start: Start::Zero, act: Act::Identity },
                // `cols` values from the panel's first column (the length was asserted).
                Epilogue::BiasRelu(b) => Epi { start: Start::Bias(b[panel * NR..].as_ptr()), act: Act::Relu },
            };
            // Tiles take the output pixels in reading order, across the ends of rows: a
            // 3 x 3 output (the digits CNN's last convolution) is one 9-pixel tile, not three
            // 3-pixel ones that each stream the panel block and keep too few sums to hide the
            // multiply-adds' latency; a 26-pixel row no longer ends in a 2-pixel tile. The
            // pixels are spread evenly over the fewest tiles (100 pixels: 11 or 12 per tile, not
            // eight 12s and a latency-bound 4).
            let pixels = oh * ow;
            let tiles = pixels.div_ceil(mr);
            let (mut y, mut x, mut q0) = (0, 0, 0);
            for t in 0..tiles {
                let rows = pixels / tiles + usize::from(t < pixels % tiles);
                // The tile's pixels in runs along output rows (plain arithmetic per run: this is
                // per-tile work, and the first layer's tiles are only nine steps long).
                let mut offs = [0usize; MR_WIDE];
                let mut r = 0;
                while r < rows {
                    let run = (rows - r).min(ow - x);
                    let mut at = (y * width + x) * c;
                    for o in &mut offs[r..r + run] {
                        *o = at;
                        at += c;
                    }
                    (r, x) = (r + run, x + run);
                    if x == ow {
                        (y, x) = (y + 1, 0);
                    }
                }
                // SAFETY: every pixel's taps end at or before `last` (asserted, and checked
                // again in the tile), and the tile writes `rows` pixels of `cols` channels
                // inside `out`.
                unsafe {
                    conv_tile(
                        img,
                        &offs[..rows],
                        width,
                        c,
                        kh,
                        kw,
                        b,
                        out.as_mut_ptr().add(q0 * n + panel * NR),
                        n,
                        cols,
                        tile_epi,
                    )
                };
                q0 += rows;
            }
        }
    }

    /// Panels `from..to` of the product into `out` (`m x n`, `len` values): the first `k`
    /// block starts from `bias` (or `out`), the last applies `act`.
    ///
    /// # Safety
    /// `out` must point to `len == m * n` writable values that no one else writes in the columns
    /// of these panels during the call; a bias must hold `n` values.
    unsafe fn panels_range(
        &self,
        x: &[f32],
        m: usize,
        (from, to): (usize, usize),
        (bias, act): (Option<&[f32]>, Act),
        out: *mut f32,
        len: usize,
    ) {
        let (n, k) = (self.n, self.k);
        let step = panels_per_tile();
        debug_assert_eq!(len, m * n);
        // A few rows (one text) meet each weight value once: reading the weight in one
        // sequential sweep (no `k` blocks) lets the prefetcher stream it from memory; more rows
        // reuse each panel block, so a very long `k` is blocked.
        let kc_block = if m <= MC { k } else { KC };
        let mr = rows_per_tile();
        // The tiles read `x` where it lies: each step broadcasts one value from each of a tile's
        // rows (as MLAS's kernels do), so nothing is copied per call (a per-thread copy of `x`
        // into tile strips cost 6% of an encode on one thread and 11% on two).
        for pc in (0..k).step_by(kc_block) {
            let kc = kc_block.min(k - pc);
            for ic in (0..m).step_by(MC) {
                let mc = MC.min(m - ic);
                for panel in (from..to).step_by(step) {
                    let count = step.min(to - panel);
                    // The block `pc..pc + kc` of each of the tile's panels.
                    let b = |i: usize| {
                        let base = (panel + i) * k * NR;
                        &self.panels[base + pc * NR..base + (pc + kc) * NR]
                    };
                    let cols = (count * NR).min(n - panel * NR);
                    let epi = Epi {
                        start: match bias {
                            // `cols` values from the panel's first column (`bias` holds `n`).
                            Some(b) if pc == 0 => Start::Bias(b[panel * NR..].as_ptr()),
                            _ => Start::Old,
                        },
                        act: if pc + kc == k { act } else { Act::Identity },
                    };
                    for ir in (ic..ic + mc).step_by(mr) {
                        let rows = mr.min(ic + mc - ir);
                        let at = ir * n + panel * NR;
                        assert!(at + (rows - 1) * n + cols <= len, "packed: output tile bounds");
                        let a = &x[ir * k + pc..(ir + rows - 1) * k + pc + kc];
                        // SAFETY: the tile's rows and columns lie inside `out` (asserted) and in
                        // this task's columns.
                        unsafe { tile_product(a, k, rows, [b(0), b(count - 1)], kc, out.add(at), n, cols, epi) };
                    }
                }
            }
        }
    }
}

/// `out[r * ldc + c] (+)= Σ_p a[r * lda + p] · b[c / NR][p * NR + c % NR]` for `r < rows`,
/// `p < kc`, `c < cols` (`a` holds `rows` rows of `x`, `lda` apart; `b` one or, past [`NR`]
/// columns, two panel blocks of `kc x NR`), written as `epi` says.
///
/// # Safety
/// `out` must point to a writable tile of `rows` rows `ldc` apart, each with `cols` values,
/// and a bias in `epi` to `cols` values.
#[allow(clippy::too_many_arguments)]
unsafe fn tile_product(
    a: &[f32],
    lda: usize,
    rows: usize,
    b: [&[f32]; 2],
    kc: usize,
    out: *mut f32,
    ldc: usize,
    cols: usize,
    epi: Epi,
) {
    let panels = cols.div_ceil(NR);
    assert!(
        (1..=rows_per_tile()).contains(&rows)
            && (1..=2 * NR).contains(&cols)
            && b.iter().all(|b| b.len() >= kc * NR)
            && a.len() >= (rows - 1) * lda + kc,
        "packed: tile bounds"
    );
    #[cfg(target_arch = "x86_64")]
    if avx512() {
        let f = if panels == 2 { by_wide_rows!(avx512::tile, rows, 2) } else { by_wide_rows!(avx512::tile, rows, 1) };
        // SAFETY: the CPU has AVX-512F (checked once in `avx512`); `a` and `b` bounds were
        // asserted, `out` is the caller's contract.
        unsafe { f(a.as_ptr(), lda, [b[0].as_ptr(), b[1].as_ptr()], kc, out, ldc, cols, epi) };
        return;
    }
    assert_eq!(panels, 1, "packed: two panels per tile without AVX-512");
    let b = b[0];
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma") {
        let f = match rows {
            1 => avx2::tile::<1>,
            2 => avx2::tile::<2>,
            3 => avx2::tile::<3>,
            4 => avx2::tile::<4>,
            5 => avx2::tile::<5>,
            _ => avx2::tile::<6>,
        };
        // SAFETY: the CPU has AVX2 and FMA (checked above); `a` and `b` bounds were asserted,
        // `out` is the caller's contract.
        unsafe { f(a.as_ptr(), lda, b, kc, out, ldc, cols, epi) };
        return;
    }
    for r in 0..rows {
        for c in 0..cols {
            let v: f32 = (0..kc).map(|p| a[r * lda + p] * b[p * NR + c]).sum();
            // SAFETY: the caller's contract (on `out` and the bias).
            unsafe { *out.add(r * ldc + c) = epi.apply(*out.add(r * ldc + c), v, c) };
        }
    }
}

/// `out[r * ldc + j] (+)= Σ_{ky,kx,ci} a[offs[r] + (ky * width + kx) * c + ci] · b[(j / NR) * k *
/// NR + ((ky * kw + kx) * c + ci) * NR + j % NR]` for `r < offs.len()`, `j < cols`, with `k = kh
/// * kw * c`: a register tile of [`PackedLinear::conv_image`] over one panel, or two (AVX-512)
/// past [`NR`] columns, `offs[r]` where pixel `r`'s top-left tap lies in the picture `a`, its
/// sums written as `epi` says.
///
/// # Safety
/// `offs` must be ascending; `out` must point to a writable tile of `offs.len()` rows `ldc`
/// apart, each with `cols` values, and a bias in `epi` to `cols` values.
#[allow(clippy::too_many_arguments)]
unsafe fn conv_tile(
    a: &[f32],
    offs: &[usize],
    width: usize,
    c: usize,
    kh: usize,
    kw: usize,
    b: &[f32],
    out: *mut f32,
    ldc: usize,
    cols: usize,
    epi: Epi,
) {
    let (k, rows) = (kh * kw * c, offs.len());
    let panels = cols.div_ceil(NR);
    assert!(
        (1..=rows_per_tile()).contains(&rows) && cols <= 2 * NR && b.len() >= panels * k * NR,
        "packed: conv tile bounds"
    );
    // Ascending offsets (the contract): the last pixel's taps end last.
    debug_assert!(offs.is_sorted());
    let span = ((kh - 1) * width + kw - 1) * c + c;
    assert!(offs[rows - 1] + span <= a.len(), "packed: conv tile reads past the picture");
    #[cfg(target_arch = "x86_64")]
    if avx512() {
        let f = if panels == 2 {
            by_wide_rows!(avx512::conv_tile, rows, 2)
        } else {
            by_wide_rows!(avx512::conv_tile, rows, 1)
        };
        // SAFETY: AVX-512F is present; the reads of `a` and `b` were bounded above (the second
        // panel starts `k * NR` after the first), `out` is the caller's contract.
        unsafe {
            f(a, offs, width, c, kh, kw, [b.as_ptr(), b.as_ptr().add((panels - 1) * k * NR)], out, ldc, cols, epi)
        };
        return;
    }
    assert_eq!(panels, 1, "packed: two panels per tile without AVX-512");
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma") {
        let f = match rows {
            1 => avx2::conv_tile::<1>,
            2 => avx2::conv_tile::<2>,
            3 => avx2::conv_tile::<3>,
            4 => avx2::conv_tile::<4>,
            5 => avx2::conv_tile::<5>,
            _ => avx2::conv_tile::<6>,
        };
        // SAFETY: AVX2 and FMA are present; the reads of `a` and `b` were bounded above, `out`
        // is the caller's contract.
        unsafe { f(a, offs, width, c, kh, kw, b, out, ldc, cols, epi) };
        return;
    }
    for (r, &o) in offs.iter().enumerate() {
        for j in 0..cols {
            let mut v = 0.0f32;
            for ky in 0..kh {
                for kx in 0..kw {
                    for ci in 0..c {
                        v += a[o + (ky * width + kx) * c + ci] * b[((ky * kw + kx) * c + ci) * NR + j];
                    }
                }
            }
            // SAFETY: the caller's contract (on `out` and the bias).
            unsafe { *out.add(r * ldc + j) = epi.apply(*out.add(r * ldc + j), v, j) };
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod avx2;

#[cfg(target_arch = "x86_64")]
mod avx512;

#[cfg(test)]
mod tests;
