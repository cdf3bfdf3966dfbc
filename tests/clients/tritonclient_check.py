"""Drives a running aiserve with NVIDIA's own `tritonclient.http`, unmodified.

    python tests/clients/tritonclient_check.py 127.0.0.1:PORT MNIST_DIR

Checks health, metadata, and `infer` with the client's defaults (binary tensor data both ways)
and with JSON tensors, on real MNIST test digits; exits non-zero on any mismatch.
"""
import sys

import numpy as np
import tritonclient.http as http
from tritonclient.utils import InferenceServerException

from mnist import mnist_test


def main():
    url, mnist = sys.argv[1], sys.argv[2]
    client = http.InferenceServerClient(url=url)
    assert client.is_server_live(), "server not live"
    assert client.is_server_ready(), "server not ready"
    assert client.is_model_ready("digits"), "digits not ready"
    meta = client.get_model_metadata("digits")
    assert meta["inputs"][0]["name"] == "image" and meta["inputs"][0]["shape"] == [-1, 28, 28, 1], meta
    x, y = mnist_test(mnist, 64)
    for binary in (True, False):
        inp = http.InferInput("image", list(x.shape), "FP32")
        inp.set_data_from_numpy(x, binary_data=binary)
        outs = [http.InferRequestedOutput("probabilities", binary_data=binary), http.InferRequestedOutput("label", binary_data=binary)]
        res = client.infer("digits", [inp], outputs=outs, request_id="check-1")
        probs, label = res.as_numpy("probabilities"), res.as_numpy("label")
        assert probs.shape == (64, 10) and label.shape == (64,), (probs.shape, label.shape)
        assert np.allclose(probs.sum(axis=1), 1.0, atol=1e-4)
        assert (label == probs.argmax(axis=1)).all()
        accuracy = float((label == y).mean())
        assert accuracy >= 0.95, accuracy
        assert res.get_response()["id"] == "check-1"
        print(f"tritonclient infer (binary={binary}): {accuracy:.3f} accuracy on 64 test digits")
    try:
        bad = http.InferInput("image", [1, 27, 28], "FP32")
        bad.set_data_from_numpy(np.zeros((1, 27, 28), np.float32))
        client.infer("digits", [bad])
        raise AssertionError("a wrong shape was accepted")
    except InferenceServerException as e:
        assert "[N,28,28,1]" in str(e), e
        print(f"tritonclient sees the shape error: {e}")
    check_reader(client, x, y)
    # Model repository extension: index, unload, load.
    index = client.get_model_repository_index()
    assert any(m["name"] == "digits" and m["state"] == "READY" for m in index), index
    client.unload_model("digits")
    assert not client.is_model_ready("digits"), "digits still ready after unload"
    client.load_model("digits")
    assert client.is_model_ready("digits"), "digits not ready after load"
    print("tritonclient repository API: index, unload, load")
    print("tritonclient: all checks passed")


def check_reader(client, x, y):
    """The digit-strings reader: a picture tensor in, BYTES text and FP32 probabilities out."""
    meta = client.get_model_metadata("digit-strings")
    assert meta["platform"] == "aiserve_candle", meta
    assert [(o["name"], o["datatype"], o["shape"]) for o in meta["outputs"]] == [
        ("text", "BYTES", [-1]), ("probabilities", "FP32", [-1, 7])], meta
    # Two real test digits side by side, and a blank picture.
    pictures = np.zeros((2, 28, 128, 1), np.float32)
    pictures[0, :, 0:28] = x[0]
    pictures[0, :, 20:48] = np.maximum(pictures[0, :, 20:48], x[1])
    answers = []
    for binary in (True, False):
        inp = http.InferInput("image", list(pictures.shape), "FP32")
        inp.set_data_from_numpy(pictures, binary_data=binary)
        outs = [http.InferRequestedOutput("text", binary_data=binary), http.InferRequestedOutput("probabilities", binary_data=binary)]
        res = client.infer("digit-strings", [inp], outputs=outs)
        text, probs = res.as_numpy("text"), res.as_numpy("probabilities")
        assert text.shape == (2,) and probs.shape == (2, 7), (text.shape, probs.shape)
        read = [t.decode() if isinstance(t, bytes) else str(t) for t in text]
        assert all(r.isdigit() or r == "" for r in read) and all(len(r) <= 6 for r in read), read
        for r, p in zip(read, probs):
            assert (p[: len(r) + 1] > 0).all() and (p[len(r) + 1:] == 0).all(), (r, p)
        answers.append((read, probs.round(5).tolist()))
        print(f"tritonclient digit-strings (binary={binary}): read {read} (digits {int(y[0])}{int(y[1])} and a blank page)")
    assert answers[0] == answers[1], answers


if __name__ == "__main__":
    main()
