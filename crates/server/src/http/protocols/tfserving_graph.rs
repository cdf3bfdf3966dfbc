//! TF Serving REST `:predict` for graph (ONNX) models, with named inputs as TF Serving takes
//! them:
//! - row format, `{"instances": [{"x": ..., "ids": ...}, ...]}` (a bare value per instance when
//!   the graph has one input): each instance is one row, stacked along dimension 0; answered as
//!   `{"predictions": [...]}`, one entry per row (an object of outputs when there are several);
//! - columnar, `{"inputs": {"x": [[...]], ...}}` (a bare tensor for one input): whole tensors;
//!   answered as `{"outputs": ...}` (an object when there are several).
//!
//! Values take the graph's declared datatype (BYTES: strings or `{"b64": "..."}`), and the
//! tensors go through the same [`crate::kserve`] checks as every other protocol.

use aiserve_runtime::budget::Hold;
use aiserve_runtime::graph::Graph;
use serde_json::{json, Map, Value};

use crate::decode::json_tensor;
use crate::error::Error;
use crate::kserve::{self, Values};

/// The graph's tensors from a row-format or columnar body (`row`: which one it was).
pub fn inputs(g: &Graph, body: Value, row: bool, hold: &Hold) -> Result<Vec<kserve::Input>, Error> {
    let field = if row { "instances" } else { "inputs" };
    let single = g.info.inputs.len() == 1;
    let mut columns: Vec<(usize, Value)> = Vec::with_capacity(g.info.inputs.len());
    if row {
        if !g.info.batched {
            return Err(Error::invalid(
                "instances",
                "this model has no batch dimension, so it takes no rows; send `inputs` (columnar)",
            ));
        }
        let Value::Array(items) = body else {
            return Err(Error::invalid(
                "instances",
                format!("`instances` must be a list, got {}", json_tensor::kind(&body)),
            ));
        };
        let n = items.len();
        let mut cols: Vec<Vec<Value>> = (0..g.info.inputs.len()).map(|_| Vec::with_capacity(n)).collect();
        for (i, item) in items.into_iter().enumerate() {
            let f = format!("instances[{i}]");
            match item {
                Value::Object(m) if !(single && is_b64(&m)) => {
                    for (j, v) in named(g, m, &f)? {
                        cols[j].push(v);
                    }
                }
                bare if single => cols[0].push(bare),
                _ => return Err(Error::invalid(&f, format!("`{f}` must name the inputs, {}", names(g)))),
            }
        }
        columns.extend(cols.into_iter().enumerate().map(|(j, c)| (j, Value::Array(c))));
    } else {
        match body {
            Value::Object(m) if !(single && is_b64(&m)) => columns.extend(named(g, m, field)?),
            bare if single => columns.push((0, bare)),
            _ => return Err(Error::invalid(field, format!("`{field}` must name the inputs, {}", names(g)))),
        }
    }
    columns
        .into_iter()
        .map(|(j, value)| {
            let spec = &g.info.inputs[j];
            let f = format!("{field}.{}", spec.name);
            let (shape, data) = json_tensor::flatten_as(&value, spec.datatype, &f, hold)?;
            Ok(kserve::Input {
                name: spec.name.clone(),
                datatype: spec.datatype.name().to_owned(),
                shape: shape.iter().map(|&d| d as i64).collect(),
                values: Values::Numbers(data),
            })
        })
        .collect()
}

fn is_b64(m: &Map<String, Value>) -> bool {
    m.len() == 1 && m.contains_key("b64")
}

fn names(g: &Graph) -> String {
    g.info.inputs.iter().map(|s| format!("`{}`", s.name)).collect::<Vec<_>>().join(", ")
}

/// An object of named values as (input index, value); every input must be there, once.
fn named(g: &Graph, m: Map<String, Value>, field: &str) -> Result<Vec<(usize, Value)>, Error> {
    let mut out: Vec<(usize, Value)> = Vec::with_capacity(m.len());
    for (name, v) in m {
        let j = g.info.inputs.iter().position(|s| s.name == name).ok_or_else(|| {
            Error::invalid(field, format!("`{field}` names input `{name}`; this model takes {}", names(g)))
        })?;
        out.push((j, v));
    }
    if let Some(missing) = g.info.inputs.iter().enumerate().find(|(j, _)| !out.iter().any(|(k, _)| k == j)) {
        return Err(Error::invalid(field, format!("`{field}` lacks input `{}`", missing.1.name)));
    }
    out.sort_by_key(|(j, _)| *j);
    Ok(out)
}

/// The answer: `predictions` (one entry per row) or `outputs` (whole tensors).
pub fn answer(outputs: Vec<kserve::Output>, row: bool) -> Value {
    let single = outputs.len() == 1;
    if !row {
        let mut tensors: Map<String, Value> =
            outputs.into_iter().map(|o| (o.name, nest(&o.values.to_json(), &o.shape))).collect();
        if single {
            return json!({ "outputs": tensors.values_mut().next().map(Value::take).unwrap_or_default() });
        }
        return json!({ "outputs": tensors });
    }
    let rows = outputs.first().map_or(0, |o| o.shape.first().copied().unwrap_or(1));
    let per_output: Vec<(String, Vec<Value>)> = outputs
        .into_iter()
        .map(|o| {
            let nested = nest(&o.values.to_json(), &o.shape);
            let items = match nested {
                Value::Array(items) => items,
                other => vec![other],
            };
            (o.name, items)
        })
        .collect();
    let predictions: Vec<Value> = (0..rows)
        .map(|r| {
            if single {
                per_output[0].1.get(r).cloned().unwrap_or_default()
            } else {
                Value::Object(
                    per_output
                        .iter()
                        .map(|(n, items)| (n.clone(), items.get(r).cloned().unwrap_or_default()))
                        .collect(),
                )
            }
        })
        .collect();
    json!({ "predictions": predictions })
}

/// A flat JSON array nested by `shape` (a scalar for an empty shape).
fn nest(flat: &Value, shape: &[usize]) -> Value {
    let Value::Array(items) = flat else { return flat.clone() };
    fn build(items: &[Value], shape: &[usize]) -> Value {
        match shape {
            [] => items.first().cloned().unwrap_or_default(),
            [_] => Value::Array(items.to_vec()),
            [n, rest @ ..] => {
                let per = rest.iter().product::<usize>().max(1);
                Value::Array(
                    (0..*n).map(|i| build(items.get(i * per..(i + 1) * per).unwrap_or_default(), rest)).collect(),
                )
            }
        }
    }
    build(items, shape)
}
