//! Built-in steps that turn scores into words: greedy CTC decoding of a recogniser's per-step
//! class scores with a character list, and the top classes of a classifier with their labels.

use aiserve_core::pipeline::{StepPorts, ValueType};
use aiserve_core::{Datatype, Tensor, TensorData};
use aiserve_vision::ctc::CtcDecoder;
use serde::Deserialize;

use super::builtin::{port, read_file, Builtin, Context};
use super::value::{f32_tensor, floats, ints, Value};
use crate::budget::Hold;
use crate::error::Error;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CtcParams {
    /// A file in the version directory with one character per line...
    characters: Option<String>,
    /// ...or the model step whose model metadata holds them (PP-OCR's recognisers carry theirs).
    characters_from: Option<String>,
    /// The metadata key with the characters, one per line.
    #[serde(default = "character")]
    metadata_key: String,
}

fn character() -> String {
    "character".into()
}

/// `text.ctc_decode`: a recogniser's `scores` (per batch `[rows, steps, classes]`, rows in
/// `order`) decoded greedily with PP-OCR's class layout (blank, the characters, a space) →
/// `texts` and their `confidences` (the mean best score of the kept steps), in line order.
pub struct CtcDecode(CtcDecoder);

impl CtcDecode {
    pub fn new(p: CtcParams, ctx: &Context) -> Result<Self, String> {
        let text = match (&p.characters, &p.characters_from) {
            (Some(file), None) => read_file(ctx.dir, file, "characters")?,
            (None, Some(step)) => {
                let meta = (ctx.step_metadata)(step)
                    .ok_or_else(|| format!("`characters_from` names `{step}`, which is not a model step"))?;
                meta.get(&p.metadata_key).cloned().ok_or_else(|| {
                    format!("step `{step}`'s model has no metadata `{}` with its characters", p.metadata_key)
                })?
            }
            _ => return Err("give one of `characters` (a file) and `characters_from` (a model step)".into()),
        };
        let chars: Vec<String> = text.lines().map(str::to_owned).collect();
        if chars.is_empty() {
            return Err("the character list is empty".into());
        }
        Ok(Self(CtcDecoder::pp_ocr(chars)))
    }
}

impl Builtin for CtcDecode {
    fn ports(&self) -> StepPorts {
        StepPorts {
            inputs: vec![
                port("scores", ValueType::list(Datatype::Fp32, &[-1, -1, self.0.classes() as i64])),
                port("order", ValueType::one(Datatype::Int64, &[-1])),
            ],
            outputs: vec![
                port("texts", ValueType::one(Datatype::Bytes, &[-1])),
                port("confidences", ValueType::one(Datatype::Fp32, &[-1])),
            ],
            maps_lists: false,
        }
    }

    fn run(&self, inputs: Vec<Value>, _hold: &Hold) -> Result<Vec<Value>, Error> {
        let mut it = inputs.into_iter();
        let scores = it.next().expect("two inputs").many("scores")?;
        let order = it.next().expect("two inputs").one("order")?;
        let order = ints(&order, "order")?;
        let n = order.len();
        let mut texts: Vec<Option<Vec<u8>>> = vec![None; n];
        let mut confidences = vec![0.0f32; n];
        let mut next = order.iter();
        for t in &scores {
            let [rows, steps, classes] = t.shape[..] else {
                return Err(Error::invalid(
                    "scores",
                    format!("`scores` must be [rows, steps, classes], got {:?}", t.shape),
                ));
            };
            let v = floats(t, "scores")?;
            for r in 0..rows {
                let line = next.next().and_then(|&l| usize::try_from(l).ok()).filter(|&l| l < n && texts[l].is_none());
                let line = line.ok_or_else(|| Error::invalid("order", "`order` does not name each line once"))?;
                let d = self
                    .0
                    .decode(&v[r * steps * classes..(r + 1) * steps * classes], classes)
                    .map_err(|e| Error::invalid("scores", e))?;
                texts[line] = Some(d.text.into_bytes());
                confidences[line] = d.confidence;
            }
        }
        let texts = texts.into_iter().collect::<Option<Vec<_>>>().ok_or_else(|| {
            Error::invalid("scores", format!("the scores hold fewer rows than the {n} lines of `order`"))
        })?;
        Ok(vec![
            Value::One(Tensor { shape: vec![n], data: TensorData::Bytes(texts) }),
            Value::One(f32_tensor(vec![n], confidences)),
        ])
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TopKParams {
    /// A file in the version directory with one label per class.
    labels: String,
    #[serde(default = "five")]
    k: usize,
    /// The scores are logits: answer softmax probabilities.
    #[serde(default)]
    softmax: bool,
}

fn five() -> usize {
    5
}

/// `labels.top_k`: each row of `scores` `[n, classes]` → its `k` best `labels` `[n, k]` and
/// their `probabilities` `[n, k]`, best first.
pub struct TopK {
    labels: Vec<String>,
    k: usize,
    softmax: bool,
}

impl TopK {
    pub fn new(p: TopKParams, ctx: &Context) -> Result<Self, String> {
        let labels: Vec<String> = read_file(ctx.dir, &p.labels, "labels")?.lines().map(str::to_owned).collect();
        if p.k == 0 || p.k > labels.len() {
            return Err(format!("`k` must be in 1..={} (the labels), got {}", labels.len(), p.k));
        }
        Ok(Self { labels, k: p.k, softmax: p.softmax })
    }
}

impl Builtin for TopK {
    fn ports(&self) -> StepPorts {
        let (c, k) = (self.labels.len() as i64, self.k as i64);
        StepPorts {
            inputs: vec![port("scores", ValueType::one(Datatype::Fp32, &[-1, c]))],
            outputs: vec![
                port("labels", ValueType::one(Datatype::Bytes, &[-1, k])),
                port("probabilities", ValueType::one(Datatype::Fp32, &[-1, k])),
            ],
            maps_lists: false,
        }
    }

    fn run(&self, inputs: Vec<Value>, _hold: &Hold) -> Result<Vec<Value>, Error> {
        let t = inputs.into_iter().next().expect("one input").one("scores")?;
        let c = self.labels.len();
        if t.shape.len() != 2 || t.shape[1] != c {
            return Err(Error::invalid("scores", format!("`scores` must be [rows, {c}], got {:?}", t.shape)));
        }
        let (mut labels, mut probs) = (Vec::new(), Vec::new());
        for row in floats(&t, "scores")?.chunks_exact(c) {
            let p = if self.softmax { aiserve_core::math::softmax(row) } else { row.to_vec() };
            let mut idx: Vec<usize> = (0..c).collect();
            idx.sort_by(|&a, &b| p[b].total_cmp(&p[a]));
            for &i in &idx[..self.k] {
                labels.push(self.labels[i].clone().into_bytes());
                probs.push(p[i]);
            }
        }
        let rows = t.shape[0];
        Ok(vec![
            Value::One(Tensor { shape: vec![rows, self.k], data: TensorData::Bytes(labels) }),
            Value::One(f32_tensor(vec![rows, self.k], probs)),
        ])
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::budget::MemoryBudget;

    fn ctx<'a>(
        dir: &'a std::path::Path,
        meta: &'a dyn Fn(&str) -> Option<std::collections::BTreeMap<String, String>>,
    ) -> Context<'a> {
        Context { dir, step_metadata: meta }
    }

    #[test]
    fn ctc_reads_characters_from_a_model_or_a_file_and_puts_lines_back_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let meta = |step: &str| (step == "rec").then(|| [("character".to_owned(), "a\nb".to_owned())].into());
        let c = CtcDecode::new(toml::from_str("characters_from = \"rec\"").unwrap(), &ctx(dir.path(), &meta)).unwrap();
        assert_eq!(c.ports().inputs[0].1.dims, [-1, -1, 4], "blank, a, b, space");
        // Two rows of two steps: row 0 reads "b ", row 1 reads "a"; they are lines 1 and 0.
        let scores = f32_tensor(vec![2, 2, 4], vec![0., 0., 1., 0., 0., 0., 0., 0.8, 0., 0.5, 0., 0., 1., 0., 0., 0.]);
        let order = Tensor { shape: vec![2], data: TensorData::I64(vec![1, 0]) };
        let out =
            c.run(vec![Value::Many(vec![scores]), Value::One(order)], &MemoryBudget::new(1 << 20).hold()).unwrap();
        assert_eq!(
            out[0],
            Value::One(Tensor { shape: vec![2], data: TensorData::Bytes(vec![b"a".to_vec(), b"b ".to_vec()]) })
        );
        assert_eq!(out[1], Value::One(f32_tensor(vec![2], vec![0.5, 0.9])));
        let e = CtcDecode::new(toml::from_str("characters_from = \"det\"").unwrap(), &ctx(dir.path(), &meta))
            .err()
            .unwrap();
        assert!(e.contains("`det`, which is not a model step"), "{e}");
        std::fs::write(dir.path().join("keys.txt"), "x\ny\nz\n").unwrap();
        let f = CtcDecode::new(toml::from_str("characters = \"keys.txt\"").unwrap(), &ctx(dir.path(), &meta)).unwrap();
        assert_eq!(f.0.classes(), 5);
        let e = CtcDecode::new(toml::from_str("characters = \"../keys.txt\"").unwrap(), &ctx(dir.path(), &meta))
            .err()
            .unwrap();
        assert!(e.contains("must be a file name in the version directory"), "{e}");
    }

    #[test]
    fn top_k_answers_the_best_labels_first() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("l.txt"), "cat\ndog\nfox\n").unwrap();
        let none = |_: &str| None;
        let t =
            TopK::new(toml::from_str("labels = \"l.txt\"\nk = 2\nsoftmax = true").unwrap(), &ctx(dir.path(), &none))
                .unwrap();
        let out = t
            .run(vec![Value::One(f32_tensor(vec![1, 3], vec![0.0, 2.0, 1.0]))], &MemoryBudget::new(1 << 20).hold())
            .unwrap();
        assert_eq!(
            out[0],
            Value::One(Tensor { shape: vec![1, 2], data: TensorData::Bytes(vec![b"dog".to_vec(), b"fox".to_vec()]) })
        );
        let Value::One(p) = &out[1] else { panic!("one tensor") };
        let p = floats(p, "p").unwrap();
        assert!((p[0] - 0.665_240_9).abs() < 1e-6 && (p[1] - 0.244_728_5).abs() < 1e-6, "{p:?}");
        assert!(TopK::new(toml::from_str("labels = \"l.txt\"\nk = 4").unwrap(), &ctx(dir.path(), &none)).is_err());
    }
}
