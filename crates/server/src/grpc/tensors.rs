//! KServe v2 tensors on the gRPC wire: `ModelInferRequest` inputs (raw little-endian bytes in
//! `raw_input_contents`, or typed `contents`) into `crate::kserve::Input`s, outputs into
//! `raw_output_contents` (what Triton answers, and what tritonclient reads), and request
//! parameters into the JSON map the shared parameter parsers take.
//!
//! Every decoded value is counted against the request's hold before it is allocated; shapes
//! and element counts are checked by the shared `crate::kserve` code.

use aiserve_runtime::budget::Hold;
use aiserve_runtime::Error;
use prost::bytes::Bytes;
use serde_json::{Map, Value};

use super::pb::inference::infer_parameter::ParameterChoice;
use super::pb::inference::model_infer_request::InferInputTensor;
use super::pb::inference::model_infer_response::InferOutputTensor;
use super::pb::inference::{InferParameter, InferTensorContents};
use crate::kserve::tensor::{counted, ints};
use crate::kserve::{self, Datatype, Output, Values};
use aiserve_core::TensorData;

/// Decodes the inputs of a request: input `i` takes `raw[i]` when the request carries raw
/// contents (then every input must), else its typed `contents`.
pub fn decode_inputs(inputs: Vec<InferInputTensor>, raw: Vec<Bytes>, hold: &Hold) -> Result<Vec<kserve::Input>, Error> {
    if !raw.is_empty() && raw.len() != inputs.len() {
        return Err(Error::invalid(
            "raw_input_contents",
            format!("`raw_input_contents` has {} entries for {} inputs; give one per input", raw.len(), inputs.len()),
        ));
    }
    let mut raw = raw.into_iter();
    inputs
        .into_iter()
        .enumerate()
        .map(|(i, input)| {
            let field = format!("inputs[{i}]");
            let datatype = kserve::tensor::datatype(&input.datatype, &format!("{field}.datatype"))?;
            let values = match (raw.next(), input.contents) {
                (Some(_), Some(_)) => {
                    return Err(Error::invalid(
                        format!("{field}.contents"),
                        format!("`{field}` has both `contents` and `raw_input_contents`; send one"),
                    ))
                }
                (Some(bytes), None) => kserve::tensor::from_le_bytes(datatype, &bytes, &field, hold)?,
                (None, Some(c)) => typed(datatype, c, &field, hold)?,
                (None, None) => {
                    return Err(Error::invalid(
                        format!("{field}.contents"),
                        format!("`{field}` has no data: send `contents` or `raw_input_contents`"),
                    ))
                }
            };
            Ok(kserve::Input { name: input.name, datatype: input.datatype, shape: input.shape, values })
        })
        .collect()
}

/// Typed contents: the repeated field that matches the datatype (and no other).
fn typed(datatype: Datatype, c: InferTensorContents, field: &str, hold: &Hold) -> Result<Values, Error> {
    let f = format!("{field}.contents");
    let wrong = |has: &str| Error::invalid(&f, format!("`{f}` holds {has} but the datatype is {}", datatype.name()));
    let filled = [
        (!c.bool_contents.is_empty(), "bool_contents"),
        (!c.int_contents.is_empty(), "int_contents"),
        (!c.int64_contents.is_empty(), "int64_contents"),
        (!c.uint_contents.is_empty(), "uint_contents"),
        (!c.uint64_contents.is_empty(), "uint64_contents"),
        (!c.fp32_contents.is_empty(), "fp32_contents"),
        (!c.fp64_contents.is_empty(), "fp64_contents"),
        (!c.bytes_contents.is_empty(), "bytes_contents"),
    ];
    let expected = match datatype {
        Datatype::Bool => "bool_contents",
        Datatype::Int8 | Datatype::Int16 | Datatype::Int32 => "int_contents",
        Datatype::Int64 => "int64_contents",
        Datatype::Uint8 | Datatype::Uint16 | Datatype::Uint32 => "uint_contents",
        Datatype::Uint64 => "uint64_contents",
        Datatype::Fp32 => "fp32_contents",
        Datatype::Fp64 => "fp64_contents",
        Datatype::Bytes => "bytes_contents",
        Datatype::Fp16 | Datatype::Bf16 => {
            return Err(Error::invalid(
                &f,
                format!("{} tensors have no typed contents; send them in `raw_input_contents`", datatype.name()),
            ))
        }
    };
    if let Some((_, other)) = filled.iter().find(|(set, name)| *set && *name != expected) {
        return Err(wrong(other));
    }
    let field = format!("{f}.{expected}");
    match datatype {
        Datatype::Bytes => kserve::tensor::raw_bytes(c.bytes_contents, &field, hold),
        Datatype::Bool => counted(TensorData::Bool(c.bool_contents), &field, hold),
        Datatype::Int8 | Datatype::Int16 | Datatype::Int32 => ints(&c.int_contents, datatype, &field, hold),
        Datatype::Int64 => ints(&c.int64_contents, datatype, &field, hold),
        Datatype::Uint8 | Datatype::Uint16 | Datatype::Uint32 => ints(&c.uint_contents, datatype, &field, hold),
        Datatype::Uint64 => ints(&c.uint64_contents, datatype, &field, hold),
        // The decoded message already holds these values: they move, no copy.
        Datatype::Fp32 => Ok(Values::Numbers(TensorData::F32(c.fp32_contents))),
        Datatype::Fp64 => Ok(Values::Numbers(TensorData::F64(c.fp64_contents))),
        Datatype::Fp16 | Datatype::Bf16 => unreachable!("refused above"),
    }
}

/// Outputs as Triton answers them: metadata in `outputs`, values in `raw_output_contents`.
pub fn encode_outputs(outputs: Vec<Output>) -> (Vec<InferOutputTensor>, Vec<Bytes>) {
    outputs
        .into_iter()
        .map(|o| {
            let mut raw = Vec::new();
            o.values.append_le_bytes(&mut raw);
            let meta = InferOutputTensor {
                name: o.name,
                datatype: o.datatype.name().to_owned(),
                shape: o.shape.iter().map(|&d| d as i64).collect(),
                ..Default::default()
            };
            (meta, Bytes::from(raw))
        })
        .unzip()
}

/// Request parameters as JSON values (bool, integer, float, string), for the parsers that
/// HTTP's JSON requests use too.
pub fn parameters_json(params: &std::collections::HashMap<String, InferParameter>) -> Map<String, Value> {
    params
        .iter()
        .map(|(k, p)| {
            let v = match &p.parameter_choice {
                None => Value::Null,
                Some(ParameterChoice::BoolParam(b)) => Value::from(*b),
                Some(ParameterChoice::Int64Param(i)) => Value::from(*i),
                Some(ParameterChoice::Uint64Param(u)) => Value::from(*u),
                Some(ParameterChoice::DoubleParam(d)) => Value::from(*d),
                Some(ParameterChoice::StringParam(s)) => Value::from(s.as_str()),
            };
            (k.clone(), v)
        })
        .collect()
}

/// A boolean parameter.
pub fn bool_param(b: bool) -> InferParameter {
    InferParameter { parameter_choice: Some(ParameterChoice::BoolParam(b)) }
}

/// A string parameter.
pub fn string_param(s: impl Into<String>) -> InferParameter {
    InferParameter { parameter_choice: Some(ParameterChoice::StringParam(s.into())) }
}
