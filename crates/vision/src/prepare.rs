//! Network inputs from pictures, as PP-OCR's reference pipeline prepares them (so a network sees
//! the same numbers here as there): the detector's input size, planes normalised per channel,
//! and text lines resized to a fixed height, normalised and padded to a common width.

use crate::geometry::Point;
use crate::picture::Picture;
use crate::resize::resize_linear;

/// `n` scaled by `ratio` (truncated), then rounded to a multiple of 32 with halves to even, as
/// PP-OCR's Python sizes pictures (`int(round(int(n * ratio) / 32) * 32)`).
fn scaled_to_32(n: usize, ratio: f64) -> usize {
    (((n as f64 * ratio).trunc() / 32.0).round_ties_even() * 32.0) as usize
}

/// The size a picture is resized to for the detector: scaled up so its short side reaches
/// `limit_side_len` (never down), then each side rounded to a multiple of 32 (halves to even);
/// `None` when a side would round to zero.
pub fn det_size(height: usize, width: usize, limit_side_len: usize) -> Option<(usize, usize)> {
    let short = height.min(width);
    let ratio = if short < limit_side_len && short > 0 { limit_side_len as f64 / short as f64 } else { 1.0 };
    let (h, w) = (scaled_to_32(height, ratio), scaled_to_32(width, ratio));
    (h > 0 && w > 0).then_some((h, w))
}

/// How a whole picture is fitted before detection (RapidOCR's global settings).
#[derive(Clone, Debug, PartialEq)]
pub struct FitParams {
    /// A picture whose long side is above this is scaled down to it.
    pub max_side_len: usize,
    /// A picture whose short side is below this is scaled up to it.
    pub min_side_len: usize,
    /// A picture this high or lower is letterboxed (black above and below)...
    pub min_height: usize,
    /// ...as is one wider than this times its height (`None`: never for its proportions).
    pub width_height_ratio: Option<f64>,
}

impl Default for FitParams {
    fn default() -> Self {
        Self { max_side_len: 2000, min_side_len: 30, min_height: 30, width_height_ratio: Some(8.0) }
    }
}

/// A picture fitted for detection, and how to map its coordinates back.
#[derive(Clone, Debug, PartialEq)]
pub struct Fitted {
    pub picture: Picture,
    /// Original pixels per fitted pixel, down and across.
    pub ratio_h: f64,
    pub ratio_w: f64,
    /// Rows of letterbox added above (and below).
    pub top: usize,
    /// The original size, which mapped-back points are clipped to.
    pub original: (usize, usize),
}

/// `p` scaled into `[min_side_len, max_side_len]` (each side then rounded to a multiple of 32,
/// halves to even) and letterboxed when it is a short or very wide strip, as RapidOCR does;
/// `None` when a side would round to zero. As in RapidOCR, when both scalings apply the ratios
/// kept are the second's.
pub fn fit(p: Picture, params: &FitParams) -> Option<Fitted> {
    let original = (p.height, p.width);
    let (mut p, mut ratio_h, mut ratio_w) = (p, 1.0, 1.0);
    let scale = |p: &Picture, ratio: f64| -> Option<(Picture, f64, f64)> {
        let (h, w) = (scaled_to_32(p.height, ratio), scaled_to_32(p.width, ratio));
        let resized = resize_linear(p, h, w)?;
        Some((resized, p.height as f64 / h as f64, p.width as f64 / w as f64))
    };
    if p.height.max(p.width) > params.max_side_len {
        (p, ratio_h, ratio_w) = scale(&p, params.max_side_len as f64 / p.height.max(p.width) as f64)?;
    }
    if p.height.min(p.width) < params.min_side_len {
        (p, ratio_h, ratio_w) = scale(&p, params.min_side_len as f64 / p.height.min(p.width).max(1) as f64)?;
    }
    let (h, w) = (p.height, p.width);
    let too_wide = params.width_height_ratio.is_some_and(|r| w as f64 / h as f64 > r);
    let mut top = 0;
    if h <= params.min_height || too_wide {
        let r = params.width_height_ratio.unwrap_or(8.0);
        let new_h = ((w as f64 / r) as usize).max(params.min_height) * 2;
        top = new_h.abs_diff(h) / 2;
        let row = w * p.channels;
        let mut pixels = vec![0u8; (h + 2 * top) * row];
        pixels[top * row..(top + h) * row].copy_from_slice(&p.pixels);
        p = Picture { pixels, height: h + 2 * top, ..p };
    }
    Some(Fitted { picture: p, ratio_h, ratio_w, top, original })
}

impl Fitted {
    /// A point of the fitted picture in the original's coordinates (clipped to its size).
    pub fn to_original(&self, p: Point) -> Point {
        let (h, w) = self.original;
        let x = (p.x * self.ratio_w).clamp(0.0, w as f64);
        let y = ((p.y - self.top as f64) * self.ratio_h).clamp(0.0, h as f64);
        Point::new(x, y)
    }
}

/// `p` as `[channels, height, width]` planes of `(value * (1/255) - mean) / std`, rounded as
/// the reference rounds it (the product in single precision, the rest in double, the result in
/// single); `bgr` takes the channels in reverse order.
pub fn planes(p: &Picture, mean: &[f64], std: &[f64], bgr: bool) -> Vec<f32> {
    let (n, c) = (p.height * p.width, p.channels);
    let mut out = vec![0.0f32; n * c];
    if n == 0 {
        return out;
    }
    for (k, plane) in out.chunks_exact_mut(n).enumerate() {
        // A value depends only on the byte and the channel: one table of 256 per plane.
        let (m, s) = (mean.get(k).copied().unwrap_or(0.0), std.get(k).copied().unwrap_or(1.0));
        let table: Vec<f32> =
            (0..=255u8).map(|b| ((f64::from(f32::from(b) * (1.0f32 / 255.0)) - m) / s) as f32).collect();
        let src = if bgr { c - 1 - k } else { k };
        for (v, px) in plane.iter_mut().zip(p.pixels.chunks_exact(c)) {
            *v = table[usize::from(px[src])];
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

    #[test]
    fn strips_are_letterboxed_and_points_map_back() {
        let gray = |h: usize, w: usize| Picture { pixels: vec![200; h * w], height: h, width: w, channels: 1 };
        // 40x900: wider than 8:1, so (max(900 / 8, 30) * 2 - 40) / 2 = 92 black rows above and below.
        let f = fit(gray(40, 900), &FitParams::default()).unwrap();
        assert_eq!((f.picture.height, f.picture.width, f.top, f.ratio_h), (224, 900, 92, 1.0));
        assert_eq!(f.picture.pixels[91 * 900], 0);
        assert_eq!(f.picture.pixels[92 * 900], 200);
        let back = f.to_original(Point::new(450.0, 100.0));
        assert_eq!((back.x, back.y), (450.0, 8.0));
        assert_eq!(f.to_original(Point::new(-5.0, 1000.0)), Point::new(0.0, 40.0), "clipped to the original");
        // 2400x1000 is scaled to a 2000 long side, each side to a multiple of 32: 2000 / 32 = 62.5
        // rounds to 62 (1984); 833.33 -> 833 -> 26.03 -> 26 (832).
        let big = fit(gray(2400, 1000), &FitParams::default()).unwrap();
        assert_eq!((big.picture.height, big.picture.width, big.top), (1984, 832, 0));
        assert!((big.ratio_h - 2400.0 / 1984.0).abs() < 1e-12 && (big.ratio_w - 1000.0 / 832.0).abs() < 1e-12);
        let plain = fit(gray(100, 200), &FitParams::default()).unwrap();
        assert_eq!((plain.picture.height, plain.top, plain.ratio_w), (100, 0, 1.0));
    }
}
