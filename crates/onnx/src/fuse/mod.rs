//! Rewrites aiserve makes to a graph before ONNX Runtime optimises it. ONNX Runtime fuses a
//! convolution with the activation after it, but not with the constant scales and shifts that
//! exporters such as paddle2onnx write around it, nor with hard-swish spelled out as four
//! operators; each of those then costs a pass over the whole feature map, twice more for the
//! layout changes around it. PP-OCR's networks spend most of their time there: rewritten, its
//! detector runs 1.6× and its recogniser 2.2× faster on ONNX Runtime (BENCHMARKS.md).
//!
//! The rewrites ([`passes`]) keep the arithmetic up to float rounding. A graph none of them
//! fits, or one whose weights live in external files, is left as it is.

mod graph;
mod passes;

use std::fmt;

use onnx_protobuf::tensor_proto::DataLocation;
use onnx_protobuf::ModelProto;
use protobuf::{Enum, Message};

use graph::Graph;

/// Largest graph file rewritten: the rewrite holds a parsed copy of it while the version
/// loads. The convolutional networks it helps are far smaller (PP-OCR's are 2 to 11 MB); a
/// bigger graph is handed to ONNX Runtime as it is.
pub const MAX_BYTES: u64 = 256 << 20;

/// How many times each rewrite applied.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Fused {
    /// Constant scales and shifts folded into the convolution before them.
    pub conv_scales: usize,
    /// Hard-swish activations written as `x · HardSigmoid(x)`.
    pub hard_swish: usize,
    /// Scalar scale-then-shifts folded into the unpadded convolutions after them.
    pub into_conv: usize,
    /// Scalar scale-then-shifts made one BatchNormalization.
    pub batch_norm: usize,
}

impl Fused {
    fn any(&self) -> bool {
        *self != Self::default()
    }
}

impl fmt::Display for Fused {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} scales folded into the convolution before, {} hard-swish rewritten, {} scales folded into the \
             convolution after, {} scales made batch normalisations",
            self.conv_scales, self.hard_swish, self.into_conv, self.batch_norm
        )
    }
}

/// The rewritten model and what was rewritten, or `None` when nothing fits. An error means
/// the bytes are not an ONNX model this reads; the caller then hands ONNX Runtime the file as
/// it is (and gets its own error when it is broken).
pub fn fuse(bytes: &[u8]) -> Result<Option<(Vec<u8>, Fused)>, String> {
    let mut model = ModelProto::parse_from_bytes(bytes).map_err(|e| e.to_string())?;
    let opset = model.opset_import.iter().find(|o| o.domain.is_empty() || o.domain == "ai.onnx").map(|o| o.version);
    let (Some(opset), Some(graph)) = (opset, model.graph.as_mut()) else { return Ok(None) };
    let external = |t: &onnx_protobuf::TensorProto| {
        t.data_location.value() == DataLocation::EXTERNAL.value() || !t.external_data.is_empty()
    };
    if graph.initializer.iter().any(external) {
        return Ok(None);
    }
    let mut g = Graph::new(graph, opset);
    let fused = Fused {
        conv_scales: repeat(&mut g, passes::conv_scale),
        hard_swish: repeat(&mut g, passes::hard_swish),
        into_conv: repeat(&mut g, passes::scale_into_conv),
        batch_norm: repeat(&mut g, passes::scale_to_batch_norm),
    };
    if !fused.any() {
        return Ok(None);
    }
    g.finish();
    let bytes = model.write_to_bytes().map_err(|e| e.to_string())?;
    Ok(Some((bytes, fused)))
}

/// Applies `pass` wherever it fits; how many times it did.
fn repeat(g: &mut Graph, pass: fn(&mut Graph, usize) -> Option<usize>) -> usize {
    let (mut from, mut count) = (0, 0);
    while let Some(at) = pass(g, from) {
        (from, count) = (at, count + 1);
    }
    count
}

#[cfg(test)]
mod tests;
