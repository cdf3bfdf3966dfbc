"""Helpers for bench/onnx_vs_onnxruntime.sh (Python's onnxruntime, the in-process baseline).

    python onnx_vs_onnxruntime.py payload MODEL.onnx BATCH OUT      # KServe binary body for aiserve bench
    python onnx_vs_onnxruntime.py inprocess MODEL.onnx BATCH SECONDS  # images/s in-process, 2 threads
"""
import json
import sys
import time

import numpy as np
import onnxruntime as ort

SHAPE = (3, 48, 192)  # one text line, as PP-OCR's angle classifier takes it


def picture(batch):
    return np.random.default_rng(7).uniform(-1, 1, size=(batch, *SHAPE)).astype(np.float32)


def main():
    cmd, model, batch = sys.argv[1], sys.argv[2], int(sys.argv[3])
    x = picture(batch)
    if cmd == "payload":
        raw = x.tobytes()
        header = {
            "inputs": [{"name": "x", "datatype": "FP32", "shape": list(x.shape), "parameters": {"binary_data_size": len(raw)}}],
            "parameters": {"binary_data_output": True},
        }
        with open(sys.argv[4], "wb") as f:
            f.write(json.dumps(header).encode() + raw)
        return
    so = ort.SessionOptions()
    so.intra_op_num_threads = 2
    s = ort.InferenceSession(model, so, providers=["CPUExecutionProvider"])
    for _ in range(20):
        s.run(None, {"x": x})
    seconds, n, t = float(sys.argv[4]), 0, time.perf_counter()
    while time.perf_counter() - t < seconds:
        s.run(None, {"x": x})
        n += 1
    print(f"{n * batch / (time.perf_counter() - t):.1f}")


if __name__ == "__main__":
    main()
