//! TF Serving's model addressing and status as both front ends speak them (REST's
//! `/v1/models/...` and gRPC's `ModelSpec`): version labels from the model's `model.toml`
//! (`[version_labels]`), and each version's state with its error.

use aiserve_core::state::VersionState;
use aiserve_runtime::{Error, Runtime};

/// The signature every served model has (TF Serving's `kDefaultServingSignatureDefKey`).
pub const DEFAULT_SIGNATURE: &str = "serving_default";
/// The method name of that signature.
pub const PREDICT_METHOD: &str = "tensorflow/serving/predict";

/// TensorFlow's name for a KServe datatype (REST metadata spells dtypes this way).
pub fn dtype_name(datatype: aiserve_core::Datatype) -> &'static str {
    use aiserve_core::Datatype as D;
    match datatype {
        D::Fp32 => "DT_FLOAT",
        D::Fp64 => "DT_DOUBLE",
        D::Fp16 => "DT_HALF",
        D::Bf16 => "DT_BFLOAT16",
        D::Int8 => "DT_INT8",
        D::Int16 => "DT_INT16",
        D::Int32 => "DT_INT32",
        D::Int64 => "DT_INT64",
        D::Uint8 => "DT_UINT8",
        D::Uint16 => "DT_UINT16",
        D::Uint32 => "DT_UINT32",
        D::Uint64 => "DT_UINT64",
        D::Bool => "DT_BOOL",
        D::Bytes => "DT_STRING",
    }
}

/// The version a label names.
pub fn label_version(rt: &Runtime, model: &str, label: &str) -> Result<String, Error> {
    let name = model.parse().map_err(|_| Error::ModelNotFound(model.to_owned()))?;
    let cfg = rt.registry.model_config(&name).ok_or_else(|| Error::ModelNotFound(model.to_owned()))?;
    cfg.version_labels
        .get(label)
        .map(|v| v.to_string())
        .ok_or_else(|| Error::NotFound(format!("model `{model}` has no version label `{label}`")))
}

/// One version's status: its number, state, and the error that ended it, if any.
pub struct VersionRow {
    pub version: u64,
    pub state: VersionState,
    pub error: Option<String>,
}

/// The versions of `model` (just `only`, when given) with their states.
pub fn version_statuses(rt: &Runtime, model: &str, only: Option<&str>) -> Result<Vec<VersionRow>, Error> {
    let st = rt.registry.status(model).ok_or_else(|| Error::ModelNotFound(model.to_owned()))?;
    let rows: Vec<VersionRow> = st
        .versions
        .iter()
        .filter(|v| only.is_none_or(|o| o == v.version.to_string()))
        .map(|v| VersionRow { version: v.version.0, state: v.state, error: v.error.clone() })
        .collect();
    match only {
        Some(v) if rows.is_empty() => {
            Err(Error::VersionNotFound { model: model.to_owned(), version: v.to_owned(), hint: String::new() })
        }
        _ => Ok(rows),
    }
}
