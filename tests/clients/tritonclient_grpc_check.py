"""Drives a running aiserve over gRPC with NVIDIA's own `tritonclient.grpc`, unmodified.

    python tests/clients/tritonclient_grpc_check.py GRPC_ADDR MNIST_DIR MINILM_REFERENCE_JSON
    python tests/clients/tritonclient_grpc_check.py --keys GRPC_ADDR ADMIN_KEY INFER_KEY

The first form checks health, metadata, config, infer with numpy arrays (raw tensors both ways)
on real MNIST test digits, BYTES texts into all-MiniLM-L6-v2 against sentence-transformers'
vectors, stream infer of SmolLM2 (decoupled text pieces with the final flag), and statistics.
The second form checks the repository calls and the keys on a server started with a key file.
Exits non-zero on any mismatch.
"""
import json
import queue
import sys

import numpy as np
import tritonclient.grpc as grpcclient
from tritonclient.utils import InferenceServerException

from mnist import mnist_test


def cosine(a, b):
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))


def expect_error(fn, status, text=""):
    try:
        fn()
    except InferenceServerException as e:
        assert e.status() == status, (e.status(), e.message())
        assert text in e.message(), (text, e.message())
        return
    raise AssertionError(f"expected {status}")


def stream_generate(client, model, prompt, max_tokens):
    """Streams one generation; returns the text pieces and whether the last one was final."""
    got = queue.Queue()
    client.start_stream(callback=lambda result, error: got.put((result, error)))
    text_in = grpcclient.InferInput("text_input", [1], "BYTES")
    text_in.set_data_from_numpy(np.array([prompt.encode()], dtype=np.object_))
    stream_in = grpcclient.InferInput("stream", [1], "BOOL")
    stream_in.set_data_from_numpy(np.array([True]))
    client.async_stream_infer(
        model, [text_in, stream_in], request_id="g1",
        parameters={"max_tokens": max_tokens, "temperature": 0}, enable_empty_final_response=True,
    )
    pieces = []
    while True:
        result, error = got.get(timeout=120)
        assert error is None, error
        resp = result.get_response()
        assert resp.id == "g1", resp.id
        out = result.as_numpy("text_output")
        if out is not None:
            pieces.append(out[0].decode())
        if resp.parameters["triton_final_response"].bool_param:
            break
    client.stop_stream()
    return pieces


def main():
    addr, mnist, ref_path = sys.argv[1], sys.argv[2], sys.argv[3]
    client = grpcclient.InferenceServerClient(url=addr)
    assert client.is_server_live() and client.is_server_ready()
    assert client.is_model_ready("digits") and not client.is_model_ready("no-such-model")
    meta = client.get_model_metadata("digits", as_json=True)
    assert meta["inputs"][0]["name"] == "image" and meta["inputs"][0]["shape"] == ["-1", "28", "28", "1"], meta
    config = client.get_model_config("digits", as_json=True)["config"]
    assert config["max_batch_size"] == 64 and config["input"][0]["dims"] == ["28", "28", "1"], config
    assert config["instance_group"][0]["count"] >= 1 and "dynamic_batching" in config, config

    x, y = mnist_test(mnist, 256)
    inp = grpcclient.InferInput("image", list(x.shape), "FP32")
    inp.set_data_from_numpy(x)
    outs = [grpcclient.InferRequestedOutput("probabilities"), grpcclient.InferRequestedOutput("label")]
    res = client.infer("digits", [inp], outputs=outs, request_id="grpc-1")
    probs, label = res.as_numpy("probabilities"), res.as_numpy("label")
    assert probs.shape == (256, 10) and label.shape == (256,), (probs.shape, label.shape)
    assert np.allclose(probs.sum(axis=1), 1.0, atol=1e-4) and (label == probs.argmax(axis=1)).all()
    accuracy = float((label == y).mean())
    assert accuracy >= 0.95, accuracy
    assert res.get_response().id == "grpc-1"
    print(f"tritonclient.grpc infer: {accuracy:.3f} accuracy on 256 test digits in one request")
    bad = grpcclient.InferInput("image", [1, 27, 28], "FP32")
    bad.set_data_from_numpy(np.zeros((1, 27, 28), np.float32))
    expect_error(lambda: client.infer("digits", [bad]), "StatusCode.INVALID_ARGUMENT", "shape")
    expect_error(lambda: client.infer("no-such-model", [inp]), "StatusCode.NOT_FOUND")

    ref = json.load(open(ref_path))["items"]
    sentences = [r["sentence"] for r in ref]
    want = [np.asarray(json.loads(r["embedding_normalized"]) if isinstance(r["embedding_normalized"], str) else r["embedding_normalized"]) for r in ref]
    texts = grpcclient.InferInput("text", [len(sentences)], "BYTES")
    texts.set_data_from_numpy(np.array([s.encode() for s in sentences], dtype=np.object_))
    vectors = client.infer("minilm", [texts]).as_numpy("embedding")
    assert vectors.shape == (len(sentences), 384), vectors.shape
    for i, v in enumerate(vectors):
        c = cosine(v, want[i])
        assert c >= 0.9999, (i, c)
    print(f"tritonclient.grpc embeddings: {len(sentences)} texts match sentence-transformers (cosine >= 0.9999)")

    assert client.get_model_config("smollm2", as_json=True)["config"]["model_transaction_policy"]["decoupled"]
    pieces = stream_generate(client, "smollm2", "The capital of France is", 8)
    text = "".join(pieces)
    assert len(pieces) >= 3 and text.strip(), pieces
    print(f"tritonclient.grpc stream infer: {len(pieces)} responses, text {text!r}")

    stats = client.get_inference_statistics("digits", as_json=True)["model_stats"][0]
    assert int(stats["inference_count"]) >= 256 and int(stats["inference_stats"]["success"]["count"]) >= 1, stats
    client.close()


def keys():
    addr, admin, infer = sys.argv[2], sys.argv[3], sys.argv[4]
    client = grpcclient.InferenceServerClient(url=addr)
    bearer = lambda k: {"authorization": f"Bearer {k}"}
    assert client.is_server_live()  # probes need no key
    expect_error(lambda: client.get_model_repository_index(), "StatusCode.UNAUTHENTICATED")
    expect_error(lambda: client.get_model_repository_index(headers=bearer("wrong-key-0123456789")), "StatusCode.UNAUTHENTICATED")
    expect_error(lambda: client.unload_model("digits", headers=bearer(infer)), "StatusCode.PERMISSION_DENIED", "admin")
    index = client.get_model_repository_index(headers=bearer(admin), as_json=True)
    assert any(m["name"] == "digits" and m.get("state") == "READY" for m in index["models"]), index
    client.unload_model("digits", headers={"x-api-key": admin})
    assert not client.is_model_ready("digits", headers=bearer(infer))
    client.load_model("digits", headers=bearer(admin))
    assert client.is_model_ready("digits", headers=bearer(infer))
    print("tritonclient.grpc repository: index, unload and load with an admin key; 401/403 as gRPC codes")
    client.close()


if __name__ == "__main__":
    keys() if sys.argv[1] == "--keys" else main()
