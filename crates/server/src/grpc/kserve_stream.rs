//! `ModelStreamInfer`: a bidirectional stream of infer requests, as Triton serves it.
//!
//! Each request read from the stream runs as its own task (at most [`IN_FLIGHT`] per stream;
//! beyond that the stream is not read, so HTTP/2 flow control holds the client back) and writes
//! its responses into one bounded channel that is the response stream. Image and embedding
//! models answer each request once. Generation models answer as Triton's vLLM backend does
//! (decoupled): inputs `text_input` (BYTES), optional `stream` (BOOL) and `sampling_parameters`
//! (BYTES, a JSON object), sampling fields also as request parameters; with `stream` each text
//! piece is one response carrying `text_output`, and the last response of a request has the
//! parameter `triton_final_response = true` (with `triton_enable_empty_final_response`, that
//! last response is an empty one after the text). A failed request is answered with
//! `error_message` and the stream goes on. When the client goes away, its requests' tasks stop
//! at their next send and their sequences are cancelled.

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Instant;

use aiserve_runtime::generation::engine::Event;
use aiserve_runtime::generation::{collect_all, params, Choices};
use aiserve_runtime::metrics::METRICS;
use aiserve_runtime::servable::{Kind, Servable};
use aiserve_runtime::Error;
use futures_util::Stream;
use prost::Message;
use serde_json::{Map, Value};
use tokio::sync::{mpsc, Semaphore};
use tonic::metadata::MetadataMap;
use tonic::{Request, Status, Streaming};

use super::pb::inference as pb;
use super::tensors;
use crate::http::state::AppState;
use crate::kserve::{self, Values, SAMPLING_FIELDS};

/// Requests of one stream running at once.
const IN_FLIGHT: usize = 64;
/// Responses buffered for a slow reader before the requests' tasks wait.
const BUFFERED: usize = 64;

pub type ResponseStream = Pin<Box<dyn Stream<Item = Result<pb::ModelStreamInferResponse, Status>> + Send>>;

type Tx = mpsc::Sender<Result<pb::ModelStreamInferResponse, Status>>;

pub fn start(state: AppState, req: Request<Streaming<pb::ModelInferRequest>>) -> ResponseStream {
    let (metadata, _, mut incoming) = req.into_parts();
    let metadata = Arc::new(metadata);
    // Bounded: a client that stops reading stops its requests' tasks at their next response.
    let (tx, rx) = mpsc::channel(BUFFERED);
    tokio::spawn(async move {
        // Caps this stream's requests in flight; reading waits for a slot.
        let slots = Arc::new(Semaphore::new(IN_FLIGHT));
        loop {
            let permit = tokio::select! {
                p = slots.clone().acquire_owned() => p.expect("the semaphore is never closed"),
                _ = tx.closed() => return,
            };
            let msg = tokio::select! {
                m = incoming.message() => m,
                _ = tx.closed() => return,
            };
            let msg = match msg {
                Ok(Some(m)) => m,
                Ok(None) => return,
                Err(status) => {
                    let _ = tx.send(Err(status)).await;
                    return;
                }
            };
            let (state, metadata, tx) = (state.clone(), metadata.clone(), tx.clone());
            tokio::spawn(async move {
                one(&state, &metadata, msg, &tx).await;
                drop(permit);
            });
        }
    });
    Box::pin(futures_util::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|r| (r, rx)) }))
}

/// Runs one request of the stream and sends its response(s); failures become an
/// `error_message` response.
async fn one(state: &AppState, metadata: &MetadataMap, msg: pb::ModelInferRequest, tx: &Tx) {
    let started = Instant::now();
    let head = pb::ModelInferResponse {
        model_name: msg.model_name.clone(),
        model_version: msg.model_version.clone(),
        id: msg.id.clone(),
        ..Default::default()
    };
    let version = Some(msg.model_version.as_str()).filter(|v| !v.is_empty());
    let servable = match state.registry.resolve(&msg.model_name, version) {
        Ok(s) => s,
        Err(e) => return fail(tx, head, e).await,
    };
    let result = match &servable.kind {
        Kind::Generator(_) => generate(state, metadata, &servable, msg, tx).await,
        _ => match super::kserve::infer_on(state, metadata, &servable, msg).await {
            Ok(mut resp) => {
                resp.parameters.insert("triton_final_response".into(), tensors::bool_param(true));
                let _ = tx
                    .send(Ok(pb::ModelStreamInferResponse { infer_response: Some(resp), ..Default::default() }))
                    .await;
                Ok(())
            }
            Err(e) => Err(e),
        },
    };
    servable.stats().request(result.is_ok(), started.elapsed());
    if let Err(e) = result {
        let head = pb::ModelInferResponse {
            model_name: servable.model.to_string(),
            model_version: servable.version.to_string(),
            ..head
        };
        fail(tx, head, e).await;
    }
}

async fn fail(tx: &Tx, mut head: pb::ModelInferResponse, e: Error) {
    head.parameters.insert("triton_final_response".into(), tensors::bool_param(true));
    let resp = pb::ModelStreamInferResponse { error_message: e.to_string(), infer_response: Some(head) };
    let _ = tx.send(Ok(resp)).await;
}

/// What a generate request asked for, from its tensors and parameters.
struct Ask {
    text: String,
    stream: bool,
    empty_final: bool,
    fields: Map<String, Value>,
}

fn scalar_bool(input: &kserve::Input, field: &str) -> Result<bool, Error> {
    match &input.values {
        Values::Numbers(v) if v.len() == 1 => Ok(v.to_f32().is_some_and(|v| v[0] != 0.0)),
        _ => Err(Error::invalid(field, format!("`{}` must be one BOOL value", input.name))),
    }
}

fn one_text(input: kserve::Input, field: &str) -> Result<String, Error> {
    let name = input.name;
    match input.values.into_texts(field) {
        Some(Ok(mut t)) if t.len() == 1 => Ok(t.pop().expect("one element")),
        Some(Err(e)) => Err(e),
        _ => Err(Error::invalid(field, format!("`{name}` must be one BYTES element (UTF-8 text)"))),
    }
}

fn ask(msg: pb::ModelInferRequest, hold: &aiserve_runtime::budget::Hold) -> Result<Ask, Error> {
    let mut fields = tensors::parameters_json(&msg.parameters);
    let empty_final = fields.remove("triton_enable_empty_final_response").and_then(|v| v.as_bool()).unwrap_or(false);
    let mut text = None;
    let mut stream = None;
    let mut sampling = Map::new();
    for (i, input) in tensors::decode_inputs(msg.inputs, msg.raw_input_contents, hold)?.into_iter().enumerate() {
        let field = format!("inputs[{i}]");
        match input.name.as_str() {
            "text_input" => text = Some(one_text(input, &field)?),
            "stream" => stream = Some(scalar_bool(&input, &field)?),
            // Triton's vLLM backend never echoes the prompt when streaming; neither does this.
            "exclude_input_in_output" => {
                scalar_bool(&input, &field)?;
            }
            "sampling_parameters" => {
                let json = one_text(input, &field)?;
                hold.grow(crate::decode::json_cost::tree_bytes(json.as_bytes()), "parsing `sampling_parameters`")?;
                sampling = serde_json::from_str(&json)
                    .map_err(|e| Error::invalid(&field, format!("`sampling_parameters` must be a JSON object: {e}")))?;
            }
            other => {
                return Err(Error::invalid(
                    format!("{field}.name"),
                    format!(
                        "unknown input {}; generation models take `text_input`, `stream`, `sampling_parameters` \
                         and `exclude_input_in_output`",
                        crate::error::shown(Value::from(other))
                    ),
                ))
            }
        }
    }
    // Request parameters win over the JSON tensor.
    for (k, v) in sampling {
        fields.entry(k).or_insert(v);
    }
    if let Some(s) = fields.remove("stream") {
        let s = s.as_bool().ok_or_else(|| Error::invalid("stream", "`stream` must be a boolean"))?;
        stream.get_or_insert(s);
    }
    let text = text.ok_or_else(|| Error::invalid("inputs", "a generation request needs the input `text_input`"))?;
    Ok(Ask { text, stream: stream.unwrap_or(false), empty_final, fields })
}

/// A response carrying one piece of text (`final_`: the request's last response).
fn text_response(servable: &Servable, id: &str, text: Option<&str>, end: Option<&str>) -> pb::ModelStreamInferResponse {
    let mut parameters = HashMap::from([("triton_final_response".to_owned(), tensors::bool_param(end.is_some()))]);
    if let Some(reason) = end {
        parameters.insert("finish_reason".to_owned(), tensors::string_param(reason));
    }
    let (outputs, raw) = match text {
        Some(t) => (
            vec![pb::model_infer_response::InferOutputTensor {
                name: "text_output".into(),
                datatype: "BYTES".into(),
                shape: vec![1],
                ..Default::default()
            }],
            vec![kserve::tensor::bytes_elements([t.as_bytes()]).into()],
        ),
        None => (Vec::new(), Vec::new()),
    };
    let resp = pb::ModelInferResponse {
        model_name: servable.model.to_string(),
        model_version: servable.version.to_string(),
        id: id.to_owned(),
        parameters,
        outputs,
        raw_output_contents: raw,
    };
    pb::ModelStreamInferResponse { error_message: String::new(), infer_response: Some(resp) }
}

async fn generate(
    state: &AppState,
    metadata: &MetadataMap,
    servable: &Arc<Servable>,
    msg: pb::ModelInferRequest,
    tx: &Tx,
) -> Result<(), Error> {
    let hold = super::hold_for(state, msg.encoded_len())?;
    let id = msg.id.clone();
    let gen = servable.generator()?;
    let mut a = ask(msg, &hold)?;
    let timeout = kserve::timeout_parameter(&a.fields)?;
    a.fields.remove("timeout");
    let known: Vec<&str> = SAMPLING_FIELDS.iter().copied().filter(|f| *f != "stream").collect();
    params::check_fields(&a.fields, &known, "generation parameters")?;
    let mut p = params::parse(&a.fields, &["max_tokens"])?;
    p.stream = a.stream;
    let prompt = gen.text_prompt(a.text, "text_input", &state.decoders, &hold).await?;
    METRICS.tokens.with_label_values(&[servable.model.as_str(), "prompt"]).inc_by(prompt.len() as u64);
    let deadline = super::deadline(state, metadata, timeout);
    let constraint = gen.params_constraint(&p, &state.decoders).await?;
    let rxs = gen.start(prompt, &p, deadline, constraint.as_ref())?;
    if !a.stream {
        let done = collect_all(rxs, deadline).await?;
        let c = &done[0];
        let _ = tx.send(Ok(text_response(servable, &id, Some(&c.text), Some(c.reason.as_str())))).await;
        return Ok(());
    }
    // Each piece goes out when the next event shows whether it is the last.
    let mut held: Option<String> = None;
    let mut choices = Choices::new(rxs);
    while let Some((_, event)) = choices.next().await {
        match event {
            Event::Token(_) => {}
            Event::Text(t) => {
                if let Some(prev) = held.replace(t) {
                    if tx.send(Ok(text_response(servable, &id, Some(&prev), None))).await.is_err() {
                        return Ok(()); // the client went away: dropping `choices` cancels
                    }
                }
            }
            Event::Done { reason, .. } => {
                let reason = reason.as_str();
                let last = match (held.take(), a.empty_final) {
                    (Some(t), false) => text_response(servable, &id, Some(&t), Some(reason)),
                    (Some(t), true) => {
                        let _ = tx.send(Ok(text_response(servable, &id, Some(&t), None))).await;
                        text_response(servable, &id, None, Some(reason))
                    }
                    (None, _) => text_response(servable, &id, None, Some(reason)),
                };
                let _ = tx.send(Ok(last)).await;
                return Ok(());
            }
            Event::Failed(e) => return Err(e),
        }
    }
    Err(Error::internal("the generation engine stopped before the sequence ended"))
}
