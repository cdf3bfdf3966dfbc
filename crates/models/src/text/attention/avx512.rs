//! One head of one text's attention on AVX-512, in registers: the scores of up to 8 queries
//! against 16 keys per vector, the softmax on those vectors, then the probabilities times the
//! values into 16-wide output vectors, written straight into the output rows.
//!
//! Through the general products each head cost a transposed-operand GEMM, a softmax pass, a
//! second GEMM, three allocations and a copy: ~5% of a MiniLM encode for 15-token texts.

use std::arch::x86_64::*;
use std::cell::RefCell;

use aiserve_core::math::{HI, LN2_HI, LN2_LO, LO, LOG2E, P};

/// Keys per vector of scores.
const KW: usize = 16;
/// Queries per tile of the score product.
const QR: usize = 8;
/// Scratch values a thread keeps between heads (4 MiB: texts of up to ~1000 tokens).
const KEEP: usize = 1 << 20;

/// Whether a head of `d` values runs here: whole vectors, at most eight of them.
pub fn fits(d: usize) -> bool {
    d.is_multiple_of(16) && (16..=128).contains(&d)
}

thread_local! {
    /// The keys transposed and the scores of the head being worked (reused: no allocation per
    /// head once a thread has seen its longest text).
    static SCRATCH: RefCell<Vec<f32>> = const { RefCell::new(Vec::new()) };
}

/// `dst[i * ld + c] = Σ_j softmax_j(scale · q_i · k_j) · v_j[c]` for the `len` queries of one
/// head: query `i`'s values at `rows[i * 3 * width + col..][..d]`, its key `width` and its
/// value `2 * width` further.
///
/// # Safety
/// AVX-512F must be available, [`fits`]`(d)`, `rows` must hold `len >= 1` rows of `3 * width`
/// with `col + d <= width`, and `dst` must point to `len` writable rows `ld` apart of `d` values.
#[allow(clippy::too_many_arguments)]
pub unsafe fn head(rows: &[f32], width: usize, col: usize, len: usize, d: usize, scale: f32, dst: *mut f32, ld: usize) {
    assert!(fits(d) && len >= 1 && col + d <= width && rows.len() >= len * 3 * width, "attention: head bounds");
    let f = match d / 16 {
        1 => head_in::<1, 8>,
        2 => head_in::<2, 8>,
        3 => head_in::<3, 4>,
        4 => head_in::<4, 4>,
        5 => head_in::<5, 2>,
        6 => head_in::<6, 2>,
        7 => head_in::<7, 2>,
        _ => head_in::<8, 2>,
    };
    SCRATCH.with_borrow_mut(|scratch| {
        let keys = len.next_multiple_of(KW);
        scratch.resize((d + len) * keys, 0.0);
        // SAFETY: the caller's contract and the assert above; `scratch` holds the transposed
        // keys (`d x keys`) and the scores (`len x keys`).
        unsafe { f(rows.as_ptr(), width, col, len, scale, scratch, dst, ld) };
        // A long text's scores (up to `len²` values: 256 MiB for 8192 tokens) are not kept
        // on the thread after its head.
        if scratch.capacity() > KEEP {
            *scratch = Vec::new();
        }
    });
}

/// [`head`] for heads of `V` vectors, the weighted values in tiles of `R` queries (`R · V` ≤ 16
/// accumulators).
///
/// # Safety
/// As [`head`], with `d = 16 V` and `scratch` holding `(d + len) · keys` values.
#[target_feature(enable = "avx512f")]
#[allow(clippy::too_many_arguments)]
unsafe fn head_in<const V: usize, const R: usize>(
    rows: *const f32,
    width: usize,
    col: usize,
    len: usize,
    scale: f32,
    scratch: &mut [f32],
    dst: *mut f32,
    ld: usize,
) {
    let d = V * 16;
    let stride = 3 * width;
    let chunks = len.div_ceil(KW);
    let keys = chunks * KW;
    let (kt, scores) = scratch.split_at_mut(d * keys);
    // SAFETY (whole body): every row index is clamped below `len` and every column below
    // `col + d <= width`, inside `rows` (the caller's contract); `kt` and `scores` are sized as
    // used; the output rows are the caller's contract.
    unsafe {
        // Keys transposed: `kt[t * keys + j] = k_j[t]`; columns past `len` are never used
        // unmasked.
        for j in 0..len {
            let k = rows.add(j * stride + width + col);
            for t in 0..d {
                *kt.get_unchecked_mut(t * keys + j) = *k.add(t);
            }
        }
        let last: __mmask16 = if len.is_multiple_of(KW) { u16::MAX } else { (1u16 << (len % KW)) - 1 };
        let mask = |c: usize| if c + 1 == chunks { last } else { u16::MAX };
        // Scores, `QR` queries by 16 keys a tile (queries past the text repeat its last one and
        // are not stored).
        let vscale = _mm512_set1_ps(scale);
        for i0 in (0..len).step_by(QR) {
            let q: [*const f32; QR] = std::array::from_fn(|r| rows.add((i0 + r).min(len - 1) * stride + col));
            for c in 0..chunks {
                let mut acc = [_mm512_setzero_ps(); QR];
                for t in 0..d {
                    let k = _mm512_loadu_ps(kt.as_ptr().add(t * keys + c * KW));
                    for (r, acc) in acc.iter_mut().enumerate() {
                        *acc = _mm512_fmadd_ps(_mm512_set1_ps(*q[r].add(t)), k, *acc);
                    }
                }
                for (r, acc) in acc.iter().enumerate().take(len - i0) {
                    _mm512_storeu_ps(scores.as_mut_ptr().add((i0 + r) * keys + c * KW), _mm512_mul_ps(*acc, vscale));
                }
            }
        }
        // Softmax of each query's row; lanes past the text become zeros.
        for i in 0..len {
            let row = scores.as_mut_ptr().add(i * keys);
            let mut top = _mm512_set1_ps(f32::NEG_INFINITY);
            for c in 0..chunks {
                top = _mm512_max_ps(
                    top,
                    _mm512_mask_loadu_ps(_mm512_set1_ps(f32::NEG_INFINITY), mask(c), row.add(c * KW)),
                );
            }
            let top = _mm512_set1_ps(_mm512_reduce_max_ps(top));
            let mut sum = _mm512_setzero_ps();
            for c in 0..chunks {
                let e = _mm512_maskz_mov_ps(mask(c), exp16(_mm512_sub_ps(_mm512_loadu_ps(row.add(c * KW)), top)));
                _mm512_storeu_ps(row.add(c * KW), e);
                sum = _mm512_add_ps(sum, e);
            }
            let inv = _mm512_set1_ps(1.0 / _mm512_reduce_add_ps(sum));
            for c in 0..chunks {
                _mm512_storeu_ps(row.add(c * KW), _mm512_mul_ps(_mm512_loadu_ps(row.add(c * KW)), inv));
            }
        }
        // Probabilities times values, `R` queries by `d` a tile.
        for i0 in (0..len).step_by(R) {
            let p: [*const f32; R] = std::array::from_fn(|r| scores.as_ptr().add((i0 + r).min(len - 1) * keys));
            let mut acc = [[_mm512_setzero_ps(); V]; R];
            for j in 0..len {
                let v = rows.add(j * stride + 2 * width + col);
                let vs: [__m512; V] = std::array::from_fn(|x| _mm512_loadu_ps(v.add(x * 16)));
                for (r, acc) in acc.iter_mut().enumerate() {
                    let pr = _mm512_set1_ps(*p[r].add(j));
                    for (acc, v) in acc.iter_mut().zip(&vs) {
                        *acc = _mm512_fmadd_ps(pr, *v, *acc);
                    }
                }
            }
            for (r, acc) in acc.iter().enumerate().take(len - i0) {
                for (x, v) in acc.iter().enumerate() {
                    _mm512_storeu_ps(dst.add((i0 + r) * ld + x * 16), *v);
                }
            }
        }
    }
}

/// [`aiserve_core::math::exp`] on 16 lanes: the same operations, so the same bits.
#[inline]
#[target_feature(enable = "avx512f")]
fn exp16(x: __m512) -> __m512 {
    let x = _mm512_min_ps(_mm512_max_ps(x, _mm512_set1_ps(LO)), _mm512_set1_ps(HI));
    let n = _mm512_roundscale_ps::<{ _MM_FROUND_TO_NEG_INF | _MM_FROUND_NO_EXC }>(_mm512_fmadd_ps(
        x,
        _mm512_set1_ps(LOG2E),
        _mm512_set1_ps(0.5),
    ));
    let r = _mm512_fmadd_ps(n, _mm512_set1_ps(-LN2_HI), x);
    let r = _mm512_fmadd_ps(n, _mm512_set1_ps(-LN2_LO), r);
    let mut p = _mm512_set1_ps(P[0]);
    for c in &P[1..] {
        p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(*c));
    }
    let y = _mm512_add_ps(_mm512_fmadd_ps(p, _mm512_mul_ps(r, r), r), _mm512_set1_ps(1.0));
    let biased = _mm512_castps_si512(_mm512_add_ps(n, _mm512_set1_ps(127.0 + 8_388_608.0)));
    _mm512_mul_ps(y, _mm512_castsi512_ps(_mm512_slli_epi32::<23>(biased)))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The vector `exp` gives the scalar one's bits over its whole range.
    #[test]
    fn exp16_gives_the_scalar_bits() {
        if !std::arch::is_x86_feature_detected!("avx512f") {
            eprintln!("no AVX-512 here: nothing to compare");
            return;
        }
        let xs: Vec<f32> = (0..20_000).map(|i| -95.0 + i as f32 * 0.0093).collect();
        for chunk in xs.chunks_exact(16) {
            let mut got = [0.0f32; 16];
            // SAFETY: AVX-512F is present (checked above); the load and store cover 16 values.
            unsafe { _mm512_storeu_ps(got.as_mut_ptr(), exp16(_mm512_loadu_ps(chunk.as_ptr()))) };
            for (x, g) in chunk.iter().zip(got) {
                assert_eq!(g.to_bits(), aiserve_core::math::exp(*x).to_bits(), "exp({x})");
            }
        }
    }
}
