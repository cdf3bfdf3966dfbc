"""EfficientNet-Lite0 (ImageNet) converted by tools/efficientnet_lite_to_onnx.py and served by
aiserve, checked against a reference forward pass of the same weights that shares no code with
the converter's graph (numpy, batch norms applied as written rather than folded, TensorFlow's
SAME padding computed here), and against Python's onnxruntime on the converted file.

    python tests/clients/efficientnet_check.py HTTP_ADDR GRPC_ADDR MODEL_DIR WEIGHTS.pth

MODEL_DIR is the served model (`<repo>/efficientnet`, version 1). The pictures are the two real
photos in scikit-learn's wheel (china.jpg: the Summer Palace's tower; flower.jpg: a dahlia).
- reference forward (float64) vs onnxruntime on the converted graph (float32, batch norms folded):
  logits within 1e-4 (measured 4e-6; the logits are of order 10);
- aiserve over KServe binary HTTP and gRPC vs onnxruntime on the same tensor: within 1e-4;
- `/classify` on 224x224 PNGs of the photos (no resizing on either side): probabilities equal
  softmax(onnxruntime's logits) within 1e-4; on the original 640x427 JPEGs (resized by aiserve):
  ImageNet labels of a tower by a lake and of a flower.
"""
import base64
import io
import json
import os
import sys
import urllib.request

import numpy as np
import onnxruntime as ort
import sklearn
import tritonclient.grpc as grpc
import tritonclient.http as http
from PIL import Image

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "..", "tools"))
from efficientnet_lite_to_onnx import read_legacy_state_dict  # noqa: E402

PHOTOS = os.path.join(os.path.dirname(sklearn.__file__), "datasets", "images")
# ImageNet has no pagoda and no dahlia; these are the classes a correct network ranks first.
EXPECTED = {
    "china.jpg": {"bell cote", "palace", "boathouse", "monastery", "castle", "stupa", "lakeside", "church"},
    "flower.jpg": {"daisy"},
}


def same_pad(x, k, s):
    """TensorFlow's SAME padding of an NCHW array: the odd pixel goes after."""
    pads = []
    for n in x.shape[2:]:
        total = max((-(-n // s) - 1) * s + k - n, 0)
        pads.append((total // 2, total - total // 2))
    return np.pad(x, [(0, 0), (0, 0), *pads])


def conv(x, w, stride, groups=1):
    """Convolution of NCHW `x` by OIHW `w` with SAME padding, as a sum over the kernel's taps."""
    k = w.shape[2]
    x = same_pad(x, k, stride)
    n, c, h, wd = x.shape
    oh, ow = (h - k) // stride + 1, (wd - k) // stride + 1
    out = np.zeros((n, w.shape[0], oh, ow), np.float64)
    for i in range(k):
        for j in range(k):
            patch = x[:, :, i : i + stride * oh : stride, j : j + stride * ow : stride]
            if groups == 1:
                out += np.einsum("nchw,oc->nohw", patch, w[:, :, i, j], optimize=True)
            else:  # depthwise: one filter per channel
                out += patch * w[None, :, 0, i, j, None, None]
    return out


def bn(x, w, name):
    g, b = w[f"{name}.weight"], w[f"{name}.bias"]
    m, v = w[f"{name}.running_mean"], w[f"{name}.running_var"]
    return (x - m[None, :, None, None]) / np.sqrt(v[None, :, None, None] + 1e-3) * g[None, :, None, None] + b[None, :, None, None]


def relu6(x):
    return np.minimum(np.maximum(x, 0), 6)


def reference_logits(w, x):
    """EfficientNet-Lite0 as TensorFlow's efficientnet_lite_builder defines it, in float64."""
    x = relu6(bn(conv(x.astype(np.float64), w["_conv_stem.weight"], 2), w, "_bn0"))
    stages = [(1, 1), (2, 2), (2, 2), (3, 2), (3, 1), (4, 2), (1, 1)]  # (repeats, first stride)
    i = 0
    for repeats, first in stages:
        for r in range(repeats):
            b, stride = f"_blocks.{i}", first if r == 0 else 1
            y = x
            if f"{b}._expand_conv.weight" in w:
                y = relu6(bn(conv(y, w[f"{b}._expand_conv.weight"], 1), w, f"{b}._bn0"))
            dw = w[f"{b}._depthwise_conv.weight"]
            y = relu6(bn(conv(y, dw, stride, groups=dw.shape[0]), w, f"{b}._bn1"))
            y = bn(conv(y, w[f"{b}._project_conv.weight"], 1), w, f"{b}._bn2")
            x = x + y if stride == 1 and y.shape == x.shape else y
            i += 1
    x = relu6(bn(conv(x, w["_conv_head.weight"], 1), w, "_bn1"))
    return x.mean(axis=(2, 3)) @ w["_fc.weight"].T.astype(np.float64) + w["_fc.bias"]


def photo(name, size=None):
    im = Image.open(os.path.join(PHOTOS, name)).convert("RGB")
    return im.resize(size, Image.BILINEAR) if size else im


def tensor(im):
    return ((np.asarray(im, np.float32) - 127.0) / 128.0).transpose(2, 0, 1)


def softmax(z):
    e = np.exp(z - z.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def classify(url, pictures):
    body = json.dumps({"images": [base64.b64encode(p).decode() for p in pictures]}).encode()
    req = urllib.request.Request(f"http://{url}/classify?model=efficientnet", body, {"Content-Type": "application/json"})
    return json.load(urllib.request.urlopen(req))["predictions"]


def main():
    url, grpc_url, model_dir, weights = sys.argv[1:5]
    names = list(EXPECTED)
    small = [photo(n, (224, 224)) for n in names]
    x = np.stack([tensor(im) for im in small])

    w = read_legacy_state_dict(weights)
    want = reference_logits(w, x)
    so = ort.SessionOptions()
    so.intra_op_num_threads = 2
    sess = ort.InferenceSession(os.path.join(model_dir, "1", "model.onnx"), so, providers=["CPUExecutionProvider"])
    logits = sess.run(None, {"images": x})[0]
    worst = float(np.abs(logits - want).max())
    assert worst <= 1e-4, f"converted graph vs reference forward: max |diff| {worst}"
    labels = open(os.path.join(model_dir, "1", "labels.txt")).read().splitlines()
    print(f"efficientnet: the converted graph's logits equal the reference forward's (max |diff| {worst:.1e}); top-1 {[labels[i] for i in want.argmax(1)]}")

    h = http.InferenceServerClient(url=url)
    meta = h.get_model_metadata("efficientnet")
    assert meta["inputs"][0]["shape"] == [-1, 3, 224, 224] and meta["outputs"][0]["shape"] == [-1, 1000], meta
    props = meta["parameters"]["graph"]  # the graph's metadata properties, as the converter wrote them
    assert props["architecture"] == "EfficientNet-Lite0" and "model_version" not in props, props
    inp = http.InferInput("images", list(x.shape), "FP32")
    inp.set_data_from_numpy(x, binary_data=True)
    got = h.infer("efficientnet", [inp]).as_numpy("logits")
    served = float(np.abs(got - logits).max())
    g = grpc.InferenceServerClient(url=grpc_url)
    gi = grpc.InferInput("images", list(x.shape), "FP32")
    gi.set_data_from_numpy(x)
    served = max(served, float(np.abs(g.infer("efficientnet", [gi]).as_numpy("logits") - logits).max()))
    assert served <= 1e-4, f"aiserve vs onnxruntime: max |diff| {served}"

    pngs = []
    for im in small:
        buf = io.BytesIO()
        im.save(buf, "PNG")
        pngs.append(buf.getvalue())
    preds = classify(url, pngs)
    probs = np.array([p["probabilities"] for p in preds], np.float32)
    close = float(np.abs(probs - softmax(logits.astype(np.float64))).max())
    assert close <= 1e-4, f"/classify probabilities vs onnxruntime: max |diff| {close}"

    jpegs = [open(os.path.join(PHOTOS, n), "rb").read() for n in names]
    for name, p in zip(names, classify(url, jpegs)):
        top = np.argsort(-np.array(p["probabilities"]))[:3]
        assert p["label"] in EXPECTED[name], (name, p["label"], [labels[i] for i in top])
        print(f"efficientnet: /classify {name} -> {p['label']} ({max(p['probabilities']):.2f}); top-3 {[labels[i] for i in top]}")
    print(f"efficientnet: KServe HTTP binary and gRPC equal onnxruntime {ort.__version__} (max |diff| {served:.1e}), /classify probabilities too ({close:.1e})")


if __name__ == "__main__":
    main()
