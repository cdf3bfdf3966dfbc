//! Built-in OCR steps around a text detector and recogniser (PP-OCR's, as RapidOCR runs them):
//! text boxes from the detector's map, straightened line crops, lines batched and padded for a
//! network, the angle classifier's half-turns, and the final lines mapped back to the picture.

use aiserve_core::pipeline::{StepPorts, ValueType};
use aiserve_core::{Datatype, Tensor, TensorData};
use aiserve_vision::crop::crop_quad;
use aiserve_vision::db::{text_boxes, DbParams};
use aiserve_vision::geometry::Point;
use aiserve_vision::prepare::{batch_width, line, turn_around};
use serde::Deserialize;

use super::builtin::{port, Builtin};
use super::value::{f32_tensor, floats, from_picture, ints, picture, Value};
use crate::budget::Hold;
use crate::error::Error;

fn boxes_type() -> ValueType {
    ValueType::one(Datatype::Fp32, &[-1, 4, 2])
}

fn lines_type() -> ValueType {
    ValueType::list(Datatype::Uint8, &[-1, -1, -1])
}

/// Boxes `[n, 4, 2]` as corner points.
fn corners(t: &Tensor, port: &str) -> Result<Vec<[Point; 4]>, Error> {
    let v = floats(t, port)?;
    if t.shape.len() != 3 || t.shape[1..] != [4, 2] {
        return Err(Error::invalid(port, format!("`{port}` must be [boxes, 4, 2], got {:?}", t.shape)));
    }
    Ok(v.chunks_exact(8)
        .map(|c| std::array::from_fn(|i| Point::new(f64::from(c[2 * i]), f64::from(c[2 * i + 1]))))
        .collect())
}

fn boxes_tensor(boxes: &[[Point; 4]]) -> Tensor {
    let v = boxes.iter().flat_map(|b| b.iter().flat_map(|p| [p.x as f32, p.y as f32])).collect();
    f32_tensor(vec![boxes.len(), 4, 2], v)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TextBoxesParams {
    thresh: Option<f32>,
    box_thresh: Option<f32>,
    unclip_ratio: Option<f64>,
    max_candidates: Option<usize>,
    min_size: Option<f64>,
    dilate: Option<bool>,
}

/// `ocr.text_boxes`: a DB detector's probability `map` `[1, 1, H, W]` and the `picture` it was
/// made from → text `boxes` `[n, 4, 2]` in the picture's pixels (reading order) and their
/// `scores` `[n]`.
pub struct TextBoxes(DbParams);

impl TextBoxes {
    pub fn new(p: TextBoxesParams) -> Result<Self, String> {
        let d = DbParams::default();
        let params = DbParams {
            thresh: p.thresh.unwrap_or(d.thresh),
            box_thresh: p.box_thresh.unwrap_or(d.box_thresh),
            unclip_ratio: p.unclip_ratio.unwrap_or(d.unclip_ratio),
            max_candidates: p.max_candidates.unwrap_or(d.max_candidates),
            min_size: p.min_size.unwrap_or(d.min_size),
            dilate: p.dilate.unwrap_or(d.dilate),
        };
        let unit = |v: f32| (0.0..=1.0).contains(&v);
        if !unit(params.thresh) || !unit(params.box_thresh) {
            return Err("`thresh` and `box_thresh` must be in 0..=1".into());
        }
        if !(0.0..=10.0).contains(&params.unclip_ratio) || !(0.0..=1000.0).contains(&params.min_size) {
            return Err("`unclip_ratio` must be in 0..=10 and `min_size` in 0..=1000".into());
        }
        if params.max_candidates == 0 || params.max_candidates > 100_000 {
            return Err(format!("`max_candidates` must be in 1..=100000, got {}", params.max_candidates));
        }
        Ok(Self(params))
    }
}

impl Builtin for TextBoxes {
    fn ports(&self) -> StepPorts {
        StepPorts {
            inputs: vec![
                port("map", ValueType::one(Datatype::Fp32, &[1, 1, -1, -1])),
                port("picture", ValueType::one(Datatype::Uint8, &[-1, -1, -1])),
            ],
            outputs: vec![port("boxes", boxes_type()), port("scores", ValueType::one(Datatype::Fp32, &[-1]))],
            maps_lists: false,
        }
    }

    fn run(&self, inputs: Vec<Value>, _hold: &Hold) -> Result<Vec<Value>, Error> {
        let mut it = inputs.into_iter();
        let map = it.next().expect("two inputs").one("map")?;
        let pic = it.next().expect("two inputs").one("picture")?;
        let (h, w) = match map.shape[..] {
            [1, 1, h, w] => (h, w),
            _ => return Err(Error::invalid("map", format!("`map` must be [1, 1, H, W], got {:?}", map.shape))),
        };
        if pic.shape.len() != 3 {
            return Err(Error::invalid("picture", format!("`picture` must be [H, W, C], got {:?}", pic.shape)));
        }
        let found = text_boxes(floats(&map, "map")?, (h, w), (pic.shape[0], pic.shape[1]), &self.0)
            .map_err(|e| Error::invalid("map", e))?;
        let boxes: Vec<[Point; 4]> = found.iter().map(|b| b.corners).collect();
        let scores = found.iter().map(|b| b.score).collect::<Vec<f32>>();
        Ok(vec![Value::One(boxes_tensor(&boxes)), Value::One(f32_tensor(vec![scores.len()], scores))])
    }
}

/// `ocr.crop`: each of `boxes` straightened out of `picture` (bicubic, as OpenCV's
/// `warpPerspective`; a line taller than 1.5 times its width turned upright) → `lines`, one
/// picture each.
pub struct Crop;

impl Builtin for Crop {
    fn ports(&self) -> StepPorts {
        StepPorts {
            inputs: vec![port("picture", ValueType::one(Datatype::Uint8, &[-1, -1, -1])), port("boxes", boxes_type())],
            outputs: vec![port("lines", lines_type())],
            maps_lists: false,
        }
    }

    fn run(&self, inputs: Vec<Value>, hold: &Hold) -> Result<Vec<Value>, Error> {
        let mut it = inputs.into_iter();
        let pic = picture(it.next().expect("two inputs").one("picture")?, "picture")?;
        let boxes = corners(&it.next().expect("two inputs").one("boxes")?, "boxes")?;
        let mut lines = Vec::with_capacity(boxes.len());
        for (i, b) in boxes.iter().enumerate() {
            let side = |a: Point, b: Point| a.dist(b);
            let (w, h) = (side(b[0], b[1]).max(side(b[2], b[3])), side(b[0], b[3]).max(side(b[1], b[2])));
            hold.grow((w * h) as usize * pic.channels, "a text line's crop")?;
            let c = crop_quad(&pic, b)
                .ok_or_else(|| Error::invalid("boxes", format!("box {i} is less than a pixel wide or tall")))?;
            lines.push(from_picture(c));
        }
        Ok(vec![Value::Many(lines)])
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LineBatchesParams {
    /// Pixels high every line is resized to.
    height: usize,
    /// A fixed width every line is padded to (the angle classifier's 192)...
    width: Option<usize>,
    /// ...or pad each batch to its widest line, at least this (the recogniser's 320).
    min_width: Option<usize>,
    /// Lines per batch, after sorting them by proportions (PP-OCR's 6).
    #[serde(default = "six")]
    batch: usize,
    /// The order the tensor's channels take from an RGB line: `RGB` or `BGR`.
    #[serde(default = "bgr")]
    channels: String,
}

fn six() -> usize {
    6
}

fn bgr() -> String {
    "BGR".into()
}

/// Most pixels wide a padded line may be (a 48-high line 80 times as wide as high).
const MAX_LINE_WIDTH: usize = 4096;

/// `ocr.line_batches`: `lines` sorted by their proportions (narrowest first), in batches of
/// `batch`, each line resized to `height` and padded with zeros to its batch's width, values
/// `(v / 255 - 0.5) / 0.5` → `batches` FP32 `[k, 3, height, width]` and `order`, the line each
/// row holds (as PP-OCR batches its classifier's and recogniser's lines).
pub struct LineBatches(LineBatchesParams);

impl LineBatches {
    pub fn new(p: LineBatchesParams) -> Result<Self, String> {
        if p.height == 0 || p.height > 512 || p.batch == 0 || p.batch > 256 {
            return Err(format!(
                "`height` must be in 1..=512 and `batch` in 1..=256, got {} and {}",
                p.height, p.batch
            ));
        }
        match (p.width, p.min_width) {
            (Some(w), None) | (None, Some(w)) if (1..=MAX_LINE_WIDTH).contains(&w) => {}
            _ => return Err(format!("give one of `width` and `min_width`, in 1..={MAX_LINE_WIDTH}")),
        }
        if !matches!(p.channels.as_str(), "RGB" | "BGR") {
            return Err(format!("`channels` must be RGB or BGR, got {:?}", p.channels));
        }
        Ok(Self(p))
    }
}

impl Builtin for LineBatches {
    fn ports(&self) -> StepPorts {
        let w = self.0.width.map_or(-1, |w| w as i64);
        StepPorts {
            inputs: vec![port("lines", lines_type())],
            outputs: vec![
                port("batches", ValueType::list(Datatype::Fp32, &[-1, 3, self.0.height as i64, w])),
                port("order", ValueType::one(Datatype::Int64, &[-1])),
            ],
            maps_lists: false,
        }
    }

    fn run(&self, inputs: Vec<Value>, hold: &Hold) -> Result<Vec<Value>, Error> {
        let lines = inputs.into_iter().next().expect("one input").many("lines")?;
        let lines = lines.into_iter().map(|t| picture(t, "lines")).collect::<Result<Vec<_>, _>>()?;
        if let Some(i) = lines.iter().position(|p| p.height == 0 || p.width == 0 || p.channels != 3) {
            return Err(Error::invalid("lines", format!("line {i} is not a picture of 3 channels with pixels")));
        }
        let ratio = |i: usize| lines[i].width as f64 / lines[i].height as f64;
        let mut order: Vec<usize> = (0..lines.len()).collect();
        order.sort_by(|&a, &b| ratio(a).total_cmp(&ratio(b)));
        let h = self.0.height;
        let mut batches = Vec::new();
        for chunk in order.chunks(self.0.batch) {
            let width = match self.0.width {
                Some(w) => w,
                None => {
                    let sizes: Vec<(usize, usize)> = chunk.iter().map(|&i| (lines[i].height, lines[i].width)).collect();
                    batch_width(&sizes, h, self.0.min_width.unwrap_or(1)).clamp(1, MAX_LINE_WIDTH)
                }
            };
            hold.grow(chunk.len() * 3 * h * width * 4, "a batch of text lines")?;
            let mut values = Vec::with_capacity(chunk.len() * 3 * h * width);
            for &i in chunk {
                values.extend(line(&lines[i], h, width, self.0.channels == "BGR").expect("sizes checked"));
            }
            batches.push(f32_tensor(vec![chunk.len(), 3, h, width], values));
        }
        let order: Vec<i64> = order.into_iter().map(|i| i as i64).collect();
        Ok(vec![Value::Many(batches), Value::One(Tensor { shape: vec![order.len()], data: TensorData::I64(order) })])
    }
}

/// Class scores of batched lines, checked against `order`: one `(line, row scores)` per row.
fn rows_by_line<'a>(scores: &'a [Tensor], order: &[i64], lines: usize) -> Result<Vec<(usize, &'a [f32])>, Error> {
    let mut rows = Vec::with_capacity(order.len());
    let mut next = order.iter();
    for t in scores {
        let v = floats(t, "scores")?;
        let n = t.shape.first().copied().unwrap_or(0);
        let per = v.len().checked_div(n).unwrap_or(0);
        for r in 0..n {
            let line = next.next().ok_or_else(|| Error::invalid("scores", "more score rows than `order` has lines"))?;
            let line = usize::try_from(*line)
                .ok()
                .filter(|&l| l < lines)
                .ok_or_else(|| Error::invalid("order", format!("`order` names line {line}; there are {lines}")))?;
            rows.push((line, &v[r * per..(r + 1) * per]));
        }
    }
    if rows.len() != order.len() {
        return Err(Error::invalid(
            "scores",
            format!("{} score rows for {} lines in `order`", rows.len(), order.len()),
        ));
    }
    Ok(rows)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FlipParams {
    /// The classifier's labels, by class.
    #[serde(default = "angle_labels")]
    labels: Vec<String>,
    /// A line whose best label contains this...
    #[serde(default = "turned")]
    flip: String,
    /// ...with a score above this is turned half a turn.
    #[serde(default = "point_nine")]
    threshold: f32,
}

fn angle_labels() -> Vec<String> {
    vec!["0".into(), "180".into()]
}

fn turned() -> String {
    "180".into()
}

fn point_nine() -> f32 {
    0.9
}

/// `ocr.flip_lines`: the angle classifier's `scores` (per batch, rows in `order`) applied to
/// `lines`: a line read as upside down is turned half a turn → `lines`.
pub struct FlipLines(FlipParams);

impl FlipLines {
    pub fn new(p: FlipParams) -> Result<Self, String> {
        if p.labels.len() < 2 || p.labels.len() > 360 || !(0.0..=1.0).contains(&p.threshold) {
            return Err("`labels` must have 2..=360 labels and `threshold` be in 0..=1".into());
        }
        Ok(Self(p))
    }
}

impl Builtin for FlipLines {
    fn ports(&self) -> StepPorts {
        StepPorts {
            inputs: vec![
                port("lines", lines_type()),
                port("scores", ValueType::list(Datatype::Fp32, &[-1, self.0.labels.len() as i64])),
                port("order", ValueType::one(Datatype::Int64, &[-1])),
            ],
            outputs: vec![port("lines", lines_type())],
            maps_lists: false,
        }
    }

    fn run(&self, inputs: Vec<Value>, _hold: &Hold) -> Result<Vec<Value>, Error> {
        let mut it = inputs.into_iter();
        let mut lines = it.next().expect("three inputs").many("lines")?;
        let scores = it.next().expect("three inputs").many("scores")?;
        let order = it.next().expect("three inputs").one("order")?;
        let n = lines.len();
        for (i, row) in rows_by_line(&scores, ints(&order, "order")?, n)? {
            let best = row.iter().enumerate().fold(0, |b, (j, v)| if *v > row[b] { j } else { b });
            let label = self.0.labels.get(best).map_or("", String::as_str);
            if label.contains(self.0.flip.as_str()) && row.get(best).is_some_and(|&s| s > self.0.threshold) {
                let p = picture(
                    std::mem::replace(&mut lines[i], Tensor { shape: vec![], data: TensorData::U8(vec![]) }),
                    "lines",
                )?;
                lines[i] = from_picture(turn_around(&p));
            }
        }
        Ok(vec![Value::Many(lines)])
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LinesParams {
    /// Lines read with less confidence than this are left out (RapidOCR's `text_score`).
    #[serde(default = "half")]
    min_score: f32,
}

fn half() -> f32 {
    0.5
}

/// `ocr.lines`: the lines read confidently enough, their `boxes` mapped back to the original
/// picture through `transform` (from `picture.fit`) → `boxes`, `texts`, `scores`.
pub struct Lines(LinesParams);

impl Lines {
    pub fn new(p: LinesParams) -> Result<Self, String> {
        if !(0.0..=1.0).contains(&p.min_score) {
            return Err(format!("`min_score` must be in 0..=1, got {}", p.min_score));
        }
        Ok(Self(p))
    }
}

impl Builtin for Lines {
    fn ports(&self) -> StepPorts {
        StepPorts {
            inputs: vec![
                port("boxes", boxes_type()),
                port("texts", ValueType::one(Datatype::Bytes, &[-1])),
                port("confidences", ValueType::one(Datatype::Fp32, &[-1])),
                port("transform", ValueType::one(Datatype::Fp64, &[6])),
            ],
            outputs: vec![
                port("boxes", boxes_type()),
                port("texts", ValueType::one(Datatype::Bytes, &[-1])),
                port("scores", ValueType::one(Datatype::Fp32, &[-1])),
            ],
            maps_lists: false,
        }
    }

    fn run(&self, inputs: Vec<Value>, _hold: &Hold) -> Result<Vec<Value>, Error> {
        let mut it = inputs.into_iter();
        let boxes = corners(&it.next().expect("four inputs").one("boxes")?, "boxes")?;
        let TensorData::Bytes(texts) = it.next().expect("four inputs").one("texts")?.data else {
            return Err(Error::invalid("texts", "`texts` must be BYTES"));
        };
        let confidences = it.next().expect("four inputs").one("confidences")?;
        let confidences = floats(&confidences, "confidences")?.to_vec();
        let transform = match it.next().expect("four inputs").one("transform")?.data {
            TensorData::F64(t) if t.len() == 6 => t,
            _ => return Err(Error::invalid("transform", "`transform` must be FP64 [6]")),
        };
        if texts.len() != boxes.len() || confidences.len() != boxes.len() {
            return Err(Error::invalid(
                "texts",
                format!(
                    "{} boxes, {} texts and {} confidences must agree",
                    boxes.len(),
                    texts.len(),
                    confidences.len()
                ),
            ));
        }
        let [ratio_h, ratio_w, top, left, h, w] = transform[..] else { unreachable!("six values") };
        let back =
            |p: &Point| Point::new(((p.x - left) * ratio_w).clamp(0.0, w), ((p.y - top) * ratio_h).clamp(0.0, h));
        let (mut kept, mut kept_texts, mut scores) = (Vec::new(), Vec::new(), Vec::new());
        for ((b, t), s) in boxes.iter().zip(texts).zip(confidences) {
            if s >= self.0.min_score {
                kept.push([back(&b[0]), back(&b[1]), back(&b[2]), back(&b[3])]);
                kept_texts.push(t);
                scores.push(s);
            }
        }
        let n = kept.len();
        Ok(vec![
            Value::One(boxes_tensor(&kept)),
            Value::One(Tensor { shape: vec![n], data: TensorData::Bytes(kept_texts) }),
            Value::One(f32_tensor(vec![n], scores)),
        ])
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::budget::MemoryBudget;

    fn hold() -> Hold {
        MemoryBudget::new(1 << 30).hold()
    }

    fn line(h: usize, w: usize, v: u8) -> Tensor {
        Tensor { shape: vec![h, w, 3], data: TensorData::U8(vec![v; h * w * 3]) }
    }

    fn params<T: serde::de::DeserializeOwned>(text: &str) -> T {
        toml::from_str(text).unwrap()
    }

    #[test]
    fn lines_are_sorted_by_proportions_and_batched() {
        let b = LineBatches::new(params("height = 4\nmin_width = 8\nbatch = 2")).unwrap();
        // Proportions 10, 1, 3: sorted 1, 3 | 10.
        let lines = vec![line(2, 20, 255), line(4, 4, 0), line(2, 6, 255)];
        let out = b.run(vec![Value::Many(lines)], &hold()).unwrap();
        let Value::Many(batches) = &out[0] else { panic!("a list") };
        assert_eq!(batches[0].shape, [2, 3, 4, 12], "the batch pads to its widest line (3 x 4 high)");
        assert_eq!(batches[1].shape, [1, 3, 4, 40]);
        assert_eq!(out[1], Value::One(Tensor { shape: vec![3], data: TensorData::I64(vec![1, 2, 0]) }));
        // Values (v / 255 - 0.5) / 0.5, zeros past the line.
        let v = floats(&batches[0], "b").unwrap();
        assert_eq!((v[0], v[4], v[12 * 4 * 3]), (-1.0, 0.0, 1.0));
        let fixed = LineBatches::new(params("height = 4\nwidth = 16")).unwrap();
        assert_eq!(fixed.ports().outputs[0].1.dims, [-1, 3, 4, 16]);
        assert!(LineBatches::new(params("height = 4")).is_err());
        assert!(LineBatches::new(params("height = 4\nwidth = 3\nmin_width = 3")).is_err());
    }

    #[test]
    fn upside_down_lines_are_turned_when_sure() {
        let f = FlipLines::new(params("")).unwrap();
        let mut a = line(1, 2, 0);
        a.data = TensorData::U8(vec![1, 1, 1, 2, 2, 2]);
        let lines = Value::Many(vec![a.clone(), a.clone(), a.clone()]);
        // Rows in order 2, 0 | 1: line 2 is "180" at 0.95, line 0 "180" at 0.6, line 1 "0".
        let scores = Value::Many(vec![
            f32_tensor(vec![2, 2], vec![0.05, 0.95, 0.4, 0.6]),
            f32_tensor(vec![1, 2], vec![0.99, 0.01]),
        ]);
        let order = Value::One(Tensor { shape: vec![3], data: TensorData::I64(vec![2, 0, 1]) });
        let out = f.run(vec![lines, scores, order], &hold()).unwrap();
        let Value::Many(out) = &out[0] else { panic!("a list") };
        assert_eq!(out[0], a);
        assert_eq!(out[1], a);
        assert_eq!(out[2].data, TensorData::U8(vec![2, 2, 2, 1, 1, 1]));
        let short = Value::One(Tensor { shape: vec![2], data: TensorData::I64(vec![2, 0]) });
        let scores = Value::Many(vec![f32_tensor(vec![3, 2], vec![0.0; 6])]);
        let e = f.run(vec![Value::Many(vec![a.clone(); 3]), scores, short], &hold()).unwrap_err();
        assert!(e.to_string().contains("more score rows than `order` has lines"), "{e}");
    }

    #[test]
    fn lines_are_kept_by_score_and_mapped_back() {
        let l = Lines::new(params("min_score = 0.5")).unwrap();
        let boxes =
            f32_tensor(vec![2, 4, 2], vec![10., 40., 30., 40., 30., 50., 10., 50., 0., 0., 1., 0., 1., 1., 0., 1.]);
        let texts = Tensor { shape: vec![2], data: TensorData::Bytes(vec![b"kept".to_vec(), b"dropped".to_vec()]) };
        let scores = f32_tensor(vec![2], vec![0.5, 0.49]);
        // Fitted at half size with 30 rows of letterbox, from a 100 x 60 picture.
        let t = Tensor { shape: vec![6], data: TensorData::F64(vec![2.0, 2.0, 30.0, 0.0, 60.0, 100.0]) };
        let out = l.run([boxes, texts, scores, t].into_iter().map(Value::One).collect(), &hold()).unwrap();
        let Value::One(b) = &out[0] else { panic!("one tensor") };
        assert_eq!(b.shape, [1, 4, 2]);
        assert_eq!(floats(b, "b").unwrap(), [20., 20., 60., 20., 60., 40., 20., 40.]);
        assert_eq!(out[1], Value::One(Tensor { shape: vec![1], data: TensorData::Bytes(vec![b"kept".to_vec()]) }));
    }

    #[test]
    fn boxes_come_from_the_map_and_crop_straight() {
        let tb = TextBoxes::new(params("")).unwrap();
        // A 16 x 32 map with a bright 4 x 20 bar, for a picture twice its size.
        let mut map = vec![0.0f32; 16 * 32];
        for y in 6..10 {
            for x in 6..26 {
                map[y * 32 + x] = 0.9;
            }
        }
        let pic = Tensor { shape: vec![32, 64, 3], data: TensorData::U8(vec![200; 32 * 64 * 3]) };
        let out =
            tb.run(vec![Value::One(f32_tensor(vec![1, 1, 16, 32], map)), Value::One(pic.clone())], &hold()).unwrap();
        let Value::One(boxes) = &out[0] else { panic!("one tensor") };
        assert_eq!(boxes.shape, [1, 4, 2]);
        let crops = Crop.run(vec![Value::One(pic), Value::One(boxes.clone())], &hold()).unwrap();
        let Value::Many(crops) = &crops[0] else { panic!("a list") };
        let (h, w) = (crops[0].shape[0], crops[0].shape[1]);
        assert!(w > 2 * h && h >= 8, "a wide line: {h} x {w}");
        let e =
            tb.run(vec![Value::One(f32_tensor(vec![1, 2, 2, 2], vec![0.0; 8])), Value::One(line(2, 2, 0))], &hold());
        assert!(e.unwrap_err().to_string().contains("[1, 1, H, W]"));
    }
}
