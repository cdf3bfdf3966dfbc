"""Helpers for bench/onnx_vs_onnxruntime.sh (Python's onnxruntime, the in-process baseline).

    python onnx_vs_onnxruntime.py payload MODEL.onnx BATCH OUT      # KServe binary body for aiserve bench
    python onnx_vs_onnxruntime.py inprocess MODEL.onnx BATCH SECONDS  # images/s in-process, 2 threads
"""
import json
import sys
import time

import numpy as np
import onnxruntime as ort

# Sizes for the dimensions a graph leaves open (after the batch): one text line of 48x192, as
# PP-OCR's angle classifier takes it; graphs with fixed sizes (EfficientNet's 3x224x224) use theirs.
OPEN = (3, 48, 192)


def picture(input, batch):
    dims = [d if isinstance(d, int) and d > 0 else OPEN[i] for i, d in enumerate(input.shape[1:])]
    return np.random.default_rng(7).uniform(-1, 1, size=(batch, *dims)).astype(np.float32)


def main():
    cmd, model, batch = sys.argv[1], sys.argv[2], int(sys.argv[3])
    so = ort.SessionOptions()
    so.intra_op_num_threads = 2
    s = ort.InferenceSession(model, so, providers=["CPUExecutionProvider"])
    name = s.get_inputs()[0].name
    x = picture(s.get_inputs()[0], batch)
    if cmd == "payload":
        raw = x.tobytes()
        header = {
            "inputs": [{"name": name, "datatype": "FP32", "shape": list(x.shape), "parameters": {"binary_data_size": len(raw)}}],
            "parameters": {"binary_data_output": True},
        }
        with open(sys.argv[4], "wb") as f:
            f.write(json.dumps(header).encode() + raw)
        return
    t = time.perf_counter()
    while time.perf_counter() - t < 1.0:  # warm-up: a second of passes
        s.run(None, {name: x})
    seconds, n, t = float(sys.argv[4]), 0, time.perf_counter()
    while time.perf_counter() - t < seconds:
        s.run(None, {name: x})
        n += 1
    print(f"{n * batch / (time.perf_counter() - t):.1f}")


if __name__ == "__main__":
    main()
