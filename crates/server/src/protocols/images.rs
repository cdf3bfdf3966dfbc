//! Turning one JSON image value into a validated single-image batch, shared by the protocols:
//! nested or flat numbers, or a base64 PNG/JPEG string (optionally a `data:` URL), or TF
//! Serving's `{"b64": "..."}` object.

use aiserve_core::ImageBatch;
use axum::body::Bytes;
use base64::Engine;
use serde_json::Value;

use crate::decode::{image, json_tensor};
use crate::error::ApiError;
use crate::servable::ImageModel;

/// Decodes one image given as JSON. Picture decoding runs on the blocking pool.
pub async fn image_from_json(value: Value, servable: &ImageModel, field: String) -> Result<ImageBatch, ApiError> {
    let b64 = match &value {
        Value::String(s) => Some(s.as_str()),
        Value::Object(map) if map.len() == 1 && map.get("b64").is_some_and(Value::is_string) => map["b64"].as_str(),
        _ => None,
    };
    match b64 {
        Some(text) => {
            let bytes = decode_base64(text, &field)?;
            picture(bytes.into(), servable, field).await
        }
        None if value.is_array() => {
            let (shape, data) = json_tensor::flatten(&value, &field)?;
            Ok(ImageBatch::single(&servable.spec, &field, &shape, data)?)
        }
        None => Err(ApiError::invalid(
            &field,
            format!(
                "`{field}` must be an array of pixel values or a base64 PNG/JPEG string, got {}",
                json_tensor::kind(&value)
            ),
        )),
    }
}

/// Decodes a PNG/JPEG picture into a single-image batch on the blocking pool.
pub async fn picture(bytes: Bytes, servable: &ImageModel, field: String) -> Result<ImageBatch, ApiError> {
    let spec = servable.spec.clone();
    tokio::task::spawn_blocking(move || {
        let data = image::decode(&bytes, &spec, &field)?;
        let shape = [spec.height, spec.width, spec.channels];
        Ok(ImageBatch::single(&spec, &field, &shape, data)?)
    })
    .await
    .map_err(|_| ApiError::invalid("image", "the picture could not be decoded"))?
}

fn decode_base64(text: &str, field: &str) -> Result<Vec<u8>, ApiError> {
    let payload = match text.strip_prefix("data:") {
        Some(rest) => rest.split_once(',').map(|(_, d)| d).unwrap_or(""),
        None => text,
    };
    base64::engine::general_purpose::STANDARD
        .decode(payload.trim())
        .map_err(|e| ApiError::invalid(field, format!("`{field}` is not valid base64: {e}")))
}
