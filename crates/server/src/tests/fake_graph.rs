//! A deterministic fake graph model (what an ONNX version looks like to the server, without
//! ONNX Runtime): a version directory holding `graph.txt` declares
//! - inputs `x` FP32 `[-1, 2]` and `ids` INT64 `[-1, -1]`,
//! - outputs `sum` FP32 `[-1, 1]` (each row of `x` summed), `next` INT64 `[-1, -1]` (`ids` + 1)
//!   and `name` BYTES `[-1]` (`"row<sum>"`),
//!
//! batched along dimension 0 unless `graph.txt` says `unbatched`; each pass takes 300 ms when
//! it says `slow`. Passes are counted in [`PASSES`].

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};

use aiserve_core::{
    BackendError, Datatype, Description, GraphError, GraphInfo, GraphModel, Tensor, TensorData, TensorSpec,
};

pub const GRAPH_FILE: &str = "graph.txt";

/// Forward passes run by every fake graph (warm-up included).
pub static PASSES: AtomicUsize = AtomicUsize::new(0);

fn spec(name: &str, datatype: Datatype, dims: &[i64]) -> TensorSpec {
    TensorSpec { name: name.into(), datatype, dims: dims.to_vec() }
}

pub fn describe(dir: &Path) -> Option<Description> {
    let text = std::fs::read_to_string(dir.join(GRAPH_FILE)).ok()?;
    Some(Description::Graph(GraphInfo {
        inputs: vec![spec("x", Datatype::Fp32, &[-1, 2]), spec("ids", Datatype::Int64, &[-1, -1])],
        outputs: vec![
            spec("sum", Datatype::Fp32, &[-1, 1]),
            spec("next", Datatype::Int64, &[-1, -1]),
            spec("name", Datatype::Bytes, &[-1]),
        ],
        batched: !text.contains("unbatched"),
        platform: "onnxruntime_onnx".into(),
        metadata: BTreeMap::from([("producer".to_owned(), "fake".to_owned())]),
        threads: 1,
        spinning: false,
        fuse: false,
        classifier: None,
        reader: None,
    }))
}

pub struct FakeGraph {
    pub sleep: std::time::Duration,
}

/// The fake graph of a version directory.
pub fn load(dir: &Path) -> FakeGraph {
    let slow = std::fs::read_to_string(dir.join(GRAPH_FILE)).is_ok_and(|t| t.contains("slow"));
    FakeGraph { sleep: std::time::Duration::from_millis(if slow { 300 } else { 0 }) }
}

impl GraphModel for FakeGraph {
    fn run(&mut self, inputs: Vec<Tensor>) -> Result<Vec<Tensor>, GraphError> {
        PASSES.fetch_add(1, Ordering::Relaxed);
        std::thread::sleep(self.sleep);
        let [x, ids] = <[Tensor; 2]>::try_from(inputs).map_err(|_| BackendError("two inputs expected".into()))?;
        let (TensorData::F32(xv), TensorData::I64(iv)) = (&x.data, &ids.data) else {
            return Err(BackendError("FP32 and INT64 expected".into()).into());
        };
        if iv.iter().any(|&v| v < 0) {
            // As ONNX Runtime refuses sizes its operators cannot take.
            return Err(GraphError::Rejected("ids must not be negative".into()));
        }
        let sums: Vec<f32> = xv.chunks(2).map(|r| r.iter().sum()).collect();
        let names = sums.iter().map(|s| format!("row{s}").into_bytes()).collect();
        let n = sums.len();
        Ok(vec![
            Tensor::new(vec![n, 1], TensorData::F32(sums)).map_err(BackendError)?,
            Tensor::new(ids.shape.clone(), TensorData::I64(iv.iter().map(|v| v + 1).collect()))
                .map_err(BackendError)?,
            Tensor::new(vec![n], TensorData::Bytes(names)).map_err(BackendError)?,
        ])
    }
}
