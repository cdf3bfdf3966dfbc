"""ONNX Runtime's side of bench/digits_vs_onnxruntime.sh: the digits CNN as an ONNX graph
(tools/digits_to_onnx.py) in-process, ONNX Runtime's defaults (all graph optimisations), one
session with THREADS intra-op threads; for each batch size, the median time of one forward pass
over 20 samples of at least 3 s together, as criterion reports ours.

    python bench/digits_onnxruntime.py MODEL.onnx THREADS
"""
import statistics
import sys
import time

import numpy as np
import onnxruntime as ort


def main():
    path, threads = sys.argv[1], int(sys.argv[2])
    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    sess = ort.InferenceSession(path, so, providers=["CPUExecutionProvider"])
    for batch in (1, 32, 256):
        x = (np.arange(batch * 784, dtype=np.int64) * 7919 % 256).astype(np.float32).reshape(batch, 28, 28, 1) / 255.0
        for _ in range(20):
            sess.run(["logits"], {"image": x})
        # Iterations per sample so that 20 samples take about 3 s.
        t0 = time.perf_counter()
        sess.run(["logits"], {"image": x})
        per = max(1, int(0.15 / max(time.perf_counter() - t0, 1e-6)))
        samples = []
        for _ in range(20):
            t0 = time.perf_counter()
            for _ in range(per):
                sess.run(["logits"], {"image": x})
            samples.append((time.perf_counter() - t0) / per)
        t = statistics.median(samples)
        print(f"onnxruntime batch {batch:>3}: {t * 1e6:10.1f} us per pass, {batch / t:10.0f} images/s")


if __name__ == "__main__":
    main()
