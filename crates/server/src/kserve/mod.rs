//! KServe v2 (the Open Inference Protocol) as both front ends speak it: model metadata and
//! `infer` on decoded tensors, with no wire format. HTTP (`crate::http::protocols::kserve`: JSON
//! and the binary tensor extension) and gRPC (`crate::grpc::kserve`: `ModelInferRequest`) each
//! decode their wire types into a [`Request`], call [`infer`], and encode the [`Output`]s back,
//! so names, datatypes, shapes and limits are checked in one place.
//!
//! Image classifiers take one numeric tensor (FP32 and the other numeric types, widened to f32)
//! and answer `probabilities` (FP32 `[N, C]`, the model's output name) and `label` (INT64 `[N]`,
//! the arg-max); embedding models take one BYTES tensor of UTF-8 texts and answer `embedding`
//! (FP32 `[N, dim]`); rerankers take BYTES `query` (one, or one per document) and `document`
//! `[N]` and answer `scores` (FP32 `[N, labels]`); graph (ONNX) models take and give the tensors their graph declares, in
//! their own datatypes. Generation models have their own routes (`generate`, gRPC stream infer).

pub mod repository;
pub mod tensor;

use std::time::{Duration, Instant};

use aiserve_core::{GraphInfo, ImageBatch, Tensor, TensorData};
use aiserve_runtime::budget::Hold;
use aiserve_runtime::scorer::{ScoreModel, DOCUMENT_INPUT, QUERY_INPUT, SCORES_OUTPUT};
use aiserve_runtime::servable::{EmbedModel, ImageModel, Kind, Servable};
use aiserve_runtime::text_input::{self, Texts};
use aiserve_runtime::{Error, Runtime};
use serde_json::{json, Map, Value};

pub use tensor::{Datatype, Values};

/// The one input and one output an embedding model declares.
pub const TEXT_INPUT: &str = "text";
pub const EMBEDDING_OUTPUT: &str = "embedding";
/// The arg-max output every image classifier has beside its probabilities.
pub const LABEL_OUTPUT: &str = "label";

/// One input tensor as it arrived, its values already decoded from the wire (numbers counted
/// against the request's hold by the decoder).
pub struct Input {
    pub name: String,
    pub datatype: String,
    pub shape: Vec<i64>,
    pub values: Values,
}

/// One infer request, whichever wire it came on.
pub struct Request {
    pub inputs: Vec<Input>,
    /// The outputs asked for by name, in order (`None`: all of them).
    pub outputs: Option<Vec<String>>,
    /// How the front end will write the outputs (what they will cost it).
    pub encoding: Encoding,
}

/// How a front end writes output values, so that a graph's outputs (which, unlike the built-in
/// kinds', can be far larger than the request: a 7 MB line picture gives PP-OCR's recogniser a
/// 40 MB output, 215 MB as JSON) are counted against the request's memory hold before they are
/// encoded, and a request whose answer would not fit gets 413 (or 503 while others hold the
/// memory) instead of taking the server's memory.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Encoding {
    /// Little-endian bytes: the binary extension, gRPC's raw contents, TF Serving's tensor_content.
    Raw,
    /// JSON numbers or strings, built as a value tree and then written out as text.
    Json,
}

/// One output tensor.
pub struct Output {
    pub name: String,
    pub datatype: Datatype,
    pub shape: Vec<usize>,
    pub values: TensorData,
}

/// A tensor as model metadata declares it (`-1`: any size).
pub struct TensorMeta {
    pub name: String,
    pub datatype: &'static str,
    pub shape: Vec<i64>,
}

/// What KServe's model metadata says of a version.
pub struct Metadata {
    pub inputs: Vec<TensorMeta>,
    pub outputs: Vec<TensorMeta>,
    /// Extra facts (architecture, limits), KServe's `parameters`.
    pub parameters: Value,
    /// Triton's platform name (`onnxruntime_onnx` for ONNX graphs).
    pub platform: &'static str,
}

/// Triton's request parameter `timeout`, in microseconds (it can only shorten the server's).
pub fn timeout_parameter(parameters: &Map<String, Value>) -> Result<Option<Duration>, Error> {
    match parameters.get("timeout") {
        None => Ok(None),
        Some(v) => v.as_u64().map(|us| Some(Duration::from_micros(us))).ok_or_else(|| {
            Error::invalid(
                "parameters.timeout",
                format!("`parameters.timeout` must be microseconds (an integer), got {}", crate::error::shown(v)),
            )
        }),
    }
}

/// The sampling fields a generate request may carry (HTTP's `generate` body or `parameters`;
/// gRPC's request parameters or a `sampling_parameters` JSON tensor).
pub const SAMPLING_FIELDS: [&str; 10] = [
    "max_tokens",
    "temperature",
    "top_p",
    "top_k",
    "seed",
    "stop",
    "frequency_penalty",
    "presence_penalty",
    "stream",
    // vLLM's grammar extension (json, regex, choice, Lark grammar), as the OpenAI routes take it.
    "structured_outputs",
];

/// The platform name metadata reports for the models aiserve's own code runs.
pub const PLATFORM: &str = "aiserve_candle";
/// ... and for ONNX graphs, as Triton names its ONNX Runtime backend.
pub const ONNX_PLATFORM: &str = "onnxruntime_onnx";
/// Triton's platform name for ensembles, which pipelines are.
pub const PIPELINE_PLATFORM: &str = "ensemble";

fn meta(name: &str, datatype: &'static str, shape: Vec<i64>) -> TensorMeta {
    TensorMeta { name: name.to_owned(), datatype, shape }
}

/// The inputs and outputs of a version, truthfully.
pub fn metadata(servable: &Servable) -> Metadata {
    match &servable.kind {
        Kind::Image(img) => {
            let cfg = &img.config;
            let [h, w, c] = cfg.input.shape;
            Metadata {
                inputs: vec![meta(
                    &cfg.input.name,
                    datatype_name(&cfg.input.datatype),
                    vec![-1, h as i64, w as i64, c as i64],
                )],
                outputs: vec![
                    meta(&cfg.output.name, datatype_name(&cfg.output.datatype), vec![-1, cfg.output.shape[0] as i64]),
                    meta(LABEL_OUTPUT, "INT64", vec![-1]),
                ],
                // Pictures go to `/classify`, which knows this model's preprocessing.
                parameters: json!({ "endpoints": ["classify"] }),
                platform: PLATFORM,
            }
        }
        Kind::Embedder(em) => Metadata {
            inputs: vec![meta(TEXT_INPUT, "BYTES", vec![-1])],
            outputs: vec![meta(EMBEDDING_OUTPUT, "FP32", vec![-1, em.info.dim as i64])],
            parameters: json!({
                "architecture": em.info.architecture, "max_tokens": em.info.max_tokens,
                "pooling": em.info.pooling.to_string(), "normalize": em.info.normalize
            }),
            platform: PLATFORM,
        },
        Kind::Scorer(sm) => Metadata {
            inputs: vec![meta(QUERY_INPUT, "BYTES", vec![-1]), meta(DOCUMENT_INPUT, "BYTES", vec![-1])],
            outputs: vec![meta(SCORES_OUTPUT, "FP32", vec![-1, sm.info.labels.len() as i64])],
            parameters: json!({
                "architecture": sm.info.architecture, "max_tokens": sm.info.max_tokens,
                "labels": sm.info.labels, "activation": sm.info.activation.to_string(),
                "endpoints": ["rerank"]
            }),
            platform: PLATFORM,
        },
        Kind::Generator(g) => {
            let info = &g.engine.spec().info;
            Metadata {
                inputs: vec![meta("text_input", "BYTES", vec![1])],
                outputs: vec![meta("text_output", "BYTES", vec![-1])],
                parameters: json!({
                    "architecture": info.architecture, "max_context": info.max_context,
                    "endpoints": ["generate", "generate_stream"]
                }),
                platform: PLATFORM,
            }
        }
        Kind::Graph(g) => Metadata {
            inputs: metas(&g.info.inputs),
            outputs: metas(&g.info.outputs),
            parameters: {
                let mut p = json!({
                    "batching": g.info.batched, "max_batch_size": if g.info.batched { g.max_batch } else { 0 },
                    "graph": g.info.metadata,
                });
                if g.info.classifier.is_some() || g.info.reader.is_some() {
                    p["endpoints"] = json!(["classify"]);
                }
                p
            },
            platform: if g.info.platform == PLATFORM { PLATFORM } else { ONNX_PLATFORM },
        },
        Kind::Pipeline(p) => Metadata {
            inputs: metas(&p.info.inputs),
            outputs: metas(&p.info.outputs),
            parameters: json!({ "batching": false, "max_batch_size": 0, "steps": p.info.metadata["steps"] }),
            platform: PIPELINE_PLATFORM,
        },
    }
}

/// Declared tensors (a graph's, a pipeline's) as metadata.
fn metas(list: &[aiserve_core::TensorSpec]) -> Vec<TensorMeta> {
    list.iter().map(|t| meta(&t.name, t.datatype.name(), t.dims.clone())).collect()
}

/// The config's datatype as a static KServe name (configs are validated at load; anything else
/// reads as FP32, the only type the image models take today).
fn datatype_name(s: &str) -> &'static str {
    Datatype::parse(s).map_or("FP32", Datatype::name)
}

/// Runs one infer request on `servable` (an image classifier or an embedding model).
pub async fn infer(
    rt: &Runtime,
    servable: &Servable,
    req: Request,
    hold: &Hold,
    deadline: Instant,
) -> Result<Vec<Output>, Error> {
    match &servable.kind {
        Kind::Image(img) => classify(rt, servable, img, req, hold, deadline).await,
        Kind::Embedder(em) => embed(rt, servable, em, req, hold, deadline).await,
        Kind::Scorer(sm) => rerank(rt, servable, sm, req, hold, deadline).await,
        Kind::Graph(g) => run_tensors(servable, &g.info, req, hold, |named| g.infer(named, Some(deadline))).await,
        Kind::Pipeline(p) => {
            run_tensors(servable, &p.info, req, hold, |named| p.infer(rt, named, hold, deadline)).await
        }
        Kind::Generator(_) => Err(Error::invalid(
            "inputs",
            format!(
                "model `{}` generates text: use /v2/models/{}/generate or /generate_stream (HTTP), or \
                 ModelStreamInfer (gRPC)",
                servable.model, servable.model
            ),
        )),
    }
}

/// The request's one input, which must be called `expected`.
fn one_input(servable: &Servable, inputs: Vec<Input>, expected: &str) -> Result<Input, Error> {
    let n = inputs.len();
    let mut it = inputs.into_iter();
    match (it.next(), n) {
        (Some(one), 1) if one.name == expected => Ok(one),
        (Some(one), 1) => Err(Error::invalid(
            "inputs[0].name",
            format!("unknown input `{}`; model `{}` takes `{expected}`", one.name, servable.model),
        )),
        _ => Err(Error::invalid(
            "inputs",
            format!("model `{}` takes exactly one input (`{expected}`), got {n}", servable.model),
        )),
    }
}

fn dims(shape: &[i64]) -> Result<Vec<usize>, Error> {
    shape.iter().map(|&d| usize::try_from(d)).collect::<Result<_, _>>().map_err(|_| {
        Error::invalid("inputs[0].shape", format!("`inputs[0].shape` dims must be non-negative, got {shape:?}"))
    })
}

async fn classify(
    rt: &Runtime,
    servable: &Servable,
    img: &ImageModel,
    req: Request,
    hold: &Hold,
    deadline: Instant,
) -> Result<Vec<Output>, Error> {
    let prob_name = img.config.output.name.clone();
    let asked = req.outputs.as_deref().unwrap_or_default();
    if let Some((i, bad)) = asked.iter().enumerate().find(|(_, n)| **n != prob_name && n.as_str() != LABEL_OUTPUT) {
        return Err(Error::invalid(
            format!("outputs[{i}].name"),
            format!("unknown output `{bad}`; model `{}` has `{prob_name}` and `{LABEL_OUTPUT}`", servable.model),
        ));
    }
    let input = one_input(servable, req.inputs, &img.config.input.name)?;
    let shape = dims(&input.shape)?;
    let data = match input.values.into_f32() {
        Some(v) => v,
        None => {
            return Err(Error::invalid(
                "inputs[0].datatype",
                format!("`inputs[0].datatype` must be a numeric type such as FP32, got {:?}", input.datatype),
            ))
        }
    };
    let limits = aiserve_core::tensor::BatchLimits { max_batch: rt.limits.max_request_images };
    let batch = ImageBatch::from_tensor(&img.spec, "inputs[0]", &shape, data, limits)?;
    let probs = img.classify(batch, Some(deadline), hold).await?;
    let n = probs.len();
    let classes = img.config.output.shape[0];
    let names: Vec<String> = req.outputs.unwrap_or_else(|| vec![prob_name.clone(), LABEL_OUTPUT.to_owned()]);
    Ok(names
        .into_iter()
        .map(|name| {
            if name == prob_name {
                Output {
                    name,
                    datatype: Datatype::Fp32,
                    shape: vec![n, classes],
                    values: TensorData::F32(probs.iter().flatten().copied().collect()),
                }
            } else {
                Output {
                    name,
                    datatype: Datatype::Int64,
                    shape: vec![n],
                    values: TensorData::I64(probs.iter().map(|p| argmax(p) as i64).collect()),
                }
            }
        })
        .collect())
}

/// The index of the largest value (the first, on ties).
pub fn argmax(p: &[f32]) -> usize {
    p.iter().enumerate().fold(0, |best, (i, v)| if *v > p[best] { i } else { best })
}

async fn embed(
    rt: &Runtime,
    servable: &Servable,
    em: &EmbedModel,
    req: Request,
    hold: &Hold,
    deadline: Instant,
) -> Result<Vec<Output>, Error> {
    if let Some(bad) = req.outputs.as_deref().unwrap_or_default().iter().find(|o| *o != EMBEDDING_OUTPUT) {
        return Err(Error::invalid(
            "outputs",
            format!("unknown output `{bad}`; model `{}` has one output, `{EMBEDDING_OUTPUT}`", servable.model),
        ));
    }
    let texts = texts_of(one_input(servable, req.inputs, TEXT_INPUT)?, 0)?;
    let tokens = text_input::tokenize(rt, em, Texts::Strings(texts), "inputs[0].data", hold).await?;
    let vectors = em.embed(tokens.sequences, Some(deadline)).await?;
    aiserve_runtime::metrics::METRICS
        .tokens
        .with_label_values(&[servable.model.as_str(), "prompt"])
        .inc_by(tokens.tokens as u64);
    let shape = vec![vectors.len(), em.info.dim];
    Ok(vec![Output {
        name: EMBEDDING_OUTPUT.to_owned(),
        datatype: Datatype::Fp32,
        shape,
        values: TensorData::F32(vectors.into_iter().flatten().collect()),
    }])
}

/// The UTF-8 texts of input `i`, a BYTES tensor of at most two dimensions whose shape counts
/// exactly the texts given.
fn texts_of(input: Input, i: usize) -> Result<Vec<String>, Error> {
    let texts = match input.values.into_texts(&format!("inputs[{i}].data")) {
        Some(t) if input.datatype == "BYTES" => t?,
        _ => {
            return Err(Error::invalid(
                format!("inputs[{i}].datatype"),
                format!("`{}` must be BYTES (UTF-8 texts), got {:?}", input.name, input.datatype),
            ))
        }
    };
    let count = input.shape.iter().try_fold(1i64, |n, &d| if d < 0 { None } else { n.checked_mul(d) });
    if input.shape.len() > 2 || count != Some(texts.len() as i64) {
        return Err(Error::invalid(
            format!("inputs[{i}].shape"),
            format!("`inputs[{i}].shape` {:?} does not match the {} texts given", input.shape, texts.len()),
        ));
    }
    Ok(texts)
}

/// A reranker's infer: the `query` and `document` inputs by name, in either order; `scores`.
async fn rerank(
    rt: &Runtime,
    servable: &Servable,
    sm: &ScoreModel,
    req: Request,
    hold: &Hold,
    deadline: Instant,
) -> Result<Vec<Output>, Error> {
    if let Some(bad) = req.outputs.as_deref().unwrap_or_default().iter().find(|o| *o != SCORES_OUTPUT) {
        return Err(Error::invalid(
            "outputs",
            format!("unknown output `{bad}`; model `{}` has one output, `{SCORES_OUTPUT}`", servable.model),
        ));
    }
    let (mut queries, mut documents) = (None, None);
    let n = req.inputs.len();
    for (i, input) in req.inputs.into_iter().enumerate() {
        let slot = match input.name.as_str() {
            QUERY_INPUT => &mut queries,
            DOCUMENT_INPUT => &mut documents,
            other => {
                return Err(Error::invalid(
                    format!("inputs[{i}].name"),
                    format!(
                        "unknown input `{other}`; model `{}` takes `{QUERY_INPUT}` and `{DOCUMENT_INPUT}`",
                        servable.model
                    ),
                ))
            }
        };
        if slot.is_some() {
            return Err(Error::invalid(format!("inputs[{i}].name"), format!("input `{}` is given twice", input.name)));
        }
        *slot = Some((texts_of(input, i)?, format!("inputs[{i}].data")));
    }
    let missing = |name: &str| {
        Error::invalid(
            "inputs",
            format!(
                "model `{}` takes `{QUERY_INPUT}` and `{DOCUMENT_INPUT}`; `{name}` is missing ({n} inputs given)",
                servable.model
            ),
        )
    };
    let (queries, query_field) = queries.ok_or_else(|| missing(QUERY_INPUT))?;
    let (documents, field) = documents.ok_or_else(|| missing(DOCUMENT_INPUT))?;
    let truncate = rt.limits.text.auto_truncate;
    let pairs = sm.tokenize(rt, (queries, &query_field), (documents, &field), truncate, hold).await?;
    let rows = sm.score(pairs.pairs, Some(deadline)).await?;
    aiserve_runtime::metrics::METRICS
        .tokens
        .with_label_values(&[servable.model.as_str(), "prompt"])
        .inc_by(pairs.tokens as u64);
    Ok(vec![Output {
        name: SCORES_OUTPUT.to_owned(),
        datatype: Datatype::Fp32,
        shape: vec![rows.len(), sm.info.labels.len()],
        values: TensorData::F32(rows.into_iter().flatten().collect()),
    }])
}

/// Runs a graph model or a pipeline (`run`): every input `info` declares, by name, in its
/// declared datatype and shape; the outputs asked for (all, by default) in declaration order or
/// the order asked.
async fn run_tensors<F, Fut>(
    servable: &Servable,
    info: &GraphInfo,
    req: Request,
    hold: &Hold,
    run: F,
) -> Result<Vec<Output>, Error>
where
    F: FnOnce(Vec<(String, Tensor)>) -> Fut,
    Fut: std::future::Future<Output = Result<Vec<Tensor>, Error>>,
{
    let declared = |name: &str| info.outputs.iter().position(|o| o.name == name);
    let picked: Vec<usize> = match &req.outputs {
        None => (0..info.outputs.len()).collect(),
        Some(names) => names
            .iter()
            .enumerate()
            .map(|(i, n)| {
                declared(n).ok_or_else(|| {
                    let all: Vec<String> = info.outputs.iter().map(|o| format!("`{}`", o.name)).collect();
                    Error::invalid(
                        format!("outputs[{i}].name"),
                        format!("unknown output `{n}`; model `{}` has {}", servable.model, all.join(", ")),
                    )
                })
            })
            .collect::<Result<_, _>>()?,
    };
    if let Some((i, _)) = picked.iter().enumerate().find(|(i, j)| picked[..*i].contains(j)) {
        return Err(Error::invalid(format!("outputs[{i}].name"), "each output may be asked for once"));
    }
    let named = req
        .inputs
        .into_iter()
        .enumerate()
        .map(|(i, input)| {
            let field = format!("inputs[{i}]");
            let shape =
                input.shape.iter().map(|&d| usize::try_from(d)).collect::<Result<Vec<_>, _>>().map_err(|_| {
                    Error::invalid(
                        format!("{field}.shape"),
                        format!("`{field}.shape` dims must be non-negative, got {:?}", input.shape),
                    )
                })?;
            let data = match input.values {
                Values::Numbers(d) => d,
                other => TensorData::Bytes(other.into_bytes().expect("not numbers")),
            };
            let tensor = Tensor::new(shape, data)
                .map_err(|e| Error::invalid(format!("{field}.shape"), format!("`{field}`: {e}")))?;
            Ok((input.name, tensor))
        })
        .collect::<Result<Vec<_>, Error>>()?;
    let mut outputs: Vec<Option<Tensor>> = run(named).await?.into_iter().map(Some).collect();
    for &j in &picked {
        let values = &outputs[j].as_ref().expect("each output is asked for once").data;
        tensor::hold_output(hold, values, req.encoding, &info.outputs[j].name)?;
    }
    Ok(picked
        .into_iter()
        .map(|j| {
            let t = outputs[j].take().expect("each output is asked for once");
            Output { name: info.outputs[j].name.clone(), datatype: t.datatype(), shape: t.shape, values: t.data }
        })
        .collect())
}
