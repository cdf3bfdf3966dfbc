"""Writes an aiserve digits CNN version (`model.safetensors` + `config.toml`, as `aiserve train`
publishes it; NHWC input, HWIO kernels) as an ONNX graph that ONNX Runtime runs:

    python tools/digits_to_onnx.py models/digits/1 digits.onnx

Input `image` [N,28,28,1] FP32 in [0,1]; outputs `logits` [N,10] and `probabilities` [N,10].
Operators (opset 17): Transpose (NHWC to NCHW and back before the flatten, so the dense layer
sees aiserve's NHWC order), Conv with bias, Relu, MaxPool 2x2, Flatten, Gemm, Softmax. The
script checks the graph against a NumPy forward pass of the same weights on seeded pictures.
Needs numpy and onnx (and onnxruntime for the check, when installed).
"""
import json
import struct
import sys

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper


def read_safetensors(path):
    with open(path, "rb") as f:
        n = struct.unpack("<Q", f.read(8))[0]
        header = json.loads(f.read(n))
        data = f.read()
    out = {}
    for name, t in header.items():
        if name == "__metadata__":
            continue
        assert t["dtype"] == "F32", (name, t["dtype"])
        a, b = t["data_offsets"]
        out[name] = np.frombuffer(data[a:b], dtype="<f4").reshape(t["shape"]).copy()
    return out


def graph(w):
    inits, nodes = [], []

    def init(name, array):
        inits.append(numpy_helper.from_array(np.ascontiguousarray(array, dtype=np.float32), name))
        return name

    nodes.append(helper.make_node("Transpose", ["image"], ["x0"], perm=[0, 3, 1, 2]))
    x = "x0"
    for i in (1, 2, 3):
        kernel = init(f"conv{i}.weight", w[f"conv{i}.weight"].transpose(3, 2, 0, 1))  # HWIO -> OIHW
        bias = init(f"conv{i}.bias", w[f"conv{i}.bias"])
        nodes.append(helper.make_node("Conv", [x, kernel, bias], [f"c{i}"], kernel_shape=[3, 3]))
        nodes.append(helper.make_node("Relu", [f"c{i}"], [f"r{i}"]))
        x = f"r{i}"
        if i < 3:
            nodes.append(helper.make_node("MaxPool", [x], [f"p{i}"], kernel_shape=[2, 2], strides=[2, 2]))
            x = f"p{i}"
    nodes.append(helper.make_node("Transpose", [x], ["nhwc"], perm=[0, 2, 3, 1]))
    nodes.append(helper.make_node("Flatten", ["nhwc"], ["flat"], axis=1))
    nodes.append(helper.make_node("Gemm", ["flat", init("dense1.weight", w["dense1.weight"]), init("dense1.bias", w["dense1.bias"])], ["d1"]))
    nodes.append(helper.make_node("Relu", ["d1"], ["h"]))
    nodes.append(helper.make_node("Gemm", ["h", init("dense2.weight", w["dense2.weight"]), init("dense2.bias", w["dense2.bias"])], ["logits"]))
    nodes.append(helper.make_node("Softmax", ["logits"], ["probabilities"], axis=1))
    g = helper.make_graph(
        nodes,
        "digits",
        [helper.make_tensor_value_info("image", TensorProto.FLOAT, ["N", 28, 28, 1])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", 10]),
         helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, ["N", 10])],
        inits,
    )
    model = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)], producer_name="aiserve tools/digits_to_onnx.py")
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model


def numpy_logits(w, x):
    """The same network in NumPy (NHWC, valid 3x3 convolutions, 2x2 max pools)."""
    def conv(x, k, b):
        n, h, wd, c = x.shape
        oh, ow = h - 2, wd - 2
        patches = np.stack([x[:, dy:dy + oh, dx:dx + ow, :] for dy in range(3) for dx in range(3)], axis=3)
        return np.maximum(patches.reshape(n, oh, ow, 9 * c) @ k.reshape(9 * c, -1) + b, 0)

    def pool(x):
        n, h, wd, c = x.shape
        return x[:, : h // 2 * 2, : wd // 2 * 2].reshape(n, h // 2, 2, wd // 2, 2, c).max(axis=(2, 4))

    x = pool(conv(x, w["conv1.weight"], w["conv1.bias"]))
    x = pool(conv(x, w["conv2.weight"], w["conv2.bias"]))
    x = conv(x, w["conv3.weight"], w["conv3.bias"]).reshape(len(x), -1)
    x = np.maximum(x @ w["dense1.weight"] + w["dense1.bias"], 0)
    return x @ w["dense2.weight"] + w["dense2.bias"]


def main():
    version_dir, out = sys.argv[1], sys.argv[2]
    w = read_safetensors(f"{version_dir}/model.safetensors")
    model = graph(w)
    onnx.save(model, out)
    try:
        import onnxruntime as ort
    except ImportError:
        print(f"wrote {out} (onnxruntime not installed: graph not run)")
        return
    x = np.random.default_rng(7).random((16, 28, 28, 1), dtype=np.float32)
    got = ort.InferenceSession(out, providers=["CPUExecutionProvider"]).run(["logits"], {"image": x})[0]
    diff = float(np.abs(got - numpy_logits(w, x)).max())
    assert diff < 1e-3, f"ONNX Runtime and NumPy disagree by {diff}"
    print(f"wrote {out}; ONNX Runtime matches the NumPy forward pass (largest logit difference {diff:.2e})")


if __name__ == "__main__":
    main()
