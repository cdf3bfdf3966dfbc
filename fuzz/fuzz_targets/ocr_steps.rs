//! The OCR pipeline's built-in processing on arbitrary bytes: a picture file through the
//! pipeline's bounded decoder, and a detector probability map (its size from the first two
//! bytes, its values from the rest) through DB post-processing, every box cropped and batched as
//! the recogniser takes lines. Nothing may panic; boxes stay inside the picture.
#![no_main]
use aiserve_vision::crop::crop_quad;
use aiserve_vision::db::{text_boxes, DbParams};
use aiserve_vision::decode;
use aiserve_vision::picture::Picture;
use aiserve_vision::prepare::{batch_width, line};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if decode::header(data, 3).is_ok_and(|h| h.bytes <= 64 << 20) {
        if let Ok(p) = decode::decode(data, 3) {
            assert_eq!(p.pixels.len(), p.height * p.width * 3);
        }
    }
    let [a, b, rest @ ..] = data else { return };
    let (h, w) = (usize::from(*a) % 48 + 1, usize::from(*b) % 48 + 1);
    if rest.is_empty() {
        return;
    }
    let map: Vec<f32> = rest.iter().cycle().take(h * w).map(|v| f32::from(*v) / 255.0).collect();
    let (ph, pw) = (h * 2 + usize::from(*a & 3), w * 2 + usize::from(*b & 3));
    let boxes = text_boxes(&map, (h, w), (ph, pw), &DbParams::default()).expect("a whole map");
    let pixels = (0..ph * pw * 3).map(|i| rest[i % rest.len()]).collect();
    let picture = Picture { pixels, height: ph, width: pw, channels: 3 };
    let mut lines = Vec::new();
    for tb in &boxes {
        assert!(tb.corners.iter().all(|p| p.x >= 0.0 && p.y >= 0.0 && p.x <= pw as f64 && p.y <= ph as f64));
        if let Some(c) = crop_quad(&picture, &tb.corners) {
            lines.push(c);
        }
    }
    let sizes: Vec<(usize, usize)> = lines.iter().map(|l| (l.height, l.width)).collect();
    let width = batch_width(&sizes, 48, 320).min(4096);
    for l in &lines {
        assert_eq!(line(l, 48, width, true).map(|v| v.len()), Some(3 * 48 * width));
    }
});
