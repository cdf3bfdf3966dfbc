"""ONNX models served by aiserve, driven by unmodified clients and compared with Python's own
onnxruntime (PyPI, the same release aiserve opens) and scikit-learn.

    python tests/clients/onnx_check.py HTTP_ADDR GRPC_ADDR REPO RAPIDOCR_DIR

- The three PP-OCR networks (in REPO as det, rec, cls): tritonclient over HTTP (binary and JSON
  tensors) and gRPC give what `onnxruntime.InferenceSession.run` gives on the same inputs,
  within 1e-4, at batch 1 and at batch 3.
- A scikit-learn pipeline (StandardScaler + LogisticRegression on the iris data bundled in the
  scikit-learn wheel) converted by skl2onnx is copied into REPO as a new model while the server
  runs; once it is ready its labels (INT64) and probabilities (FP32) equal scikit-learn's.
"""
import os
import sys
import time

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
    for _ in range(300):
        if h.is_model_ready("iris"):
            break
        time.sleep(0.1)
    else:
        raise AssertionError("iris never became ready")
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


def main():
    url, grpc_url, repo, rapidocr = sys.argv[1:5]
    ocr(url, grpc_url, rapidocr)
    sklearn_model(url, repo)


if __name__ == "__main__":
    main()
