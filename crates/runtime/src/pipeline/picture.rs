//! Built-in picture steps: decoding a PNG/JPEG, fitting a whole picture into a detector's size
//! limits (RapidOCR's), and resizing and normalising one into a network's input tensor.

use aiserve_core::pipeline::{StepPorts, ValueType};
use aiserve_core::{Datatype, Tensor, TensorData};
use aiserve_vision::decode;
use aiserve_vision::prepare::{det_size, fit, planes, FitParams};
use aiserve_vision::resize::resize_linear;
use base64::Engine as _;
use serde::Deserialize;

use super::builtin::{port, Builtin};
use super::value::{f32_tensor, from_picture, picture, Value};
use crate::budget::Hold;
use crate::error::Error;

fn picture_type(channels: i64) -> ValueType {
    ValueType::one(Datatype::Uint8, &[-1, -1, channels])
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DecodeParams {
    /// `RGB` (default), `BGR` or `GRAY`.
    #[serde(default = "rgb")]
    channels: String,
}

fn rgb() -> String {
    "RGB".into()
}

/// `picture.decode`: one PNG or JPEG file (its bytes, or base64 text of them, as JSON clients
/// send BYTES) → `picture` UINT8 `[height, width, channels]`.
pub struct Decode {
    channels: String,
}

impl Decode {
    pub fn new(p: DecodeParams) -> Result<Self, String> {
        if !matches!(p.channels.as_str(), "RGB" | "BGR" | "GRAY") {
            return Err(format!("`channels` must be RGB, BGR or GRAY, got {:?}", p.channels));
        }
        Ok(Self { channels: p.channels })
    }

    fn count(&self) -> usize {
        if self.channels == "GRAY" {
            1
        } else {
            3
        }
    }

    /// The one file of the input, base64-decoded when it is text.
    fn file(inputs: &[Value]) -> Result<std::borrow::Cow<'_, [u8]>, Error> {
        let Some(Value::One(Tensor { data: TensorData::Bytes(items), .. })) = inputs.first() else {
            return Err(Error::internal("picture.decode takes one BYTES tensor"));
        };
        let [one] = items.as_slice() else {
            return Err(Error::invalid(
                "bytes",
                format!("give one picture (a BYTES tensor of one element), got {}", items.len()),
            ));
        };
        if decode::is_picture(one) || one.len() < 8 {
            return Ok(one.as_slice().into());
        }
        let text: Vec<u8> = one.iter().copied().filter(|b| !b.is_ascii_whitespace()).collect();
        base64::engine::general_purpose::STANDARD
            .decode(&text)
            .map(Into::into)
            .map_err(|_| Error::invalid("bytes", "the picture is neither a PNG/JPEG file nor base64 text of one"))
    }
}

impl Builtin for Decode {
    fn ports(&self) -> StepPorts {
        StepPorts {
            inputs: vec![port("bytes", ValueType::one(Datatype::Bytes, &[-1]))],
            outputs: vec![port("picture", picture_type(self.count() as i64))],
            maps_lists: false,
        }
    }

    fn needs(&self, inputs: &[Value]) -> Result<usize, Error> {
        let file = Self::file(inputs)?;
        let header =
            decode::header(&file, self.count()).map_err(|e| Error::invalid("bytes", format!("the picture {e}")))?;
        Ok(header.bytes + file.len())
    }

    fn run(&self, inputs: Vec<Value>, _hold: &Hold) -> Result<Vec<Value>, Error> {
        let file = Self::file(&inputs)?;
        let mut p =
            decode::decode(&file, self.count()).map_err(|e| Error::invalid("bytes", format!("the picture {e}")))?;
        if p.height == 0 || p.width == 0 {
            return Err(Error::invalid(
                "bytes",
                format!("the picture is {}x{} pixels; it has none", p.width, p.height),
            ));
        }
        if self.channels == "BGR" {
            p.pixels.chunks_exact_mut(3).for_each(|px| px.swap(0, 2));
        }
        Ok(vec![Value::One(from_picture(p))])
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FitConfig {
    #[serde(default = "max_side")]
    max_side_len: usize,
    #[serde(default = "thirty")]
    min_side_len: usize,
    #[serde(default = "thirty")]
    min_height: usize,
    /// Wider than this times the height is letterboxed; 0: never for its proportions.
    #[serde(default = "eight")]
    width_height_ratio: f64,
}

fn max_side() -> usize {
    2000
}

fn thirty() -> usize {
    30
}

fn eight() -> f64 {
    8.0
}

/// `picture.fit`: a whole picture scaled into `[min_side_len, max_side_len]` and letterboxed
/// when it is a strip, as RapidOCR prepares one for its detector → the fitted `picture` and its
/// `transform` FP64 `[ratio_h, ratio_w, top, left, height, width]` (how fitted coordinates map
/// back to the original of `height x width`), which `ocr.lines` applies.
pub struct Fit(FitParams);

impl Fit {
    pub fn new(c: FitConfig) -> Result<Self, String> {
        if c.max_side_len == 0 || c.max_side_len > 8192 || c.min_side_len > c.max_side_len {
            return Err(format!(
                "`max_side_len` must be in 1..=8192 and at least `min_side_len`, got {} and {}",
                c.max_side_len, c.min_side_len
            ));
        }
        if c.min_height > 8192 || !(c.width_height_ratio >= 0.0 && c.width_height_ratio.is_finite()) {
            return Err("`min_height` must be at most 8192 and `width_height_ratio` a number >= 0".into());
        }
        let ratio = (c.width_height_ratio > 0.0).then_some(c.width_height_ratio);
        Ok(Self(FitParams {
            max_side_len: c.max_side_len,
            min_side_len: c.min_side_len,
            min_height: c.min_height,
            width_height_ratio: ratio,
        }))
    }
}

impl Builtin for Fit {
    fn ports(&self) -> StepPorts {
        StepPorts {
            inputs: vec![port("picture", picture_type(-1))],
            outputs: vec![port("picture", picture_type(-1)), port("transform", ValueType::one(Datatype::Fp64, &[6]))],
            maps_lists: false,
        }
    }

    fn run(&self, inputs: Vec<Value>, _hold: &Hold) -> Result<Vec<Value>, Error> {
        let p = picture(inputs.into_iter().next().expect("one input").one("picture")?, "picture")?;
        let (h, w) = (p.height, p.width);
        let f =
            fit(p, &self.0).ok_or_else(|| Error::invalid("picture", format!("a {w}x{h} picture cannot be fitted")))?;
        let transform = vec![f.ratio_h, f.ratio_w, f.top as f64, 0.0, h as f64, w as f64];
        Ok(vec![
            Value::One(from_picture(f.picture)),
            Value::One(Tensor { shape: vec![6], data: TensorData::F64(transform) }),
        ])
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NormalizeParams {
    /// A fixed `[height, width]`.
    size: Option<[usize; 2]>,
    /// Or: scale up until the short side reaches this, then round each side to a multiple of 32
    /// (PP-OCR's detector sizing). Neither: the picture's own size.
    short_side: Option<usize>,
    /// Per channel, of `value / 255`: `(v - mean) / std`.
    #[serde(default)]
    mean: Vec<f64>,
    #[serde(default)]
    std: Vec<f64>,
    /// The order the tensor's channels take from an RGB picture: `RGB` or `BGR`.
    #[serde(default = "rgb")]
    channels: String,
    /// `NCHW` or `NHWC`.
    #[serde(default = "nchw")]
    layout: String,
}

fn nchw() -> String {
    "NCHW".into()
}

/// `picture.normalize`: a picture resized (bilinear, as OpenCV) and normalised → `tensor` FP32
/// `[1, C, H, W]` (or `[1, H, W, C]`).
pub struct Normalize(NormalizeParams);

impl Normalize {
    pub fn new(p: NormalizeParams) -> Result<Self, String> {
        if p.size.is_some() && p.short_side.is_some() {
            return Err("give `size` or `short_side`, not both".into());
        }
        if p.size.is_some_and(|s| s.iter().any(|&d| d == 0 || d > 8192))
            || p.short_side.is_some_and(|s| s == 0 || s > 8192)
        {
            return Err("`size` and `short_side` must be in 1..=8192".into());
        }
        if !matches!(p.channels.as_str(), "RGB" | "BGR") || !matches!(p.layout.as_str(), "NCHW" | "NHWC") {
            return Err(format!(
                "`channels` must be RGB or BGR and `layout` NCHW or NHWC, got {:?} and {:?}",
                p.channels, p.layout
            ));
        }
        for (name, v) in [("mean", &p.mean), ("std", &p.std)] {
            if !v.is_empty() && v.len() != 3 {
                return Err(format!("`{name}` must have 3 values (one per channel), got {}", v.len()));
            }
        }
        if p.std.iter().chain(&p.mean).any(|v| !v.is_finite()) || p.std.contains(&0.0) {
            return Err("`mean` and `std` must be finite and `std` non-zero".into());
        }
        Ok(Self(p))
    }
}

impl Builtin for Normalize {
    fn ports(&self) -> StepPorts {
        let (h, w) = self.0.size.map_or((-1, -1), |[h, w]| (h as i64, w as i64));
        let dims = if self.0.layout == "NCHW" { [1, 3, h, w] } else { [1, h, w, 3] };
        StepPorts {
            inputs: vec![port("picture", picture_type(3))],
            outputs: vec![port("tensor", ValueType::one(Datatype::Fp32, &dims))],
            maps_lists: false,
        }
    }

    fn run(&self, inputs: Vec<Value>, _hold: &Hold) -> Result<Vec<Value>, Error> {
        let p = picture(inputs.into_iter().next().expect("one input").one("picture")?, "picture")?;
        let (h, w) = match (self.0.size, self.0.short_side) {
            (Some([h, w]), _) => (h, w),
            (None, Some(side)) => det_size(p.height, p.width, side).ok_or_else(|| {
                Error::invalid("picture", format!("a {}x{} picture rounds to no pixels", p.width, p.height))
            })?,
            (None, None) => (p.height, p.width),
        };
        let resized = if (h, w) == (p.height, p.width) { p } else { resize_linear(&p, h, w).expect("sizes checked") };
        let values = planes(&resized, &self.0.mean, &self.0.std, self.0.channels == "BGR");
        let tensor = if self.0.layout == "NCHW" {
            f32_tensor(vec![1, 3, h, w], values)
        } else {
            let n = h * w;
            let mut nhwc = vec![0.0f32; values.len()];
            for (i, px) in nhwc.chunks_exact_mut(3).enumerate() {
                for (k, v) in px.iter_mut().enumerate() {
                    *v = values[k * n + i];
                }
            }
            f32_tensor(vec![1, h, w, 3], nhwc)
        };
        Ok(vec![Value::One(tensor)])
    }
}

#[cfg(test)]
mod tests {
    use super::super::value::floats;
    use super::*;
    use crate::budget::MemoryBudget;

    fn png(w: u32, h: u32) -> Vec<u8> {
        let img = image::RgbImage::from_fn(w, h, |x, _| image::Rgb([x as u8 * 10, 100, 200]));
        let mut out = Vec::new();
        img.write_to(&mut std::io::Cursor::new(&mut out), image::ImageFormat::Png).unwrap();
        out
    }

    fn bytes(b: Vec<u8>) -> Vec<Value> {
        vec![Value::One(Tensor { shape: vec![1], data: TensorData::Bytes(vec![b]) })]
    }

    #[test]
    fn pictures_decode_from_files_or_base64() {
        let hold = MemoryBudget::new(1 << 20).hold();
        let d = Decode::new(toml::from_str("channels = \"BGR\"").unwrap()).unwrap();
        let file = png(4, 2);
        assert!(d.needs(&bytes(file.clone())).unwrap() >= 4 * 2 * 3);
        let out = d.run(bytes(file.clone()), &hold).unwrap();
        let Value::One(t) = &out[0] else { panic!("one tensor") };
        assert_eq!(t.shape, [2, 4, 3]);
        assert_eq!(
            &t.data,
            &TensorData::U8([[200, 100, 0], [200, 100, 10], [200, 100, 20], [200, 100, 30]].repeat(2).concat())
        );
        let text = base64::engine::general_purpose::STANDARD.encode(&file).into_bytes();
        assert_eq!(d.run(bytes(text), &hold).unwrap(), out);
        let e = d.run(bytes(b"aGVsbG8gd29ybGQ=".to_vec()), &hold).unwrap_err().to_string();
        assert!(e.contains("the picture is not a PNG or JPEG file"), "{e}");
        // A picture past the size limit says so (not that it is no picture).
        let wide = png(9000, 1);
        let e = d.needs(&bytes(wide)).unwrap_err().to_string();
        assert!(e.contains("at most 8192x8192 pixels"), "{e}");
        let two = vec![Value::One(Tensor { shape: vec![2], data: TensorData::Bytes(vec![file.clone(), file]) })];
        assert!(d.needs(&two).unwrap_err().to_string().contains("got 2"));
    }

    #[test]
    fn pictures_normalise_into_a_layout() {
        let pic = Value::One(Tensor { shape: vec![1, 2, 3], data: TensorData::U8(vec![0, 255, 255, 255, 255, 0]) });
        let hold = MemoryBudget::new(1 << 20).hold();
        let nchw = Normalize::new(
            toml::from_str("channels = \"BGR\"\nmean = [0.5, 0.5, 0.5]\nstd = [0.5, 0.5, 0.5]").unwrap(),
        )
        .unwrap();
        let out = nchw.run(vec![pic.clone()], &hold).unwrap();
        assert_eq!(out[0], Value::One(f32_tensor(vec![1, 3, 1, 2], vec![1.0, -1.0, 1.0, 1.0, -1.0, 1.0])));
        let nhwc = Normalize::new(toml::from_str("layout = \"NHWC\"\nsize = [2, 4]").unwrap()).unwrap();
        assert_eq!(nhwc.ports().outputs[0].1.dims, [1, 2, 4, 3]);
        let Value::One(t) = &nhwc.run(vec![pic], &hold).unwrap()[0] else { panic!("one tensor") };
        assert_eq!((t.shape.as_slice(), &floats(t, "t").unwrap()[..3]), (&[1, 2, 4, 3][..], &[0.0, 1.0, 1.0][..]));
        assert!(Normalize::new(toml::from_str("size = [2, 2]\nshort_side = 4").unwrap()).is_err());
        let fit = Fit::new(toml::from_str("").unwrap()).unwrap();
        let strip = Value::One(Tensor { shape: vec![10, 100, 3], data: TensorData::U8(vec![9; 3000]) });
        let out = fit.run(vec![strip], &hold).unwrap();
        let Value::One(Tensor { data: TensorData::F64(t), .. }) = &out[1] else { panic!("a transform") };
        assert_eq!(t[3..], [0.0, 10.0, 100.0]);
        assert!(t[2] > 0.0, "a strip is letterboxed: {t:?}");
    }
}
