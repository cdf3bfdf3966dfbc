//! Text regions from a Differentiable-Binarization probability map (PP-OCR's detector output,
//! `[H, W]` values in 0..=1), as PP-OCR's reference post-processing finds them: pixels above
//! `thresh`, dilated by a 2x2 square; each 8-connected region's minimum-area rectangle, kept when
//! its short side reaches `min_size` and the mean probability inside it reaches `box_thresh`;
//! grown ("unclipped") by `area * unclip_ratio / perimeter` on every side; scaled to the
//! picture, clipped to it, and sorted into reading order.
//!
//! The growing is done as the reference does it, on whole map pixels: the rectangle's corners
//! truncated, offset with round joins the way Clipper offsets a polygon (arcs in steps for a
//! quarter-pixel tolerance, every vertex rounded), and the smallest rectangle around that taken
//! again; scaling rounds half to even, as numpy does. Boxes then land on the reference's pixels
//! (a pixel off moves where a recogniser sees spaces).

use crate::geometry::{area_and_perimeter, in_convex, min_area_rect, order_corners, Point};

/// The post-processing's knobs (PP-OCR's names; defaults are RapidOCR's).
#[derive(Clone, Debug, PartialEq)]
pub struct DbParams {
    /// Probability above which a pixel is text.
    pub thresh: f32,
    /// Least mean probability inside a region's rectangle.
    pub box_thresh: f32,
    /// How far a rectangle grows: its area times this over its perimeter, on every side.
    pub unclip_ratio: f64,
    /// Most regions looked at.
    pub max_candidates: usize,
    /// Least short side, in map pixels, before growing (after: this plus 2).
    pub min_size: f64,
    /// Whether the text pixels are dilated by a 2x2 square first.
    pub dilate: bool,
}

impl Default for DbParams {
    fn default() -> Self {
        Self { thresh: 0.3, box_thresh: 0.5, unclip_ratio: 1.6, max_candidates: 1000, min_size: 3.0, dilate: true }
    }
}

/// One text region in picture coordinates: corners top-left, top-right, bottom-right,
/// bottom-left (whole pixels), and the mean probability inside it.
#[derive(Clone, Debug, PartialEq)]
pub struct TextBox {
    pub corners: [Point; 4],
    pub score: f32,
}

/// The text regions of `map` (`height x width`, row-major) for a picture of
/// `picture_height x picture_width`, in reading order.
pub fn text_boxes(
    map: &[f32],
    (height, width): (usize, usize),
    (picture_height, picture_width): (usize, usize),
    p: &DbParams,
) -> Result<Vec<TextBox>, String> {
    if map.len() != height * width || height == 0 || width == 0 {
        return Err(format!("a {height}x{width} map needs {} values, got {}", height * width, map.len()));
    }
    let mut text: Vec<bool> = map.iter().map(|&v| v > p.thresh).collect();
    if p.dilate {
        text = dilate(&text, height, width);
    }
    let (sx, sy) = (picture_width as f64 / width as f64, picture_height as f64 / height as f64);
    let mut boxes = Vec::new();
    for outline in regions(&text, height, width).into_iter().take(p.max_candidates) {
        let Some(rect) = min_area_rect(&outline) else { continue };
        if rect.short_side() < p.min_size {
            continue;
        }
        let score = mean_inside(map, height, width, &rect.corners);
        if score < p.box_thresh {
            continue;
        }
        let (area, perimeter) = area_and_perimeter(&rect.corners);
        let outline = round_offset(
            &rect.corners.map(|c| Point::new(c.x.trunc(), c.y.trunc())),
            area * p.unclip_ratio / perimeter,
        );
        let Some(grown) = min_area_rect(&outline).filter(|g| g.short_side() >= p.min_size + 2.0) else { continue };
        let scaled = grown.corners.map(|c| {
            Point::new(
                (c.x * sx).round_ties_even().clamp(0.0, picture_width as f64),
                (c.y * sy).round_ties_even().clamp(0.0, picture_height as f64),
            )
        });
        let corners = order_corners(scaled).map(|c| {
            Point::new(c.x.min(picture_width as f64 - 1.0).trunc(), c.y.min(picture_height as f64 - 1.0).trunc())
        });
        if corners[0].dist(corners[1]).trunc() <= 3.0 || corners[0].dist(corners[3]).trunc() <= 3.0 {
            continue;
        }
        boxes.push(TextBox { corners, score });
    }
    Ok(reading_order(boxes))
}

/// Clipper's arc tolerance for round joins (pyclipper's default), in pixels.
const ARC_TOLERANCE: f64 = 0.25;

/// `poly` (a convex polygon, either way round) grown by `delta` with round corners, as
/// Clipper's `ClipperOffset` (jtRound, closed polygon) builds it: each vertex becomes an arc
/// from the previous edge's outward normal to the next one's, in steps fine enough to stay
/// within [`ARC_TOLERANCE`] of the circle, every point rounded to a whole pixel.
fn round_offset(poly: &[Point], delta: f64) -> Vec<Point> {
    let n = poly.len();
    // Also no offset for a NaN distance.
    if n < 3 || delta.is_nan() || delta <= 0.0 {
        return poly.to_vec();
    }
    // Counter-clockwise (positive area) so that (dy, -dx) points outward.
    let signed: f64 = (0..n).map(|i| poly[i].x * poly[(i + 1) % n].y - poly[(i + 1) % n].x * poly[i].y).sum();
    let pts: Vec<Point> = if signed < 0.0 { poly.iter().rev().copied().collect() } else { poly.to_vec() };
    let normals: Vec<Point> = (0..n)
        .map(|j| {
            let (a, b) = (pts[j], pts[(j + 1) % n]);
            let len = a.dist(b);
            if len == 0.0 {
                Point::new(0.0, 0.0)
            } else {
                Point::new((b.y - a.y) / len, -(b.x - a.x) / len)
            }
        })
        .collect();
    let tolerance = ARC_TOLERANCE.min(delta * ARC_TOLERANCE);
    let mut steps = std::f64::consts::PI / (1.0 - tolerance / delta).acos();
    steps = steps.min(delta * std::f64::consts::PI);
    let (sin, cos) = (std::f64::consts::TAU / steps).sin_cos();
    let per_radian = steps / std::f64::consts::TAU;
    // Clipper's Round: half away from zero.
    let at = |p: Point, x: f64, y: f64| Point::new((p.x + x * delta).round(), (p.y + y * delta).round());
    let mut out = Vec::new();
    let mut k = n - 1;
    for j in 0..n {
        let (nk, nj) = (normals[k], normals[j]);
        let sin_a = (nk.x * nj.y - nj.x * nk.y).clamp(-1.0, 1.0);
        let cos_a = nk.x * nj.x + nk.y * nj.y;
        if (sin_a * delta).abs() < 1.0 && cos_a > 0.0 {
            out.push(at(pts[j], nk.x, nk.y));
        } else if sin_a * delta < 0.0 {
            out.extend([at(pts[j], nk.x, nk.y), pts[j], at(pts[j], nj.x, nj.y)]);
        } else {
            let a = sin_a.atan2(cos_a);
            let count = ((per_radian * a.abs()).round() as usize).max(1);
            let (mut x, mut y) = (nk.x, nk.y);
            for _ in 0..count {
                out.push(at(pts[j], x, y));
                (x, y) = (x * cos - sin * y, x * sin + y * cos);
            }
            out.push(at(pts[j], nj.x, nj.y));
        }
        k = j;
    }
    out
}

/// A pixel is set when it or its left, upper or upper-left neighbour is (a 2x2 square with
/// its anchor at the bottom right, as OpenCV places an even kernel's anchor).
fn dilate(b: &[bool], h: usize, w: usize) -> Vec<bool> {
    let mut out = vec![false; b.len()];
    for y in 0..h {
        for x in 0..w {
            let at = |dx: usize, dy: usize| x >= dx && y >= dy && b[(y - dy) * w + x - dx];
            out[y * w + x] = at(0, 0) || at(1, 0) || at(0, 1) || at(1, 1);
        }
    }
    out
}

/// Each 8-connected region of set pixels, in scan order, as the leftmost and rightmost pixel
/// of each of its rows (all its convex hull needs).
fn regions(b: &[bool], h: usize, w: usize) -> Vec<Vec<Point>> {
    let mut seen = vec![false; b.len()];
    let mut out = Vec::new();
    let mut stack = Vec::new();
    for start in 0..b.len() {
        if !b[start] || seen[start] {
            continue;
        }
        // Per row of the region: (row, leftmost, rightmost).
        let mut rows: std::collections::BTreeMap<usize, (usize, usize)> = Default::default();
        seen[start] = true;
        stack.push(start);
        while let Some(i) = stack.pop() {
            let (y, x) = (i / w, i % w);
            let e = rows.entry(y).or_insert((x, x));
            e.0 = e.0.min(x);
            e.1 = e.1.max(x);
            for ny in y.saturating_sub(1)..=(y + 1).min(h - 1) {
                for nx in x.saturating_sub(1)..=(x + 1).min(w - 1) {
                    let j = ny * w + nx;
                    if b[j] && !seen[j] {
                        seen[j] = true;
                        stack.push(j);
                    }
                }
            }
        }
        out.push(
            rows.into_iter()
                .flat_map(|(y, (l, r))| [Point::new(l as f64, y as f64), Point::new(r as f64, y as f64)])
                .collect(),
        );
    }
    out
}

/// The mean of `map` over the pixels inside the quadrilateral.
fn mean_inside(map: &[f32], h: usize, w: usize, quad: &[Point; 4]) -> f32 {
    let lo = |v: f64, n: usize| (v.floor().max(0.0) as usize).min(n - 1);
    let hi = |v: f64, n: usize| (v.ceil().max(0.0) as usize).min(n - 1);
    let (x0, x1) = (
        lo(quad.iter().map(|p| p.x).fold(f64::MAX, f64::min), w),
        hi(quad.iter().map(|p| p.x).fold(f64::MIN, f64::max), w),
    );
    let (y0, y1) = (
        lo(quad.iter().map(|p| p.y).fold(f64::MAX, f64::min), h),
        hi(quad.iter().map(|p| p.y).fold(f64::MIN, f64::max), h),
    );
    let (mut sum, mut n) = (0.0f64, 0usize);
    for y in y0..=y1 {
        for x in x0..=x1 {
            if in_convex(quad, Point::new(x as f64, y as f64)) {
                sum += f64::from(map[y * w + x]);
                n += 1;
            }
        }
    }
    if n == 0 {
        0.0
    } else {
        (sum / n as f64) as f32
    }
}

/// Top to bottom, then left to right where two boxes' tops are within 10 pixels (one line).
pub fn reading_order(mut boxes: Vec<TextBox>) -> Vec<TextBox> {
    boxes.sort_by(|a, b| a.corners[0].y.total_cmp(&b.corners[0].y).then(a.corners[0].x.total_cmp(&b.corners[0].x)));
    for i in 0..boxes.len().saturating_sub(1) {
        for j in (0..=i).rev() {
            let (a, b) = (boxes[j].corners[0], boxes[j + 1].corners[0]);
            if (b.y - a.y).abs() < 10.0 && b.x < a.x {
                boxes.swap(j, j + 1);
            } else {
                break;
            }
        }
    }
    boxes
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A rotated rectangle (center, size, degrees) and the probability inside it.
    type Rect = ((f64, f64), (f64, f64), f64, f32);

    /// A `h x w` map of 0.05 with `p` inside each given rotated rectangle.
    fn map_with(h: usize, w: usize, rects: &[Rect]) -> Vec<f32> {
        let mut m = vec![0.05f32; h * w];
        for &((cx, cy), (rw, rh), deg, p) in rects {
            let (s, c) = deg.to_radians().sin_cos();
            for y in 0..h {
                for x in 0..w {
                    let (dx, dy) = (x as f64 - cx, y as f64 - cy);
                    let (u, v) = (dx * c + dy * s, -dx * s + dy * c);
                    if u.abs() <= rw / 2.0 && v.abs() <= rh / 2.0 {
                        m[y * w + x] = p;
                    }
                }
            }
        }
        m
    }

    #[test]
    fn lines_become_grown_boxes_in_reading_order() {
        // Two lines side by side on one row, one below; a picture twice the map's size.
        let m = map_with(
            64,
            128,
            &[
                ((90.0, 16.0), (40.0, 10.0), 0.0, 0.9),
                ((30.0, 18.0), (40.0, 10.0), 0.0, 0.8),
                ((60.0, 46.0), (80.0, 12.0), 0.0, 0.95),
            ],
        );
        let boxes = text_boxes(&m, (64, 128), (128, 256), &DbParams::default()).unwrap();
        assert_eq!(boxes.len(), 3, "{boxes:?}");
        let left: Vec<f64> = boxes.iter().map(|b| b.corners[0].x).collect();
        assert!(left[0] < left[1] && boxes[2].corners[0].y > boxes[0].corners[3].y - 10.0, "{boxes:?}");
        // The first line: 40x10 (plus the dilation's pixel) grown by area*1.6/perimeter on each side,
        // then doubled.
        let b = &boxes[0];
        let (w, h) = (b.corners[0].dist(b.corners[1]), b.corners[0].dist(b.corners[3]));
        let d = 41.0 * 11.0 * 1.6 / (2.0 * (41.0 + 11.0));
        assert!(
            (w - 2.0 * (41.0 + 2.0 * d)).abs() <= 3.0 && (h - 2.0 * (11.0 + 2.0 * d)).abs() <= 3.0,
            "{w}x{h}, d {d}"
        );
        // The mean over the rectangle of the dilated region: 0.8 inside, 0.05 on its added rim.
        assert!(b.score > 0.65 && b.score < 0.8, "{}", b.score);
    }

    #[test]
    fn offsets_are_round_cornered_on_whole_pixels() {
        let square = [Point::new(0.0, 0.0), Point::new(10.0, 0.0), Point::new(10.0, 10.0), Point::new(0.0, 10.0)];
        for poly in [square.to_vec(), square.iter().rev().copied().collect()] {
            let out = round_offset(&poly, 2.5);
            assert!(out.iter().all(|p| p.x == p.x.round() && p.y == p.y.round()), "{out:?}");
            // Edges move out by 2.5 (rounded half away from zero: 12.5 -> 13, -2.5 -> -3).
            let r = min_area_rect(&out).unwrap();
            assert_eq!((r.width, r.height), (16.0, 16.0), "{out:?}");
            // The corners are arcs: no point reaches the square's grown corner.
            assert!(!out.contains(&Point::new(-3.0, -3.0)) && out.len() > 8, "{out:?}");
        }
        assert_eq!(round_offset(&square, 0.0), square.to_vec());
    }

    #[test]
    fn a_rotated_line_keeps_its_angle() {
        let m = map_with(100, 100, &[((50.0, 50.0), (60.0, 8.0), 30.0, 0.9)]);
        let boxes = text_boxes(&m, (100, 100), (100, 100), &DbParams::default()).unwrap();
        assert_eq!(boxes.len(), 1);
        let [tl, tr, ..] = boxes[0].corners;
        let angle = (tr.y - tl.y).atan2(tr.x - tl.x).to_degrees();
        assert!((angle - 30.0).abs() < 3.0, "{angle}: {:?}", boxes[0]);
    }

    #[test]
    fn specks_faint_regions_and_empty_maps_give_nothing() {
        // A one-pixel speck (2x2 once dilated: short side 1) and a region under box_thresh.
        let m = map_with(32, 32, &[((5.0, 5.0), (1.0, 1.0), 0.0, 0.99), ((20.0, 20.0), (12.0, 8.0), 0.0, 0.4)]);
        assert_eq!(text_boxes(&m, (32, 32), (32, 32), &DbParams::default()).unwrap(), vec![]);
        assert!(text_boxes(&[0.0; 3], (2, 2), (2, 2), &DbParams::default()).unwrap_err().contains("needs 4 values"));
        let few = DbParams { max_candidates: 1, ..DbParams::default() };
        let two = map_with(32, 64, &[((12.0, 12.0), (16.0, 8.0), 0.0, 0.9), ((44.0, 12.0), (16.0, 8.0), 0.0, 0.9)]);
        assert_eq!(text_boxes(&two, (32, 64), (32, 64), &few).unwrap().len(), 1);
    }
}
