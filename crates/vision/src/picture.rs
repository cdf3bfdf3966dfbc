//! The picture every step takes and gives: bytes in rows, channels interleaved.

/// A picture: `height x width` pixels of `channels` bytes, row-major.
#[derive(Clone, Debug, PartialEq)]
pub struct Picture {
    pub pixels: Vec<u8>,
    pub height: usize,
    pub width: usize,
    pub channels: usize,
}
