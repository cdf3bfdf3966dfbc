//! JSON request bodies → tensors (`/classify`, KServe and TF Serving JSON inputs), structure-aware.
//!
//! Two kinds of input. Bytes that parse as JSON are decoded as a body would be (replayed
//! regressions, such as the irregular array whose first elements claimed 3000⁴ numbers, are
//! kept as raw bodies). Anything else is read with `arbitrary` as a tree of irregular nested
//! arrays with repeated children plus a claimed batch shape, so the fuzzer explores ragged
//! trees, huge shape claims and counts that do not match the values. Every decode runs under a
//! small memory hold; what it accepts must be regular and counted. Each tree is also decoded as
//! every KServe datatype (graph models' typed inputs), whose values must fit their type.
#![no_main]
use aiserve_core::tensor::{BatchLimits, ImageSpec};
use aiserve_core::ImageBatch;
use aiserve_runtime::budget::MemoryBudget;
use aiserve_server::decode::{json_cost, json_tensor};
use libfuzzer_sys::arbitrary::{self, Arbitrary};
use libfuzzer_sys::fuzz_target;
use serde_json::Value;

/// Most values one generated tree may build (the fuzzer's own memory, not the server's).
const MAX_NODES: usize = 20_000;
const BUDGET: usize = 4 << 20;

#[derive(Arbitrary, Debug)]
enum Node {
    Num(f32),
    Int(i64),
    Bool(bool),
    Text(String),
    Null,
    Arr(Vec<Node>),
    /// `first` then `count` copies of `rest`: a long array whose first element differs.
    Repeat { first: Box<Node>, rest: Box<Node>, count: u16 },
}

#[derive(Arbitrary, Debug)]
struct Input {
    tree: Node,
    shape: Vec<u64>,
}

fn build(n: &Node, budget: &mut usize) -> Value {
    if *budget == 0 {
        return Value::Null;
    }
    *budget -= 1;
    match n {
        Node::Num(x) => serde_json::Number::from_f64(*x as f64).map_or(Value::Null, Value::Number),
        Node::Int(i) => Value::from(*i),
        Node::Bool(b) => Value::from(*b),
        Node::Text(s) => Value::from(s.as_str()),
        Node::Null => Value::Null,
        Node::Arr(items) => Value::Array(items.iter().map(|c| build(c, budget)).collect()),
        Node::Repeat { first, rest, count } => {
            let mut items = vec![build(first, budget)];
            for _ in 0..*count {
                if *budget == 0 {
                    break;
                }
                items.push(build(rest, budget));
            }
            Value::Array(items)
        }
    }
}

/// The tree as each datatype: accepted values are regular, counted and of that type.
fn decode_typed(v: &Value) {
    for datatype in aiserve_core::Datatype::ALL {
        let hold = MemoryBudget::new(BUDGET).hold();
        let Ok((shape, data)) = json_tensor::flatten_as(v, datatype, "x", &hold) else { continue };
        assert_eq!(data.datatype(), datatype);
        assert_eq!(shape.iter().product::<usize>(), data.len());
        assert!(hold.bytes() <= BUDGET);
        assert!(aiserve_core::Tensor::new(shape, data).is_ok());
    }
}

fn decode(v: &Value, shape: Option<&[u64]>) {
    decode_typed(v);
    let hold = MemoryBudget::new(BUDGET).hold();
    let Ok((inferred, values)) = json_tensor::flatten(v, "x", &hold) else { return };
    assert_eq!(inferred.iter().product::<usize>(), values.len());
    assert!(hold.bytes() <= BUDGET && hold.bytes() >= values.len() * 4);
    let spec = ImageSpec { height: 28, width: 28, channels: 1, range: [0.0, 1.0], background: 0.0 };
    let claimed: Vec<usize> = match shape {
        Some(s) => s.iter().map(|&d| d as usize).collect(),
        None => inferred,
    };
    if let Ok(b) = ImageBatch::from_tensor(&spec, "x", &claimed, values, BatchLimits { max_batch: 1024 }) {
        assert_eq!(b.data.len(), b.n * 784);
    }
}

fuzz_target!(|data: &[u8]| {
    if let Ok(v) = serde_json::from_slice::<Value>(data) {
        let _ = json_cost::tree_bytes(data);
        decode(&v, None);
        if let Some(image) = v.get("image") {
            decode(image, None);
        }
        return;
    }
    let Ok(input) = Input::arbitrary(&mut arbitrary::Unstructured::new(data)) else { return };
    let v = build(&input.tree, &mut MAX_NODES.clone());
    decode(&v, None);
    decode(&v, Some(&input.shape));
});
