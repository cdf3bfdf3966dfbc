"""Converts an EfficientNet-Lite PyTorch state dict (the lukemelas layout: `_conv_stem`,
`_blocks.N`, `_bn0`, `_conv_head`, `_fc`) into a model directory aiserve serves, without PyTorch:

    python tools/efficientnet_lite_to_onnx.py WEIGHTS.pth MODEL_DIR [--version 1]
        [--synsets imagenet_synsets.txt --lemmas imagenet_synset_to_lemma.txt]

writes MODEL_DIR/VERSION/model.onnx (input `images` [N,3,224,224] FP32, RGB, (pixel - 127) / 128;
output `logits` [N,1000]), MODEL_DIR/VERSION/labels.txt (one ImageNet class per line, from the
synset lists timm ships) and MODEL_DIR/model.toml with the `[onnx.image]` preprocessing, so a
PNG or JPEG posted to `/classify?model=NAME` answers ImageNet labels. The version directory
appears whole (written as VERSION.tmp, then renamed), so a running server picks it up in one poll.

The weights file is PyTorch's legacy (pre-1.6, non-zip) format: a sequence of pickles (magic
number, protocol, system info, the state dict whose tensors name storages by key, the storage
keys) followed by each storage's raw bytes. It is read with Python's pickle, allowing only the
few classes such a file names, and numpy; tensors keep their strides (some weights are stored
permuted). Batch norms are folded into the convolutions; padding is TensorFlow's SAME (the
weights came from TensorFlow's EfficientNet-Lite), which ONNX spells `auto_pad = SAME_UPPER`;
activations are ReLU6. Operators: Conv, Clip, Add, GlobalAveragePool, Flatten, Gemm (opset 17).
"""
import argparse
import collections
import os
import pickle
import struct

import numpy as np

# EfficientNet-Lite's stages (TensorFlow's efficientnet_lite_builder): repeats, kernel, stride,
# expansion, output channels; lite0 scales neither width nor depth.
STAGES = [(1, 3, 1, 1, 16), (2, 3, 2, 6, 24), (2, 5, 2, 6, 40), (3, 3, 2, 6, 80), (3, 5, 1, 6, 112), (4, 5, 2, 6, 192), (1, 3, 1, 6, 320)]
BN_EPS = 1e-3
MEAN, STD = 127.0, 128.0
SIZE = 224

_STORAGES = {"FloatStorage": np.float32, "DoubleStorage": np.float64, "HalfStorage": np.float16, "LongStorage": np.int64, "IntStorage": np.int32}


def read_legacy_state_dict(path):
    """{name: numpy array} of a legacy-format torch.save'd state dict."""
    Storage = collections.namedtuple("Storage", "key dtype size")
    Tensor = collections.namedtuple("Tensor", "storage offset shape stride")
    storages = {}

    class Unpickler(pickle.Unpickler):
        def find_class(self, module, name):
            if (module, name) == ("collections", "OrderedDict"):
                return collections.OrderedDict
            if (module, name) == ("torch._utils", "_rebuild_tensor_v2"):
                return lambda storage, offset, shape, stride, *_: Tensor(storage, offset, tuple(shape), tuple(stride))
            if module == "torch" and name in _STORAGES:
                return name
            raise pickle.UnpicklingError(f"{path}: {module}.{name} is not part of a state dict")

        def persistent_load(self, pid):
            kind, storage_type, key, _location, size, view = pid
            if kind != "storage" or view is not None:
                raise pickle.UnpicklingError(f"{path}: unsupported storage reference {pid!r}")
            return storages.setdefault(key, Storage(key, np.dtype(_STORAGES[storage_type]), size))

    with open(path, "rb") as f:
        magic, protocol = Unpickler(f).load(), Unpickler(f).load()
        if magic != 0x1950A86A20F9469CFC6C or protocol != 1001:
            raise ValueError(f"{path}: not a legacy torch.save file (magic {magic!r}, protocol {protocol!r})")
        info = Unpickler(f).load()
        if not info.get("little_endian", False):
            raise ValueError(f"{path}: big-endian files are not supported")
        state = Unpickler(f).load()
        raw = {}
        for key in Unpickler(f).load():
            (count,) = struct.unpack("<q", f.read(8))
            s = storages[key]
            if count != s.size:
                raise ValueError(f"{path}: storage {key} holds {count} elements, the pickle says {s.size}")
            raw[key] = np.frombuffer(f.read(count * s.dtype.itemsize), s.dtype)
    out = collections.OrderedDict()
    for name, t in state.items():
        data = raw[t.storage.key]
        span = t.offset + sum((n - 1) * st for n, st in zip(t.shape, t.stride)) + 1
        if min(t.shape, default=1) > 0 and span > data.size:
            raise ValueError(f"{name}: shape {t.shape} stride {t.stride} reaches past its storage")
        view = np.lib.stride_tricks.as_strided(data[t.offset :], t.shape, [st * data.itemsize for st in t.stride])
        out[name] = np.ascontiguousarray(view)
    return out


def blocks():
    """(index, kernel, stride, expand, out channels) of each block, stage by stage."""
    i = 0
    for repeats, k, s, e, out in STAGES:
        for r in range(repeats):
            yield i, k, s if r == 0 else 1, e, out
            i += 1


def to_onnx(w):
    """The ONNX model of state dict `w` (numpy arrays)."""
    from onnx import TensorProto, helper, numpy_helper

    inits, nodes = [], []

    def fold(conv, bn):
        scale = w[f"{bn}.weight"] / np.sqrt(w[f"{bn}.running_var"] + BN_EPS)
        kernel = w[f"{conv}.weight"] * scale[:, None, None, None]
        bias = w[f"{bn}.bias"] - w[f"{bn}.running_mean"] * scale
        return kernel.astype(np.float32), bias.astype(np.float32)

    def conv(x, name, bn, stride=1, relu6=True):
        kernel, bias = fold(name, bn)
        inits.append(numpy_helper.from_array(kernel, f"{name}.w"))
        inits.append(numpy_helper.from_array(bias, f"{name}.b"))
        groups = kernel.shape[0] if kernel.shape[1] == 1 and "depthwise" in name else 1
        nodes.append(
            helper.make_node("Conv", [x, f"{name}.w", f"{name}.b"], [f"{name}.y"], strides=[stride, stride], group=groups, auto_pad="SAME_UPPER")
        )
        if not relu6:
            return f"{name}.y"
        nodes.append(helper.make_node("Clip", [f"{name}.y", "zero", "six"], [f"{name}.a"]))
        return f"{name}.a"

    inits += [numpy_helper.from_array(np.array(0, np.float32), "zero"), numpy_helper.from_array(np.array(6, np.float32), "six")]
    x = conv("images", "_conv_stem", "_bn0", stride=2)
    channels = w["_conv_stem.weight"].shape[0]
    for i, _k, s, e, out in blocks():
        b = f"_blocks.{i}"
        if f"{b}._project_conv.weight" not in w or w[f"{b}._project_conv.weight"].shape[0] != out:
            raise ValueError(f"{b}: not the EfficientNet-Lite0 layout this script converts")
        skip = x
        if e != 1:
            x = conv(x, f"{b}._expand_conv", f"{b}._bn0")
        x = conv(x, f"{b}._depthwise_conv", f"{b}._bn1", stride=s)
        x = conv(x, f"{b}._project_conv", f"{b}._bn2", relu6=False)
        if s == 1 and channels == out:  # the identity skip
            nodes.append(helper.make_node("Add", [x, skip], [f"{b}.sum"]))
            x = f"{b}.sum"
        channels = out
    x = conv(x, "_conv_head", "_bn1")
    inits += [numpy_helper.from_array(w["_fc.weight"], "_fc.w"), numpy_helper.from_array(w["_fc.bias"], "_fc.b")]
    nodes += [
        helper.make_node("GlobalAveragePool", [x], ["pooled"]),
        helper.make_node("Flatten", ["pooled"], ["features"]),
        helper.make_node("Gemm", ["features", "_fc.w", "_fc.b"], ["logits"], transB=1),
    ]
    classes = w["_fc.weight"].shape[0]
    graph = helper.make_graph(
        nodes,
        "efficientnet_lite0",
        [helper.make_tensor_value_info("images", TensorProto.FLOAT, ["N", 3, SIZE, SIZE])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", classes])],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], producer_name="aiserve efficientnet_lite_to_onnx")
    model.ir_version = 8
    helper.set_model_props(model, {"architecture": "EfficientNet-Lite0", "preprocessing": f"RGB {SIZE}x{SIZE}, (pixel - {MEAN:g}) / {STD:g}"})
    return model


def labels(synsets, lemmas):
    """One short ImageNet class name per line, in the classifier's order (the first lemma)."""
    names = dict(line.rstrip("\n").split("\t", 1) for line in open(lemmas) if "\t" in line)
    return [names[s.strip()].split(",")[0].strip() for s in open(synsets) if s.strip()]


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("weights")
    p.add_argument("model_dir")
    p.add_argument("--version", type=int, default=1)
    p.add_argument("--synsets", help="timm's imagenet_synsets.txt (the 1000 classes' order)")
    p.add_argument("--lemmas", help="timm's imagenet_synset_to_lemma.txt (their names)")
    a = p.parse_args()
    w = read_legacy_state_dict(a.weights)
    model = to_onnx(w)
    classes = w["_fc.weight"].shape[0]
    names = labels(a.synsets, a.lemmas) if a.synsets and a.lemmas else [f"class {i}" for i in range(classes)]
    if len(names) != classes:
        raise SystemExit(f"{len(names)} labels for {classes} classes")
    version = os.path.join(a.model_dir, str(a.version))
    os.makedirs(version + ".tmp")
    with open(os.path.join(version + ".tmp", "model.onnx"), "wb") as f:
        f.write(model.SerializeToString())
    with open(os.path.join(version + ".tmp", "labels.txt"), "w") as f:
        f.write("\n".join(names) + "\n")
    toml = os.path.join(a.model_dir, "model.toml")
    if not os.path.exists(toml):
        with open(toml, "w") as f:
            f.write(
                "# EfficientNet-Lite0 (ImageNet), written by tools/efficientnet_lite_to_onnx.py\n"
                "[onnx.image]\n"
                f'channels = "RGB"\nlayout = "NCHW"\nscale = 1.0\nmean = [{MEAN}, {MEAN}, {MEAN}]\nstd = [{STD}, {STD}, {STD}]\n'
                'labels = "labels.txt"\nsoftmax = true\n'
            )
    os.rename(version + ".tmp", version)
    print(f"{version}: {len(model.graph.node)} nodes, {sum(v.size for k, v in w.items() if 'num_batches' not in k)} weights")


if __name__ == "__main__":
    main()
