//! Model steps: what a repository model takes and gives as a pipeline step, and one call of it
//! through the model's own queue. ONNX models give their declared tensors; an image classifier
//! takes its pictures as FP32 `[n, height, width, channels]` and gives its probabilities
//! `[n, classes]` (its KServe names); a text embedding model takes BYTES texts `[n]` (`text`)
//! and gives FP32 `[n, dim]` (`embedding`); a reranker takes BYTES `query` (one, or one per
//! document) and `document` `[n]` and gives FP32 `scores` `[n, labels]`. Generation models take
//! no tensors: not steps.

use std::collections::BTreeMap;
use std::time::Instant;

use aiserve_core::pipeline::{StepPorts, ValueType};
use aiserve_core::tensor::BatchLimits;
use aiserve_core::{Datatype, ImageBatch, Tensor, TensorData};

use crate::budget::Hold;
use crate::error::Error;
use crate::runtime::Runtime;
use crate::scorer::{self, DOCUMENT_INPUT, QUERY_INPUT, SCORES_OUTPUT};
use crate::servable::{Kind, Servable};
use crate::text_input::{self, Texts};

/// A text embedding step's input and output names (as KServe v2 names them).
pub const TEXT_INPUT: &str = "text";
pub const EMBEDDING_OUTPUT: &str = "embedding";

/// The ports of `servable` as a step, and its metadata (ONNX custom properties), or why it
/// cannot be one.
pub fn ports(servable: &Servable) -> Result<(StepPorts, BTreeMap<String, String>), String> {
    let one = |name: &str, datatype, dims: &[i64]| (name.to_owned(), ValueType::one(datatype, dims));
    match &servable.kind {
        Kind::Graph(g) => {
            let tensors = |list: &[aiserve_core::TensorSpec]| {
                list.iter().map(|t| (t.name.clone(), ValueType::one(t.datatype, &t.dims))).collect()
            };
            let ports =
                StepPorts { inputs: tensors(&g.info.inputs), outputs: tensors(&g.info.outputs), maps_lists: true };
            Ok((ports, g.info.metadata.clone()))
        }
        Kind::Image(img) => {
            let (c, [h, w, ch]) = (&img.config, img.config.input.shape);
            let ports = StepPorts {
                inputs: vec![one(&c.input.name, Datatype::Fp32, &[-1, h as i64, w as i64, ch as i64])],
                outputs: vec![one(&c.output.name, Datatype::Fp32, &[-1, c.output.shape[0] as i64])],
                maps_lists: true,
            };
            Ok((ports, BTreeMap::new()))
        }
        Kind::Embedder(em) => {
            let ports = StepPorts {
                inputs: vec![one(TEXT_INPUT, Datatype::Bytes, &[-1])],
                outputs: vec![one(EMBEDDING_OUTPUT, Datatype::Fp32, &[-1, em.info.dim as i64])],
                maps_lists: true,
            };
            Ok((ports, BTreeMap::new()))
        }
        Kind::Scorer(sm) => {
            let ports = StepPorts {
                inputs: vec![one(QUERY_INPUT, Datatype::Bytes, &[-1]), one(DOCUMENT_INPUT, Datatype::Bytes, &[-1])],
                outputs: vec![one(SCORES_OUTPUT, Datatype::Fp32, &[-1, sm.info.labels.len() as i64])],
                maps_lists: true,
            };
            Ok((ports, BTreeMap::new()))
        }
        Kind::Generator(_) => Err("it generates text; model steps take and give tensors".into()),
        Kind::Pipeline(_) => Err("it is a pipeline; a step runs a model, not another pipeline".into()),
    }
}

/// One call of `servable` on its inputs (by port name, in port order); its outputs in port order.
pub async fn call(
    rt: &Runtime,
    servable: &Servable,
    named: Vec<(String, Tensor)>,
    hold: &Hold,
    deadline: Instant,
) -> Result<Vec<Tensor>, Error> {
    match &servable.kind {
        Kind::Graph(g) => g.infer(named, Some(deadline)).await,
        Kind::Image(img) => {
            let t = named.into_iter().next().map(|(_, t)| t).ok_or_else(|| Error::internal("no picture input"))?;
            let field = img.config.input.name.clone();
            let data = t.data.into_f32().ok_or_else(|| Error::invalid(&field, format!("`{field}` must be FP32")))?;
            let limits = BatchLimits { max_batch: rt.limits.max_request_images };
            let batch = ImageBatch::from_tensor(&img.spec, &field, &t.shape, data, limits)?;
            let probs = img.classify(batch, Some(deadline), hold).await?;
            let shape = vec![probs.len(), img.config.output.shape[0]];
            Ok(vec![Tensor { shape, data: TensorData::F32(probs.into_iter().flatten().collect()) }])
        }
        Kind::Embedder(em) => {
            let t = named.into_iter().next().map(|(_, t)| t).ok_or_else(|| Error::internal("no text input"))?;
            let TensorData::Bytes(items) = t.data else {
                return Err(Error::invalid(TEXT_INPUT, format!("`{TEXT_INPUT}` must be BYTES texts")));
            };
            let texts = items
                .into_iter()
                .enumerate()
                .map(|(j, b)| {
                    String::from_utf8(b).map_err(|_| {
                        Error::invalid(format!("{TEXT_INPUT}[{j}]"), format!("`{TEXT_INPUT}[{j}]` must be UTF-8 text"))
                    })
                })
                .collect::<Result<Vec<_>, _>>()?;
            let tokens = text_input::tokenize(rt, em, Texts::Strings(texts), TEXT_INPUT, hold).await?;
            let vectors = em.embed(tokens.sequences, Some(deadline)).await?;
            let shape = vec![vectors.len(), em.info.dim];
            Ok(vec![Tensor { shape, data: TensorData::F32(vectors.into_iter().flatten().collect()) }])
        }
        Kind::Scorer(sm) => {
            let mut it = named.into_iter().map(|(_, t)| t);
            let (Some(q), Some(d)) = (it.next(), it.next()) else {
                return Err(Error::internal("a reranker step needs its query and document inputs"));
            };
            let (TensorData::Bytes(q), TensorData::Bytes(d)) = (q.data, d.data) else {
                return Err(Error::invalid(QUERY_INPUT, "a reranker's inputs must be BYTES texts"));
            };
            let (queries, documents) = (scorer::texts(q, QUERY_INPUT)?, scorer::texts(d, DOCUMENT_INPUT)?);
            let truncate = rt.limits.text.auto_truncate;
            let pairs = sm.tokenize(rt, (queries, QUERY_INPUT), (documents, DOCUMENT_INPUT), truncate, hold).await?;
            let rows = sm.score(pairs.pairs, Some(deadline)).await?;
            let shape = vec![rows.len(), sm.info.labels.len()];
            Ok(vec![Tensor { shape, data: TensorData::F32(rows.into_iter().flatten().collect()) }])
        }
        Kind::Generator(_) | Kind::Pipeline(_) => Err(Error::WrongModelKind {
            model: servable.model.to_string(),
            is: "not a model that takes tensors".into(),
            wants: "tensors (a pipeline's model step)".into(),
        }),
    }
}
