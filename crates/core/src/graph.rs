//! Generic graph models (ONNX): tensors in, tensors out, with the names, datatypes and shapes
//! the graph itself declares. The loader reads those from the graph (Triton's config
//! auto-complete), `model.toml`'s `[onnx]` section adds what a graph cannot say, and every
//! request is checked against the declaration here, before it is queued, so a runtime never
//! sees a tensor its graph does not take.

use std::collections::BTreeMap;

use crate::config::ImageClassifierConfig;
use crate::dtype::Datatype;
use crate::error::{BackendError, InputError};
use crate::values::Tensor;

/// A tensor as a graph declares it.
#[derive(Clone, Debug, PartialEq)]
pub struct TensorSpec {
    pub name: String,
    pub datatype: Datatype,
    /// Dimensions; `-1` where the graph leaves the size open (named, empty or -1 in ONNX).
    pub dims: Vec<i64>,
}

impl TensorSpec {
    /// Checks a request's tensor against this declaration (`field` names it in errors).
    pub fn check(&self, tensor: &Tensor, field: &str) -> Result<(), InputError> {
        if tensor.datatype() != self.datatype {
            return Err(InputError::invalid(
                format!("{field}.datatype"),
                format!("input `{}` is {}, got {}", self.name, self.datatype, tensor.datatype()),
            ));
        }
        let fits = tensor.shape.len() == self.dims.len()
            && tensor.shape.iter().zip(&self.dims).all(|(&got, &want)| want < 0 || got as i64 == want);
        if !fits {
            return Err(InputError::invalid(
                format!("{field}.shape"),
                format!("input `{}` has shape {:?} (-1: any size), got {:?}", self.name, self.dims, tensor.shape),
            ));
        }
        Ok(())
    }
}

/// What a graph model takes and gives, read from the graph at load.
#[derive(Clone, Debug, PartialEq)]
pub struct GraphInfo {
    pub inputs: Vec<TensorSpec>,
    pub outputs: Vec<TensorSpec>,
    /// Dimension 0 of every input and output is the batch: requests are joined along it (up to
    /// `max_batch_size` rows) and their rows split back out.
    pub batched: bool,
    /// Triton's platform name for the runtime, e.g. `onnxruntime_onnx`.
    pub platform: String,
    /// The graph's metadata: producer, graph name, version and its custom properties.
    pub metadata: BTreeMap<String, String>,
    /// Threads one run may use inside an operator.
    pub threads: usize,
    /// Whether the runtime's operator threads spin while waiting for work (`[onnx] spinning`).
    pub spinning: bool,
    /// Whether aiserve rewrites the graph before the runtime optimises it (`[onnx] fuse`).
    pub fuse: bool,
    /// Set when `model.toml` makes it an image classifier (`/classify` takes pictures).
    pub classifier: Option<GraphClassifier>,
    /// Set when the model reads a string from a picture (`/classify` answers the string).
    pub reader: Option<GraphReader>,
}

/// A model that reads a line of writing from a picture (an `image_to_text` version): its picture
/// input `[N, height, width, 1]` in [0, 1] with light writing on `background`, its text output
/// (BYTES `[N]`) and the per-character probabilities output (FP32 `[N, positions]`, 0 past the
/// end).
#[derive(Clone, Debug, PartialEq)]
pub struct GraphReader {
    pub input: usize,
    pub text: usize,
    pub probabilities: usize,
    pub height: usize,
    pub width: usize,
    /// The margin (pixels above, below and left of the writing) pictures are laid out with.
    pub margin: usize,
}

/// An image classifier graph, resolved at load from `[onnx.image]` and the graph.
#[derive(Clone, Debug, PartialEq)]
pub struct GraphClassifier {
    /// Index of the picture input and of the scores output.
    pub input: usize,
    pub output: usize,
    pub height: usize,
    pub width: usize,
    pub config: ImageClassifierConfig,
    pub labels: Vec<String>,
}

impl GraphClassifier {
    /// Checks `[onnx.image]` against the graph's declaration; `labels` are the labels file's lines.
    pub fn resolve(
        inputs: &[TensorSpec],
        outputs: &[TensorSpec],
        config: &ImageClassifierConfig,
        labels: Vec<String>,
    ) -> Result<Self, String> {
        let pick = |list: &[TensorSpec], name: &Option<String>, what: &str| -> Result<usize, String> {
            match name {
                Some(n) => {
                    list.iter().position(|t| &t.name == n).ok_or_else(|| format!("the graph has no {what} `{n}`"))
                }
                None if list.len() == 1 => Ok(0),
                None => Err(format!("the graph has {} {what}s: name one in `onnx.image.{what}`", list.len())),
            }
        };
        if inputs.len() != 1 {
            return Err(format!("an image classifier takes one input, the picture; this graph takes {}", inputs.len()));
        }
        let input = pick(inputs, &config.input, "input")?;
        let output = pick(outputs, &config.output, "output")?;
        let spec = &inputs[input];
        if spec.datatype != Datatype::Fp32 {
            return Err(format!("input `{}` is {}; pictures become FP32", spec.name, spec.datatype));
        }
        let [_, a, b, c] = spec.dims[..] else {
            return Err(format!(
                "input `{}` has dims {:?}; a picture input has 4 (N, C, H, W or N, H, W, C)",
                spec.name, spec.dims
            ));
        };
        let (ch, h, w) = if config.layout == "NCHW" { (a, b, c) } else { (c, a, b) };
        let want = config.channel_count() as i64;
        if ch >= 0 && ch != want {
            return Err(format!(
                "input `{}` takes {ch} channels; `onnx.image.channels = {:?}` gives {want}",
                spec.name, config.channels
            ));
        }
        let (height, width) = match (config.size, h, w) {
            (Some([sh, sw]), h, w) if (h < 0 || h == sh as i64) && (w < 0 || w == sw as i64) => (sh, sw),
            (Some(size), h, w) => {
                return Err(format!("`onnx.image.size` is {size:?} but input `{}` is {h}x{w}", spec.name))
            }
            (None, h, w) if h > 0 && w > 0 => (h as usize, w as usize),
            (None, _, _) => {
                return Err(format!("input `{}` has open sizes: give `onnx.image.size = [height, width]`", spec.name))
            }
        };
        let out = &outputs[output];
        let classes = match out.dims[..] {
            [_, c] => c,
            _ => return Err(format!("output `{}` has dims {:?}; scores are [N, classes]", out.name, out.dims)),
        };
        if labels.is_empty() || (classes >= 0 && classes as usize != labels.len()) {
            return Err(format!(
                "output `{}` has {classes} classes but the labels file has {} lines",
                out.name,
                labels.len()
            ));
        }
        if out.datatype != Datatype::Fp32 {
            return Err(format!("output `{}` is {}; scores must be FP32", out.name, out.datatype));
        }
        Ok(Self { input, output, height, width, config: config.clone(), labels })
    }
}

impl GraphInfo {
    /// Whether every input and output leaves dimension 0 open, so it can be a batch.
    pub fn batchable(inputs: &[TensorSpec], outputs: &[TensorSpec]) -> bool {
        inputs.iter().chain(outputs).all(|t| t.dims.first() == Some(&-1))
    }

    /// The request's inputs in graph order, each checked against its declaration; `named` is
    /// what arrived (name, tensor), in any order.
    pub fn order_inputs(&self, named: Vec<(String, Tensor)>, max_batch: usize) -> Result<Vec<Tensor>, InputError> {
        let mut slots: Vec<Option<Tensor>> = vec![None; self.inputs.len()];
        for (i, (name, tensor)) in named.into_iter().enumerate() {
            let field = format!("inputs[{i}]");
            let Some(j) = self.inputs.iter().position(|s| s.name == name) else {
                return Err(InputError::invalid(
                    format!("{field}.name"),
                    format!("unknown input `{name}`; the model takes {}", self.input_names()),
                ));
            };
            if slots[j].is_some() {
                return Err(InputError::invalid(format!("{field}.name"), format!("input `{name}` is given twice")));
            }
            self.inputs[j].check(&tensor, &field)?;
            slots[j] = Some(tensor);
        }
        let inputs: Vec<Tensor> = slots
            .into_iter()
            .zip(&self.inputs)
            .map(|(t, spec)| {
                t.ok_or_else(|| {
                    InputError::invalid(
                        "inputs",
                        format!("input `{}` is missing; the model takes {}", spec.name, self.input_names()),
                    )
                })
            })
            .collect::<Result<_, _>>()?;
        if self.batched {
            let rows = inputs[0].rows();
            if let Some((t, spec)) = inputs.iter().zip(&self.inputs).find(|(t, _)| t.rows() != rows) {
                return Err(InputError::invalid(
                    "inputs",
                    format!(
                        "every input must have the same batch size (dimension 0): `{}` has {rows}, `{}` has {}",
                        self.inputs[0].name,
                        spec.name,
                        t.rows()
                    ),
                ));
            }
            if rows == 0 {
                return Err(InputError::invalid("inputs", "the batch (dimension 0) must hold at least one row, got 0"));
            }
            if rows > max_batch {
                return Err(InputError::too_large("inputs.batch", max_batch, rows));
            }
        }
        Ok(inputs)
    }

    fn input_names(&self) -> String {
        self.inputs.iter().map(|s| format!("`{}`", s.name)).collect::<Vec<_>>().join(", ")
    }
}

/// A loaded graph model. Called from a single dedicated thread.
pub trait GraphModel: Send {
    /// Runs the graph on inputs in declaration order; outputs in declaration order.
    fn run(&mut self, inputs: Vec<Tensor>) -> Result<Vec<Tensor>, GraphError>;
}

/// Why a graph run failed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum GraphError {
    /// The runtime refused these inputs though they match the declaration (a size its
    /// operators cannot take, such as a picture of width 0): the client's to fix, answered
    /// as a bad request with the runtime's reason, as Triton answers ONNX Runtime's
    /// INVALID_ARGUMENT.
    #[error("the inputs were refused: {0}")]
    Rejected(String),
    /// Anything else: the server's fault.
    #[error(transparent)]
    Backend(#[from] BackendError),
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::values::TensorData;

    fn info() -> GraphInfo {
        let spec = |name: &str, datatype, dims: &[i64]| TensorSpec { name: name.into(), datatype, dims: dims.to_vec() };
        let inputs = vec![spec("x", Datatype::Fp32, &[-1, 3]), spec("ids", Datatype::Int64, &[-1, -1])];
        let outputs = vec![spec("y", Datatype::Fp32, &[-1, 2])];
        let batched = GraphInfo::batchable(&inputs, &outputs);
        GraphInfo {
            inputs,
            outputs,
            batched,
            platform: "test".into(),
            metadata: BTreeMap::new(),
            threads: 1,
            spinning: false,
            fuse: false,
            classifier: None,
            reader: None,
        }
    }

    fn x(rows: usize) -> Tensor {
        Tensor::new(vec![rows, 3], TensorData::F32(vec![0.0; rows * 3])).unwrap()
    }

    fn ids(rows: usize, len: usize) -> Tensor {
        Tensor::new(vec![rows, len], TensorData::I64(vec![1; rows * len])).unwrap()
    }

    #[test]
    fn inputs_are_ordered_and_checked() {
        let g = info();
        assert!(g.batched);
        let ordered = g.order_inputs(vec![("ids".into(), ids(2, 5)), ("x".into(), x(2))], 8).unwrap();
        assert_eq!(ordered[0].shape, [2, 3]);
        assert_eq!(ordered[1].shape, [2, 5]);
        let err = |named, max| g.order_inputs(named, max).unwrap_err().to_string();
        assert!(err(vec![("x".into(), x(2))], 8).contains("`ids` is missing"));
        assert!(err(vec![("z".into(), x(2))], 8).contains("unknown input `z`; the model takes `x`, `ids`"));
        assert!(err(vec![("x".into(), x(2)), ("x".into(), x(2))], 8).contains("given twice"));
        assert!(err(vec![("x".into(), x(2)), ("ids".into(), ids(3, 1))], 8).contains("same batch size"));
        assert!(err(vec![("x".into(), x(9)), ("ids".into(), ids(9, 1))], 8).contains("at most 8, got 9"));
        let wrong_type = Tensor::new(vec![1, 3], TensorData::F64(vec![0.0; 3])).unwrap();
        let e = err(vec![("x".into(), wrong_type), ("ids".into(), ids(1, 1))], 8);
        assert!(e.contains("input `x` is FP32, got FP64"), "{e}");
        let wrong_shape = Tensor::new(vec![1, 4], TensorData::F32(vec![0.0; 4])).unwrap();
        let e = err(vec![("x".into(), wrong_shape), ("ids".into(), ids(1, 1))], 8);
        assert!(e.contains("[-1, 3]") && e.contains("[1, 4]"), "{e}");
    }

    #[test]
    fn classifiers_are_checked_against_the_graph() {
        let cfg: ImageClassifierConfig = toml::from_str("labels = \"l.txt\"").unwrap();
        let spec =
            |name: &str, dims: &[i64]| TensorSpec { name: name.into(), datatype: Datatype::Fp32, dims: dims.to_vec() };
        let inputs = [spec("x", &[-1, 3, 224, 224])];
        let outputs = [spec("logits", &[-1, 2])];
        let labels = || vec!["cat".to_owned(), "dog".to_owned()];
        let c = GraphClassifier::resolve(&inputs, &outputs, &cfg, labels()).unwrap();
        assert_eq!((c.height, c.width, c.input, c.output), (224, 224, 0, 0));
        let e = GraphClassifier::resolve(&inputs, &outputs, &cfg, vec!["one".into()]).unwrap_err();
        assert!(e.contains("2 classes but the labels file has 1"), "{e}");
        let open = [spec("x", &[-1, 3, -1, -1])];
        assert!(GraphClassifier::resolve(&open, &outputs, &cfg, labels()).unwrap_err().contains("onnx.image.size"));
        let nhwc: ImageClassifierConfig = toml::from_str("labels = \"l\"\nlayout = \"NHWC\"\nsize = [8, 8]").unwrap();
        assert!(GraphClassifier::resolve(&inputs, &outputs, &nhwc, labels()).unwrap_err().contains("224 channels"));
    }

    #[test]
    fn fixed_first_dims_are_not_a_batch() {
        let spec = TensorSpec { name: "x".into(), datatype: Datatype::Fp32, dims: vec![1, 3] };
        assert!(!GraphInfo::batchable(std::slice::from_ref(&spec), &[]));
    }
}
