//! Runs aiserve-vision's OCR steps on data a reference pipeline produced, for
//! `tests/clients/ocr_steps_check.py` (which compares the results with RapidOCR's):
//!
//!   ocr_steps boxes MAP.f32 MAP_H MAP_W PICTURE.png OUT_DIR
//!       text boxes of a detector probability map (f32 little-endian, MAP_H x MAP_W) for the
//!       picture, one line each (`x,y x,y x,y x,y score`, corners from the top left, clockwise),
//!       and each box's straightened crop as OUT_DIR/crop<i>.png
//!   ocr_steps resize PICTURE.png HEIGHT WIDTH OUT.png
//!       the picture resized (bilinear, as OpenCV's INTER_LINEAR)
//!   ocr_steps fit PICTURE.png OUT.png
//!       the picture fitted for detection (scaled into RapidOCR's side limits, letterboxed when a
//!       strip), printed `ratio_h ratio_w top`
//!   ocr_steps det_input PICTURE.png OUT.f32
//!       the detector's input (BGR planes, PP-OCR's size rule and normalisation), printed size
//!   ocr_steps line_input PICTURE.png HEIGHT WIDTH OUT.f32
//!       a text line as the angle classifier and recogniser take it (BGR planes)
//!   ocr_steps ctc SCORES.f32 ROWS STEPS CLASSES CHARACTERS.txt
//!       greedy CTC decoding of recogniser scores (ROWS x STEPS x CLASSES) with PP-OCR's class
//!       layout around the character list (one per line), one `confidence<TAB>text` line per row

use aiserve_vision::crop::crop_quad;
use aiserve_vision::ctc::CtcDecoder;
use aiserve_vision::db::{text_boxes, DbParams};
use aiserve_vision::picture::Picture;
use aiserve_vision::prepare::{det_size, fit, line, planes, FitParams};
use aiserve_vision::resize::resize_linear;

fn floats(path: &str) -> Vec<f32> {
    let raw = std::fs::read(path).unwrap_or_else(|e| panic!("{path}: {e}"));
    raw.chunks_exact(4).map(|c| f32::from_le_bytes(c.try_into().unwrap())).collect()
}

fn picture(path: &str) -> Picture {
    let rgb = image::open(path).unwrap_or_else(|e| panic!("{path}: {e}")).to_rgb8();
    let (width, height) = (rgb.width() as usize, rgb.height() as usize);
    Picture { pixels: rgb.into_raw(), height, width, channels: 3 }
}

fn write_floats(v: &[f32], path: &str) {
    std::fs::write(path, v.iter().flat_map(|x| x.to_le_bytes()).collect::<Vec<u8>>()).unwrap();
}

fn save(p: Picture, path: &str) {
    image::RgbImage::from_raw(p.width as u32, p.height as u32, p.pixels).unwrap().save(path).unwrap();
}

fn main() {
    let a: Vec<String> = std::env::args().collect();
    let num = |i: usize| a[i].parse::<usize>().unwrap_or_else(|e| panic!("argument {i} ({}): {e}", a[i]));
    match a.get(1).map(String::as_str) {
        Some("boxes") if a.len() == 7 => {
            let map = floats(&a[2]);
            let picture = picture(&a[5]);
            let boxes =
                text_boxes(&map, (num(3), num(4)), (picture.height, picture.width), &DbParams::default()).unwrap();
            for (i, b) in boxes.iter().enumerate() {
                let corners: Vec<String> = b.corners.iter().map(|p| format!("{},{}", p.x, p.y)).collect();
                println!("{} {}", corners.join(" "), b.score);
                let c = crop_quad(&picture, &b.corners).expect("a box of at least 4 pixels a side");
                save(c, &format!("{}/crop{i}.png", a[6]));
            }
        }
        Some("resize") if a.len() == 6 => save(resize_linear(&picture(&a[2]), num(3), num(4)).unwrap(), &a[5]),
        Some("fit") if a.len() == 4 => {
            let f = fit(picture(&a[2]), &FitParams::default()).unwrap();
            println!("{} {} {}", f.ratio_h, f.ratio_w, f.top);
            save(f.picture, &a[3]);
        }
        Some("det_input") if a.len() == 4 => {
            let p = picture(&a[2]);
            let (h, w) = det_size(p.height, p.width, 736).unwrap();
            write_floats(&planes(&resize_linear(&p, h, w).unwrap(), &[0.5; 3], &[0.5; 3], true), &a[3]);
            println!("{h} {w}");
        }
        Some("line_input") if a.len() == 6 => {
            write_floats(&line(&picture(&a[2]), num(3), num(4), true).unwrap(), &a[5])
        }
        Some("ctc") if a.len() == 7 => {
            let scores = floats(&a[2]);
            let (rows, steps, classes) = (num(3), num(4), num(5));
            let text = std::fs::read_to_string(&a[6]).unwrap();
            let decoder = CtcDecoder::pp_ocr(text.lines().map(str::to_owned));
            for row in scores.chunks_exact(steps * classes).take(rows) {
                let d = decoder.decode(row, classes).unwrap();
                println!("{}\t{}", d.confidence, d.text);
            }
        }
        _ => {
            eprintln!(
                "usage: ocr_steps boxes MAP.f32 MAP_H MAP_W PICTURE.png OUT_DIR | resize PICTURE.png HEIGHT WIDTH OUT.png \
                 | fit PICTURE.png OUT.png | det_input PICTURE.png OUT.f32 | line_input PICTURE.png HEIGHT WIDTH OUT.f32 \
                 | ctc SCORES.f32 ROWS STEPS CLASSES CHARACTERS.txt"
            );
            std::process::exit(2);
        }
    }
}
