"""Tiny seeded encoders written here, served by aiserve, checked against a NumPy forward pass of
the same weights (an independent reference: nothing here shares code with aiserve's kernels).

    python tests/clients/encoders_check.py write REPO [MODEL...]   (all of them by default)
    python tests/clients/encoders_check.py check HOST:PORT GRPC_HOST:PORT REPO

`write` makes four Hugging Face directories, each the shape of a real checkpoint of its family:
  rerank-bert   BertForSequenceClassification, one label, sigmoid by default (ms-marco-MiniLM's shape)
  rerank-xlmr   XLMRobertaForSequenceClassification, one label, Identity named in its config
                (bge-reranker's shape: positions from pad_token_id + 1, no token types, RoBERTa's head)
  nli-bert      BertForSequenceClassification with three labels (raw logits)
  embed-roberta a bare RobertaModel (mean pooling), served as an embedding model
  embed-nomic   NomicBERT as nomic-embed-text-v1.5 stores it (rotary positions, fused QKV, SwiGLU,
                no biases), sentence-transformers' mean pooling and Normalize
  embed-nomic-b NomicBERT with biases, half-width interleaved rotation and a padded vocabulary
with word-level tokenizers (lower-cased, split on spaces) so this script tokenizes the way the
served tokenizer.json does without the `tokenizers` package. `check` sends the same texts through
/v1/rerank, /rerank, /v2/rerank, KServe v2 (tritonclient HTTP and gRPC, two BYTES inputs) and
/v1/embeddings and compares every score and vector with NumPy's.
"""
import json
import math
import os
import struct
import sys
import urllib.error
import urllib.request

import numpy as np

WORDS = ("the a cat dog sat on mat fish swims in sea birds fly over hills rust code compiles fast "
         "query about animals which one is wet dry quick brown fox jumps lazy").split()
HIDDEN, LAYERS, HEADS, INTER = 16, 2, 2, 32


def bert_vocab():
    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]"]
    return {w: i for i, w in enumerate(specials + WORDS)}


def roberta_vocab():
    specials = ["<s>", "<pad>", "</s>", "<unk>"]
    return {w: i for i, w in enumerate(specials + WORDS)}


def added(vocab, names):
    return [{"id": vocab[n], "content": n, "single_word": False, "lstrip": False, "rstrip": False,
             "normalized": False, "special": True} for n in names]


def bert_tokenizer(vocab):
    spec = lambda n, t: {"SpecialToken": {"id": n, "type_id": t}}
    seq = lambda s, t: {"Sequence": {"id": s, "type_id": t}}
    return {
        "version": "1.0", "truncation": None, "padding": None,
        "added_tokens": added(vocab, ["[PAD]", "[UNK]", "[CLS]", "[SEP]"]),
        "normalizer": {"type": "Lowercase"}, "pre_tokenizer": {"type": "WhitespaceSplit"},
        "post_processor": {
            "type": "TemplateProcessing",
            "single": [spec("[CLS]", 0), seq("A", 0), spec("[SEP]", 0)],
            "pair": [spec("[CLS]", 0), seq("A", 0), spec("[SEP]", 0), seq("B", 1), spec("[SEP]", 1)],
            "special_tokens": {n: {"id": n, "ids": [vocab[n]], "tokens": [n]} for n in ("[CLS]", "[SEP]")},
        },
        "decoder": None, "model": {"type": "WordLevel", "vocab": vocab, "unk_token": "[UNK]"},
    }


def roberta_tokenizer(vocab):
    return {
        "version": "1.0", "truncation": None, "padding": None,
        "added_tokens": added(vocab, ["<s>", "<pad>", "</s>", "<unk>"]),
        "normalizer": {"type": "Lowercase"}, "pre_tokenizer": {"type": "WhitespaceSplit"},
        "post_processor": {"type": "RobertaProcessing", "sep": ["</s>", 2], "cls": ["<s>", 0],
                           "trim_offsets": True, "add_prefix_space": False},
        "decoder": None, "model": {"type": "WordLevel", "vocab": vocab, "unk_token": "<unk>"},
    }


def words(text, vocab, unk):
    return [vocab.get(w, vocab[unk]) for w in text.lower().split()]


def bert_pair(q, d, vocab):
    a, b = words(q, vocab, "[UNK]"), words(d, vocab, "[UNK]")
    ids = [vocab["[CLS]"]] + a + [vocab["[SEP]"]] + b + [vocab["[SEP]"]]
    return ids, [0] * (len(a) + 2) + [1] * (len(b) + 1)


def roberta_pair(q, d, vocab):
    a, b = words(q, vocab, "<unk>"), words(d, vocab, "<unk>")
    ids = [0] + a + [2, 2] + b + [2]
    return ids, [0] * len(ids)


def roberta_single(t, vocab):
    ids = [0] + words(t, vocab, "<unk>") + [2]
    return ids, [0] * len(ids)


def write_safetensors(path, tensors):
    header, blobs, at = {}, [], 0
    for name, arr in tensors.items():
        data = np.ascontiguousarray(arr, dtype="<f4").tobytes()
        header[name] = {"dtype": "F32", "shape": list(arr.shape), "data_offsets": [at, at + len(data)]}
        blobs.append(data)
        at += len(data)
    text = json.dumps(header).encode()
    text += b" " * (-len(text) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(text)) + text + b"".join(blobs))


def encoder_weights(rng, prefix, vocab_size, positions, types):
    n = lambda *s: rng.normal(0.0, 0.4, s).astype(np.float32)
    w = {
        f"{prefix}embeddings.word_embeddings.weight": n(vocab_size, HIDDEN),
        f"{prefix}embeddings.position_embeddings.weight": n(positions, HIDDEN),
        f"{prefix}embeddings.token_type_embeddings.weight": n(types, HIDDEN),
        f"{prefix}embeddings.LayerNorm.weight": 1 + 0.1 * n(HIDDEN),
        f"{prefix}embeddings.LayerNorm.bias": 0.1 * n(HIDDEN),
    }
    for l in range(LAYERS):
        p = f"{prefix}encoder.layer.{l}."
        for part in ("query", "key", "value"):
            w[p + f"attention.self.{part}.weight"] = n(HIDDEN, HIDDEN)
            w[p + f"attention.self.{part}.bias"] = 0.1 * n(HIDDEN)
        w[p + "attention.output.dense.weight"] = n(HIDDEN, HIDDEN)
        w[p + "attention.output.dense.bias"] = 0.1 * n(HIDDEN)
        w[p + "attention.output.LayerNorm.weight"] = 1 + 0.1 * n(HIDDEN)
        w[p + "attention.output.LayerNorm.bias"] = 0.1 * n(HIDDEN)
        w[p + "intermediate.dense.weight"] = n(INTER, HIDDEN)
        w[p + "intermediate.dense.bias"] = 0.1 * n(INTER)
        w[p + "output.dense.weight"] = n(HIDDEN, INTER)
        w[p + "output.dense.bias"] = 0.1 * n(HIDDEN)
        w[p + "output.LayerNorm.weight"] = 1 + 0.1 * n(HIDDEN)
        w[p + "output.LayerNorm.bias"] = 0.1 * n(HIDDEN)
    return w


def config(arch, model_type, vocab_size, positions, types, eps, **extra):
    c = {"architectures": [arch], "model_type": model_type, "vocab_size": vocab_size, "hidden_size": HIDDEN,
         "num_hidden_layers": LAYERS, "num_attention_heads": HEADS, "intermediate_size": INTER,
         "hidden_act": "gelu", "max_position_embeddings": positions, "type_vocab_size": types,
         "layer_norm_eps": eps}
    c.update(extra)
    return c


# Each model: (folder, seed, family, labels or None for an embedder, config extras).
MODELS = {
    "rerank-bert": dict(seed=11, family="bert", labels=["LABEL_0"], extra={}),
    "rerank-xlmr": dict(seed=12, family="xlmr", labels=["LABEL_0"],
                        extra={"sentence_transformers": {"activation_fn": "torch.nn.modules.linear.Identity"}}),
    "nli-bert": dict(seed=13, family="bert", labels=["contradiction", "entailment", "neutral"], extra={}),
    "embed-roberta": dict(seed=14, family="roberta-embed", labels=None, extra={}),
    "embed-nomic": dict(seed=15, family="nomic", labels=None,
                        extra=dict(rotary_emb_fraction=1.0, rotary_emb_base=1000, rotary_emb_interleaved=False,
                                   qkv_proj_bias=False, mlp_fc1_bias=False, mlp_fc2_bias=False,
                                   layer_norm_epsilon=1e-12, pad_vocab_size_multiple=1)),
    "embed-nomic-b": dict(seed=16, family="nomic", labels=None,
                          extra=dict(rotary_emb_fraction=0.5, rotary_emb_base=10000, rotary_emb_interleaved=True,
                                     qkv_proj_bias=True, mlp_fc1_bias=True, mlp_fc2_bias=True,
                                     layer_norm_epsilon=1e-5, pad_vocab_size_multiple=8)),
}
NOMIC_POSITIONS = 64
BERT_POSITIONS, ROBERTA_POSITIONS, PAD = 40, 42, 1  # RoBERTa: 40 usable positions after the offset


def build(name):
    """The model's files (config, tensors, tokenizer) from its seed."""
    m = MODELS[name]
    rng = np.random.default_rng(m["seed"])
    n = lambda *s: rng.normal(0.0, 0.4, s).astype(np.float32)
    if m["family"] == "nomic":
        vocab, x = bert_vocab(), m["extra"]
        rows = -(-len(vocab) // x["pad_vocab_size_multiple"]) * x["pad_vocab_size_multiple"]
        w = {"embeddings.word_embeddings.weight": n(rows, HIDDEN), "embeddings.token_type_embeddings.weight": n(2, HIDDEN),
             "emb_ln.weight": 1 + 0.1 * n(HIDDEN), "emb_ln.bias": 0.1 * n(HIDDEN)}
        for l in range(LAYERS):
            p = f"encoder.layers.{l}."
            w[p + "attn.Wqkv.weight"], w[p + "attn.out_proj.weight"] = n(3 * HIDDEN, HIDDEN), n(HIDDEN, HIDDEN)
            w[p + "mlp.fc11.weight"], w[p + "mlp.fc12.weight"] = n(INTER, HIDDEN), n(INTER, HIDDEN)
            w[p + "mlp.fc2.weight"] = n(HIDDEN, INTER)
            if x["qkv_proj_bias"]:
                w[p + "attn.Wqkv.bias"], w[p + "attn.out_proj.bias"] = 0.1 * n(3 * HIDDEN), 0.1 * n(HIDDEN)
            if x["mlp_fc1_bias"]:
                w[p + "mlp.fc11.bias"], w[p + "mlp.fc12.bias"] = 0.1 * n(INTER), 0.1 * n(INTER)
            if x["mlp_fc2_bias"]:
                w[p + "mlp.fc2.bias"] = 0.1 * n(HIDDEN)
            for k in ("norm1", "norm2"):
                w[p + k + ".weight"], w[p + k + ".bias"] = 1 + 0.1 * n(HIDDEN), 0.1 * n(HIDDEN)
        cfg = {"architectures": ["NomicBertModel"], "model_type": "nomic_bert", "vocab_size": len(vocab),
               "n_embd": HIDDEN, "n_head": HEADS, "n_layer": LAYERS, "n_inner": INTER, "n_positions": NOMIC_POSITIONS,
               "activation_function": "swiglu", "type_vocab_size": 2, "prenorm": False,
               "rotary_scaling_factor": None, "max_trained_positions": 2048, **x}
        return cfg, w, bert_tokenizer(vocab), vocab
    if m["family"] == "bert":
        vocab = bert_vocab()
        w = encoder_weights(rng, "bert.", len(vocab), BERT_POSITIONS, 2)
        w["bert.pooler.dense.weight"], w["bert.pooler.dense.bias"] = n(HIDDEN, HIDDEN), 0.1 * n(HIDDEN)
        w["classifier.weight"], w["classifier.bias"] = n(len(m["labels"]), HIDDEN), 0.1 * n(len(m["labels"]))
        cfg = config("BertForSequenceClassification", "bert", len(vocab), BERT_POSITIONS, 2, 1e-12,
                     id2label={str(i): l for i, l in enumerate(m["labels"])}, **m["extra"])
        tok = bert_tokenizer(vocab)
    else:
        vocab = roberta_vocab()
        embed = m["family"] == "roberta-embed"
        prefix = "" if embed else "roberta."
        w = encoder_weights(rng, prefix, len(vocab), ROBERTA_POSITIONS, 1)
        if embed:
            cfg = config("RobertaModel", "roberta", len(vocab), ROBERTA_POSITIONS, 1, 1e-5, pad_token_id=PAD)
        else:
            w["classifier.dense.weight"], w["classifier.dense.bias"] = n(HIDDEN, HIDDEN), 0.1 * n(HIDDEN)
            w["classifier.out_proj.weight"] = n(len(m["labels"]), HIDDEN)
            w["classifier.out_proj.bias"] = 0.1 * n(len(m["labels"]))
            cfg = config("XLMRobertaForSequenceClassification", "xlm-roberta", len(vocab), ROBERTA_POSITIONS, 1,
                         1e-5, pad_token_id=PAD, id2label={"0": "LABEL_0"}, **m["extra"])
        tok = roberta_tokenizer(vocab)
    return cfg, w, tok, vocab


def write(repo, names):
    for name in names or MODELS:
        cfg, w, tok, _ = build(name)
        d = os.path.join(repo, name, "1")
        os.makedirs(d, exist_ok=True)
        json.dump(cfg, open(os.path.join(d, "config.json"), "w"))
        json.dump(tok, open(os.path.join(d, "tokenizer.json"), "w"))
        write_safetensors(os.path.join(d, "model.safetensors"), w)
        if MODELS[name]["family"] == "nomic":  # sentence-transformers' modules: mean pooling, Normalize
            json.dump([{"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
                       {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"},
                       {"idx": 2, "name": "2", "path": "2_Normalize", "type": "sentence_transformers.models.Normalize"}],
                      open(os.path.join(d, "modules.json"), "w"))
            os.makedirs(os.path.join(d, "1_Pooling"), exist_ok=True)
            json.dump({"word_embedding_dimension": HIDDEN, "pooling_mode_mean_tokens": True},
                      open(os.path.join(d, "1_Pooling", "config.json"), "w"))


# --- the NumPy forward pass ---------------------------------------------------------------------

def layer_norm(x, g, b, eps):
    mu = x.mean(-1, keepdims=True)
    var = ((x - mu) ** 2).mean(-1, keepdims=True)
    return (x - mu) / np.sqrt(var + eps) * g + b


ERF = np.vectorize(math.erf)


def encode(w, prefix, ids, types, offset, eps):
    x64 = lambda name: w[prefix + name].astype(np.float64)
    ids, types = np.asarray(ids), np.asarray(types)
    pos = np.arange(len(ids)) + offset
    x = x64("embeddings.word_embeddings.weight")[ids] + x64("embeddings.position_embeddings.weight")[pos] \
        + x64("embeddings.token_type_embeddings.weight")[types]
    x = layer_norm(x, x64("embeddings.LayerNorm.weight"), x64("embeddings.LayerNorm.bias"), eps)
    dh = HIDDEN // HEADS
    for l in range(LAYERS):
        p = f"encoder.layer.{l}."
        lin = lambda v, n: v @ x64(p + n + ".weight").T + x64(p + n + ".bias")
        q, k, v = (lin(x, f"attention.self.{s}").reshape(len(ids), HEADS, dh).transpose(1, 0, 2)
                   for s in ("query", "key", "value"))
        s = q @ k.transpose(0, 2, 1) / math.sqrt(dh)
        s = np.exp(s - s.max(-1, keepdims=True))
        ctx = (s / s.sum(-1, keepdims=True)) @ v
        ctx = ctx.transpose(1, 0, 2).reshape(len(ids), HIDDEN)
        x = layer_norm(x + lin(ctx, "attention.output.dense"), x64(p + "attention.output.LayerNorm.weight"),
                       x64(p + "attention.output.LayerNorm.bias"), eps)
        h = lin(x, "intermediate.dense")
        h = 0.5 * h * (1 + ERF(h / math.sqrt(2)))
        x = layer_norm(x + lin(h, "output.dense"), x64(p + "output.LayerNorm.weight"),
                       x64(p + "output.LayerNorm.bias"), eps)
    return x


def rotate(x, pos, cfg):
    """NomicBERT's rotary embedding of one head's vectors `x` (tokens x head) at positions `pos`."""
    dh = x.shape[-1]
    rd = int(dh * cfg["rotary_emb_fraction"])
    inv = 1.0 / cfg["rotary_emb_base"] ** (np.arange(0, rd, 2) / rd)
    ang = np.outer(pos, inv)
    c, s = np.cos(ang), np.sin(ang)
    out = x.copy()
    if cfg["rotary_emb_interleaved"]:
        a, b = x[:, 0:rd:2], x[:, 1:rd:2]
        out[:, 0:rd:2], out[:, 1:rd:2] = a * c - b * s, b * c + a * s
    else:
        a, b = x[:, :rd // 2], x[:, rd // 2:rd]
        out[:, :rd // 2], out[:, rd // 2:rd] = a * c - b * s, b * c + a * s
    return out


def encode_nomic(w, cfg, ids):
    f = lambda name: w[name].astype(np.float64)
    opt = lambda name, n: f(name) if name in w else np.zeros(n)
    eps = cfg["layer_norm_epsilon"]
    ids = np.asarray(ids)
    x = f("embeddings.word_embeddings.weight")[ids] + f("embeddings.token_type_embeddings.weight")[0]
    x = layer_norm(x, f("emb_ln.weight"), f("emb_ln.bias"), eps)
    dh, pos = HIDDEN // HEADS, np.arange(len(ids))
    for l in range(LAYERS):
        p = f"encoder.layers.{l}."
        qkv = x @ f(p + "attn.Wqkv.weight").T + opt(p + "attn.Wqkv.bias", 3 * HIDDEN)
        q, k, v = qkv[:, :HIDDEN], qkv[:, HIDDEN:2 * HIDDEN], qkv[:, 2 * HIDDEN:]
        ctx = np.zeros((len(ids), HIDDEN))
        for h in range(HEADS):
            sl = slice(h * dh, (h + 1) * dh)
            qh, kh = rotate(q[:, sl], pos, cfg), rotate(k[:, sl], pos, cfg)
            sc = qh @ kh.T / math.sqrt(dh)
            sc = np.exp(sc - sc.max(-1, keepdims=True))
            ctx[:, sl] = (sc / sc.sum(-1, keepdims=True)) @ v[:, sl]
        attn = ctx @ f(p + "attn.out_proj.weight").T + opt(p + "attn.out_proj.bias", HIDDEN)
        x = layer_norm(x + attn, f(p + "norm1.weight"), f(p + "norm1.bias"), eps)
        up = x @ f(p + "mlp.fc11.weight").T + opt(p + "mlp.fc11.bias", INTER)
        gate = x @ f(p + "mlp.fc12.weight").T + opt(p + "mlp.fc12.bias", INTER)
        y = (up * gate / (1 + np.exp(-gate))) @ f(p + "mlp.fc2.weight").T + opt(p + "mlp.fc2.bias", HIDDEN)
        x = layer_norm(x + y, f(p + "norm2.weight"), f(p + "norm2.bias"), eps)
    return x


def reference_scores(name, query, docs):
    cfg, w, _, vocab = build(name)
    f = lambda n: w[n].astype(np.float64)
    rows = []
    for d in docs:
        if MODELS[name]["family"] == "bert":
            ids, types = bert_pair(query, d, vocab)
            cls = encode(w, "bert.", ids, types, 0, 1e-12)[0]
            pooled = np.tanh(f("bert.pooler.dense.weight") @ cls + f("bert.pooler.dense.bias"))
            logits = f("classifier.weight") @ pooled + f("classifier.bias")
        else:
            ids, types = roberta_pair(query, d, vocab)
            cls = encode(w, "roberta.", ids, types, PAD + 1, 1e-5)[0]
            pooled = np.tanh(f("classifier.dense.weight") @ cls + f("classifier.dense.bias"))
            logits = f("classifier.out_proj.weight") @ pooled + f("classifier.out_proj.bias")
        if len(logits) == 1 and "sentence_transformers" not in cfg:
            logits = 1 / (1 + np.exp(-logits))  # sentence-transformers' default for one label
        rows.append(logits)
    return np.array(rows)


def reference_embeddings(name, texts):
    cfg, w, _, vocab = build(name)
    out = []
    if MODELS[name]["family"] == "nomic":
        for t in texts:
            v = encode_nomic(w, cfg, [vocab["[CLS]"]] + words(t, vocab, "[UNK]") + [vocab["[SEP]"]]).mean(0)
            out.append(v / np.linalg.norm(v))
        return np.array(out)
    for t in texts:
        ids, types = roberta_single(t, vocab)
        out.append(encode(w, "", ids, types, PAD + 1, 1e-5).mean(0))
    return np.array(out)


# --- the checks ---------------------------------------------------------------------------------

def post(addr, path, body):
    req = urllib.request.Request(f"http://{addr}{path}", json.dumps(body).encode(),
                                 {"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


QUERY = "which animal is wet"
DOCS = ["the fish swims in the sea", "birds fly over the hills", "the cat sat on the mat",
        "rust code compiles fast", "the quick brown fox jumps over the lazy dog", "a dog"]


def close(got, want, what, tol=2e-4):
    got, want = np.asarray(got, np.float64), np.asarray(want, np.float64)
    assert got.shape == want.shape, (what, got.shape, want.shape)
    worst = float(np.abs(got - want).max())
    assert worst <= tol, (what, worst, got, want)
    return worst


def check(addr, grpc_addr):
    import tritonclient.grpc as grpcclient
    import tritonclient.http as httpclient

    worst = 0.0
    for name in ("rerank-bert", "rerank-xlmr"):
        want = reference_scores(name, QUERY, DOCS)[:, 0]
        order = sorted(range(len(DOCS)), key=lambda i: (-want[i], i))
        for path in ("/v1/rerank", "/rerank", "/v2/rerank"):
            s, r = post(addr, path, {"model": name, "query": QUERY, "documents": DOCS})
            assert s == 200, (name, path, s, r)
            got_order = [x["index"] for x in r["results"]]
            assert got_order == order, (name, path, got_order, order, want)
            scores = [x["relevance_score"] for x in r["results"]]
            worst = max(worst, close(scores, want[order], f"{name} {path}"))
            assert all(x["document"]["text"] == DOCS[x["index"]] for x in r["results"]), r
            assert r["usage"]["total_tokens"] > len(DOCS) * 4, r["usage"]
        s, r = post(addr, "/v1/rerank", {"model": name, "query": QUERY, "top_n": 2, "return_documents": False,
                                         "documents": [{"text": d} for d in DOCS]})
        assert s == 200 and [x["index"] for x in r["results"]] == order[:2], r
        assert all("document" not in x for x in r["results"]), r

        # KServe v2: two BYTES inputs, in both encodings and over gRPC; one query for all documents.
        http = httpclient.InferenceServerClient(url=addr)
        meta = http.get_model_metadata(name)
        assert [i["name"] for i in meta["inputs"]] == ["query", "document"], meta
        assert meta["outputs"][0]["name"] == "scores" and meta["outputs"][0]["shape"] == [-1, 1], meta
        for binary in (True, False):
            q = httpclient.InferInput("query", [1], "BYTES")
            q.set_data_from_numpy(np.array([QUERY.encode()], dtype=object), binary_data=binary)
            d = httpclient.InferInput("document", [len(DOCS)], "BYTES")
            d.set_data_from_numpy(np.array([x.encode() for x in DOCS], dtype=object), binary_data=binary)
            out = http.infer(name, [d, q]).as_numpy("scores")
            worst = max(worst, close(out[:, 0], want, f"{name} kserve http binary={binary}"))
        g = grpcclient.InferenceServerClient(url=grpc_addr)
        q = grpcclient.InferInput("query", [1], "BYTES")
        q.set_data_from_numpy(np.array([QUERY.encode()], dtype=object))
        d = grpcclient.InferInput("document", [len(DOCS)], "BYTES")
        d.set_data_from_numpy(np.array([x.encode() for x in DOCS], dtype=object))
        worst = max(worst, close(g.infer(name, [q, d]).as_numpy("scores")[:, 0], want, f"{name} kserve grpc"))

    # Three labels: raw logits per label over KServe; rerank refuses (no single relevance score).
    want = reference_scores("nli-bert", QUERY, DOCS[:3])
    http = httpclient.InferenceServerClient(url=addr)
    q = httpclient.InferInput("query", [3], "BYTES")
    q.set_data_from_numpy(np.array([QUERY.encode()] * 3, dtype=object))
    d = httpclient.InferInput("document", [3], "BYTES")
    d.set_data_from_numpy(np.array([x.encode() for x in DOCS[:3]], dtype=object))
    worst = max(worst, close(http.infer("nli-bert", [q, d]).as_numpy("scores"), want, "nli-bert kserve"))
    s, r = post(addr, "/v1/rerank", {"model": "nli-bert", "query": QUERY, "documents": DOCS})
    assert s == 400 and "3 labels" in r["error"]["message"], (s, r)

    # RoBERTa as an embedding model: positions from pad_token_id + 1, mean pooling.
    texts = ["the cat sat on the mat", "fish swims", "the quick brown fox jumps over the lazy dog"]
    s, r = post(addr, "/v1/embeddings", {"model": "embed-roberta", "input": texts, "encoding_format": "float"})
    assert s == 200, r
    got = [x["embedding"] for x in r["data"]]
    worst = max(worst, close(got, reference_embeddings("embed-roberta", texts), "embed-roberta"))
    # NomicBERT: rotary positions (a text's vector must not depend on the texts beside it).
    for name in ("embed-nomic", "embed-nomic-b"):
        s, r = post(addr, "/v1/embeddings", {"model": name, "input": texts, "encoding_format": "float"})
        assert s == 200, r
        worst = max(worst, close([x["embedding"] for x in r["data"]], reference_embeddings(name, texts), name))
        s, r = post(addr, "/v1/embeddings", {"model": name, "input": texts[2], "encoding_format": "float"})
        worst = max(worst, close(r["data"][0]["embedding"], reference_embeddings(name, texts[2:])[0], name + " alone"))

    # Errors a client can act on.
    long_doc = " ".join(["dog"] * 60)
    s, r = post(addr, "/v1/rerank", {"model": "rerank-bert", "query": QUERY, "documents": ["a dog", long_doc]})
    assert s == 400 and r["error"]["param"] == "documents[1]" and "truncate" in r["error"]["message"], (s, r)
    s, r = post(addr, "/v1/rerank", {"model": "rerank-bert", "query": QUERY, "documents": ["a dog", long_doc],
                                     "truncate": True})
    assert s == 200 and len(r["results"]) == 2, (s, r)
    s, r = post(addr, "/v1/rerank", {"model": "embed-roberta", "query": QUERY, "documents": DOCS})
    assert s == 400 and "embedding" in r["error"]["message"], (s, r)
    s, r = post(addr, "/v1/rerank", {"model": "rerank-bert", "query": QUERY, "documents": []})
    assert s == 400 and r["error"]["param"] == "documents", (s, r)
    s, r = post(addr, "/v1/rerank", {"model": "rerank-bert", "query": QUERY, "documents": DOCS, "top_n": 0})
    assert s == 400 and r["error"]["param"] == "top_n", (s, r)
    print(f"encoders check passed: 2 rerankers, 1 three-label cross-encoder, RoBERTa and 2 NomicBERT embedders; "
          f"largest difference from NumPy {worst:.2e}")


if __name__ == "__main__":
    if sys.argv[1] == "write":
        write(sys.argv[2], sys.argv[3:])
    else:
        check(sys.argv[2], sys.argv[3])
