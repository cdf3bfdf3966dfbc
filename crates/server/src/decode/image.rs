//! PNG/JPEG pictures → the model's input pixels (resized, grey or RGB, scaled to its range).
//!
//! Decoding is bounded (dimensions and allocation) so a small file cannot expand into gigabytes.
//! MNIST-style models (trained on light shapes on a dark background) get a picture whose border
//! is brighter than its middle (dark ink on paper) inverted, so that 0 is the background; models
//! trained on other pictures (photos) get them as they are.
//! CPU-heavy: callers run this on the blocking pool.

use std::io::Cursor;

use aiserve_core::tensor::ImageSpec;
use image::{imageops::FilterType, DynamicImage, ImageDecoder, ImageFormat, ImageReader};

use crate::error::Error;
use aiserve_runtime::budget::Hold;

/// Largest picture side accepted, in pixels.
pub const MAX_SIDE: u32 = 4096;
/// Most bytes the decoder may allocate for one picture (a 4096x4096 RGBA picture is 64 MiB).
const MAX_ALLOC: u64 = 128 << 20;

/// True when `bytes` start like a PNG or JPEG file.
pub fn looks_like_image(bytes: &[u8]) -> bool {
    matches!(image::guess_format(bytes), Ok(ImageFormat::Png | ImageFormat::Jpeg))
}

/// Decodes, resizes and normalises one picture into `spec.height x spec.width x spec.channels`.
/// The decoder's buffers (as its header declares them, within [`MAX_SIDE`]) and the conversion
/// are counted against `hold` before decoding starts.
pub fn decode(bytes: &[u8], spec: &ImageSpec, field: &str, hold: &Hold) -> Result<Vec<f32>, Error> {
    let resized = spec.image_len() * (1 + size_of::<f32>());
    let img = open(bytes, spec.channels, resized, field, hold)?;
    let (w, h) = (spec.width as u32, spec.height as u32);
    let [lo, hi] = spec.range;
    let scale = |p: u8| lo + (hi - lo) * p as f32 / 255.0;
    let mut pixels: Vec<f32> = match spec.channels {
        1 => image::imageops::resize(&img.to_luma8(), w, h, FilterType::Triangle)
            .into_raw()
            .into_iter()
            .map(scale)
            .collect(),
        3 => image::imageops::resize(&img.to_rgb8(), w, h, FilterType::Triangle)
            .into_raw()
            .into_iter()
            .map(scale)
            .collect(),
        c => {
            return Err(Error::invalid(
                field,
                format!("pictures can feed 1- or 3-channel models; this model takes {c} channels"),
            ))
        }
    };
    if spec.dark_background() && border_is_brighter(&pixels, spec) {
        pixels.iter_mut().for_each(|p| *p = hi + lo - *p);
    }
    Ok(pixels)
}

/// Decodes one picture and resizes it to `height x width`: row-major bytes, `order` `RGB`,
/// `BGR` or `GRAY` (what a graph classifier's `[onnx.image]` says), counted against `hold`
/// first.
pub fn decode_pixels(
    bytes: &[u8],
    (height, width): (usize, usize),
    order: &str,
    field: &str,
    hold: &Hold,
) -> Result<Vec<u8>, Error> {
    let channels = if order == "GRAY" { 1 } else { 3 };
    let img = open(bytes, channels, height * width * channels, field, hold)?;
    let (w, h) = (width as u32, height as u32);
    Ok(match order {
        "GRAY" => image::imageops::resize(&img.to_luma8(), w, h, FilterType::Triangle).into_raw(),
        _ => {
            let mut rgb = image::imageops::resize(&img.to_rgb8(), w, h, FilterType::Triangle).into_raw();
            if order == "BGR" {
                rgb.chunks_exact_mut(3).for_each(|p| p.swap(0, 2));
            }
            rgb
        }
    })
}

/// Decodes a picture of handwriting for a string reader: grey, fitted to `height x width` as its
/// training strings were laid out (see `aiserve_vision::ink`), scaled to [0, 1]; `None` when the
/// picture holds no writing.
pub fn decode_writing(
    bytes: &[u8],
    (height, width, margin): (usize, usize, usize),
    field: &str,
    hold: &Hold,
) -> Result<Option<Vec<f32>>, Error> {
    let img = open(bytes, 1, height * width * (1 + size_of::<f32>()), field, hold)?.to_luma8();
    let (w, h) = (img.width() as usize, img.height() as usize);
    let picture = aiserve_vision::picture::Picture { pixels: img.into_raw(), height: h, width: w, channels: 1 };
    let fitted = aiserve_vision::ink::fit_writing(&picture, height, width, margin);
    Ok(fitted.map(|f| f.into_iter().map(|p| p as f32 / 255.0).collect()))
}

/// Opens a PNG/JPEG within the limits, counting the decoder's buffers, the conversion to
/// `channels` channels and `extra` bytes of output against `hold` before decoding.
fn open(bytes: &[u8], channels: usize, extra: usize, field: &str, hold: &Hold) -> Result<DynamicImage, Error> {
    let format = image::guess_format(bytes)
        .ok()
        .filter(|f| matches!(f, ImageFormat::Png | ImageFormat::Jpeg))
        .ok_or_else(|| Error::invalid(field, format!("`{field}` is not a PNG or JPEG picture")))?;
    let bad = |e: image::ImageError| {
        Error::invalid(
            field,
            format!("`{field}` could not be decoded as {format:?} (at most {MAX_SIDE}x{MAX_SIDE} pixels): {e}"),
        )
    };
    let mut limits = image::Limits::default();
    limits.max_image_width = Some(MAX_SIDE);
    limits.max_image_height = Some(MAX_SIDE);
    limits.max_alloc = Some(MAX_ALLOC);
    // The limits are checked again against the header's dimensions when they are set.
    let mut reader = ImageReader::with_format(Cursor::new(bytes), format);
    reader.limits(limits);
    let decoder = reader.into_decoder().map_err(bad)?;
    let (pw, ph) = decoder.dimensions();
    let converted = pw as u64 * ph as u64 * channels as u64;
    let need = decoder.total_bytes().saturating_add(converted).saturating_add(extra as u64);
    hold.grow(usize::try_from(need).unwrap_or(usize::MAX), &format!("decoding the {pw}x{ph} picture `{field}`"))?;
    DynamicImage::from_decoder(decoder).map_err(bad)
}

/// Mean of the outermost ring of pixels vs the mean of the rest.
fn border_is_brighter(px: &[f32], spec: &ImageSpec) -> bool {
    let (h, w, c) = (spec.height, spec.width, spec.channels);
    let (mut border, mut nb, mut inner, mut ni) = (0.0f32, 0usize, 0.0f32, 0usize);
    for y in 0..h {
        for x in 0..w {
            let v: f32 = px[(y * w + x) * c..][..c].iter().sum::<f32>() / c as f32;
            if y == 0 || x == 0 || y == h - 1 || x == w - 1 {
                border += v;
                nb += 1;
            } else {
                inner += v;
                ni += 1;
            }
        }
    }
    nb > 0 && ni > 0 && border / nb as f32 > inner / ni as f32
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decode(bytes: &[u8], spec: &ImageSpec, field: &str) -> Result<Vec<f32>, Error> {
        super::decode(bytes, spec, field, &aiserve_runtime::budget::MemoryBudget::new(1 << 30).hold())
    }

    fn spec() -> ImageSpec {
        ImageSpec { height: 28, width: 28, channels: 1, range: [0.0, 1.0], background: 0.0 }
    }

    fn png(img: &image::GrayImage) -> Vec<u8> {
        let mut out = Vec::new();
        img.write_to(&mut Cursor::new(&mut out), ImageFormat::Png).unwrap();
        out
    }

    #[test]
    fn decodes_resizes_and_keeps_dark_background() {
        // 56x56 dark picture with a bright bar in the middle.
        let img = image::GrayImage::from_fn(56, 56, |x, _| image::Luma([if (24..32).contains(&x) { 255 } else { 0 }]));
        let px = decode(&png(&img), &spec(), "image").unwrap();
        assert_eq!(px.len(), 784);
        assert!(px[14] > 0.9 && px[0] < 0.01, "centre {} corner {}", px[14], px[0]);
    }

    #[test]
    fn inverts_dark_ink_on_paper() {
        let img = image::GrayImage::from_fn(28, 28, |x, _| image::Luma([if (12..16).contains(&x) { 0 } else { 255 }]));
        let px = decode(&png(&img), &spec(), "image").unwrap();
        assert!(px[0] < 0.01 && px[13] > 0.99);
        // A model trained on pictures with a light ground gets them as they are.
        let light = ImageSpec { background: 0.6, ..spec() };
        let px = decode(&png(&img), &light, "image").unwrap();
        assert!(px[0] > 0.99 && px[13] < 0.01);
    }

    #[test]
    fn pixels_in_the_order_a_graph_asks_for() {
        let img = image::RgbImage::from_fn(4, 2, |_, _| image::Rgb([10, 20, 30]));
        let mut bytes = Vec::new();
        img.write_to(&mut Cursor::new(&mut bytes), ImageFormat::Png).unwrap();
        let hold = aiserve_runtime::budget::MemoryBudget::new(1 << 30).hold();
        assert_eq!(decode_pixels(&bytes, (1, 2), "RGB", "image", &hold).unwrap(), [10, 20, 30, 10, 20, 30]);
        assert_eq!(decode_pixels(&bytes, (1, 1), "BGR", "image", &hold).unwrap(), [30, 20, 10]);
        assert_eq!(decode_pixels(&bytes, (1, 1), "GRAY", "image", &hold).unwrap().len(), 1);
    }

    #[test]
    fn rejects_garbage_and_truncated_files() {
        assert!(decode(b"hello", &spec(), "image").unwrap_err().to_string().contains("not a PNG or JPEG"));
        let bytes = png(&image::GrayImage::new(28, 28));
        let e = decode(&bytes[..bytes.len() / 2], &spec(), "image").unwrap_err().to_string();
        assert!(e.contains("could not be decoded"), "{e}");
        assert!(looks_like_image(&bytes) && !looks_like_image(b"{\"image\""));
    }
}
