"""ONNX models served by aiserve, driven by unmodified clients and compared with Python's own
onnxruntime (PyPI, the same release aiserve opens), scikit-learn, and aiserve's own digits CNN.

    python tests/clients/onnx_check.py HTTP_ADDR GRPC_ADDR REPO RAPIDOCR_DIR MNIST_DIR [KERAS_REFERENCE.npz]

- The three PP-OCR networks (in REPO as det, rec, cls): tritonclient over HTTP (binary and JSON
  tensors) and gRPC give what `onnxruntime.InferenceSession.run` gives on the same inputs,
  within 1e-4, at batch 1 and at batch 3.
- A scikit-learn pipeline (StandardScaler + LogisticRegression on the iris data bundled in the
  scikit-learn wheel) converted by skl2onnx is copied into REPO as a new model while the server
  runs; once it is ready its labels (INT64) and probabilities (FP32) equal scikit-learn's.
- The bundled digits CNN (REPO/digits, aiserve's own kernels) written as an ONNX graph from its
  safetensors (NHWC input, HWIO kernels, as Keras lays them out) and served as an image
  classifier (`[onnx.image]`: GRAY, NHWC, labels.txt): `/classify` on real MNIST test digits sent
  as PNG gives the labels and probabilities (within 1e-4) of the built-in model.
- A Keras 3 CNN trained and exported by keras_export.py (in its own environment, TensorFlow's)
  into REPO/keras_cnn while the server runs: HTTP, gRPC and `/classify` give Keras's `predict`
  within 1e-4.
"""
import base64
import json
import os
import sys
import time
import urllib.request

import numpy as np
import onnxruntime as ort
import tritonclient.grpc as grpc
import tritonclient.http as http

TOL = 1e-4


def session(path):
    so = ort.SessionOptions()
    so.intra_op_num_threads = 2
    return ort.InferenceSession(path, so, providers=["CPUExecutionProvider"])


def compare(name, got, want):
    assert got.shape == want.shape, (name, got.shape, want.shape)
    worst = float(np.abs(got.astype(np.float64) - want.astype(np.float64)).max())
    assert worst <= TOL, f"{name}: max |diff| {worst}"
    return worst


def wait_ready(h, model):
    """Waits up to 30 s for a model copied in while the server runs (the repository poll)."""
    for _ in range(300):
        if h.is_model_ready(model):
            return
        time.sleep(0.1)
    raise AssertionError(f"{model} never became ready")


def classify(url, model, pictures):
    """`/classify` on base64 pictures; the predictions in order."""
    body = json.dumps({"images": pictures}).encode()
    req = urllib.request.Request(f"http://{url}/classify?model={model}", body, {"Content-Type": "application/json"})
    return json.load(urllib.request.urlopen(req))["predictions"]


def ocr(url, grpc_url, rapidocr):
    h = http.InferenceServerClient(url=url)
    g = grpc.InferenceServerClient(url=grpc_url)
    rng = np.random.default_rng(16)
    cases = [
        ("det", "ch_PP-OCRv4_det_infer.onnx", (3, 96, 128)),
        ("rec", "ch_PP-OCRv4_rec_infer.onnx", (3, 48, 200)),
        ("cls", "ch_ppocr_mobile_v2.0_cls_infer.onnx", (3, 48, 192)),
    ]
    for model, file, chw in cases:
        ref = session(os.path.join(rapidocr, file))
        out_name = ref.get_outputs()[0].name
        meta = h.get_model_metadata(model)
        assert meta["platform"] == "onnxruntime_onnx" and meta["outputs"][0]["name"] == out_name, meta
        for n in (1, 3):
            x = rng.uniform(-1, 1, size=(n, *chw)).astype(np.float32)
            want = ref.run(None, {"x": x})[0]
            for binary in (True, False):
                inp = http.InferInput("x", list(x.shape), "FP32")
                inp.set_data_from_numpy(x, binary_data=binary)
                res = h.infer(model, [inp], outputs=[http.InferRequestedOutput(out_name, binary_data=binary)])
                worst = compare(f"{model} http n={n}", res.as_numpy(out_name), want)
            gi = grpc.InferInput("x", list(x.shape), "FP32")
            gi.set_data_from_numpy(x)
            res = g.infer(model, [gi])
            worst = max(worst, compare(f"{model} grpc n={n}", res.as_numpy(out_name), want))
            print(f"{model}: batch {n} {want.shape} equals onnxruntime {ort.__version__} (max |diff| {worst:.2e})")


def sklearn_model(url, repo):
    from skl2onnx import to_onnx
    from sklearn.datasets import load_iris
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    x, y = load_iris(return_X_y=True)
    x = x.astype(np.float32)
    pipe = make_pipeline(StandardScaler(), LogisticRegression(max_iter=500)).fit(x, y)
    onx = to_onnx(pipe, x[:1], options={"zipmap": False}, target_opset=17)
    ops = sorted({n.op_type for n in onx.graph.node})
    version = os.path.join(repo, "iris", "1")
    os.makedirs(version + ".tmp")
    with open(os.path.join(repo, "iris", "model.toml"), "w") as f:
        f.write("max_batch_size = 256\n")  # all 150 rows in one request (the default is 64)
    with open(os.path.join(version + ".tmp", "model.onnx"), "wb") as f:
        f.write(onx.SerializeToString())
    os.rename(version + ".tmp", version)  # appears whole to the repository poll
    h = http.InferenceServerClient(url=url)
    wait_ready(h, "iris")
    meta = h.get_model_metadata("iris")
    names = [o["name"] for o in meta["outputs"]]
    assert meta["inputs"][0]["shape"] == [-1, 4] and names == ["label", "probabilities"], meta
    inp = http.InferInput(meta["inputs"][0]["name"], list(x.shape), "FP32")
    inp.set_data_from_numpy(x)
    res = h.infer("iris", [inp])
    label, probs = res.as_numpy("label"), res.as_numpy("probabilities")
    assert label.dtype == np.int64 and (label == pipe.predict(x)).all(), label
    compare("iris probabilities", probs, pipe.predict_proba(x).astype(np.float32))
    print(f"scikit-learn pipeline via skl2onnx (operators {', '.join(ops)}): 150 labels and probabilities equal scikit-learn's")


def safetensors(path):
    """The tensors of a safetensors file (F32 only), read with numpy."""
    import struct

    raw = open(path, "rb").read()
    n = struct.unpack("<Q", raw[:8])[0]
    header = json.loads(raw[8 : 8 + n])
    out = {}
    for name, t in header.items():
        if name == "__metadata__":
            continue
        a, b = t["data_offsets"]
        out[name] = np.frombuffer(raw[8 + n + a : 8 + n + b], np.float32).reshape(t["shape"])
    return out


def digits_onnx(weights):
    """The seed's CNN as an ONNX graph: [N,28,28,1] -> probabilities [N,10]."""
    from onnx import TensorProto, helper, numpy_helper

    w = safetensors(weights)
    inits = []

    def init(name, array):
        inits.append(numpy_helper.from_array(np.ascontiguousarray(array, np.float32), name))
        return name

    nodes = [helper.make_node("Transpose", ["image"], ["x0"], perm=[0, 3, 1, 2])]
    x = "x0"
    for i in (1, 2, 3):
        k = init(f"conv{i}.w", w[f"conv{i}.weight"].transpose(3, 2, 0, 1))  # HWIO -> OIHW
        b = init(f"conv{i}.b", w[f"conv{i}.bias"])
        nodes += [helper.make_node("Conv", [x, k, b], [f"c{i}"]), helper.make_node("Relu", [f"c{i}"], [f"r{i}"])]
        x = f"r{i}"
        if i < 3:
            nodes.append(helper.make_node("MaxPool", [x], [f"p{i}"], kernel_shape=[2, 2], strides=[2, 2]))
            x = f"p{i}"
    inits.append(numpy_helper.from_array(np.array([-1, 576], np.int64), "flat"))
    shape = "flat"
    nodes += [
        helper.make_node("Transpose", [x], ["nhwc"], perm=[0, 2, 3, 1]),  # Keras flattens H, W, C
        helper.make_node("Reshape", ["nhwc", shape], ["f"]),
        helper.make_node("Gemm", ["f", init("d1.w", w["dense1.weight"]), init("d1.b", w["dense1.bias"])], ["d1"]),
        helper.make_node("Relu", ["d1"], ["h"]),
        helper.make_node("Gemm", ["h", init("d2.w", w["dense2.weight"]), init("d2.b", w["dense2.bias"])], ["logits"]),
        helper.make_node("Softmax", ["logits"], ["probabilities"], axis=1),
    ]
    graph = helper.make_graph(
        nodes,
        "digits_cnn",
        [helper.make_tensor_value_info("image", TensorProto.FLOAT, ["N", 28, 28, 1])],
        [helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, ["N", 10])],
        inits,
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], producer_name="aiserve onnx_check")


def png_gray(pixels):
    """A grayscale PNG of a uint8 [H, W] array (zlib, no imaging library)."""
    import struct
    import zlib

    h, w = pixels.shape
    chunk = lambda kind, data: struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    rows = b"".join(b"\x00" + pixels[r].tobytes() for r in range(h))
    ihdr = struct.pack(">IIBBBBB", w, h, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(rows)) + chunk(b"IEND", b"")


def digit_pngs(x):
    """MNIST digits ([N,28,28,1] in [0, 1]) as base64 PNGs, exactly (they came from bytes)."""
    return [base64.b64encode(png_gray((img[:, :, 0] * 255).round().astype(np.uint8))).decode() for img in x]


def digits_as_onnx(url, repo, mnist_dir):
    from mnist import mnist_test

    model = digits_onnx(os.path.join(repo, "digits", "1", "model.safetensors"))
    version = os.path.join(repo, "digits_onnx", "1")
    os.makedirs(version + ".tmp")
    with open(os.path.join(version + ".tmp", "model.onnx"), "wb") as f:
        f.write(model.SerializeToString())
    with open(os.path.join(version + ".tmp", "labels.txt"), "w") as f:
        f.write("\n".join(str(d) for d in range(10)) + "\n")
    with open(os.path.join(repo, "digits_onnx", "model.toml"), "w") as f:
        f.write('[onnx.image]\nlayout = "NHWC"\nchannels = "GRAY"\nlabels = "labels.txt"\n')
    os.rename(version + ".tmp", version)
    h = http.InferenceServerClient(url=url)
    wait_ready(h, "digits_onnx")
    x, y = mnist_test(mnist_dir, 64)
    pictures = digit_pngs(x)

    onnx_preds, own_preds = classify(url, "digits_onnx", pictures), classify(url, "digits", pictures)
    labels = np.array([int(p["label"]) for p in onnx_preds])
    assert (labels == np.array([int(p["label"]) for p in own_preds])).all()
    compare(
        "digits probabilities (ONNX vs aiserve's kernels)",
        np.array([p["probabilities"] for p in onnx_preds], np.float32),
        np.array([p["probabilities"] for p in own_preds], np.float32),
    )
    accuracy = float((labels == y).mean())
    assert accuracy >= 0.95, accuracy
    print(f"digits CNN as ONNX: /classify on 64 MNIST PNGs agrees with the built-in model ({accuracy:.3f} accuracy)")


def keras_model(url, grpc_url, reference):
    """The Keras 3 CNN keras_export.py trained and exported into REPO/keras_cnn while the server
    ran: tritonclient (HTTP binary, gRPC) and /classify on PNGs give Keras's own predictions."""
    ref = np.load(reference)
    x, want = ref["x"], ref["keras"]
    h = http.InferenceServerClient(url=url)
    wait_ready(h, "keras_cnn")
    meta = h.get_model_metadata("keras_cnn")
    name, out = meta["inputs"][0]["name"], meta["outputs"][0]["name"]
    assert meta["inputs"][0]["shape"] == [-1, 28, 28, 1], meta
    inp = http.InferInput(name, list(x.shape), "FP32")
    inp.set_data_from_numpy(x, binary_data=True)
    worst = compare("keras http", h.infer("keras_cnn", [inp]).as_numpy(out), want)
    g = grpc.InferenceServerClient(url=grpc_url)
    gi = grpc.InferInput(name, list(x.shape), "FP32")
    gi.set_data_from_numpy(x)
    worst = max(worst, compare("keras grpc", g.infer("keras_cnn", [gi]).as_numpy(out), want))
    pictures = digit_pngs(x)
    preds = classify(url, "keras_cnn", pictures)
    worst = max(worst, compare("keras /classify", np.array([p["probabilities"] for p in preds], np.float32), want))
    labels = np.array([int(p["label"]) for p in preds])
    assert (labels == want.argmax(1)).all(), labels
    accuracy = float((labels == ref["y"]).mean())
    assert accuracy >= 0.95, accuracy
    print(
        f"Keras {ref['version']} CNN via model.export(format='onnx') ({', '.join(ref['opsets'])}; operators "
        f"{', '.join(ref['ops'])}): HTTP, gRPC and /classify equal Keras's predict (max |diff| {worst:.1e}), "
        f"{accuracy:.3f} accuracy on 64 test digits"
    )


def main():
    url, grpc_url, repo, rapidocr, mnist_dir = sys.argv[1:6]
    ocr(url, grpc_url, rapidocr)
    sklearn_model(url, repo)
    digits_as_onnx(url, repo, mnist_dir)
    if len(sys.argv) > 6:
        keras_model(url, grpc_url, sys.argv[6])


if __name__ == "__main__":
    main()
