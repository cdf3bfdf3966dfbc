//! aiserve-vision: the processing that sits between the networks of a vision pipeline, as
//! plain functions over plain buffers (no tensor library, no I/O but decoding files in memory), so each is unit-tested alone
//! and a pipeline can run it on any thread:
//! - [`db`]: text regions from a Differentiable-Binarization probability map (PP-OCR's
//!   detector): threshold, dilation, connected regions, minimum-area rectangles, box scores,
//!   unclipping, reading order;
//! - [`crop`]: a rotated quadrilateral of a picture straightened into an upright line picture;
//! - [`ctc`]: greedy CTC decoding of a recogniser's per-step class scores into text;
//! - [`resize`]: bilinear resizing bit for bit as OpenCV's, which the networks were fed with;
//! - [`prepare`]: the detector's input size and planes, text lines at the recogniser's height;
//! - [`decode`]: PNG and JPEG files into pictures, within size limits;
//! - [`ink`]: handwriting laid out as MNIST's digits are, for the digit-strings reader;
//! - [`geometry`] and [`picture`]: the points, hulls, rectangles and pictures they share.
//!
//! The parameters and conventions follow PP-OCR's reference post-processing (RapidOCR's
//! defaults), so the same networks read the same lines here as there.

pub mod crop;
pub mod ctc;
pub mod db;
pub mod decode;
pub mod geometry;
pub mod ink;
pub mod picture;
pub mod prepare;
pub mod resize;
