//! Network inputs from pictures, as PP-OCR's reference pipeline prepares them (so a network sees
//! the same numbers here as there): the detector's input size, planes normalised per channel,
//! and text lines resized to a fixed height, normalised and padded to a common width.

use crate::crop::Picture;
use crate::resize::resize_linear;

/// The size a picture is resized to for the detector: scaled up so its short side reaches
/// `limit_side_len` (never down), then each side rounded to a multiple of 32 (halves to even);
/// `None` when a side would round to zero.
pub fn det_size(height: usize, width: usize, limit_side_len: usize) -> Option<(usize, usize)> {
    let short = height.min(width);
    let ratio = if short < limit_side_len && short > 0 { limit_side_len as f64 / short as f64 } else { 1.0 };
    let side = |n: usize| (((n as f64 * ratio).trunc() / 32.0).round_ties_even() * 32.0) as usize;
    let (h, w) = (side(height), side(width));
    (h > 0 && w > 0).then_some((h, w))
}

/// `p` as `[channels, height, width]` planes of `(value * (1/255) - mean) / std`, rounded as
/// the reference rounds it (the product in single precision, the rest in double, the result in
/// single); `bgr` takes the channels in reverse order.
pub fn planes(p: &Picture, mean: &[f64], std: &[f64], bgr: bool) -> Vec<f32> {
    let (n, c) = (p.height * p.width, p.channels);
    let mut out = vec![0.0f32; n * c];
    for (i, px) in p.pixels.chunks_exact(c).enumerate() {
        for k in 0..c {
            let src = if bgr { c - 1 - k } else { k };
            let v = f64::from(f32::from(px[src]) * (1.0f32 / 255.0));
            out[k * n + i] = ((v - mean.get(k).copied().unwrap_or(0.0)) / std.get(k).copied().unwrap_or(1.0)) as f32;
        }
    }
    out
}

/// A text line as the angle classifier and the recogniser take it: resized to `height`
/// keeping its proportions (width rounded up, at most `width`), values `(v / 255 - 0.5) / 0.5`
/// in single precision, zero to the right up to `width`; `[channels, height, width]`.
pub fn line(p: &Picture, height: usize, width: usize, bgr: bool) -> Option<Vec<f32>> {
    if p.height == 0 || p.width == 0 || height == 0 || width == 0 {
        return None;
    }
    let ratio = p.width as f64 / p.height as f64;
    let fitted = ((height as f64 * ratio).ceil() as usize).clamp(1, width);
    let resized = resize_linear(p, height, fitted)?;
    let c = p.channels;
    let mut out = vec![0.0f32; c * height * width];
    for (i, px) in resized.pixels.chunks_exact(c).enumerate() {
        let (y, x) = (i / fitted, i % fitted);
        for k in 0..c {
            let src = if bgr { c - 1 - k } else { k };
            out[(k * height + y) * width + x] = (f32::from(px[src]) / 255.0 - 0.5) / 0.5;
        }
    }
    Some(out)
}

/// The width the recogniser's lines of one batch are padded to: `height` times the widest
/// line's proportions, at least `min_width` (PP-OCR's 320 for a height of 48).
pub fn batch_width(lines: &[(usize, usize)], height: usize, min_width: usize) -> usize {
    let widest = lines
        .iter()
        .filter(|(h, _)| *h > 0)
        .map(|&(h, w)| w as f64 / h as f64)
        .fold(min_width as f64 / height as f64, f64::max);
    (height as f64 * widest) as usize
}

/// `p` turned half a turn (the angle classifier's "180").
pub fn turn_around(p: &Picture) -> Picture {
    let c = p.channels;
    let pixels = p.pixels.chunks_exact(c).rev().flatten().copied().collect();
    Picture { pixels, ..p.clone() }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn detector_sizes_are_multiples_of_32_from_a_736_short_side() {
        assert_eq!(det_size(427, 640, 736), Some((736, 1088)));
        assert_eq!(det_size(420, 640, 736), Some((736, 1120)));
        assert_eq!(det_size(1000, 2000, 736), Some((992, 1984)), "never scaled down; 62.5 rounds to even");
        assert_eq!(det_size(10, 10, 0), None);
    }

    #[test]
    fn planes_and_lines_normalise_and_pad() {
        let p = Picture { pixels: vec![0, 128, 255, 255, 0, 51], height: 1, width: 2, channels: 3 };
        let x = planes(&p, &[0.5; 3], &[0.5; 3], true);
        // Channel 0 is the picture's last (B), etc.
        let norm = |v: f32| ((f64::from(v * (1.0f32 / 255.0)) - 0.5) / 0.5) as f32;
        assert_eq!(x, [1.0, norm(51.0), norm(128.0), -1.0, -1.0, 1.0]);
        let l = line(&p, 2, 6, false).unwrap();
        assert_eq!(l.len(), 3 * 2 * 6);
        // 1x2 becomes 2x4, padded with zeros to 6.
        assert_eq!(&l[4..6], &[0.0, 0.0]);
        assert_eq!(l[0], -1.0);
        assert_eq!(batch_width(&[(48, 100), (48, 960)], 48, 320), 960);
        assert_eq!(batch_width(&[(48, 100)], 48, 320), 320);
        let t = turn_around(&p);
        assert_eq!(t.pixels, [255, 0, 51, 0, 128, 255]);
    }
}
