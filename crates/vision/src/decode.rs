//! PNG and JPEG files into [`Picture`]s, bounded: the header is read first so a caller can count
//! the decoded size against its budget, and the decoder itself refuses pictures past
//! [`MAX_SIDE`] a side or [`MAX_DECODER_BYTES`] of buffers, so a small file cannot expand into
//! gigabytes.

use std::io::Cursor;

use image::{DynamicImage, ImageDecoder, ImageFormat, ImageReader};

use crate::picture::Picture;

/// Largest picture side accepted, in pixels.
pub const MAX_SIDE: u32 = 8192;
/// Most bytes the decoder may allocate for one picture.
pub const MAX_DECODER_BYTES: u64 = 512 << 20;

/// What a picture's header says.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Header {
    pub width: usize,
    pub height: usize,
    /// Bytes decoding takes: the decoder's buffer plus the picture converted to the channels
    /// asked for.
    pub bytes: usize,
}

/// A reader of `bytes` within the limits, and the format it reads.
type Reader<'a> = (ImageFormat, ImageReader<Cursor<&'a [u8]>>);

/// Whether `bytes` start as a PNG or JPEG file does.
pub fn is_picture(bytes: &[u8]) -> bool {
    matches!(image::guess_format(bytes), Ok(ImageFormat::Png | ImageFormat::Jpeg))
}

fn reader(bytes: &[u8]) -> Result<Reader<'_>, String> {
    let format = image::guess_format(bytes)
        .ok()
        .filter(|f| matches!(f, ImageFormat::Png | ImageFormat::Jpeg))
        .ok_or("is not a PNG or JPEG file")?;
    let mut limits = image::Limits::default();
    limits.max_image_width = Some(MAX_SIDE);
    limits.max_image_height = Some(MAX_SIDE);
    limits.max_alloc = Some(MAX_DECODER_BYTES);
    let mut reader = ImageReader::with_format(Cursor::new(bytes), format);
    reader.limits(limits);
    Ok((format, reader))
}

fn bad(format: ImageFormat, e: image::ImageError) -> String {
    format!("could not be decoded as {format:?} (at most {MAX_SIDE}x{MAX_SIDE} pixels): {e}")
}

/// Reads the header of a PNG/JPEG file: its size and what decoding it to `channels` takes.
pub fn header(bytes: &[u8], channels: usize) -> Result<Header, String> {
    let (format, reader) = reader(bytes)?;
    let decoder = reader.into_decoder().map_err(|e| bad(format, e))?;
    let (w, h) = decoder.dimensions();
    let need = decoder.total_bytes().saturating_add(u64::from(w) * u64::from(h) * channels as u64);
    Ok(Header { width: w as usize, height: h as usize, bytes: usize::try_from(need).unwrap_or(usize::MAX) })
}

/// Decodes a PNG/JPEG file into a picture of `channels` channels: 3 (RGB) or 1 (grey).
pub fn decode(bytes: &[u8], channels: usize) -> Result<Picture, String> {
    let (format, reader) = reader(bytes)?;
    let decoder = reader.into_decoder().map_err(|e| bad(format, e))?;
    let img = DynamicImage::from_decoder(decoder).map_err(|e| bad(format, e))?;
    let (width, height) = (img.width() as usize, img.height() as usize);
    let pixels = if channels == 1 { img.into_luma8().into_raw() } else { img.into_rgb8().into_raw() };
    Ok(Picture { pixels, height, width, channels: if channels == 1 { 1 } else { 3 } })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn png(w: u32, h: u32) -> Vec<u8> {
        let img = image::RgbImage::from_fn(w, h, |x, y| image::Rgb([x as u8, y as u8, 7]));
        let mut out = Vec::new();
        img.write_to(&mut Cursor::new(&mut out), ImageFormat::Png).unwrap();
        out
    }

    #[test]
    fn pictures_decode_with_their_header_first() {
        let bytes = png(5, 3);
        let h = header(&bytes, 3).unwrap();
        assert_eq!((h.width, h.height), (5, 3));
        assert!(h.bytes >= 2 * 5 * 3 * 3);
        let p = decode(&bytes, 3).unwrap();
        assert_eq!((p.height, p.width, p.channels), (3, 5, 3));
        assert_eq!(&p.pixels[3 * (5 + 2)..][..3], [2, 1, 7]);
        assert_eq!(decode(&bytes, 1).unwrap().pixels.len(), 15);
    }

    #[test]
    fn garbage_and_truncated_files_are_refused() {
        assert_eq!(header(b"hello", 3).unwrap_err(), "is not a PNG or JPEG file");
        assert!(is_picture(&png(1, 1)) && !is_picture(b"hello"));
        let bytes = png(64, 64);
        assert!(decode(&bytes[..bytes.len() / 2], 3).unwrap_err().contains("could not be decoded as Png"));
    }
}
