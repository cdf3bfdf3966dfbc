//! A quadrilateral of a picture straightened into an upright picture (a text line for the
//! recogniser): the crop is as wide as the longer of the quadrilateral's top and bottom sides and
//! as tall as the longer of its left and right sides; each output pixel samples the picture
//! through the perspective map between the two, bicubically with edges repeated outward, the
//! way OpenCV's `warpPerspective(INTER_CUBIC, BORDER_REPLICATE)` samples for PP-OCR's own
//! pipeline (Keys' kernel with a = -0.75, positions and sums in single precision as OpenCV 5
//! computes them; a few pixels of a skewed box may still differ by a level): a recogniser is
//! sensitive enough to the crop's pixels that a bilinear crop loses spaces PP-OCR reads. A crop at
//! least 1.5 times as tall as wide is a vertical line and is turned a quarter left, as PP-OCR's
//! pipeline turns it.

use crate::geometry::Point;
use crate::picture::Picture;

/// The straightened crop of `quad` (top-left, top-right, bottom-right, bottom-left) from `src`;
/// `None` when the quadrilateral is less than a pixel wide or tall.
pub fn crop_quad(src: &Picture, quad: &[Point; 4]) -> Option<Picture> {
    let [tl, tr, br, bl] = *quad;
    let width = tl.dist(tr).max(bl.dist(br)) as usize;
    let height = tl.dist(bl).max(tr.dist(br)) as usize;
    if width == 0 || height == 0 || src.width == 0 || src.height == 0 {
        return None;
    }
    let (w, h) = (width as f64, height as f64);
    let m = homography([(0.0, 0.0), (w, 0.0), (w, h), (0.0, h)], [tl, tr, br, bl].map(|p| (p.x, p.y)))?;
    let c = src.channels;
    let mut out = vec![0u8; width * height * c];
    // As OpenCV 5 maps them: the map's coefficients and each position in single precision.
    let m = m.map(|v| v as f32);
    // Far outside, every neighbour is the edge anyway: keep the positions in range.
    let limit = |v: f32, n: usize| if v.is_finite() { v.clamp(-4.0, n as f32 + 4.0) } else { -4.0 };
    for y in 0..height {
        for x in 0..width {
            let (u, v) = (x as f32, y as f32);
            let d = m[6] * u + m[7] * v + 1.0;
            let sx = limit((m[0] * u + m[1] * v + m[2]) / d, src.width);
            let sy = limit((m[3] * u + m[4] * v + m[5]) / d, src.height);
            bicubic(src, sx, sy, &mut out[(y * width + x) * c..(y * width + x + 1) * c]);
        }
    }
    let crop = Picture { pixels: out, height, width, channels: c };
    Some(if height as f64 / width as f64 >= 1.5 { turn_left(&crop) } else { crop })
}

/// Keys' cubic kernel weights (a = -0.75) for the four pixels around a position `t` past the
/// second of them, in single precision as OpenCV computes them.
fn cubic_weights(t: f32) -> [f32; 4] {
    const A: f32 = -0.75;
    let w0 = ((A * (t + 1.0) - 5.0 * A) * (t + 1.0) + 8.0 * A) * (t + 1.0) - 4.0 * A;
    let w1 = ((A + 2.0) * t - (A + 3.0)) * t * t + 1.0;
    let w2 = ((A + 2.0) * (1.0 - t) - (A + 3.0)) * (1.0 - t) * (1.0 - t) + 1.0;
    [w0, w1, w2, 1.0 - w0 - w1 - w2]
}

/// The picture's value at `(x, y)` per channel from the 4x4 pixels around it, in single
/// precision (each row across, then the rows down) and rounded half to even; pixels outside
/// repeat the nearest edge.
fn bicubic(src: &Picture, x: f32, y: f32, out: &mut [u8]) {
    let (w, h, c) = (src.width as i64, src.height as i64, src.channels);
    let (fx, fy) = (x.floor(), y.floor());
    let (wx, wy) = (cubic_weights(x - fx), cubic_weights(y - fy));
    let (x0, y0) = (fx as i64, fy as i64);
    let at = |xx: i64, yy: i64, k: usize| {
        let (xx, yy) = (xx.clamp(0, w - 1) as usize, yy.clamp(0, h - 1) as usize);
        f32::from(src.pixels[(yy * src.width + xx) * c + k])
    };
    for (k, o) in out.iter_mut().enumerate() {
        let mut sum = 0.0f32;
        for (j, wyj) in wy.iter().enumerate() {
            let mut row = 0.0f32;
            for (i, wxi) in wx.iter().enumerate() {
                row += wxi * at(x0 - 1 + i as i64, y0 - 1 + j as i64, k);
            }
            sum += wyj * row;
        }
        *o = sum.round_ties_even().clamp(0.0, 255.0) as u8;
    }
}

/// A quarter turn counter-clockwise.
fn turn_left(p: &Picture) -> Picture {
    let (w, h, c) = (p.width, p.height, p.channels);
    let mut out = vec![0u8; p.pixels.len()];
    for y in 0..h {
        for x in 0..w {
            // (x, y) goes to row w-1-x, column y of a picture h wide.
            let (ny, nx) = (w - 1 - x, y);
            out[(ny * h + nx) * c..(ny * h + nx + 1) * c]
                .copy_from_slice(&p.pixels[(y * w + x) * c..(y * w + x + 1) * c]);
        }
    }
    Picture { pixels: out, height: w, width: h, channels: c }
}

/// The perspective map taking each `from` point to its `to` point, as the eight coefficients
/// (a b c d e f g h) of x' = (a u + b v + c) / (g u + h v + 1), y' = (d u + e v + f) / (same);
/// `None` when the points are degenerate (three on a line).
fn homography(from: [(f64, f64); 4], to: [(f64, f64); 4]) -> Option<[f64; 8]> {
    let mut a = [[0.0f64; 9]; 8];
    for (i, ((u, v), (x, y))) in from.into_iter().zip(to).enumerate() {
        a[2 * i] = [u, v, 1.0, 0.0, 0.0, 0.0, -u * x, -v * x, x];
        a[2 * i + 1] = [0.0, 0.0, 0.0, u, v, 1.0, -u * y, -v * y, y];
    }
    for col in 0..8 {
        let pivot = (col..8).max_by(|&i, &j| a[i][col].abs().total_cmp(&a[j][col].abs()))?;
        if a[pivot][col].abs() < 1e-12 {
            return None;
        }
        a.swap(col, pivot);
        for row in 0..8 {
            if row != col {
                let (f, pivot_row) = (a[row][col] / a[col][col], a[col]);
                for (v, p) in a[row][col..].iter_mut().zip(&pivot_row[col..]) {
                    *v -= f * p;
                }
            }
        }
    }
    let mut m = [0.0; 8];
    for (i, v) in m.iter_mut().enumerate() {
        *v = a[i][8] / a[i][i];
    }
    Some(m)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gradient(h: usize, w: usize) -> Picture {
        let pixels = (0..h * w).flat_map(|i| [(i % w) as u8, (i / w) as u8, 7]).collect();
        Picture { pixels, height: h, width: w, channels: 3 }
    }

    #[test]
    fn an_upright_box_is_the_plain_sub_picture() {
        let src = gradient(40, 60);
        let quad = [Point::new(10.0, 5.0), Point::new(30.0, 5.0), Point::new(30.0, 15.0), Point::new(10.0, 15.0)];
        let crop = crop_quad(&src, &quad).unwrap();
        assert_eq!((crop.width, crop.height), (20, 10));
        for y in 0..10 {
            for x in 0..20 {
                assert_eq!(&crop.pixels[(y * 20 + x) * 3..][..3], &[(10 + x) as u8, (5 + y) as u8, 7]);
            }
        }
    }

    #[test]
    fn a_rotated_box_is_straightened_and_a_tall_one_turned() {
        // A 20x6 box turned 90 degrees (its top edge runs down the picture's column 30).
        let src = gradient(60, 60);
        let quad = [Point::new(30.0, 10.0), Point::new(30.0, 30.0), Point::new(24.0, 30.0), Point::new(24.0, 10.0)];
        let crop = crop_quad(&src, &quad).unwrap();
        assert_eq!((crop.width, crop.height), (20, 6));
        // Its first row walks down column 30 from row 10.
        assert_eq!(&crop.pixels[..3], &[30, 10, 7]);
        assert_eq!(&crop.pixels[19 * 3..20 * 3], &[30, 29, 7]);
        // A box taller than wide by 1.5 comes back turned a quarter left.
        let tall = [Point::new(5.0, 5.0), Point::new(11.0, 5.0), Point::new(11.0, 25.0), Point::new(5.0, 25.0)];
        let crop = crop_quad(&src, &tall).unwrap();
        assert_eq!((crop.width, crop.height), (20, 6));
        assert_eq!(&crop.pixels[..3], &[10, 5, 7], "the top-right corner comes first after a left turn");
        assert!(crop_quad(&src, &[Point::new(1.0, 1.0); 4]).is_none());
    }
}
