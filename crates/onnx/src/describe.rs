//! What an ONNX graph declares, read from an open session: its inputs and outputs (names,
//! element types, dimensions with every open size as -1, however the file spells it: a name,
//! nothing, or -1) and its metadata (producer, graph name, version, custom properties such as
//! PP-OCR's `character` list). Triton's config auto-complete, for ONNX.

use std::collections::BTreeMap;

use aiserve_core::config::OnnxConfig;
use aiserve_core::{Datatype, GraphInfo, LoadError, TensorSpec};
use ort::session::Session;
use ort::value::{Outlet, TensorElementType, ValueType};

/// Triton's platform name for ONNX Runtime models.
pub const PLATFORM: &str = "onnxruntime_onnx";

/// The graph's declaration, with `[onnx]`'s batching choice applied.
pub fn describe(session: &Session, config: &OnnxConfig, threads: usize) -> Result<GraphInfo, LoadError> {
    let inputs = session.inputs().iter().map(|o| spec(o, "input")).collect::<Result<Vec<_>, _>>()?;
    let outputs = session.outputs().iter().map(|o| spec(o, "output")).collect::<Result<Vec<_>, _>>()?;
    if inputs.is_empty() || outputs.is_empty() {
        return Err(LoadError::Unsupported(format!(
            "the graph has {} inputs and {} outputs; aiserve serves graphs with at least one of each",
            inputs.len(),
            outputs.len()
        )));
    }
    let batchable = GraphInfo::batchable(&inputs, &outputs);
    let batched = match config.batching {
        None => batchable,
        Some(true) if !batchable => {
            let fixed = inputs.iter().chain(&outputs).find(|t| t.dims.first() != Some(&-1)).expect("one is fixed");
            return Err(LoadError::Config(format!(
                "`onnx.batching = true`, but dimension 0 of `{}` is {:?}, not open; every input and output must \
                 leave it open to be a batch",
                fixed.name,
                fixed.dims.first()
            )));
        }
        Some(b) => b,
    };
    Ok(GraphInfo {
        inputs,
        outputs,
        batched,
        platform: PLATFORM.into(),
        metadata: metadata(session),
        threads,
        spinning: config.spinning.unwrap_or(false),
        fuse: config.fuse.unwrap_or(true),
        classifier: None,
        reader: None,
    })
}

fn spec(outlet: &Outlet, what: &str) -> Result<TensorSpec, LoadError> {
    let ValueType::Tensor { ty, shape, .. } = outlet.dtype() else {
        return Err(LoadError::Unsupported(format!(
            "{what} `{}` is a {}, not a tensor (for scikit-learn classifiers, convert with skl2onnx's \
             options={{'zipmap': False}})",
            outlet.name(),
            outlet.dtype()
        )));
    };
    let datatype = datatype(*ty).ok_or_else(|| {
        LoadError::Unsupported(format!(
            "{what} `{}` has element type {ty:?}, which aiserve does not serve",
            outlet.name()
        ))
    })?;
    let dims = shape.iter().map(|&d| if d < 0 { -1 } else { d }).collect();
    Ok(TensorSpec { name: outlet.name().to_owned(), datatype, dims })
}

/// The KServe datatype of an ONNX element type.
pub fn datatype(ty: TensorElementType) -> Option<Datatype> {
    Some(match ty {
        TensorElementType::Bool => Datatype::Bool,
        TensorElementType::Uint8 => Datatype::Uint8,
        TensorElementType::Uint16 => Datatype::Uint16,
        TensorElementType::Uint32 => Datatype::Uint32,
        TensorElementType::Uint64 => Datatype::Uint64,
        TensorElementType::Int8 => Datatype::Int8,
        TensorElementType::Int16 => Datatype::Int16,
        TensorElementType::Int32 => Datatype::Int32,
        TensorElementType::Int64 => Datatype::Int64,
        TensorElementType::Float16 => Datatype::Fp16,
        TensorElementType::Bfloat16 => Datatype::Bf16,
        TensorElementType::Float32 => Datatype::Fp32,
        TensorElementType::Float64 => Datatype::Fp64,
        TensorElementType::String => Datatype::Bytes,
        _ => return None,
    })
}

fn metadata(session: &Session) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    let Ok(m) = session.metadata() else { return out };
    let mut put = |k: &str, v: Option<String>| {
        if let Some(v) = v.filter(|v| !v.is_empty()) {
            out.insert(k.to_owned(), v);
        }
    };
    put("producer", m.producer());
    put("graph_name", m.name());
    put("domain", m.domain());
    put("description", m.description());
    // ONNX Runtime reports a graph without `model_version` as i64::MAX (its "no version").
    put("model_version", m.version().filter(|&v| v != 0 && v != i64::MAX).map(|v| v.to_string()));
    for key in m.custom_keys().unwrap_or_default() {
        let value = m.custom(&key);
        put(&key, value);
    }
    out
}
