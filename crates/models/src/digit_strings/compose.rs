//! Pictures of digit strings composed from real MNIST digits, deterministically from a seed:
//! each string draws a length, its digits (pictures from a range of a split, so training,
//! validation and test strings never share a picture), one spacing between neighbours (18 to 22
//! pixels, as handwriting varies; neighbouring 28-pixel boxes overlap, their ink rarely does)
//! and where the row starts on the [`WIDTH`]-wide canvas. Overlapping pixels take the brighter.
//! Each string is then laid out as every picture the reader sees is ([`fit_writing`]: its ink
//! scaled to the canvas height less [`MARGIN`] above and below, from the left margin), so
//! training and `/classify`'s uploads meet the network in the same layout.

use std::ops::{Range, RangeInclusive};

use rand::{Rng, SeedableRng};

use aiserve_vision::ink::fit_writing;
use aiserve_vision::picture::Picture;

use super::{HEIGHT, MARGIN, MAX_DIGITS, WIDTH};
use crate::mnist::Split;

/// Narrowest and widest spacing between neighbouring digits' boxes.
const GAP: RangeInclusive<usize> = 18..=22;
/// A digit's box.
const SIDE: usize = 28;

/// Composed strings: `images` `[len, HEIGHT, WIDTH]` bytes, and each string's digits.
#[derive(Clone, Debug, PartialEq)]
pub struct Strings {
    pub images: Vec<u8>,
    pub digits: Vec<Vec<u8>>,
}

impl Strings {
    pub const IMAGE_LEN: usize = HEIGHT * WIDTH;

    pub fn len(&self) -> usize {
        self.digits.len()
    }

    pub fn is_empty(&self) -> bool {
        self.digits.is_empty()
    }

    pub fn image(&self, i: usize) -> &[u8] {
        &self.images[i * Self::IMAGE_LEN..(i + 1) * Self::IMAGE_LEN]
    }

    /// The strings whose length is in `lengths`.
    pub fn with_lengths(&self, lengths: RangeInclusive<usize>) -> Strings {
        let keep: Vec<usize> = (0..self.len()).filter(|&i| lengths.contains(&self.digits[i].len())).collect();
        Strings {
            images: keep.iter().flat_map(|&i| self.image(i).iter().copied()).collect(),
            digits: keep.iter().map(|&i| self.digits[i].clone()).collect(),
        }
    }
}

/// `count` strings of `lengths` digits drawn from `split`'s pictures `pool`, laid out by
/// [`fit_writing`].
pub fn compose(
    split: &Split,
    pool: Range<usize>,
    count: usize,
    lengths: RangeInclusive<usize>,
    seed: u64,
) -> Result<Strings, String> {
    let mut strings = compose_raw(split, pool, count, lengths, seed)?;
    for canvas in strings.images.chunks_exact_mut(Strings::IMAGE_LEN) {
        let raw = Picture { pixels: canvas.to_vec(), height: HEIGHT, width: WIDTH, channels: 1 };
        if let Some(fitted) = fit_writing(&raw, HEIGHT, WIDTH, MARGIN) {
            canvas.copy_from_slice(&fitted);
        }
    }
    Ok(strings)
}

/// The strings as placed on the canvas, before the layout.
fn compose_raw(
    split: &Split,
    pool: Range<usize>,
    count: usize,
    lengths: RangeInclusive<usize>,
    seed: u64,
) -> Result<Strings, String> {
    if (split.rows, split.cols, split.channels) != (SIDE, SIDE, 1) {
        return Err(format!(
            "digit strings are composed of 28x28 grey digits, got {}x{}x{}",
            split.rows, split.cols, split.channels
        ));
    }
    if pool.is_empty() || pool.end > split.len() {
        return Err(format!("the pictures {pool:?} are not within the split's {}", split.len()));
    }
    if lengths.is_empty() || *lengths.start() == 0 || *lengths.end() > MAX_DIGITS {
        return Err(format!("string lengths must be within 1..={MAX_DIGITS}, got {lengths:?}"));
    }
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    let mut images = vec![0u8; count * Strings::IMAGE_LEN];
    let mut digits = Vec::with_capacity(count);
    let len = split.image_len();
    for canvas in images.chunks_exact_mut(Strings::IMAGE_LEN) {
        let n = rng.random_range(lengths.clone());
        let widest = if n > 1 { ((WIDTH - SIDE) / (n - 1)).min(*GAP.end()) } else { *GAP.end() };
        let gap = rng.random_range(*GAP.start()..=widest);
        let span = SIDE + (n - 1) * gap;
        let x0 = rng.random_range(0..=WIDTH - span);
        let mut string = Vec::with_capacity(n);
        for k in 0..n {
            let pick = rng.random_range(pool.clone());
            string.push(split.labels[pick]);
            let digit = &split.images[pick * len..(pick + 1) * len];
            let left = x0 + k * gap;
            for r in 0..SIDE {
                let row = &mut canvas[r * WIDTH + left..r * WIDTH + left + SIDE];
                for (dst, &src) in row.iter_mut().zip(&digit[r * SIDE..(r + 1) * SIDE]) {
                    *dst = (*dst).max(src);
                }
            }
        }
        digits.push(string);
    }
    Ok(Strings { images, digits })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Ten "digits", each a 28x28 box lit in one column band so its place can be found.
    fn digits() -> Split {
        let mut images = vec![0u8; 10 * 784];
        for d in 0..10 {
            for r in 4..24 {
                for c in 12..16 {
                    images[d * 784 + r * 28 + c] = 10 + d as u8 * 20;
                }
            }
        }
        Split { images, labels: (0..10).collect(), rows: 28, cols: 28, channels: 1 }
    }

    #[test]
    fn strings_hold_their_digits_in_order_within_the_canvas() {
        let split = digits();
        let s = compose_raw(&split, 0..10, 200, 1..=6, 9).unwrap();
        assert_eq!(s.len(), 200);
        for i in 0..s.len() {
            let want = &s.digits[i];
            assert!((1..=6).contains(&want.len()));
            // Reading the lit columns left to right gives the digits back.
            let img = s.image(i);
            let mut seen = Vec::new();
            let mut c = 0;
            while c < WIDTH {
                let v = img[10 * WIDTH + c];
                if v > 0 {
                    seen.push((v - 10) / 20);
                    c += 4;
                } else {
                    c += 1;
                }
            }
            assert_eq!(&seen, want, "string {i}");
        }
        let lengths: std::collections::BTreeSet<usize> = s.digits.iter().map(Vec::len).collect();
        assert_eq!(lengths.len(), 6, "every length occurs");
        assert_eq!(s, compose_raw(&split, 0..10, 200, 1..=6, 9).unwrap(), "deterministic");
        assert_ne!(s, compose_raw(&split, 0..10, 200, 1..=6, 10).unwrap());
        // Laid out: the same strings, each as `fit_writing` lays it out, ink from the margin.
        let fitted = compose(&split, 0..10, 200, 1..=6, 9).unwrap();
        assert_eq!(fitted.digits, s.digits);
        let raw = Picture { pixels: s.image(7).to_vec(), height: HEIGHT, width: WIDTH, channels: 1 };
        assert_eq!(fitted.image(7), &fit_writing(&raw, HEIGHT, WIDTH, MARGIN).unwrap()[..]);
        let first_column = (0..WIDTH).find(|&c| (0..HEIGHT).any(|r| fitted.image(7)[r * WIDTH + c] > 0)).unwrap();
        assert!((MARGIN..=MARGIN + 1).contains(&first_column), "{first_column}");
        let short = s.with_lengths(1..=2);
        assert!(short.digits.iter().all(|d| d.len() <= 2) && !short.is_empty());
        assert_eq!(short.images.len(), short.len() * Strings::IMAGE_LEN);
    }

    #[test]
    fn pools_keep_pictures_apart_and_bad_requests_are_refused() {
        let split = digits();
        let s = compose(&split, 3..5, 50, 1..=3, 1).unwrap();
        assert!(s.digits.iter().flatten().all(|&d| d == 3 || d == 4));
        assert!(compose(&split, 0..11, 1, 1..=2, 0).unwrap_err().contains("not within"));
        assert!(compose(&split, 0..10, 1, 0..=2, 0).unwrap_err().contains("1..=6"));
        assert!(compose(&split, 0..10, 1, 1..=7, 0).unwrap_err().contains("1..=6"));
    }
}
