//! One loaded copy of an ONNX graph: an ONNX Runtime session owned by one model thread, and
//! the conversions between aiserve's typed tensors and ONNX Runtime values. Inputs move into
//! ONNX Runtime without a copy; outputs are copied out once.

use std::borrow::Cow;
use std::path::Path;

use aiserve_core::{BackendError, GraphError, GraphModel, Tensor, TensorData};
use ort::session::builder::GraphOptimizationLevel;
use ort::session::{Session, SessionInputValue};
use ort::value::{DynValue, TensorElementType, ValueType};

/// How a session runs its graph.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Options {
    /// Threads inside each operator.
    pub threads: usize,
    /// Whether those threads spin while they wait for work.
    pub spinning: bool,
    /// Whether aiserve rewrites the graph first ([`crate::fuse`]).
    pub fuse: bool,
}

/// Opens a session on the graph at `path`.
pub fn open(env: &ort::environment::Environment, path: &Path, options: Options) -> Result<Session, String> {
    let mut builder = Session::builder(env)
        .and_then(|b| b.with_optimization_level(GraphOptimizationLevel::All).map_err(Into::into))
        .and_then(|b| b.with_intra_threads(options.threads).map_err(Into::into))
        .and_then(|b| b.with_inter_threads(1).map_err(Into::into))
        .and_then(|b| b.with_intra_op_spinning(options.spinning).map_err(Into::into))
        .map_err(|e| e.to_string())?;
    let rewritten = if options.fuse { rewrite(path) } else { None };
    match rewritten {
        Some(bytes) => builder.commit_from_memory(&bytes),
        None => builder.commit_from_file(path),
    }
    .map_err(|e| e.to_string())
}

/// The graph at `path` rewritten, when a rewrite fits it.
fn rewrite(path: &Path) -> Option<Vec<u8>> {
    if std::fs::metadata(path).ok()?.len() > crate::fuse::MAX_BYTES {
        return None;
    }
    let bytes = std::fs::read(path).ok()?;
    match crate::fuse::fuse(&bytes) {
        Ok(Some((bytes, fused))) => {
            tracing::info!(graph = %path.display(), "graph rewritten for ONNX Runtime: {fused}");
            Some(bytes)
        }
        Ok(None) => None,
        Err(e) => {
            tracing::debug!(graph = %path.display(), "not rewritten: {e}");
            None
        }
    }
}

/// A loaded ONNX graph.
pub struct OnnxModel {
    session: Session,
    inputs: Vec<String>,
}

impl OnnxModel {
    pub fn new(session: Session) -> Self {
        let inputs = session.inputs().iter().map(|i| i.name().to_owned()).collect();
        Self { session, inputs }
    }
}

impl GraphModel for OnnxModel {
    fn run(&mut self, inputs: Vec<Tensor>) -> Result<Vec<Tensor>, GraphError> {
        let values = inputs
            .into_iter()
            .zip(&self.inputs)
            .map(|(t, name)| Ok((Cow::Borrowed(name.as_str()), SessionInputValue::from(to_value(t)?))))
            .collect::<Result<Vec<_>, BackendError>>()?;
        let outputs = self.session.run(values).map_err(run_error)?;
        Ok(outputs.values().map(|v| from_value(&v)).collect::<Result<_, _>>()?)
    }
}

/// Longest runtime reason repeated to a client.
const MAX_REASON_CHARS: usize = 300;

/// A failed run: ONNX Runtime's INVALID_ARGUMENT (inputs of the declared shape its operators
/// cannot take, such as an empty picture) is the client's to fix, as Triton's ONNX backend
/// answers it; anything else is the server's. The client sees the reason without source paths.
fn run_error(e: ort::Error) -> GraphError {
    if e.code() != ort::error::ErrorCode::InvalidArgument {
        return GraphError::Backend(BackendError(format!("ONNX Runtime: {e}")));
    }
    GraphError::Rejected(client_reason(e.message()))
}

/// ONNX Runtime's message as a client may read it: words that are file paths dropped, at most
/// [`MAX_REASON_CHARS`] characters.
fn client_reason(message: &str) -> String {
    let kept: Vec<&str> = message.split_whitespace().filter(|w| !w.starts_with('/')).collect();
    let mut reason = kept.join(" ");
    if let Some((cut, _)) = reason.char_indices().nth(MAX_REASON_CHARS) {
        reason.truncate(cut);
        reason.push('…');
    }
    reason
}

fn err(e: impl std::fmt::Display) -> BackendError {
    BackendError(format!("ONNX Runtime: {e}"))
}

/// Moves a tensor into an ONNX Runtime value.
fn to_value(t: Tensor) -> Result<DynValue, BackendError> {
    use ort::value::Tensor as T;
    let shape: Vec<i64> = t.shape.iter().map(|&d| d as i64).collect();
    macro_rules! owned {
        ($v:expr) => {
            T::from_array((shape, $v)).map(|v| v.into_dyn()).map_err(err)
        };
    }
    match t.data {
        TensorData::Bool(v) => owned!(v),
        TensorData::U8(v) => owned!(v),
        TensorData::U16(v) => owned!(v),
        TensorData::U32(v) => owned!(v),
        TensorData::U64(v) => owned!(v),
        TensorData::I8(v) => owned!(v),
        TensorData::I16(v) => owned!(v),
        TensorData::I32(v) => owned!(v),
        TensorData::I64(v) => owned!(v),
        TensorData::F16(v) => owned!(v),
        TensorData::Bf16(v) => owned!(v),
        TensorData::F32(v) => owned!(v),
        TensorData::F64(v) => owned!(v),
        TensorData::Bytes(v) => {
            let strings = v
                .into_iter()
                .map(|b| String::from_utf8(b).map_err(|_| BackendError("ONNX string tensors must be UTF-8".into())))
                .collect::<Result<Vec<_>, _>>()?;
            T::from_string_array((shape, strings.as_slice())).map(|v| v.into_dyn()).map_err(err)
        }
    }
}

/// Copies an ONNX Runtime output into a tensor.
fn from_value(v: &DynValue) -> Result<Tensor, BackendError> {
    let ValueType::Tensor { ty, .. } = v.dtype() else {
        return Err(BackendError(format!("ONNX Runtime gave a {} where a tensor was declared", v.dtype())));
    };
    macro_rules! copy {
        ($t:ty, $variant:ident) => {{
            let (shape, data) = v.try_extract_tensor::<$t>().map_err(err)?;
            (shape.iter().map(|&d| d.max(0) as usize).collect(), TensorData::$variant(data.to_vec()))
        }};
    }
    let (shape, data): (Vec<usize>, TensorData) = match ty {
        TensorElementType::Bool => copy!(bool, Bool),
        TensorElementType::Uint8 => copy!(u8, U8),
        TensorElementType::Uint16 => copy!(u16, U16),
        TensorElementType::Uint32 => copy!(u32, U32),
        TensorElementType::Uint64 => copy!(u64, U64),
        TensorElementType::Int8 => copy!(i8, I8),
        TensorElementType::Int16 => copy!(i16, I16),
        TensorElementType::Int32 => copy!(i32, I32),
        TensorElementType::Int64 => copy!(i64, I64),
        TensorElementType::Float16 => copy!(half::f16, F16),
        TensorElementType::Bfloat16 => copy!(half::bf16, Bf16),
        TensorElementType::Float32 => copy!(f32, F32),
        TensorElementType::Float64 => copy!(f64, F64),
        TensorElementType::String => {
            let (shape, strings) = v.try_extract_strings().map_err(err)?;
            (
                shape.iter().map(|&d| d.max(0) as usize).collect(),
                TensorData::Bytes(strings.into_iter().map(String::into_bytes).collect()),
            )
        }
        other => {
            return Err(BackendError(format!("ONNX Runtime gave a tensor of {other:?}, which aiserve does not serve")))
        }
    };
    Tensor::new(shape, data).map_err(BackendError)
}

#[cfg(test)]
mod tests {
    #[test]
    fn client_reasons_lose_paths_and_length() {
        let m = "Non-zero status code returned while running Conv node. Name:'c' Status Message: \
                 /onnxruntime_src/core/conv.h:12 Invalid input shape: {48,0}";
        assert_eq!(
            super::client_reason(m),
            "Non-zero status code returned while running Conv node. Name:'c' Status Message: Invalid input shape: {48,0}"
        );
        let long = super::client_reason(&"é".repeat(1000));
        assert_eq!(long.chars().count(), super::MAX_REASON_CHARS + 1);
    }
}
