//! A bounds-checked, row-major front for the `gemm` crate (the GEMM candle itself uses).
//!
//! `gemm` takes raw pointers and strides; this module checks that every index the product will
//! touch lies inside the slices before calling it, and picks rayon parallelism for products
//! large enough to pay for the fork/join.

use gemm::Parallelism;

/// A read-only matrix view with explicit strides (elements), so transposes are free.
#[derive(Clone, Copy)]
pub struct MatRef<'a> {
    pub data: &'a [f32],
    pub rows: usize,
    pub cols: usize,
    pub row_stride: usize,
    pub col_stride: usize,
}

impl<'a> MatRef<'a> {
    /// A dense row-major `rows x cols` matrix.
    pub fn row_major(data: &'a [f32], rows: usize, cols: usize) -> Self {
        Self { data, rows, cols, row_stride: cols, col_stride: 1 }
    }

    /// The transpose view (no copy).
    pub fn t(self) -> Self {
        Self { rows: self.cols, cols: self.rows, row_stride: self.col_stride, col_stride: self.row_stride, ..self }
    }

    fn check(&self, what: &str) {
        if self.rows > 0 && self.cols > 0 {
            let last = (self.rows - 1) * self.row_stride + (self.cols - 1) * self.col_stride;
            assert!(last < self.data.len(), "{what}: view exceeds its buffer");
        }
    }
}

/// Products below this many multiply-adds run on the calling thread.
const PARALLEL_MIN_MACS: usize = 1 << 18;

/// `out = a · b` (or `out += a · b` when `accumulate`); `out` is dense row-major `a.rows x b.cols`.
pub fn matmul(a: MatRef<'_>, b: MatRef<'_>, out: &mut [f32], accumulate: bool) {
    assert_eq!(out.len(), a.rows * b.cols, "matmul: output has the wrong size");
    product(a, b, out, (b.cols, 1), accumulate);
}

/// Like [`matmul`] with the output element `(i, j)` at `out[i * strides.0 + j * strides.1]`
/// (so a transposed output costs nothing).
pub fn matmul_strided(a: MatRef<'_>, b: MatRef<'_>, out: &mut [f32], strides: (usize, usize), accumulate: bool) {
    product(a, b, out, strides, accumulate);
}

fn product(a: MatRef<'_>, b: MatRef<'_>, out: &mut [f32], strides: (usize, usize), accumulate: bool) {
    let (m, k, n) = (a.rows, a.cols, b.cols);
    let (out_rs, out_cs) = strides;
    assert_eq!(b.rows, k, "matmul: inner dimensions differ");
    if m > 0 && n > 0 {
        assert!((m - 1) * out_rs + (n - 1) * out_cs < out.len(), "matmul: output view exceeds its buffer");
    }
    a.check("matmul lhs");
    b.check("matmul rhs");
    if m == 0 || n == 0 {
        return;
    }
    if k == 0 {
        if !accumulate {
            for i in 0..m {
                (0..n).for_each(|j| out[i * out_rs + j * out_cs] = 0.0);
            }
        }
        return;
    }
    let parallelism =
        if m * n * k >= PARALLEL_MIN_MACS && !super::nested() { Parallelism::Rayon(0) } else { Parallelism::None };
    // SAFETY: every index gemm reads or writes was checked to lie inside its slice above:
    // lhs (m x k) and rhs (k x n) by `check`, dst (m x n with its strides) by the view assert.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            out.as_mut_ptr(),
            out_cs as isize,
            out_rs as isize,
            accumulate,
            a.data.as_ptr(),
            a.col_stride as isize,
            a.row_stride as isize,
            b.data.as_ptr(),
            b.col_stride as isize,
            b.row_stride as isize,
            1.0,
            1.0,
            false,
            false,
            false,
            parallelism,
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn naive(a: MatRef<'_>, b: MatRef<'_>) -> Vec<f32> {
        let mut out = vec![0.0; a.rows * b.cols];
        for i in 0..a.rows {
            for j in 0..b.cols {
                for p in 0..a.cols {
                    out[i * b.cols + j] +=
                        a.data[i * a.row_stride + p * a.col_stride] * b.data[p * b.row_stride + j * b.col_stride];
                }
            }
        }
        out
    }

    #[test]
    fn matches_naive_with_transposes_and_accumulate() {
        let a: Vec<f32> = (0..7 * 5).map(|i| (i as f32 * 0.37).sin()).collect();
        let b: Vec<f32> = (0..5 * 3).map(|i| (i as f32 * 0.11).cos()).collect();
        let am = MatRef::row_major(&a, 7, 5);
        let bm = MatRef::row_major(&b, 5, 3);
        let mut out = vec![0.0; 21];
        matmul(am, bm, &mut out, false);
        let want = naive(am, bm);
        assert!(out.iter().zip(&want).all(|(x, y)| (x - y).abs() < 1e-5));
        matmul(am, bm, &mut out, true);
        assert!(out.iter().zip(&want).all(|(x, y)| (x - 2.0 * y).abs() < 1e-5));
        // (aᵀ)ᵀ · b through two transposed views of a 5x7 buffer
        let at: Vec<f32> = (0..5).flat_map(|p| (0..7).map(move |i| (p, i))).map(|(p, i)| a[i * 5 + p]).collect();
        let atm = MatRef::row_major(&at, 5, 7).t();
        matmul(atm, bm, &mut out, false);
        assert!(out.iter().zip(&want).all(|(x, y)| (x - y).abs() < 1e-5));
    }

    #[test]
    #[should_panic(expected = "exceeds")]
    fn refuses_out_of_bounds_views() {
        let a = vec![0.0; 5];
        let mut out = vec![0.0; 4];
        matmul(MatRef::row_major(&a, 2, 3), MatRef::row_major(&a, 3, 2), &mut out, false);
    }
}
