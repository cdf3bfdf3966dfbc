//! `POST /classify` for an ONNX image classifier (`[onnx.image]` in its `model.toml`): pictures
//! (a raw PNG/JPEG body, `{"image": "<base64>"}` or `{"images": [...]}`) are decoded on the
//! decoder pool, resized and normalised as the config says, stacked into one batch in the
//! graph's layout and run through the model's queue; the answer (built in `classify`) names the
//! best label and gives the probabilities (softmax of the scores when the config says they are
//! logits).

use aiserve_core::graph::{GraphClassifier, GraphReader};
use aiserve_core::{Tensor, TensorData};
use aiserve_runtime::budget::Hold;
use aiserve_runtime::graph::Graph;
use aiserve_runtime::servable::Servable;
use axum::body::Bytes;
use serde_json::{Map, Value};

use super::images::decode_base64;
use crate::decode::image::{decode_pixels, decode_writing};
use crate::error::Error;
use crate::http::state::AppState;

/// The pictures of a `/classify` JSON body, and whether it was a single `image`.
pub fn pictures(mut req: Map<String, Value>, hold: &Hold) -> Result<(Vec<(String, Bytes)>, bool), Error> {
    if let Some(extra) = req.keys().find(|k| *k != "image" && *k != "images") {
        return Err(Error::invalid(extra, format!("unknown field `{extra}`; expected `image` or `images`")));
    }
    let one = |v: Value, field: String| -> Result<(String, Bytes), Error> {
        let text = match &v {
            Value::String(s) => s.as_str(),
            Value::Object(m) if m.len() == 1 && m.get("b64").is_some_and(Value::is_string) => {
                m["b64"].as_str().unwrap_or("")
            }
            _ => {
                return Err(Error::invalid(
                    &field,
                    format!("`{field}` must be a base64 PNG/JPEG picture (this model classifies pictures)"),
                ))
            }
        };
        let bytes = decode_base64(text, &field, hold)?;
        Ok((field, bytes.into()))
    };
    match (req.remove("image"), req.remove("images")) {
        (Some(v), None) => Ok((vec![one(v, "image".into())?], true)),
        (None, Some(Value::Array(items))) => {
            let all =
                items.into_iter().enumerate().map(|(i, v)| one(v, format!("images[{i}]"))).collect::<Result<_, _>>()?;
            Ok((all, false))
        }
        (None, Some(_)) => Err(Error::invalid("images", "`images` must be an array of pictures")),
        (Some(_), Some(_)) => Err(Error::invalid("image", "give either `image` or `images`, not both")),
        (None, None) => Err(Error::invalid("image", "missing `image` (one picture) or `images` (several)")),
    }
}

/// Classifies the pictures: the probabilities of each (`c.labels` names them), in order.
pub async fn classify(
    state: &AppState,
    servable: &Servable,
    g: &Graph,
    c: &GraphClassifier,
    pictures: Vec<(String, Bytes)>,
    hold: &Hold,
    deadline: std::time::Instant,
) -> Result<Vec<Vec<f32>>, Error> {
    let n = check_count(state, pictures.len())?;
    let channels = c.config.channel_count();
    let per = c.height * c.width * channels;
    hold.grow(n * per * size_of::<f32>(), "the batch of pictures")?;
    let mut data = Vec::with_capacity(n * per);
    for (field, bytes) in pictures {
        let (size, cfg, h) = ((c.height, c.width), c.config.clone(), hold.clone());
        let values = state
            .decode("the picture decoder", move || {
                let px = decode_pixels(&bytes, size, &cfg.channels, &field, &h)?;
                Ok(cfg.tensor(&px, size.0, size.1))
            })
            .await?;
        data.extend_from_slice(&values);
    }
    let shape = if c.config.layout == "NCHW" {
        vec![n, channels, c.height, c.width]
    } else {
        vec![n, c.height, c.width, channels]
    };
    let input = Tensor::new(shape, TensorData::F32(data)).map_err(|e| Error::invalid("image", e))?;
    let outputs = g.infer(vec![(g.info.inputs[c.input].name.clone(), input)], Some(deadline)).await?;
    let scores = &outputs[c.output];
    let TensorData::F32(values) = &scores.data else {
        return Err(backend(servable, "the scores are not FP32".into()));
    };
    let classes = c.labels.len();
    if values.len() != n * classes {
        return Err(backend(
            servable,
            format!("the model gave {} scores for {n} pictures of {classes} classes", values.len()),
        ));
    }
    Ok(values
        .chunks(classes)
        .map(|row| if c.config.softmax { aiserve_core::math::softmax(row) } else { row.to_vec() })
        .collect())
}

/// Reads the pictures with a string reader: each one's text and the probability of each
/// character, in order. Pictures are fitted to the input as its training strings were laid out;
/// one without writing (a blank page) reads as an empty string.
pub async fn read(
    state: &AppState,
    servable: &Servable,
    g: &Graph,
    r: &GraphReader,
    pictures: Vec<(String, Bytes)>,
    hold: &Hold,
    deadline: std::time::Instant,
) -> Result<Vec<(String, Vec<f32>)>, Error> {
    let n = check_count(state, pictures.len())?;
    let per = r.height * r.width;
    hold.grow(n * per * size_of::<f32>(), "the batch of pictures")?;
    let mut data = Vec::with_capacity(n * per);
    // A picture without writing reads as nothing; it keeps its row (zeros) in the batch.
    let mut blank = Vec::with_capacity(n);
    for (field, bytes) in pictures {
        let (size, h) = ((r.height, r.width, r.margin), hold.clone());
        let values = state.decode("the picture decoder", move || decode_writing(&bytes, size, &field, &h)).await?;
        blank.push(values.is_none());
        data.extend(values.unwrap_or_else(|| vec![0.0; per]));
    }
    let input =
        Tensor::new(vec![n, r.height, r.width, 1], TensorData::F32(data)).map_err(|e| Error::invalid("image", e))?;
    let outputs = g.infer(vec![(g.info.inputs[r.input].name.clone(), input)], Some(deadline)).await?;
    let (TensorData::Bytes(texts), TensorData::F32(probs)) = (&outputs[r.text].data, &outputs[r.probabilities].data)
    else {
        return Err(backend(servable, "the reader's outputs are not BYTES text and FP32 probabilities".into()));
    };
    let positions = probs.len() / n.max(1);
    if texts.len() != n || positions == 0 || probs.len() != n * positions {
        return Err(backend(servable, format!("the model read {} strings for {n} pictures", texts.len())));
    }
    Ok(texts
        .iter()
        .zip(probs.chunks(positions))
        .zip(blank)
        .map(|((t, p), blank)| {
            if blank {
                return (String::new(), Vec::new());
            }
            let text = String::from_utf8_lossy(t).into_owned();
            let chars = text.chars().count().min(p.len());
            (text, p[..chars].to_vec())
        })
        .collect())
}

/// The number of pictures, checked against at least one and the request limit.
fn check_count(state: &AppState, n: usize) -> Result<usize, Error> {
    if n == 0 {
        return Err(Error::invalid("images", "`images` must hold at least one picture, got 0"));
    }
    let max = state.limits.max_request_images;
    if n > max {
        return Err(aiserve_core::InputError::too_large("images", max, n).into());
    }
    Ok(n)
}

fn backend(servable: &Servable, message: String) -> Error {
    Error::backend(servable.model.as_str(), &servable.version.to_string(), &aiserve_core::BackendError(message))
}
