//! The rewrites, each applied once per call at the first node from `from` on where it fits,
//! answering that node's index (the caller goes on from there until it fits nowhere: a
//! rewrite never makes one fit at an earlier node). Each keeps the graph's arithmetic up to float rounding:
//!
//! - [`conv_scale`]: `Conv → Mul(k)` / `Conv → Add(k)`, `k` a constant per output channel or a
//!   scalar, becomes one `Conv` with scaled weights or a shifted bias.
//! - [`hard_swish`]: `x · clip(x + 3, 0, 6) / 6` spelled as Add, Clip, Mul and Div becomes
//!   `Mul(x, HardSigmoid(x))`, which ONNX Runtime fuses into the convolution before it.
//! - [`scale_into_conv`]: `Add(Mul(x, a), b)` with scalars, read only by unpadded
//!   convolutions, becomes their weights `a·W` and biases `bias + b·ΣW`.
//! - [`scale_to_batch_norm`]: any other scalar `Add(Mul(x, a), b)` on a convolution's channels
//!   becomes one `BatchNormalization`, a single pass ONNX Runtime runs in its blocked layout.

use onnx_protobuf::NodeProto;

use super::graph::{attribute, float_attribute, is, Constant, Graph};

/// Unary operators that keep their input's shape, which [`channels`] looks through.
const SHAPE_KEEPING: [&str; 8] =
    ["Relu", "Sigmoid", "HardSigmoid", "HardSwish", "Clip", "LeakyRelu", "Tanh", "Identity"];

/// The non-constant input of a two-input node whose other input is a constant, with it.
fn with_constant(g: &Graph, node: &NodeProto) -> Option<(String, Constant)> {
    let [a, b] = node.input.as_slice() else { return None };
    match (g.constant(a), g.constant(b)) {
        (None, Some(k)) => Some((a.clone(), k)),
        (Some(k), None) => Some((b.clone(), k)),
        _ => None,
    }
}

/// `k` as one value per output channel of a convolution with `m` of them whose output has
/// `rank` dimensions, when it broadcasts that way.
fn per_channel(k: &Constant, m: usize, rank: usize) -> Option<Vec<f32>> {
    if k.dims.len() > rank {
        return None;
    }
    let mut dims = vec![1; rank - k.dims.len()];
    dims.extend(&k.dims);
    if dims.iter().enumerate().any(|(i, &d)| i != 1 && d != 1) {
        return None;
    }
    match dims[1] {
        1 => Some(vec![k.values[0]; m]),
        d if d == m => Some(k.values.clone()),
        _ => None,
    }
}

/// A convolution's weights (at least 3 dimensions) and bias (zeros when it has none).
fn conv_parameters(g: &Graph, conv: &NodeProto) -> Option<(Constant, Vec<f32>)> {
    if !is(conv, "Conv") || conv.output.len() != 1 {
        return None;
    }
    let w = g.constant(conv.input.get(1)?)?;
    let m = *w.dims.first()?;
    if w.dims.len() < 3 || m == 0 {
        return None;
    }
    let bias = match conv.input.get(2).filter(|b| !b.is_empty()) {
        Some(b) => g.constant(b).filter(|b| b.values.len() == m)?.values,
        None => vec![0.0; m],
    };
    Some((w, bias))
}

pub fn conv_scale(g: &mut Graph, from: usize) -> Option<usize> {
    for i in from..g.len() {
        let conv = g.node(i);
        let Some(j) = conv.output.first().filter(|_| is(conv, "Conv")).and_then(|o| g.only_consumer(o)) else {
            continue;
        };
        let next = g.node(j);
        let scale = is(next, "Mul");
        if !(scale || is(next, "Add")) || next.output.len() != 1 {
            continue;
        }
        let Some((x, k)) = with_constant(g, next) else { continue };
        let Some((w, mut bias)) = conv_parameters(g, conv) else { continue };
        let m = w.dims[0];
        let Some(k) = (x == conv.output[0]).then(|| per_channel(&k, m, w.dims.len())).flatten() else { continue };
        let mut weights = w.values;
        let row = weights.len() / m;
        for (o, &k) in k.iter().enumerate() {
            if scale {
                weights[o * row..(o + 1) * row].iter_mut().for_each(|v| *v *= k);
                bias[o] *= k;
            } else {
                bias[o] += k;
            }
        }
        let out = next.output[0].clone();
        let read: Vec<String> = conv.input[1..].iter().chain(&next.input).cloned().collect();
        let w_name = g.add_initializer(&format!("{out}/weight"), w.dims, &weights);
        let b_name = g.add_initializer(&format!("{out}/bias"), vec![m], &bias);
        g.orphan(&read);
        let conv = g.node_mut(i);
        conv.input.truncate(1);
        conv.input.extend([w_name, b_name]);
        conv.output[0] = out;
        g.remove(vec![j]);
        return Some(i);
    }
    None
}

/// The scalar constant of a two-input node, with its other input.
fn scalar_of(g: &Graph, node: &NodeProto) -> Option<(String, f32)> {
    let (x, k) = with_constant(g, node)?;
    Some((x, k.scalar()?))
}

/// Whether a Clip node keeps values within [0, 6] (bounds as inputs from opset 11, as
/// attributes before).
fn clips_to_six(g: &Graph, clip: &NodeProto) -> bool {
    let bound = |i: usize, name: &str| match clip.input.get(i) {
        Some(b) => g.constant(b).and_then(|b| b.scalar()),
        None => attribute(clip, name).map(|a| a.f),
    };
    is(clip, "Clip") && bound(1, "min") == Some(0.0) && bound(2, "max") == Some(6.0)
}

pub fn hard_swish(g: &mut Graph, from: usize) -> Option<usize> {
    for i in from..g.len() {
        let add = g.node(i);
        if !is(add, "Add") || add.output.len() != 1 {
            continue;
        }
        let Some((x, 3.0)) = scalar_of(g, add) else { continue };
        let a = add.output[0].clone();
        let Some(c) = g.only_consumer(&a).filter(|&c| clips_to_six(g, g.node(c)) && g.node(c).input[0] == a) else {
            continue;
        };
        let Some(k) = g.node(c).output.first().and_then(|o| g.only_consumer(o)) else { continue };
        let Some(l) = g.node(k).output.first().and_then(|o| g.only_consumer(o)) else { continue };
        let (first, second) = (g.node(k), g.node(l));
        // x · clip / 6, or x · (clip / 6).
        let (mul, div) = if is(first, "Mul") { (k, l) } else { (l, k) };
        let divided = |n: &NodeProto| {
            is(n, "Div") && n.input.len() == 2 && g.constant(&n.input[1]).and_then(|s| s.scalar()) == Some(6.0)
        };
        let times_x = |n: &NodeProto| is(n, "Mul") && n.input.len() == 2 && n.input.contains(&x);
        if !(divided(g.node(div)) && times_x(g.node(mul))) || first.output.len() != 1 || second.output.len() != 1 {
            continue;
        }
        if g.node(mul).input.iter().filter(|n| **n == x).count() != 1 {
            continue;
        }
        let out = second.output[0].clone();
        let read: Vec<String> = [add, g.node(c), g.node(div)].iter().flat_map(|n| n.input.iter().cloned()).collect();
        g.orphan(&read);
        let add = g.node_mut(i);
        add.op_type = "HardSigmoid".into();
        add.input = vec![x.clone()];
        add.attribute = vec![float_attribute("alpha", 1.0 / 6.0), float_attribute("beta", 0.5)];
        let mul_node = g.node_mut(mul);
        mul_node.input = vec![x, a];
        mul_node.output[0] = out;
        g.remove(vec![c, div]);
        return Some(i);
    }
    None
}

/// The scalar scale-then-shift starting at node `i`: `(x, a, add node, b)`.
fn scalar_affine(g: &Graph, i: usize) -> Option<(String, f32, usize, f32)> {
    let mul = g.node(i);
    if !is(mul, "Mul") || mul.output.len() != 1 {
        return None;
    }
    let (x, a) = scalar_of(g, mul)?;
    let j = g.only_consumer(&mul.output[0])?;
    let add = g.node(j);
    if !is(add, "Add") || add.output.len() != 1 {
        return None;
    }
    let (_, b) = scalar_of(g, add)?;
    Some((x, a, j, b))
}

/// Whether a convolution reads no padding, so every output sums over real inputs only.
fn unpadded(conv: &NodeProto) -> bool {
    let pads = attribute(conv, "pads").is_none_or(|p| p.ints.iter().all(|&p| p == 0));
    let auto = attribute(conv, "auto_pad").is_none_or(|a| a.s == b"NOTSET" || a.s == b"VALID");
    pads && auto
}

pub fn scale_into_conv(g: &mut Graph, from: usize) -> Option<usize> {
    'nodes: for i in from..g.len() {
        let Some((x, a, j, b)) = scalar_affine(g, i) else { continue };
        let shifted = &g.node(j).output[0];
        let Some(convs) = g.consumers(shifted).filter(|c| !c.is_empty()).map(<[usize]>::to_vec) else { continue };
        let mut parameters = Vec::with_capacity(convs.len());
        for &c in &convs {
            let conv = g.node(c);
            let reads_once = conv.input[0] == *shifted && conv.input.iter().filter(|n| *n == shifted).count() == 1;
            match conv_parameters(g, conv).filter(|_| reads_once && unpadded(conv)) {
                Some(p) => parameters.push(p),
                None => continue 'nodes,
            }
        }
        let mut read: Vec<String> = g.node(i).input.iter().chain(&g.node(j).input).cloned().collect();
        for (&c, (w, mut bias)) in convs.iter().zip(parameters) {
            let m = w.dims[0];
            let row = w.values.len() / m;
            for (o, bias) in bias.iter_mut().enumerate() {
                let sum: f64 = w.values[o * row..(o + 1) * row].iter().map(|&v| f64::from(v)).sum();
                *bias = (f64::from(*bias) + f64::from(b) * sum) as f32;
            }
            let weights: Vec<f32> = w.values.iter().map(|v| v * a).collect();
            let out = g.node(c).output[0].clone();
            read.extend(g.node(c).input[1..].iter().cloned());
            let w_name = g.add_initializer(&format!("{out}/weight"), w.dims, &weights);
            let b_name = g.add_initializer(&format!("{out}/bias"), vec![m], &bias);
            g.node_mut(c).input = vec![x.clone(), w_name, b_name];
        }
        g.orphan(&read);
        g.remove(vec![i, j]);
        return Some(i);
    }
    None
}

/// How many channels `name` has, when a convolution fixed them and only shape-keeping
/// operators followed (`x · f(x)` included).
fn channels(g: &Graph, name: &str) -> Option<usize> {
    let mut name = name.to_owned();
    for _ in 0..8 {
        let node = g.node(g.producer(&name)?);
        if is(node, "Conv") {
            return conv_parameters(g, node).map(|(w, _)| w.dims[0]);
        }
        if SHAPE_KEEPING.iter().any(|op| is(node, op)) {
            name = node.input.first()?.clone();
            continue;
        }
        // x · f(x) with f shape-keeping (hard-swish, swish).
        let [p, q] = node.input.as_slice() else { return None };
        let of = |y: &str, z: &str| {
            g.producer(z)
                .map(|f| g.node(f))
                .is_some_and(|f| SHAPE_KEEPING.iter().any(|op| is(f, op)) && f.input.first().is_some_and(|i| i == y))
        };
        if !is(node, "Mul") {
            return None;
        }
        name = if of(p, q) {
            p.clone()
        } else if of(q, p) {
            q.clone()
        } else {
            return None;
        };
    }
    None
}

pub fn scale_to_batch_norm(g: &mut Graph, from: usize) -> Option<usize> {
    // BatchNormalization's inference form is the same from opset 9 on.
    if g.opset < 9 {
        return None;
    }
    for i in from..g.len() {
        let Some((x, a, j, b)) = scalar_affine(g, i) else { continue };
        let Some(c) = channels(g, &x) else { continue };
        let out = g.node(j).output[0].clone();
        let read: Vec<String> = g.node(i).input.iter().chain(&g.node(j).input).cloned().collect();
        let mut inputs = vec![x];
        for (what, value) in [("scale", a), ("shift", b), ("mean", 0.0), ("variance", 1.0)] {
            inputs.push(g.add_initializer(&format!("{out}/{what}"), vec![c], &vec![value; c]));
        }
        g.orphan(&read);
        let node = g.node_mut(i);
        node.op_type = "BatchNormalization".into();
        node.input = inputs;
        node.output[0] = out;
        node.attribute = vec![float_attribute("epsilon", 0.0)];
        g.remove(vec![j]);
        return Some(i);
    }
    None
}
