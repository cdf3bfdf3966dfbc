//! KServe v2 for text embedding models: a BYTES input of texts (JSON strings, or the binary
//! extension's length-prefixed elements) in, an FP32 `[N, dim]` output out.

use std::time::Instant;

use axum::response::Response;
use serde_json::{json, Value};

use super::kserve::{respond, InferRequest};
use crate::decode::bytes::decode_bytes_elements;
use crate::error::ApiError;
use crate::servable::{EmbedModel, Servable};
use crate::state::TextLimits;
use crate::text_input::{self, Texts};

/// The one input and one output an embedding model declares.
pub const INPUT: &str = "text";
pub const OUTPUT: &str = "embedding";

pub fn metadata(servable: &Servable, em: &EmbedModel, versions: Vec<String>) -> Value {
    json!({
        "name": servable.model.as_str(),
        "versions": versions,
        "platform": "aiserve_candle",
        "inputs": [{ "name": INPUT, "datatype": "BYTES", "shape": [-1] }],
        "outputs": [{ "name": OUTPUT, "datatype": "FP32", "shape": [-1, em.info.dim as i64] }],
        "parameters": {
            "architecture": em.info.architecture, "max_tokens": em.info.max_tokens,
            "pooling": em.info.pooling.to_string(), "normalize": em.info.normalize
        }
    })
}

pub(super) async fn infer(
    servable: &Servable,
    em: &EmbedModel,
    req: InferRequest,
    mut binary: &[u8],
    deadline: Instant,
    limits: &TextLimits,
) -> Result<Response, ApiError> {
    let input = match req.inputs.as_slice() {
        [one] if one.name == INPUT => one,
        [one] => {
            return Err(ApiError::invalid(
                "inputs[0].name",
                format!("unknown input `{}`; model `{}` takes `{INPUT}`", one.name, servable.model),
            ))
        }
        other => {
            return Err(ApiError::invalid(
                "inputs",
                format!("model `{}` takes exactly one input (`{INPUT}`), got {}", servable.model, other.len()),
            ))
        }
    };
    if input.datatype != "BYTES" {
        return Err(ApiError::invalid(
            "inputs[0].datatype",
            format!("`{INPUT}` must be BYTES (UTF-8 texts), got {:?}", input.datatype),
        ));
    }
    let texts: Vec<String> = match input.parameters.get("binary_data_size") {
        Some(size) => {
            let size = size.as_u64().filter(|&s| s as usize <= binary.len()).ok_or_else(|| {
                ApiError::invalid(
                    "inputs[0].parameters.binary_data_size",
                    format!(
                        "`binary_data_size` must be a byte count of at most {} (the binary bytes sent)",
                        binary.len()
                    ),
                )
            })? as usize;
            let (mine, rest) = binary.split_at(size);
            binary = rest;
            decode_bytes_elements(mine)?
        }
        None => match &input.data {
            Some(Value::Array(items)) => items
                .iter()
                .enumerate()
                .map(|(i, v)| {
                    v.as_str().map(str::to_owned).ok_or_else(|| {
                        ApiError::invalid(
                            format!("inputs[0].data[{i}]"),
                            format!("`inputs[0].data[{i}]` must be a string, got {v}"),
                        )
                    })
                })
                .collect::<Result<_, _>>()?,
            _ => return Err(ApiError::invalid("inputs[0].data", "`inputs[0].data` must be a list of strings")),
        },
    };
    if !binary.is_empty() {
        return Err(ApiError::invalid(
            "body",
            format!("{} bytes of binary data follow the inputs that no input claimed", binary.len()),
        ));
    }
    let count: i64 = input.shape.iter().product();
    if input.shape.len() > 2 || count != texts.len() as i64 {
        return Err(ApiError::invalid(
            "inputs[0].shape",
            format!("`inputs[0].shape` {:?} does not match the {} texts given", input.shape, texts.len()),
        ));
    }
    let binary_out = binary_output(&req, servable)?;
    let tokens = text_input::tokenize(em, Texts::Strings(texts), "inputs[0].data", limits).await?;
    let vectors = em.embed(tokens.sequences, Some(deadline)).await?;
    crate::metrics::METRICS.tokens.with_label_values(&[servable.model.as_str(), "prompt"]).inc_by(tokens.tokens as u64);
    let mut out = json!({ "name": OUTPUT, "datatype": "FP32", "shape": [vectors.len(), em.info.dim] });
    let mut tail = Vec::new();
    if binary_out {
        vectors.iter().flatten().for_each(|x| tail.extend_from_slice(&x.to_le_bytes()));
        out["parameters"] = json!({ "binary_data_size": tail.len() });
    } else {
        out["data"] = json!(vectors.into_iter().flatten().collect::<Vec<f32>>());
    }
    Ok(respond(servable, req.id, vec![out], tail))
}

fn binary_output(req: &InferRequest, servable: &Servable) -> Result<bool, ApiError> {
    let all = req.parameters.get("binary_data_output").and_then(Value::as_bool).unwrap_or(false);
    match req.outputs.as_deref() {
        None | Some([]) => Ok(all),
        Some([o]) if o.name == OUTPUT => Ok(o.parameters.get("binary_data").and_then(Value::as_bool).unwrap_or(all)),
        Some(list) => {
            let bad = list.iter().find(|o| o.name != OUTPUT).map(|o| o.name.as_str()).unwrap_or("");
            Err(ApiError::invalid(
                "outputs",
                format!("unknown output `{bad}`; model `{}` has one output, `{OUTPUT}`", servable.model),
            ))
        }
    }
}
