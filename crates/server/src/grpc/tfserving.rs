//! TF Serving's gRPC API: `tensorflow.serving.PredictionService` (Predict, GetModelMetadata) and
//! `tensorflow.serving.ModelService` (GetModelStatus), what `tensorflow-serving-api`'s stubs call.
//!
//! A `ModelSpec` names the model and a version or a version label (`crate::tfserving`); the one
//! signature is `serving_default`. Predict converts `TensorProto`s (values in `tensor_content` or
//! the typed fields) into the same `crate::kserve` request HTTP and KServe gRPC run, and answers
//! `TensorProto`s with little-endian `tensor_content`, as TF Serving does. Image classifiers take
//! their input (e.g. `image`, DT_FLOAT `[N, 28, 28, 1]`) and answer the probabilities and `label`;
//! embedding models take `text` (DT_STRING `[N]`) and answer `embedding`.

use std::collections::HashMap;

use aiserve_runtime::budget::Hold;
use aiserve_runtime::servable::Servable;
use aiserve_runtime::Error;
use prost::Message;
use tonic::{Request, Response, Status};

use super::pb::tensorflow as tf;
use super::pb::tensorflow::serving as pb;
use crate::error::grpc_status;
use crate::http::state::AppState;
use crate::kserve::tensor::ints;
use crate::kserve::{self, Datatype, Values};
use crate::tfserving::{label_version, version_statuses, DEFAULT_SIGNATURE, PREDICT_METHOD};
use aiserve_core::TensorData;

pub struct Prediction {
    state: AppState,
}

pub struct Models {
    state: AppState,
}

impl Prediction {
    pub fn new(state: AppState) -> Self {
        Self { state }
    }
}

impl Models {
    pub fn new(state: AppState) -> Self {
        Self { state }
    }
}

/// The model spec a request must carry.
fn spec(spec: Option<pb::ModelSpec>) -> Result<pb::ModelSpec, Error> {
    spec.filter(|s| !s.name.is_empty())
        .ok_or_else(|| Error::invalid("model_spec", "`model_spec` with the model's `name` is required"))
}

/// The version a spec selects (`None`: the latest).
fn version_of(state: &AppState, spec: &pb::ModelSpec) -> Result<Option<String>, Error> {
    match &spec.version_choice {
        None => Ok(None),
        Some(pb::model_spec::VersionChoice::Version(v)) => Ok(Some(v.to_string())),
        Some(pb::model_spec::VersionChoice::VersionLabel(l)) => label_version(&state.runtime, &spec.name, l).map(Some),
    }
}

fn resolve(state: &AppState, spec: &pb::ModelSpec) -> Result<std::sync::Arc<Servable>, Error> {
    if !spec.signature_name.is_empty() && spec.signature_name != DEFAULT_SIGNATURE {
        return Err(Error::invalid(
            "model_spec.signature_name",
            format!(
                "serving signature key {} not found; this model has `{DEFAULT_SIGNATURE}`",
                crate::error::shown(serde_json::Value::from(spec.signature_name.as_str()))
            ),
        ));
    }
    state.registry.resolve(&spec.name, version_of(state, spec)?.as_deref())
}

/// The spec of the version that answered, as TF Serving reports it.
fn answered(servable: &Servable, signature: bool) -> pb::ModelSpec {
    pb::ModelSpec {
        name: servable.model.to_string(),
        version_choice: Some(pb::model_spec::VersionChoice::Version(servable.version.0 as i64)),
        signature_name: if signature { DEFAULT_SIGNATURE.into() } else { String::new() },
    }
}

/// A TensorFlow dtype as a KServe datatype.
fn datatype(dtype: i32, field: &str) -> Result<Datatype, Error> {
    use tf::DataType as D;
    Ok(match D::try_from(dtype).unwrap_or(D::DtInvalid) {
        D::DtFloat => Datatype::Fp32,
        D::DtDouble => Datatype::Fp64,
        D::DtInt32 => Datatype::Int32,
        D::DtUint8 => Datatype::Uint8,
        D::DtInt16 => Datatype::Int16,
        D::DtInt8 => Datatype::Int8,
        D::DtString => Datatype::Bytes,
        D::DtInt64 => Datatype::Int64,
        D::DtBool => Datatype::Bool,
        D::DtUint16 => Datatype::Uint16,
        D::DtHalf => Datatype::Fp16,
        D::DtBfloat16 => Datatype::Bf16,
        D::DtUint32 => Datatype::Uint32,
        D::DtUint64 => Datatype::Uint64,
        other => {
            return Err(Error::invalid(
                format!("{field}.dtype"),
                format!("`{field}.dtype` {} is not supported; send numbers or DT_STRING", other.as_str_name()),
            ))
        }
    })
}

/// A KServe datatype name as a TensorFlow dtype.
fn dtype(datatype: &str) -> tf::DataType {
    use tf::DataType as D;
    match Datatype::parse(datatype) {
        Some(Datatype::Fp32) => D::DtFloat,
        Some(Datatype::Fp64) => D::DtDouble,
        Some(Datatype::Int32) => D::DtInt32,
        Some(Datatype::Int64) => D::DtInt64,
        Some(Datatype::Uint8) => D::DtUint8,
        Some(Datatype::Bytes) => D::DtString,
        Some(Datatype::Bool) => D::DtBool,
        Some(Datatype::Fp16) => D::DtHalf,
        Some(Datatype::Bf16) => D::DtBfloat16,
        Some(Datatype::Int8) => D::DtInt8,
        Some(Datatype::Int16) => D::DtInt16,
        Some(Datatype::Uint16) => D::DtUint16,
        Some(Datatype::Uint32) => D::DtUint32,
        Some(Datatype::Uint64) => D::DtUint64,
        None => D::DtInvalid,
    }
}

fn shape_proto(shape: impl IntoIterator<Item = i64>) -> tf::TensorShapeProto {
    let dim = shape.into_iter().map(|size| tf::tensor_shape_proto::Dim { size, name: String::new() }).collect();
    tf::TensorShapeProto { dim, unknown_rank: false }
}

/// One input tensor, its values counted against `hold` as they are widened.
fn input(name: String, t: tf::TensorProto, hold: &Hold) -> Result<kserve::Input, Error> {
    let field = format!("inputs[{}]", crate::error::shown(serde_json::Value::from(name.as_str())));
    let dt = datatype(t.dtype, &field)?;
    let shape_field = format!("{field}.tensor_shape");
    let shape = match t.tensor_shape {
        Some(s) if !s.unknown_rank => s.dim.iter().map(|d| d.size).collect::<Vec<i64>>(),
        _ => return Err(Error::invalid(&shape_field, format!("`{shape_field}` must give every dimension"))),
    };
    let values = if !t.tensor_content.is_empty() {
        if dt == Datatype::Bytes {
            return Err(Error::invalid(&field, "DT_STRING values go in `string_val`, not `tensor_content`"));
        }
        kserve::tensor::from_le_bytes(dt, &t.tensor_content, &field, hold)?
    } else {
        match dt {
            Datatype::Bytes => kserve::tensor::utf8_texts(t.string_val, &format!("{field}.string_val"), hold)?,
            // The decoded message already holds these values: they move, no copy.
            Datatype::Fp32 => Values::Numbers(TensorData::F32(t.float_val)),
            Datatype::Fp64 => Values::Numbers(TensorData::F64(t.double_val)),
            Datatype::Int32 | Datatype::Int16 | Datatype::Int8 | Datatype::Uint8 | Datatype::Uint16 => {
                ints(&t.int_val, dt, &field, hold)?
            }
            Datatype::Int64 => ints(&t.int64_val, dt, &field, hold)?,
            Datatype::Bool => Values::Numbers(TensorData::Bool(t.bool_val)),
            Datatype::Uint32 => ints(&t.uint32_val, dt, &field, hold)?,
            Datatype::Uint64 => ints(&t.uint64_val, dt, &field, hold)?,
            Datatype::Fp16 | Datatype::Bf16 => {
                // The 16-bit patterns, laid out as the raw form and widened by the same code
                // (counted before the copy is made).
                hold.grow(t.half_val.len() * 2, &format!("the tensor {field}"))?;
                let bits: Vec<u8> = t.half_val.iter().flat_map(|&h| (h as u16).to_le_bytes()).collect();
                kserve::tensor::from_le_bytes(dt, &bits, &field, hold)?
            }
        }
    };
    Ok(kserve::Input { name, datatype: dt.name().to_owned(), shape, values })
}

/// A Predict request's input tensors, decoded (values counted against `hold`), by name.
pub fn decode_inputs(inputs: HashMap<String, tf::TensorProto>, hold: &Hold) -> Result<Vec<kserve::Input>, Error> {
    // A map has no order; sorted names keep errors stable.
    let mut named: Vec<(String, tf::TensorProto)> = inputs.into_iter().collect();
    named.sort_by(|a, b| a.0.cmp(&b.0));
    named.into_iter().map(|(n, t)| input(n, t, hold)).collect()
}

fn output(o: kserve::Output) -> (String, tf::TensorProto) {
    let mut t = tf::TensorProto {
        dtype: dtype(o.datatype.name()) as i32,
        tensor_shape: Some(shape_proto(o.shape.iter().map(|&d| d as i64))),
        ..Default::default()
    };
    match o.values {
        // DT_STRING has no packed form: its elements go in `string_val`.
        TensorData::Bytes(items) => t.string_val = items.into_iter().map(Into::into).collect(),
        values => {
            let mut content = Vec::new();
            values.append_le_bytes(&mut content);
            t.tensor_content = content.into();
        }
    }
    (o.name, t)
}

async fn predict(
    state: &AppState,
    metadata: &tonic::metadata::MetadataMap,
    req: pb::PredictRequest,
) -> Result<(std::sync::Arc<Servable>, pb::PredictResponse), Error> {
    let hold = super::hold_for(state, req.encoded_len())?;
    let spec = spec(req.model_spec)?;
    let servable = resolve(state, &spec)?;
    let deadline = super::deadline(state, metadata, None);
    let inputs = decode_inputs(req.inputs, &hold)?;
    let asked = (!req.output_filter.is_empty()).then_some(req.output_filter);
    let outputs = kserve::infer(
        &state.runtime,
        &servable,
        kserve::Request { inputs, outputs: asked, encoding: kserve::Encoding::Raw },
        &hold,
        deadline,
    )
    .await?;
    let resp = pb::PredictResponse {
        outputs: outputs.into_iter().map(output).collect(),
        model_spec: Some(answered(&servable, true)),
    };
    Ok((servable, resp))
}

/// The one signature of a version, from its KServe metadata.
fn signature(servable: &Servable) -> tf::SignatureDef {
    let md = kserve::metadata(servable);
    let infos = |list: Vec<kserve::TensorMeta>| -> HashMap<String, tf::TensorInfo> {
        list.into_iter()
            .map(|t| {
                let info = tf::TensorInfo {
                    encoding: Some(tf::tensor_info::Encoding::Name(t.name.clone())),
                    dtype: dtype(t.datatype) as i32,
                    tensor_shape: Some(shape_proto(t.shape)),
                };
                (t.name, info)
            })
            .collect()
    };
    tf::SignatureDef {
        inputs: infos(md.inputs),
        outputs: infos(md.outputs),
        method_name: PREDICT_METHOD.into(),
        defaults: HashMap::new(),
    }
}

fn model_metadata(state: &AppState, req: pb::GetModelMetadataRequest) -> Result<pb::GetModelMetadataResponse, Error> {
    let spec = spec(req.model_spec)?;
    if req.metadata_field.is_empty() {
        return Err(Error::invalid(
            "metadata_field",
            "`metadata_field` must name at least one field (`signature_def`)",
        ));
    }
    if let Some(other) = req.metadata_field.iter().find(|f| *f != "signature_def") {
        return Err(Error::invalid(
            "metadata_field",
            format!(
                "metadata field {} is not supported; this server has `signature_def`",
                crate::error::shown(serde_json::Value::from(other.as_str()))
            ),
        ));
    }
    let servable = resolve(state, &spec)?;
    let map =
        pb::SignatureDefMap { signature_def: HashMap::from([(DEFAULT_SIGNATURE.to_owned(), signature(&servable))]) };
    let any = prost_types::Any {
        type_url: "type.googleapis.com/tensorflow.serving.SignatureDefMap".into(),
        value: map.encode_to_vec(),
    };
    Ok(pb::GetModelMetadataResponse {
        model_spec: Some(answered(&servable, false)),
        metadata: HashMap::from([("signature_def".to_owned(), any)]),
    })
}

fn model_status(state: &AppState, req: pb::GetModelStatusRequest) -> Result<pb::GetModelStatusResponse, Error> {
    use aiserve_core::state::VersionState as V;
    use pb::model_version_status::State;
    let spec = spec(req.model_spec)?;
    let only = version_of(state, &spec)?;
    let rows = version_statuses(&state.runtime, &spec.name, only.as_deref())?;
    let model_version_status = rows
        .into_iter()
        .map(|v| {
            let state = match v.state {
                V::Loading => State::Loading,
                V::Available => State::Available,
                V::Unloading => State::Unloading,
                V::End | V::Failed => State::End,
            };
            let status = match v.error {
                Some(e) => pb::StatusProto { error_code: tf::error::Code::Unknown as i32, error_message: e },
                None => pb::StatusProto { error_code: tf::error::Code::Ok as i32, error_message: String::new() },
            };
            pb::ModelVersionStatus { version: v.version as i64, state: state as i32, status: Some(status) }
        })
        .collect();
    Ok(pb::GetModelStatusResponse { model_version_status })
}

#[tonic::async_trait]
impl pb::prediction_service_server::PredictionService for Prediction {
    async fn predict(&self, req: Request<pb::PredictRequest>) -> Result<Response<pb::PredictResponse>, Status> {
        let (metadata, _, msg) = req.into_parts();
        let (servable, resp) = predict(&self.state, &metadata, msg).await.map_err(grpc_status)?;
        Ok(super::kserve::served(resp, &servable))
    }

    async fn get_model_metadata(
        &self,
        req: Request<pb::GetModelMetadataRequest>,
    ) -> Result<Response<pb::GetModelMetadataResponse>, Status> {
        Ok(Response::new(model_metadata(&self.state, req.into_inner()).map_err(grpc_status)?))
    }
}

#[tonic::async_trait]
impl pb::model_service_server::ModelService for Models {
    async fn get_model_status(
        &self,
        req: Request<pb::GetModelStatusRequest>,
    ) -> Result<Response<pb::GetModelStatusResponse>, Status> {
        Ok(Response::new(model_status(&self.state, req.into_inner()).map_err(grpc_status)?))
    }
}
