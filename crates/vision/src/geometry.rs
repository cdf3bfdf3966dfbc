//! Points, convex hulls and minimum-area rectangles (rotating calipers over the hull).

/// A point in picture coordinates (x to the right, y down).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Point {
    pub x: f64,
    pub y: f64,
}

impl Point {
    pub fn new(x: f64, y: f64) -> Self {
        Self { x, y }
    }

    pub fn dist(self, o: Point) -> f64 {
        (self.x - o.x).hypot(self.y - o.y)
    }
}

fn cross(o: Point, a: Point, b: Point) -> f64 {
    (a.x - o.x) * (b.y - o.y) - (a.y - o.y) * (b.x - o.x)
}

/// The convex hull of `points` (Andrew's monotone chain), without collinear points; fewer than
/// three distinct points come back as they are (deduplicated).
pub fn convex_hull(points: &[Point]) -> Vec<Point> {
    let mut p: Vec<Point> = points.to_vec();
    p.sort_by(|a, b| a.x.total_cmp(&b.x).then(a.y.total_cmp(&b.y)));
    p.dedup();
    if p.len() < 3 {
        return p;
    }
    let mut hull: Vec<Point> = Vec::with_capacity(2 * p.len());
    for pass in 0..2 {
        let start = hull.len();
        let iter: Box<dyn Iterator<Item = &Point>> =
            if pass == 0 { Box::new(p.iter()) } else { Box::new(p.iter().rev()) };
        for &q in iter {
            while hull.len() >= start + 2 && cross(hull[hull.len() - 2], hull[hull.len() - 1], q) <= 0.0 {
                hull.pop();
            }
            hull.push(q);
        }
        hull.pop(); // the last point starts the other chain
    }
    hull
}

/// A rectangle at any angle: its four corners in order around it, and its two side lengths.
#[derive(Clone, Debug, PartialEq)]
pub struct Rect {
    pub corners: [Point; 4],
    pub width: f64,
    pub height: f64,
}

impl Rect {
    pub fn short_side(&self) -> f64 {
        self.width.min(self.height)
    }

    pub fn center(&self) -> Point {
        let [a, _, c, _] = self.corners;
        Point::new((a.x + c.x) / 2.0, (a.y + c.y) / 2.0)
    }
}

/// The smallest-area rectangle holding `points`; `None` for no points. One or two distinct
/// points give a rectangle with zero sides.
pub fn min_area_rect(points: &[Point]) -> Option<Rect> {
    let hull = convex_hull(points);
    match hull.len() {
        0 => return None,
        1 => return Some(Rect { corners: [hull[0]; 4], width: 0.0, height: 0.0 }),
        _ => {}
    }
    let mut best: Option<(f64, Rect)> = None;
    for i in 0..hull.len() {
        let (a, b) = (hull[i], hull[(i + 1) % hull.len()]);
        let len = a.dist(b);
        if len == 0.0 {
            continue;
        }
        let u = Point::new((b.x - a.x) / len, (b.y - a.y) / len);
        let v = Point::new(-u.y, u.x);
        let (mut lo_u, mut hi_u, mut lo_v, mut hi_v) = (f64::MAX, f64::MIN, f64::MAX, f64::MIN);
        for p in &hull {
            let (pu, pv) = ((p.x - a.x) * u.x + (p.y - a.y) * u.y, (p.x - a.x) * v.x + (p.y - a.y) * v.y);
            (lo_u, hi_u, lo_v, hi_v) = (lo_u.min(pu), hi_u.max(pu), lo_v.min(pv), hi_v.max(pv));
        }
        let area = (hi_u - lo_u) * (hi_v - lo_v);
        if best.as_ref().is_some_and(|(b, _)| *b <= area) {
            continue;
        }
        let at = |su: f64, sv: f64| Point::new(a.x + su * u.x + sv * v.x, a.y + su * u.y + sv * v.y);
        let corners = [at(lo_u, lo_v), at(hi_u, lo_v), at(hi_u, hi_v), at(lo_u, hi_v)];
        best = Some((area, Rect { corners, width: hi_u - lo_u, height: hi_v - lo_v }));
    }
    best.map(|(_, r)| r)
}

/// The four corners as top-left, top-right, bottom-right, bottom-left: the two leftmost (by x)
/// are the left side, each side's upper point (smaller y) first.
pub fn order_corners(corners: [Point; 4]) -> [Point; 4] {
    let mut p = corners;
    p.sort_by(|a, b| a.x.total_cmp(&b.x));
    let (tl, bl) = if p[0].y <= p[1].y { (p[0], p[1]) } else { (p[1], p[0]) };
    let (tr, br) = if p[2].y <= p[3].y { (p[2], p[3]) } else { (p[3], p[2]) };
    [tl, tr, br, bl]
}

/// Area and perimeter of a simple polygon.
pub fn area_and_perimeter(poly: &[Point]) -> (f64, f64) {
    let n = poly.len();
    let (mut twice_area, mut perimeter) = (0.0, 0.0);
    for i in 0..n {
        let (a, b) = (poly[i], poly[(i + 1) % n]);
        twice_area += a.x * b.y - b.x * a.y;
        perimeter += a.dist(b);
    }
    (twice_area.abs() / 2.0, perimeter)
}

/// Whether `p` lies inside or on the convex polygon `poly` (corners in order, either way round).
pub fn in_convex(poly: &[Point], p: Point) -> bool {
    let mut sign = 0.0f64;
    for i in 0..poly.len() {
        let c = cross(poly[i], poly[(i + 1) % poly.len()], p);
        if c.abs() < 1e-9 {
            continue;
        }
        if sign == 0.0 {
            sign = c.signum();
        } else if c.signum() != sign {
            return false;
        }
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rotated(cx: f64, cy: f64, w: f64, h: f64, deg: f64) -> Vec<Point> {
        let (s, c) = deg.to_radians().sin_cos();
        let mut out = Vec::new();
        for i in 0..=20 {
            for j in 0..=10 {
                let (u, v) = (w * (i as f64 / 20.0 - 0.5), h * (j as f64 / 10.0 - 0.5));
                out.push(Point::new(cx + u * c - v * s, cy + u * s + v * c));
            }
        }
        out
    }

    #[test]
    fn hull_keeps_the_corners_only() {
        let pts = rotated(0.0, 0.0, 4.0, 2.0, 0.0);
        let hull = convex_hull(&pts);
        assert_eq!(hull.len(), 4, "{hull:?}");
        assert_eq!(convex_hull(&[Point::new(1.0, 1.0), Point::new(1.0, 1.0)]).len(), 1);
    }

    #[test]
    fn the_smallest_rectangle_of_a_rotated_one_is_itself() {
        for deg in [0.0, 17.0, 30.0, 45.0, 90.0, 123.0] {
            let r = min_area_rect(&rotated(50.0, 40.0, 60.0, 12.0, deg)).unwrap();
            let (long, short) = (r.width.max(r.height), r.short_side());
            assert!((long - 60.0).abs() < 1e-6 && (short - 12.0).abs() < 1e-6, "{deg}: {r:?}");
            let c = r.center();
            assert!((c.x - 50.0).abs() < 1e-6 && (c.y - 40.0).abs() < 1e-6, "{deg}: {c:?}");
            let (area, perimeter) = area_and_perimeter(&r.corners);
            assert!((area - 60.0 * 12.0).abs() < 1e-6 && (perimeter - 144.0).abs() < 1e-6);
        }
        assert!(min_area_rect(&[]).is_none());
    }

    #[test]
    fn corners_come_in_reading_order() {
        let [tl, tr, br, bl] =
            order_corners([Point::new(10.0, 5.0), Point::new(0.0, 8.0), Point::new(1.0, 0.0), Point::new(11.0, 13.0)]);
        assert_eq!(
            (tl, tr, br, bl),
            (Point::new(1.0, 0.0), Point::new(10.0, 5.0), Point::new(11.0, 13.0), Point::new(0.0, 8.0))
        );
        let square = [Point::new(0.0, 0.0), Point::new(4.0, 0.0), Point::new(4.0, 4.0), Point::new(0.0, 4.0)];
        assert!(in_convex(&square, Point::new(2.0, 2.0)) && in_convex(&square, Point::new(0.0, 4.0)));
        assert!(!in_convex(&square, Point::new(4.5, 2.0)));
    }
}
