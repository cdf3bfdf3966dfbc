//! Turning one JSON image value into a validated single-image batch, shared by the protocols:
//! nested or flat numbers, or a base64 PNG/JPEG string (optionally a `data:` URL), or TF
//! Serving's `{"b64": "..."}` object. Everything decoded is counted against the request's
//! memory hold first; pictures decode on the bounded decoder pool.

use aiserve_core::ImageBatch;
use axum::body::Bytes;
use base64::Engine;
use serde_json::Value;

use crate::decode::{image, json_tensor};
use crate::error::Error;
use crate::http::state::AppState;
use aiserve_runtime::budget::Hold;
use aiserve_runtime::servable::ImageModel;

/// What decoding images for one request needs: the server (its decoder pool), the model and the
/// request's memory hold.
pub struct Decode<'a> {
    pub state: &'a AppState,
    pub img: &'a ImageModel,
    pub hold: &'a Hold,
}

impl Decode<'_> {
    /// Most images the request may hold (split across forward passes beyond `max_batch_size`).
    pub fn limits(&self) -> aiserve_core::tensor::BatchLimits {
        aiserve_core::tensor::BatchLimits { max_batch: self.state.limits.max_request_images }
    }

    /// Refuses a list of `n` images before any of them is decoded.
    pub fn check_count(&self, field: &str, n: usize) -> Result<(), Error> {
        if n == 0 {
            return Err(Error::invalid(field, format!("`{field}` must hold at least one image, got 0")));
        }
        let max = self.state.limits.max_request_images;
        if n > max {
            return Err(aiserve_core::InputError::too_large(field, max, n).into());
        }
        Ok(())
    }
}

/// Decodes one image given as JSON.
pub async fn image_from_json(ctx: &Decode<'_>, value: Value, field: String) -> Result<ImageBatch, Error> {
    let b64 = match &value {
        Value::String(s) => Some(s.as_str()),
        Value::Object(map) if map.len() == 1 && map.get("b64").is_some_and(Value::is_string) => map["b64"].as_str(),
        _ => None,
    };
    match b64 {
        Some(text) => {
            let bytes = decode_base64(text, &field, ctx.hold)?;
            picture(ctx, bytes.into(), field).await
        }
        None if value.is_array() => {
            let (shape, data) = json_tensor::flatten(&value, &field, ctx.hold)?;
            Ok(ImageBatch::single(&ctx.img.spec, &field, &shape, data)?)
        }
        None => Err(Error::invalid(
            &field,
            format!(
                "`{field}` must be an array of pixel values or a base64 PNG/JPEG string, got {}",
                json_tensor::kind(&value)
            ),
        )),
    }
}

/// Decodes a PNG/JPEG picture into a single-image batch on the decoder pool; the decoder's
/// buffers are counted against the hold from the picture's header before they are allocated.
pub async fn picture(ctx: &Decode<'_>, bytes: Bytes, field: String) -> Result<ImageBatch, Error> {
    let spec = ctx.img.spec.clone();
    let hold = ctx.hold.clone();
    ctx.state
        .decode("the picture decoder", move || {
            let data = image::decode(&bytes, &spec, &field, &hold)?;
            let shape = [spec.height, spec.width, spec.channels];
            Ok(ImageBatch::single(&spec, &field, &shape, data)?)
        })
        .await
}

/// One batch of the images of a list, in order (the copy counted against the hold).
pub fn join(ctx: &Decode<'_>, batches: Vec<ImageBatch>) -> Result<ImageBatch, Error> {
    if let [_] = batches.as_slice() {
        return Ok(batches.into_iter().next().expect("one batch"));
    }
    let values: usize = batches.iter().map(|b| b.data.len()).sum();
    ctx.hold.grow(values * size_of::<f32>(), "the batch of images")?;
    Ok(ImageBatch::concat(&batches.iter().collect::<Vec<_>>()).0)
}

pub fn decode_base64(text: &str, field: &str, hold: &Hold) -> Result<Vec<u8>, Error> {
    let payload = match text.strip_prefix("data:") {
        Some(rest) => rest.split_once(',').map(|(_, d)| d).ok_or_else(|| {
            Error::invalid(field, format!("`{field}` is a data: URL without a comma before its data"))
        })?,
        None => text,
    };
    let payload = payload.trim();
    let engine = &base64::engine::general_purpose::STANDARD;
    hold.grow(base64::decoded_len_estimate(payload.len()), &format!("the base64 picture `{field}`"))?;
    engine.decode(payload).map_err(|e| Error::invalid(field, format!("`{field}` is not valid base64: {e}")))
}
