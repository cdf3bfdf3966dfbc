//! KServe v2 for text embedding models: a BYTES input of texts (JSON strings, or the binary
//! extension's length-prefixed elements) in, an FP32 `[N, dim]` output out.

use std::time::Instant;

use axum::response::Response;
use serde_json::{json, Value};

use super::kserve::{respond, InferRequest};
use crate::budget::Hold;
use crate::decode::bytes::decode_bytes_elements;
use crate::error::ApiError;
use crate::servable::{EmbedModel, Servable};
use crate::state::AppState;
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

/// One infer request for an embedding version.
pub(super) struct TextInfer<'a> {
    pub servable: &'a Servable,
    pub em: &'a EmbedModel,
    pub state: &'a AppState,
    pub hold: &'a Hold,
}

impl TextInfer<'_> {
    /// Embeds the request's BYTES input and answers with the FP32 `embedding` output.
    pub(super) async fn infer(
        self,
        req: InferRequest,
        mut binary: &[u8],
        deadline: Instant,
    ) -> Result<Response, ApiError> {
        let Self { servable, em, state, hold } = self;
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
                // At worst every 4 bytes are an empty element: a 24-byte `String` each.
                hold.grow(mine.len() / 4 * size_of::<String>() + mine.len(), "the BYTES tensor `inputs[0]`")?;
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
                                format!("`inputs[0].data[{i}]` must be a string, got {}", crate::error::shown(v)),
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
        let count = input.shape.iter().try_fold(1i64, |n, &d| if d < 0 { None } else { n.checked_mul(d) });
        if input.shape.len() > 2 || count != Some(texts.len() as i64) {
            return Err(ApiError::invalid(
                "inputs[0].shape",
                format!("`inputs[0].shape` {:?} does not match the {} texts given", input.shape, texts.len()),
            ));
        }
        let binary_out = binary_output(&req, servable)?;
        let tokens = text_input::tokenize(state, em, Texts::Strings(texts), "inputs[0].data", hold).await?;
        let vectors = em.embed(tokens.sequences, Some(deadline)).await?;
        crate::metrics::METRICS
            .tokens
            .with_label_values(&[servable.model.as_str(), "prompt"])
            .inc_by(tokens.tokens as u64);
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
