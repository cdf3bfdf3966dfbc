//! Bilinear resizing of 8-bit pictures, bit for bit as OpenCV's `resize(INTER_LINEAR)` computes
//! it, which is what PP-OCR's pipeline (and most Python serving code) feeds its networks: pixel
//! centres aligned (`(x + 0.5) * scale - 0.5`, in single precision), weights in 11-bit fixed
//! point, a horizontal pass kept exact and a vertical pass rounded the way OpenCV's vector code
//! rounds it. A network sees the same input here as there, so it answers the same.

use crate::picture::Picture;

/// Fixed-point scale of the weights (OpenCV's `INTER_RESIZE_COEF_SCALE`).
const ONE: i32 = 2048;

/// For each output position along one axis: the first source index and the two weights.
fn taps(dst: usize, src: usize, clamp: bool) -> Vec<(i64, i32, i32)> {
    let scale = src as f64 / dst as f64;
    (0..dst)
        .map(|d| {
            let f = ((d as f64 + 0.5) * scale - 0.5) as f32;
            let s = f.floor();
            let (mut s, mut f) = (s as i64, f - s);
            if clamp {
                // Horizontally OpenCV pins the first and last columns.
                if s < 0 {
                    (s, f) = (0, 0.0);
                }
                if s >= src as i64 - 1 {
                    (s, f) = (src as i64 - 1, 0.0);
                }
            }
            let w0 = ((1.0 - f) * ONE as f32).round_ties_even() as i32;
            let w1 = (f * ONE as f32).round_ties_even() as i32;
            (s, w0, w1)
        })
        .collect()
}

/// `src` resized to `height x width` (both at least 1); `None` for an empty picture or size.
pub fn resize_linear(src: &Picture, height: usize, width: usize) -> Option<Picture> {
    let (sw, sh, c) = (src.width, src.height, src.channels);
    if sw == 0 || sh == 0 || c == 0 || height == 0 || width == 0 {
        return None;
    }
    let across = taps(width, sw, true);
    let stride = width * c;
    // Every source row resized horizontally, values times ONE.
    let mut rows = vec![0i32; sh * stride];
    for (line, out) in src.pixels.chunks_exact(sw * c).zip(rows.chunks_exact_mut(stride)) {
        for (&(s, w0, w1), out) in across.iter().zip(out.chunks_exact_mut(c)) {
            let (s0, s1) = (s as usize * c, (s as usize + 1).min(sw - 1) * c);
            for (k, o) in out.iter_mut().enumerate() {
                *o = i32::from(line[s0 + k]) * w0 + i32::from(line[s1 + k]) * w1;
            }
        }
    }
    let row = |y: i64| {
        let y = y.clamp(0, sh as i64 - 1) as usize;
        &rows[y * stride..(y + 1) * stride]
    };
    // Then vertically, in straight lines over whole rows (the compiler's vector code).
    let mut pixels = vec![0u8; height * stride];
    for ((s, b0, b1), out) in taps(height, sh, false).into_iter().zip(pixels.chunks_exact_mut(stride)) {
        for ((o, &a), &b) in out.iter_mut().zip(row(s)).zip(row(s + 1)) {
            let v = (((a >> 4) * b0) >> 16) + (((b >> 4) * b1) >> 16);
            *o = ((v + 2) >> 2).clamp(0, 255) as u8;
        }
    }
    Some(Picture { pixels, height, width, channels: c })
}

#[cfg(test)]
mod tests {
    use super::*;

    // Expected values from OpenCV 4 (opencv-python 5.1.0.95): cv2.resize(src, (w, h)).
    #[test]
    fn equals_opencv_up_and_down() {
        let gray = Picture {
            pixels: vec![0, 21, 42, 63, 84, 105, 255, 147, 7, 189, 210, 231],
            height: 3,
            width: 4,
            channels: 1,
        };
        let up = resize_linear(&gray, 5, 7).unwrap();
        assert_eq!(
            up.pixels,
            [
                0, 7, 19, 31, 43, 55, 63, 34, 41, 53, 91, 125, 107, 97, 84, 91, 104, 180, 247, 186, 147, 38, 80, 147,
                191, 226, 208, 197, 7, 72, 176, 199, 211, 223, 231
            ]
        );
        assert_eq!(resize_linear(&gray, 2, 2).unwrap().pixels, [31, 90, 97, 216]);
        let rgb = Picture {
            pixels: vec![10, 200, 30, 250, 0, 128, 0, 0, 0, 255, 255, 255],
            height: 2,
            width: 2,
            channels: 3,
        };
        assert_eq!(
            resize_linear(&rgb, 3, 3).unwrap().pixels,
            [
                10, 200, 30, 130, 100, 79, 250, 0, 128, 5, 100, 15, 129, 114, 103, 253, 128, 192, 0, 0, 0, 127, 127,
                127, 255, 255, 255
            ]
        );
        assert!(resize_linear(&rgb, 0, 3).is_none());
    }
}
