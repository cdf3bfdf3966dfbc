//! The working view of one graph while it is rewritten: who produces and who reads each name,
//! its f32 constants (initializers and `Constant` nodes alike), new initializers under names
//! nothing else uses, and the tidy-up that drops the constants a rewrite stopped reading.
//!
//! Names that the graph's outputs or any subgraph read are pinned: a rewrite never renames or
//! removes them, so `If`/`Loop` bodies that read outer names keep working.

use std::collections::{HashMap, HashSet};

use onnx_protobuf::attribute_proto::AttributeType;
use onnx_protobuf::tensor_proto::DataLocation;
use onnx_protobuf::{AttributeProto, GraphProto, NodeProto, TensorProto};
use protobuf::Enum;

/// ONNX's element type number for f32.
const FLOAT: i32 = 1;

/// An f32 constant of the graph.
pub struct Constant {
    pub dims: Vec<usize>,
    pub values: Vec<f32>,
}

impl Constant {
    /// The one value of a constant that holds one and has at most one dimension, so it
    /// broadcasts against any tensor without changing its shape.
    pub fn scalar(&self) -> Option<f32> {
        (self.values.len() == 1 && self.dims.len() <= 1).then(|| self.values[0])
    }
}

pub struct Graph<'a> {
    g: &'a mut GraphProto,
    /// The default domain's operator-set version.
    pub opset: i64,
    /// Read by the graph's outputs or by subgraphs.
    pinned: HashSet<String>,
    /// Every name in use, so new ones differ.
    names: HashSet<String>,
    /// Constants a rewrite stopped reading: dropped by [`Graph::finish`] when nothing reads them.
    orphans: Vec<String>,
    producer: HashMap<String, usize>,
    consumers: HashMap<String, Vec<usize>>,
    /// Initializers by name; those that are graph inputs too are left out (a client may
    /// replace them).
    initializers: HashMap<String, usize>,
}

impl<'a> Graph<'a> {
    pub fn new(g: &'a mut GraphProto, opset: i64) -> Self {
        let mut pinned: HashSet<String> = g.output.iter().map(|o| o.name.clone()).collect();
        for node in &g.node {
            for a in &node.attribute {
                for sub in a.g.as_ref().into_iter().chain(&a.graphs) {
                    read_by(sub, &mut pinned);
                }
            }
        }
        let mut names: HashSet<String> = g.initializer.iter().map(|t| t.name.clone()).collect();
        names.extend(g.input.iter().map(|v| v.name.clone()));
        names.extend(g.node.iter().flat_map(|n| n.output.iter().cloned()));
        let mut graph = Self {
            g,
            opset,
            pinned,
            names,
            orphans: Vec::new(),
            producer: HashMap::new(),
            consumers: HashMap::new(),
            initializers: HashMap::new(),
        };
        graph.index();
        graph
    }

    /// Rebuilds who produces and who reads each name (after every rewrite).
    pub fn index(&mut self) {
        self.producer.clear();
        self.consumers.clear();
        let inputs: HashSet<&String> = self.g.input.iter().map(|v| &v.name).collect();
        self.initializers = (self.g.initializer.iter().enumerate())
            .filter(|(_, t)| !inputs.contains(&t.name))
            .map(|(i, t)| (t.name.clone(), i))
            .collect();
        for (i, node) in self.g.node.iter().enumerate() {
            for o in &node.output {
                self.producer.insert(o.clone(), i);
            }
            for input in &node.input {
                let readers = self.consumers.entry(input.clone()).or_default();
                if readers.last() != Some(&i) {
                    readers.push(i);
                }
            }
        }
    }

    pub fn node(&self, i: usize) -> &NodeProto {
        &self.g.node[i]
    }

    pub fn node_mut(&mut self, i: usize) -> &mut NodeProto {
        &mut self.g.node[i]
    }

    pub fn len(&self) -> usize {
        self.g.node.len()
    }

    /// The node producing `name`, when a node does.
    pub fn producer(&self, name: &str) -> Option<usize> {
        self.producer.get(name).copied()
    }

    /// The nodes reading `name`; `None` when the graph's outputs or a subgraph read it too.
    pub fn consumers(&self, name: &str) -> Option<&[usize]> {
        if self.pinned.contains(name) {
            return None;
        }
        Some(self.consumers.get(name).map_or(&[], Vec::as_slice))
    }

    /// The one node reading `name`, when exactly one node and nothing else does.
    pub fn only_consumer(&self, name: &str) -> Option<usize> {
        match self.consumers(name)? {
            [one] => Some(*one),
            _ => None,
        }
    }

    /// The f32 constant named `name`: an initializer that is not also a graph input (a
    /// client could replace it) or a `Constant` node's value.
    pub fn constant(&self, name: &str) -> Option<Constant> {
        if name.is_empty() {
            return None;
        }
        if let Some(&i) = self.initializers.get(name) {
            return floats(&self.g.initializer[i]);
        }
        let node = self.node(self.producer(name)?);
        if !is(node, "Constant") {
            return None;
        }
        let value = node.attribute.first()?;
        match value.name.as_str() {
            "value" => value.t.as_ref().and_then(floats),
            "value_float" => Some(Constant { dims: Vec::new(), values: vec![value.f] }),
            _ => None,
        }
    }

    /// Adds an f32 initializer under a new name starting with `base`; returns the name.
    pub fn add_initializer(&mut self, base: &str, dims: Vec<usize>, values: &[f32]) -> String {
        let mut name = format!("{base}/aiserve");
        let mut n = 1;
        while self.names.contains(&name) {
            n += 1;
            name = format!("{base}/aiserve{n}");
        }
        self.names.insert(name.clone());
        self.initializers.insert(name.clone(), self.g.initializer.len());
        self.g.initializer.push(TensorProto {
            name: name.clone(),
            dims: dims.iter().map(|&d| d as i64).collect(),
            data_type: FLOAT,
            raw_data: values.iter().flat_map(|v| v.to_le_bytes()).collect(),
            ..Default::default()
        });
        name
    }

    /// Marks constants a rewrite stopped reading.
    pub fn orphan<'n>(&mut self, names: impl IntoIterator<Item = &'n String>) {
        self.orphans.extend(names.into_iter().cloned());
    }

    /// Removes the nodes at `indices` and re-indexes.
    pub fn remove(&mut self, mut indices: Vec<usize>) {
        indices.sort_unstable();
        indices.dedup();
        for i in indices.into_iter().rev() {
            self.g.node.remove(i);
        }
        self.index();
    }

    /// Drops orphaned constants nothing reads any more and the shape notes of names that no
    /// longer exist.
    pub fn finish(self) {
        let mut read = self.pinned;
        read.extend(self.g.node.iter().flat_map(|n| n.input.iter().cloned()));
        let inputs: HashSet<&String> = self.g.input.iter().map(|v| &v.name).collect();
        let dropped: HashSet<&String> =
            self.orphans.iter().filter(|o| !read.contains(*o) && !inputs.contains(o)).collect();
        self.g.initializer.retain(|t| !dropped.contains(&t.name));
        self.g.node.retain(|n| !(is(n, "Constant") && n.output.len() == 1 && dropped.contains(&n.output[0])));
        let mut exists: HashSet<String> = self.g.node.iter().flat_map(|n| n.output.iter().cloned()).collect();
        exists.extend(self.g.input.iter().map(|v| v.name.clone()));
        exists.extend(self.g.initializer.iter().map(|t| t.name.clone()));
        self.g.value_info.retain(|v| exists.contains(&v.name));
    }
}

/// Every name the nodes of `g` and of its own subgraphs read.
fn read_by(g: &GraphProto, names: &mut HashSet<String>) {
    for node in &g.node {
        names.extend(node.input.iter().cloned());
        for a in &node.attribute {
            for sub in a.g.as_ref().into_iter().chain(&a.graphs) {
                read_by(sub, names);
            }
        }
    }
}

/// A tensor's values when it holds f32 in the file itself.
fn floats(t: &TensorProto) -> Option<Constant> {
    if t.data_type != FLOAT || t.data_location.value() == DataLocation::EXTERNAL.value() {
        return None;
    }
    let dims: Vec<usize> = t.dims.iter().map(|&d| usize::try_from(d).ok()).collect::<Option<_>>()?;
    let count = dims.iter().try_fold(1usize, |a, &d| a.checked_mul(d))?;
    let values = if !t.raw_data.is_empty() {
        if t.raw_data.len() != count.checked_mul(4)? {
            return None;
        }
        t.raw_data.chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect()
    } else if t.float_data.len() == count {
        t.float_data.clone()
    } else {
        return None;
    };
    Some(Constant { dims, values })
}

/// Whether `node` is the default domain's operator `op`.
pub fn is(node: &NodeProto, op: &str) -> bool {
    node.op_type == op && (node.domain.is_empty() || node.domain == "ai.onnx")
}

pub fn attribute<'n>(node: &'n NodeProto, name: &str) -> Option<&'n AttributeProto> {
    node.attribute.iter().find(|a| a.name == name)
}

pub fn float_attribute(name: &str, value: f32) -> AttributeProto {
    AttributeProto { name: name.into(), type_: AttributeType::FLOAT.into(), f: value, ..Default::default() }
}
