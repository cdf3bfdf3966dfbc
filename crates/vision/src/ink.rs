//! A picture of handwriting laid out as MNIST lays out its digits (and as the digit strings
//! composed from them are): light ink on black, the writing's bounding box scaled, keeping its
//! shape, to the canvas height less a margin above and below, placed `margin` pixels from the
//! left. Dark ink on paper (a border brighter than the rest) is inverted first, and the
//! background level is taken off so faint scans and photos reach full contrast.

use image::imageops::FilterType;
use image::GrayImage;

use crate::picture::Picture;

/// Below this contrast between the background and the brightest ink nothing counts as writing.
const MIN_CONTRAST: f32 = 24.0;
/// Ink is what stands this share of the contrast above the background.
const INK: f32 = 0.1;

/// `height x width` bytes of `p` (grey, or RGB averaged) fitted as described above; `None` when
/// the picture holds no writing (nothing stands out from its background).
pub fn fit_writing(p: &Picture, height: usize, width: usize, margin: usize) -> Option<Vec<u8>> {
    if p.height == 0 || p.width == 0 || height <= 2 * margin || width <= 2 * margin {
        return None;
    }
    let mut canvas = vec![0u8; height * width];
    // Bytes, not floats: a 4096x4096 upload costs its own size once more here, not four times.
    let c = p.channels.max(1);
    let mut grey: Vec<u8> = if c == 1 {
        p.pixels.clone()
    } else {
        p.pixels.chunks_exact(c).map(|px| (px.iter().map(|&v| v as u32).sum::<u32>() / c as u32) as u8).collect()
    };
    let (h, w) = (p.height, p.width);
    let on_border = |i: usize| i / w == 0 || i / w == h - 1 || i.is_multiple_of(w) || i % w == w - 1;
    let mean = |grey: &[u8], border: bool| {
        let (sum, n) = grey
            .iter()
            .enumerate()
            .filter(|(i, _)| on_border(*i) == border)
            .fold((0u64, 0u64), |(s, n), (_, &v)| (s + v as u64, n + 1));
        (n > 0).then(|| sum as f32 / n as f32)
    };
    if let (Some(border), Some(inner)) = (mean(&grey, true), mean(&grey, false)) {
        if border > inner {
            grey.iter_mut().for_each(|v| *v = 255 - *v);
        }
    }
    let background = mean(&grey, true).unwrap_or(0.0);
    let brightest = grey.iter().copied().max().unwrap_or(0) as f32;
    let contrast = brightest - background;
    if contrast < MIN_CONTRAST {
        return None;
    }
    let threshold = background + INK * contrast;
    let (mut top, mut bottom, mut left, mut right) = (h, 0, w, 0);
    for (i, &v) in grey.iter().enumerate() {
        if v as f32 > threshold {
            let (y, x) = (i / w, i % w);
            (top, bottom, left, right) = (top.min(y), bottom.max(y), left.min(x), right.max(x));
        }
    }
    let (bh, bw) = (bottom + 1 - top, right + 1 - left);
    let mut crop = GrayImage::new(bw as u32, bh as u32);
    for y in 0..bh {
        for x in 0..bw {
            let v = (grey[(top + y) * w + left + x] as f32 - background) * 255.0 / contrast;
            crop.put_pixel(x as u32, y as u32, image::Luma([v.clamp(0.0, 255.0).round() as u8]));
        }
    }
    let (room_h, room_w) = (height - 2 * margin, width - 2 * margin);
    let mut ih = room_h;
    let mut iw = ((bw * room_h) as f64 / bh as f64).round().max(1.0) as usize;
    if iw > room_w {
        iw = room_w;
        ih = ((bh * room_w) as f64 / bw as f64).round().clamp(1.0, room_h as f64) as usize;
    }
    let scaled = image::imageops::resize(&crop, iw as u32, ih as u32, FilterType::Triangle);
    let y0 = margin + (room_h - ih) / 2;
    for y in 0..ih {
        for x in 0..iw {
            canvas[(y0 + y) * width + margin + x] = scaled.get_pixel(x as u32, y as u32)[0];
        }
    }
    Some(canvas)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn grey(height: usize, width: usize, f: impl Fn(usize, usize) -> u8) -> Picture {
        let pixels = (0..height * width).map(|i| f(i / width, i % width)).collect();
        Picture { pixels, height, width, channels: 1 }
    }

    fn lit_box(canvas: &[u8], width: usize) -> (usize, usize, usize, usize) {
        let lit: Vec<usize> = (0..canvas.len()).filter(|&i| canvas[i] > 100).collect();
        let ys = lit.iter().map(|i| i / width);
        let xs = lit.iter().map(|i| i % width);
        (ys.clone().min().unwrap(), ys.max().unwrap(), xs.clone().min().unwrap(), xs.max().unwrap())
    }

    /// A dark 40x120 stroke block on white paper, off-centre in a large picture, comes out light
    /// on black, 20 rows high (keeping its 1:3 shape) from row 4 and column 4.
    #[test]
    fn dark_writing_on_paper_is_inverted_scaled_and_placed() {
        let p = grey(300, 500, |y, x| if (100..140).contains(&y) && (200..320).contains(&x) { 20 } else { 235 });
        let out = fit_writing(&p, 28, 128, 4).unwrap();
        let (top, bottom, left, right) = lit_box(&out, 128);
        assert_eq!((top, bottom, left), (4, 23, 4));
        assert!((62..=64).contains(&right), "{right}");
        assert_eq!(out[0], 0, "the background is black");
    }

    /// A line too long for the canvas is scaled to its width instead; light ink on black stays as it is.
    #[test]
    fn long_lines_fit_the_width() {
        let p =
            grey(50, 1000, |y, x| if (10..40).contains(&y) && (0..1000).contains(&x) && x % 50 < 30 { 250 } else { 5 });
        let out = fit_writing(&p, 28, 128, 4).unwrap();
        let (top, bottom, left, right) = lit_box(&out, 128);
        assert_eq!((left, right), (4, 123));
        assert!(bottom - top <= 4, "a 30:1000 line is about 4 rows high at 120 wide: {top}..{bottom}");
    }

    #[test]
    fn blank_and_degenerate_pictures_hold_no_writing() {
        assert_eq!(fit_writing(&grey(20, 20, |_, _| 128), 28, 128, 4), None);
        assert_eq!(fit_writing(&grey(0, 0, |_, _| 0), 28, 128, 4), None);
        assert_eq!(fit_writing(&grey(1, 1, |_, _| 255), 28, 128, 4), None, "no contrast");
        // Paper with a faint smudge below the contrast that counts as ink.
        assert_eq!(fit_writing(&grey(30, 30, |y, x| if (y, x) == (9, 9) { 230 } else { 250 }), 28, 128, 4), None);
    }
}
