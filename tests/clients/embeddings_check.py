"""Drives a running aiserve's text embedding model with the official `openai` client and NVIDIA's
`tritonclient.http`, unmodified, and compares the vectors with sentence-transformers' reference.

    python tests/clients/embeddings_check.py 127.0.0.1:PORT MODEL REFERENCE_JSON

The openai client asks for base64 by default and decodes it itself; tritonclient sends BYTES in
its binary form by default. Exits non-zero on any mismatch.
"""
import json
import sys

import numpy as np
import openai
import tritonclient.http as http


def cosine(a, b):
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))


def main():
    addr, model, ref_path = sys.argv[1], sys.argv[2], sys.argv[3]
    ref = json.load(open(ref_path))["items"]
    sentences = [r["sentence"] for r in ref]
    want = [np.asarray(json.loads(r["embedding_normalized"]) if isinstance(r["embedding_normalized"], str) else r["embedding_normalized"]) for r in ref]

    client = openai.OpenAI(base_url=f"http://{addr}/v1", api_key="unused")
    assert model in [m.id for m in client.models.list().data]
    res = client.embeddings.create(model=model, input=sentences)  # base64 on the wire
    assert len(res.data) == len(sentences) and res.usage.prompt_tokens > len(sentences), res.usage
    for i, d in enumerate(res.data):
        c = cosine(d.embedding, want[i])
        assert c >= 0.9999, (i, c)
    floats = client.embeddings.create(model=model, input="hi", encoding_format="float", dimensions=8)
    assert len(floats.data[0].embedding) == 8 and abs(np.linalg.norm(floats.data[0].embedding) - 1) < 1e-5
    try:
        client.embeddings.create(model=model, input="")
        raise AssertionError("an empty string must be refused")
    except openai.BadRequestError as e:
        assert e.status_code == 400 and "empty string" in str(e), e
    try:
        client.embeddings.create(model="no-such-model", input="x")
        raise AssertionError("an unknown model must be refused")
    except openai.NotFoundError as e:
        assert e.status_code == 404, e

    triton = http.InferenceServerClient(url=addr)
    meta = triton.get_model_metadata(model)
    assert meta["inputs"][0]["datatype"] == "BYTES", meta
    for binary in (True, False):
        inp = http.InferInput("text", [len(sentences)], "BYTES")
        inp.set_data_from_numpy(np.array([s.encode() for s in sentences], dtype=object), binary_data=binary)
        out = triton.infer(model, [inp], outputs=[http.InferRequestedOutput("embedding", binary_data=binary)])
        vectors = out.as_numpy("embedding")
        assert vectors.shape == (len(sentences), len(want[0])), vectors.shape
        for i in range(len(sentences)):
            assert cosine(vectors[i], want[i]) >= 0.9999, (binary, i)
    print(f"embeddings check passed: openai {openai.__version__}, {len(sentences)} reference sentences")


if __name__ == "__main__":
    main()
