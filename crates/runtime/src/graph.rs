//! A graph (ONNX) version as request handlers see it: its declared inputs and outputs and the
//! [`Queue`] in front of its instance threads.
//!
//! When the graph is batched (dimension 0 of every tensor is the batch), concurrent requests
//! whose other dimensions agree are joined along dimension 0 into one run and the rows of each
//! output are split back per request; requests whose other dimensions differ (pictures of
//! other sizes) run as separate passes of the same batch. An unbatched graph runs one request
//! per pass.

use std::time::Instant;

use aiserve_core::{BackendError, GraphError, GraphInfo, GraphModel, Tensor};

use crate::error::Error;
use crate::worker::{Queue, Runner};

/// A graph version.
pub struct Graph {
    pub info: GraphInfo,
    /// Most rows one request may carry and one pass may join (`max_batch_size`; 1 unbatched).
    pub max_batch: usize,
    pub queue: Queue<GraphRunner>,
}

/// One request's inputs, in graph order, already checked against the declaration.
pub struct GraphRequest {
    pub tensors: Vec<Tensor>,
    /// Rows along dimension 0 (1 when the graph is not batched).
    pub rows: usize,
}

impl Graph {
    /// Runs the graph on named inputs (any order); the outputs come back in declaration order.
    pub async fn infer(&self, named: Vec<(String, Tensor)>, deadline: Option<Instant>) -> Result<Vec<Tensor>, Error> {
        let tensors = self.info.order_inputs(named, self.max_batch)?;
        let rows = if self.info.batched { tensors[0].rows() } else { 1 };
        match self.queue.submit(GraphRequest { tensors, rows }, rows, deadline).await? {
            Ok(outputs) => Ok(outputs),
            Err(reason) => Err(Error::invalid("inputs", format!("the model cannot run on these inputs: {reason}"))),
        }
    }
}

/// One request's answer from a pass: its outputs, or why the runtime refused its inputs
/// ([`GraphError::Rejected`]; every request joined into that pass gets the same reason, their
/// shapes being equal).
pub type GraphAnswer = Result<Vec<Tensor>, String>;

/// Runs the requests of one batch, joining those whose trailing dimensions agree.
pub struct GraphRunner {
    pub model: Box<dyn GraphModel>,
    pub batched: bool,
    pub outputs: usize,
}

impl GraphRunner {
    fn run_one(&mut self, inputs: Vec<Tensor>) -> Result<GraphAnswer, BackendError> {
        let out = match self.model.run(inputs) {
            Ok(out) => out,
            Err(GraphError::Rejected(reason)) => return Ok(Err(reason)),
            Err(GraphError::Backend(e)) => return Err(e),
        };
        if out.len() != self.outputs {
            return Err(BackendError(format!("the graph gave {} outputs; it declares {}", out.len(), self.outputs)));
        }
        Ok(Ok(out))
    }

    /// Runs `group` (requests with equal trailing dimensions) as one pass and splits the rows;
    /// a lone request's tensors move into the model as they are.
    fn run_joined(&mut self, mut group: Vec<GraphRequest>) -> Result<Vec<GraphAnswer>, BackendError> {
        let rows: Vec<usize> = group.iter().map(|r| r.rows).collect();
        let total: usize = rows.iter().sum();
        let joined = if group.len() == 1 {
            group.pop().expect("one request").tensors
        } else {
            (0..group[0].tensors.len())
                .map(|i| {
                    Tensor::concat_rows(&group.iter().map(|r| &r.tensors[i]).collect::<Vec<_>>())
                        .ok_or_else(|| BackendError("requests of one group do not stack".into()))
                })
                .collect::<Result<Vec<_>, _>>()?
        };
        let outputs = match self.run_one(joined)? {
            Ok(outputs) => outputs,
            Err(reason) => return Ok(vec![Err(reason); rows.len()]),
        };
        if let Some(o) = outputs.iter().find(|o| o.rows() != total || o.shape.is_empty()) {
            return Err(BackendError(format!(
                "an output has shape {:?} for a batch of {total} rows; dimension 0 must be the batch",
                o.shape
            )));
        }
        if let [_] = rows.as_slice() {
            return Ok(vec![Ok(outputs)]);
        }
        let mut start = 0;
        Ok(rows
            .iter()
            .map(|n| {
                let end = start + n;
                let mine = outputs.iter().map(|o| o.rows_slice(start, end)).collect();
                start = end;
                Ok(mine)
            })
            .collect())
    }
}

/// Most input bytes one joined pass takes. ONNX Runtime's working memory grows with a pass's
/// input (eight 48x12000 lines sent at once to PP-OCR's recogniser, seven of them joined, took
/// the server to 2.3 GB), so requests join only up to this; a request larger on its own (at most
/// the body limit) still runs, alone.
const MAX_PASS_INPUT_BYTES: usize = 32 << 20;

fn input_bytes(r: &GraphRequest) -> usize {
    r.tensors.iter().map(|t| t.data.heap_bytes()).sum()
}

/// Whether two requests can share a pass: the same shape apart from dimension 0, per input.
fn stackable(a: &GraphRequest, b: &GraphRequest) -> bool {
    a.tensors.iter().zip(&b.tensors).all(|(x, y)| x.shape.get(1..) == y.shape.get(1..))
}

impl Runner for GraphRunner {
    type Input = GraphRequest;
    type Output = GraphAnswer;

    fn run(&mut self, inputs: Vec<GraphRequest>) -> Result<Vec<GraphAnswer>, BackendError> {
        if !self.batched {
            return inputs.into_iter().map(|r| self.run_one(r.tensors)).collect();
        }
        // Group requests by trailing shape, keeping each request's place in the batch; a group
        // is closed once its input bytes would pass MAX_PASS_INPUT_BYTES.
        let mut groups: Vec<(Vec<usize>, usize)> = Vec::new();
        for (i, r) in inputs.iter().enumerate() {
            let bytes = input_bytes(r);
            match groups
                .iter_mut()
                .find(|(g, total)| stackable(&inputs[g[0]], r) && total + bytes <= MAX_PASS_INPUT_BYTES)
            {
                Some((g, total)) => {
                    g.push(i);
                    *total += bytes;
                }
                None => groups.push((vec![i], bytes)),
            }
        }
        let n = inputs.len();
        let mut slots: Vec<Option<GraphRequest>> = inputs.into_iter().map(Some).collect();
        let mut results: Vec<Option<GraphAnswer>> = (0..n).map(|_| None).collect();
        for (g, _) in groups {
            let members: Vec<GraphRequest> = g.iter().map(|&i| slots[i].take().expect("in one group")).collect();
            for (i, out) in g.into_iter().zip(self.run_joined(members)?) {
                results[i] = Some(out);
            }
        }
        Ok(results.into_iter().map(|r| r.expect("every request is in one group")).collect())
    }

    fn items(input: &GraphRequest) -> usize {
        input.rows
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use aiserve_core::TensorData;

    /// Sums each row of `x` [N, K] into `y` [N, 1] and counts its passes; refuses K = 0, as
    /// ONNX Runtime refuses a convolution over an empty picture.
    struct RowSum(std::sync::Arc<std::sync::atomic::AtomicUsize>);

    impl GraphModel for RowSum {
        fn run(&mut self, inputs: Vec<Tensor>) -> Result<Vec<Tensor>, GraphError> {
            self.0.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let x = &inputs[0];
            let TensorData::F32(v) = &x.data else { return Err(BackendError("f32 expected".into()).into()) };
            let k = x.shape[1];
            if k == 0 {
                return Err(GraphError::Rejected("Invalid input shape: {0}".into()));
            }
            let sums: Vec<f32> = v.chunks(k.max(1)).map(|r| r.iter().sum()).collect();
            Ok(vec![Tensor::new(vec![x.shape[0], 1], TensorData::F32(sums)).unwrap()])
        }
    }

    fn req(rows: usize, k: usize, v: f32) -> GraphRequest {
        GraphRequest { tensors: vec![Tensor::new(vec![rows, k], TensorData::F32(vec![v; rows * k])).unwrap()], rows }
    }

    #[test]
    fn stackable_requests_share_a_pass_and_get_their_own_rows() {
        let passes = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let mut r = GraphRunner { model: Box::new(RowSum(passes.clone())), batched: true, outputs: 1 };
        let (a, b, c) = (req(1, 2, 1.0), req(2, 3, 2.0), req(2, 2, 3.0));
        let out: Vec<Vec<Tensor>> = r.run(vec![a, b, c]).unwrap().into_iter().map(Result::unwrap).collect();
        assert_eq!(passes.load(std::sync::atomic::Ordering::Relaxed), 2, "a and c join; b runs alone");
        assert_eq!(out[0][0].data, TensorData::F32(vec![2.0]));
        assert_eq!(out[1][0].data, TensorData::F32(vec![6.0, 6.0]));
        assert_eq!(out[2][0].data, TensorData::F32(vec![6.0, 6.0]));
        assert_eq!(out[2][0].shape, [2, 1]);
    }

    #[test]
    fn joined_passes_stop_at_the_input_byte_cap() {
        let passes = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let mut r = GraphRunner { model: Box::new(RowSum(passes.clone())), batched: true, outputs: 1 };
        // Three requests of 12 MiB each: two fit one 32 MiB pass, the third runs in another.
        let k = (12 << 20) / 4;
        let out = r.run(vec![req(1, k, 1.0), req(1, k, 1.0), req(1, k, 1.0)]).unwrap();
        assert_eq!(passes.load(std::sync::atomic::Ordering::Relaxed), 2);
        assert!(out.iter().all(|o| o.as_ref().unwrap()[0].data == TensorData::F32(vec![k as f32])));
        // One request over the cap on its own still runs.
        let big = (40 << 20) / 4;
        assert!(r.run(vec![req(1, big, 0.5)]).unwrap()[0].is_ok());
    }

    #[test]
    fn refused_inputs_fail_their_own_group_only() {
        let passes = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let mut r = GraphRunner { model: Box::new(RowSum(passes)), batched: true, outputs: 1 };
        let out = r.run(vec![req(1, 0, 1.0), req(2, 2, 1.0), req(3, 0, 1.0)]).unwrap();
        assert_eq!(out[0].as_ref().unwrap_err(), "Invalid input shape: {0}");
        assert_eq!(out[2].as_ref().unwrap_err(), "Invalid input shape: {0}");
        assert_eq!(out[1].as_ref().unwrap()[0].data, TensorData::F32(vec![2.0, 2.0]));
        let mut alone = GraphRunner { model: Box::new(RowSum(Default::default())), batched: false, outputs: 1 };
        let out = alone.run(vec![req(1, 0, 1.0), req(1, 1, 1.0)]).unwrap();
        assert!(out[0].is_err() && out[1].is_ok());
    }

    #[test]
    fn unbatched_graphs_run_each_request_alone() {
        let passes = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let mut r = GraphRunner { model: Box::new(RowSum(passes.clone())), batched: false, outputs: 1 };
        assert_eq!(r.run(vec![req(1, 2, 1.0), req(1, 2, 1.0)]).unwrap().len(), 2);
        assert_eq!(passes.load(std::sync::atomic::Ordering::Relaxed), 2);
        let mut wrong = GraphRunner { model: Box::new(RowSum(passes)), batched: false, outputs: 2 };
        assert!(wrong.run(vec![req(1, 2, 1.0)]).unwrap_err().0.contains("gave 1 outputs; it declares 2"));
    }
}
