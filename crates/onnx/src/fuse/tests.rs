//! The rewrites on a tiny graph made here from a fixed seed, laid out as paddle2onnx writes
//! PP-OCR's networks (weights in `Constant` nodes, scalar constants first or second, both
//! spellings of hard-swish), evaluated before and after by a plain reference interpreter of
//! the few operators involved. ONNX Runtime's own agreement on the real networks is checked by
//! `tests/onnx_model.rs` and `tests/clients/onnx_check.py`.

use onnx_protobuf::attribute_proto::AttributeType;
use onnx_protobuf::{
    AttributeProto, GraphProto, ModelProto, NodeProto, OperatorSetIdProto, TensorProto, ValueInfoProto,
};
use protobuf::Message;

use super::{fuse, Fused};

/// Deterministic values in [-1, 1).
fn values(n: usize, seed: u64) -> Vec<f32> {
    let mut s = seed.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
    (0..n)
        .map(|_| {
            s = s.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1_442_695_040_888_963_407);
            ((s >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
        })
        .collect()
}

fn tensor(name: &str, dims: &[i64], values: &[f32]) -> TensorProto {
    TensorProto {
        name: name.into(),
        dims: dims.to_vec(),
        data_type: 1,
        float_data: values.to_vec(),
        ..Default::default()
    }
}

fn node(op: &str, inputs: &[&str], output: &str, attribute: Vec<AttributeProto>) -> NodeProto {
    NodeProto {
        op_type: op.into(),
        input: inputs.iter().map(|s| s.to_string()).collect(),
        output: vec![output.into()],
        attribute,
        ..Default::default()
    }
}

fn ints(name: &str, v: &[i64]) -> AttributeProto {
    AttributeProto { name: name.into(), type_: AttributeType::INTS.into(), ints: v.to_vec(), ..Default::default() }
}

fn int(name: &str, v: i64) -> AttributeProto {
    AttributeProto { name: name.into(), type_: AttributeType::INT.into(), i: v, ..Default::default() }
}

/// A `Constant` node holding `values`, as paddle2onnx writes weights.
fn constant(name: &str, dims: &[i64], values: &[f32]) -> NodeProto {
    let value = AttributeProto {
        name: "value".into(),
        type_: AttributeType::TENSOR.into(),
        t: Some(tensor(name, dims, values)).into(),
        ..Default::default()
    };
    node("Constant", &[], name, vec![value])
}

fn io(name: &str) -> ValueInfoProto {
    ValueInfoProto { name: name.into(), ..Default::default() }
}

/// x [1,4,6,6] → padded 3×3 conv (8) → ·k → +per-channel → hard-swish (x·clip/6) → ·a+b →
/// 1×1 conv (6) → hard-swish (x·(clip/6)) → ·a+b → padded depthwise 3×3 conv → y.
fn model(opset: i64, extra_outputs: &[&str]) -> ModelProto {
    let nodes = vec![
        constant("w1", &[8, 4, 3, 3], &values(288, 1)),
        node("Conv", &["x", "w1", "b1"], "c1", vec![ints("pads", &[1, 1, 1, 1]), ints("kernel_shape", &[3, 3])]),
        constant("k1", &[1], &[0.7]),
        node("Mul", &["k1", "c1"], "m1", vec![]),
        node("Add", &["m1", "shift1"], "a1", vec![]),
        constant("three", &[], &[3.0]),
        node("Add", &["a1", "three"], "h1", vec![]),
        constant("zero", &[], &[0.0]),
        constant("six", &[], &[6.0]),
        node("Clip", &["h1", "zero", "six"], "h2", vec![]),
        node("Mul", &["a1", "h2"], "h3", vec![]),
        node("Div", &["h3", "six"], "s1", vec![]),
        constant("a", &[1], &[1.3]),
        constant("b", &[1], &[-0.2]),
        node("Mul", &["s1", "a"], "p1", vec![]),
        node("Add", &["p1", "b"], "q1", vec![]),
        node("Conv", &["q1", "w2"], "c2", vec![]),
        node("Add", &["c2", "three"], "g1", vec![]),
        node("Clip", &["g1", "zero", "six"], "g2", vec![]),
        node("Div", &["g2", "six"], "g3", vec![]),
        node("Mul", &["c2", "g3"], "s2", vec![]),
        node("Mul", &["a", "s2"], "p2", vec![]),
        node("Add", &["b", "p2"], "q2", vec![]),
        node("Conv", &["q2", "w3"], "y", vec![ints("pads", &[1, 1, 1, 1]), int("group", 6)]),
    ];
    let graph = GraphProto {
        node: nodes,
        initializer: vec![
            tensor("b1", &[8], &values(8, 2)),
            tensor("shift1", &[1, 8, 1, 1], &values(8, 3)),
            tensor("w2", &[6, 8, 1, 1], &values(48, 4)),
            tensor("w3", &[6, 1, 3, 3], &values(54, 5)),
        ],
        input: vec![io("x")],
        output: std::iter::once("y").chain(extra_outputs.iter().copied()).map(io).collect(),
        ..Default::default()
    };
    let opset = OperatorSetIdProto { domain: String::new(), version: opset, ..Default::default() };
    ModelProto { ir_version: 7, opset_import: vec![opset], graph: Some(graph).into(), ..Default::default() }
}

fn fused(model: &ModelProto) -> (ModelProto, Fused) {
    let (bytes, fused) = fuse(&model.write_to_bytes().unwrap()).unwrap().expect("a rewrite fits");
    (ModelProto::parse_from_bytes(&bytes).unwrap(), fused)
}

#[test]
fn rewrites_keep_the_arithmetic() {
    let before = model(12, &[]);
    let (after, counts) = fused(&before);
    assert_eq!(counts, Fused { conv_scales: 2, hard_swish: 2, into_conv: 1, batch_norm: 1 });
    let g = after.graph.as_ref().unwrap();
    let ops: Vec<&str> = g.node.iter().map(|n| n.op_type.as_str()).collect();
    assert_eq!(
        ops,
        ["Conv", "HardSigmoid", "Mul", "Conv", "HardSigmoid", "Mul", "BatchNormalization", "Conv"],
        "the constants nothing reads any more are gone with the operators"
    );
    assert!(g.initializer.iter().all(|t| !["w2", "shift1", "b1"].contains(&t.name.as_str())));
    let x = values(144, 9).iter().map(|v| v * 4.0).collect::<Vec<_>>();
    let (y0, y1) = (eval::run(&before, &x), eval::run(&after, &x));
    assert_eq!(y0.len(), 6 * 36);
    let worst = y0.iter().zip(&y1).map(|(a, b)| (a - b).abs()).fold(0.0f32, f32::max);
    let scale = y0.iter().fold(0.0f32, |m, v| m.max(v.abs()));
    assert!(worst <= 1e-5 * scale.max(1.0), "max |diff| {worst} over outputs up to {scale}");
}

#[test]
fn names_others_read_are_left_alone() {
    // c1 and a1 are graph outputs too: the conv keeps its own output, hard-swish still fits.
    let (_, counts) = fused(&model(12, &["c1"]));
    assert_eq!(counts, Fused { conv_scales: 0, hard_swish: 2, into_conv: 1, batch_norm: 1 });
    // q1 read by a graph output: its scale cannot move into the conv after; a BatchNormalization
    // keeps the name.
    let (after, counts) = fused(&model(12, &["q1"]));
    assert_eq!(counts, Fused { conv_scales: 2, hard_swish: 2, into_conv: 0, batch_norm: 2 });
    assert!(after.graph.node.iter().any(|n| n.output[0] == "q1" && n.op_type == "BatchNormalization"));
}

#[test]
fn older_operator_sets_get_no_batch_normalization() {
    let (_, counts) = fused(&model(8, &[]));
    assert_eq!(counts.batch_norm, 0);
}

#[test]
fn what_does_not_fit_is_not_rewritten() {
    let mut m = model(12, &[]);
    let g = m.graph.as_mut().unwrap();
    // The shift broadcasts along the width, not the channels.
    g.initializer[1].dims = vec![8, 1];
    // Three, not 3: no hard-swish.
    g.node[5] = constant("three", &[], &[3.5]);
    let (_, counts) = fused(&m);
    assert_eq!(counts, Fused { conv_scales: 1, hard_swish: 0, into_conv: 1, batch_norm: 0 });
    assert!(fuse(b"not a model").is_err() || fuse(b"not a model").unwrap().is_none());
    let empty = ModelProto::default().write_to_bytes().unwrap();
    assert_eq!(fuse(&empty).unwrap(), None);
}

/// A reference interpreter for the operators above (NCHW, stride 1, no dilation).
mod eval {
    use std::collections::HashMap;

    use onnx_protobuf::{ModelProto, NodeProto, TensorProto};

    type T = (Vec<usize>, Vec<f32>);

    fn of(t: &TensorProto) -> T {
        let dims = t.dims.iter().map(|&d| d as usize).collect();
        let v = if t.raw_data.is_empty() {
            t.float_data.clone()
        } else {
            t.raw_data.chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect()
        };
        (dims, v)
    }

    fn ints(n: &NodeProto, name: &str) -> Option<Vec<i64>> {
        n.attribute.iter().find(|a| a.name == name).map(|a| a.ints.clone())
    }

    fn float(n: &NodeProto, name: &str) -> f32 {
        n.attribute.iter().find(|a| a.name == name).map_or(0.0, |a| a.f)
    }

    /// Element `i` of `t` broadcast to `out` (4-D): scalars, per-channel or the same shape.
    fn at(t: &T, out: &[usize], i: usize) -> f32 {
        let c = (i / (out[2] * out[3])) % out[1];
        match t.1.len() {
            1 => t.1[0],
            n if n == out.iter().product::<usize>() => t.1[i],
            n if n == out[1] => t.1[c],
            _ => panic!("broadcast of {:?} to {out:?}", t.0),
        }
    }

    fn binary(a: &T, b: &T, f: impl Fn(f32, f32) -> f32) -> T {
        let out = if a.1.len() >= b.1.len() { a.0.clone() } else { b.0.clone() };
        let n = out.iter().product();
        let v = (0..n).map(|i| f(at(a, &out, i), at(b, &out, i))).collect();
        (out, v)
    }

    fn conv(x: &T, w: &T, b: Option<&T>, pad: usize, group: usize) -> T {
        let (c, h, wd) = (x.0[1], x.0[2], x.0[3]);
        let (m, cg, kh, kw) = (w.0[0], w.0[1], w.0[2], w.0[3]);
        let (oh, ow) = (h + 2 * pad - kh + 1, wd + 2 * pad - kw + 1);
        assert_eq!(cg * group, c);
        let mut y = vec![0.0f32; m * oh * ow];
        for o in 0..m {
            let g = o / (m / group);
            for (r, q) in (0..oh).flat_map(|r| (0..ow).map(move |q| (r, q))) {
                let mut s = b.map_or(0.0, |b| b.1[o]);
                for (ci, i, j) in (0..cg).flat_map(|ci| (0..kh).flat_map(move |i| (0..kw).map(move |j| (ci, i, j)))) {
                    let (yy, xx) = ((r + i) as isize - pad as isize, (q + j) as isize - pad as isize);
                    if yy >= 0 && xx >= 0 && (yy as usize) < h && (xx as usize) < wd {
                        let xi = ((g * cg + ci) * h + yy as usize) * wd + xx as usize;
                        s += x.1[xi] * w.1[((o * cg + ci) * kh + i) * kw + j];
                    }
                }
                y[(o * oh + r) * ow + q] = s;
            }
        }
        (vec![1, m, oh, ow], y)
    }

    pub fn run(model: &ModelProto, x: &[f32]) -> Vec<f32> {
        let g = model.graph.as_ref().unwrap();
        let mut env: HashMap<String, T> = g.initializer.iter().map(|t| (t.name.clone(), of(t))).collect();
        env.insert("x".into(), (vec![1, 4, 6, 6], x.to_vec()));
        for n in &g.node {
            let get = |i: usize| &env[&n.input[i]];
            let out = match n.op_type.as_str() {
                "Constant" => of(n.attribute[0].t.as_ref().unwrap()),
                "Conv" => {
                    let pad = ints(n, "pads").map_or(0, |p| p[0] as usize);
                    let group = n.attribute.iter().find(|a| a.name == "group").map_or(1, |a| a.i as usize);
                    conv(get(0), get(1), n.input.get(2).map(|_| get(2)), pad, group)
                }
                "Mul" => binary(get(0), get(1), |a, b| a * b),
                "Add" => binary(get(0), get(1), |a, b| a + b),
                "Div" => binary(get(0), get(1), |a, b| a / b),
                "Clip" => {
                    let (lo, hi) = (get(1).1[0], get(2).1[0]);
                    (get(0).0.clone(), get(0).1.iter().map(|v| v.clamp(lo, hi)).collect())
                }
                "HardSigmoid" => {
                    let (a, b) = (float(n, "alpha"), float(n, "beta"));
                    (get(0).0.clone(), get(0).1.iter().map(|v| (a * v + b).clamp(0.0, 1.0)).collect())
                }
                "BatchNormalization" => {
                    let (x, eps) = (get(0), float(n, "epsilon"));
                    let (s, b, m, var) = (get(1), get(2), get(3), get(4));
                    let v = (0..x.1.len())
                        .map(|i| {
                            let c = (i / (x.0[2] * x.0[3])) % x.0[1];
                            (x.1[i] - m.1[c]) / (var.1[c] + eps).sqrt() * s.1[c] + b.1[c]
                        })
                        .collect();
                    (x.0.clone(), v)
                }
                op => panic!("no reference for {op}"),
            };
            env.insert(n.output[0].clone(), out);
        }
        env.remove("y").unwrap().1
    }
}

#[test]
fn damaged_models_are_refused_or_rewritten_never_a_panic() {
    let bytes = model(12, &[]).write_to_bytes().unwrap();
    let mut state = 7u64;
    for round in 0..400 {
        let mut damaged = bytes.clone();
        for _ in 0..1 + round % 4 {
            state = state.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1_442_695_040_888_963_407);
            let at = (state >> 33) as usize % damaged.len();
            damaged[at] = (state >> 20) as u8;
        }
        if round % 5 == 0 {
            damaged.truncate((state >> 40) as usize % damaged.len());
        }
        // Either answer is fine; returning at all is the point.
        let _ = fuse(&damaged);
    }
}
