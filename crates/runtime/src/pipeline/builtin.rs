//! Built-in pipeline steps: the processing between networks that Triton users write as Python
//! models, here as plain Rust over [`aiserve_vision`]. Each is made once at load from its
//! `params` (unknown keys are errors) and then run per request on the blocking pool.

use std::path::Path;
use std::sync::Arc;

use aiserve_core::pipeline::StepPorts;
use serde::de::DeserializeOwned;

use super::value::Value;
use crate::budget::Hold;
use crate::error::Error;

/// A built-in step, made from its parameters at load.
pub trait Builtin: Send + Sync {
    /// What it takes and gives, by port name.
    fn ports(&self) -> StepPorts;

    /// Bytes the step will allocate beyond its outputs for these inputs (a picture's decoded
    /// buffers), counted before it runs; its outputs are counted after.
    fn needs(&self, _inputs: &[Value]) -> Result<usize, Error> {
        Ok(0)
    }

    /// Runs on the inputs, in port order; gives the outputs in port order. A mistake in the
    /// request's data is `Error::Input`, named by port.
    fn run(&self, inputs: Vec<Value>, hold: &Hold) -> Result<Vec<Value>, Error>;
}

/// What a built-in may need from its surroundings at load.
pub struct Context<'a> {
    /// The pipeline version's directory (files its steps name: labels, character lists).
    pub dir: &'a Path,
    /// A model step's model metadata (ONNX custom properties), by step name.
    pub step_metadata: &'a dyn Fn(&str) -> Option<std::collections::BTreeMap<String, String>>,
}

/// The built-ins this build knows, by name.
pub const NAMES: [&str; 10] = [
    "picture.decode",
    "picture.fit",
    "picture.normalize",
    "ocr.text_boxes",
    "ocr.crop",
    "ocr.line_batches",
    "ocr.flip_lines",
    "ocr.lines",
    "text.ctc_decode",
    "labels.top_k",
];

/// A named port of a built-in's [`StepPorts`].
pub fn port(name: &str, ty: aiserve_core::pipeline::ValueType) -> (String, aiserve_core::pipeline::ValueType) {
    (name.to_owned(), ty)
}

/// Makes the built-in `name` from its parameters.
pub fn make(name: &str, params: &toml::Table, ctx: &Context) -> Result<Arc<dyn Builtin>, String> {
    use super::{labels, ocr, picture};
    Ok(match name {
        "picture.decode" => Arc::new(picture::Decode::new(parse(params)?)?),
        "picture.fit" => Arc::new(picture::Fit::new(parse(params)?)?),
        "picture.normalize" => Arc::new(picture::Normalize::new(parse(params)?)?),
        "ocr.text_boxes" => Arc::new(ocr::TextBoxes::new(parse(params)?)?),
        "ocr.crop" => Arc::new(ocr::Crop),
        "ocr.line_batches" => Arc::new(ocr::LineBatches::new(parse(params)?)?),
        "ocr.flip_lines" => Arc::new(ocr::FlipLines::new(parse(params)?)?),
        "ocr.lines" => Arc::new(ocr::Lines::new(parse(params)?)?),
        "text.ctc_decode" => Arc::new(labels::CtcDecode::new(parse(params)?, ctx)?),
        "labels.top_k" => Arc::new(labels::TopK::new(parse(params)?, ctx)?),
        other => return Err(format!("unknown built-in `{other}`; this build has {}", NAMES.join(", "))),
    })
}

fn parse<T: DeserializeOwned>(params: &toml::Table) -> Result<T, String> {
    toml::Value::Table(params.clone()).try_into().map_err(|e: toml::de::Error| format!("params: {}", e.message()))
}

/// Reads a file a step names, from the version directory (a bare file name, no paths).
pub fn read_file(dir: &Path, name: &str, what: &str) -> Result<String, String> {
    if name.is_empty() || name.contains(['/', '\\']) || name.starts_with('.') {
        return Err(format!("`{what}` must be a file name in the version directory, got {name:?}"));
    }
    let path = dir.join(name);
    let len = std::fs::metadata(&path).map_err(|e| format!("`{what}` file {name:?}: {e}"))?.len();
    if len > aiserve_core::config::MAX_CONFIG_BYTES * 16 {
        return Err(format!("`{what}` file {name:?} is {len} bytes; at most 16 MiB"));
    }
    std::fs::read_to_string(&path).map_err(|e| format!("`{what}` file {name:?}: {e}"))
}
