"""Writes a tiny seeded BERT cross-encoder (a reranker) as a Hugging Face directory, with the
standard library only: two layers of width 8 over all-MiniLM-L6-v2's WordPiece tokenizer. For
the hostile battery (bench/hostile.sh), which needs a reranker to aim at, not a good one.

    python3 bench/tiny_reranker.py MINILM_DIR OUT_DIR
"""
import json
import os
import random
import shutil
import struct
import sys

H, VOCAB, POSITIONS = 8, 30522, 512


def main():
    minilm, out = sys.argv[1], sys.argv[2]
    rng = random.Random(5)
    tensors = {}

    def add(name, *shape, scale=0.5, offset=0.0):
        n = 1
        for d in shape:
            n *= d
        tensors[name] = (list(shape), struct.pack(f"<{n}f", *(offset + rng.gauss(0, scale) for _ in range(n))))

    add("bert.embeddings.word_embeddings.weight", VOCAB, H)
    add("bert.embeddings.position_embeddings.weight", POSITIONS, H)
    add("bert.embeddings.token_type_embeddings.weight", 2, H)
    add("bert.embeddings.LayerNorm.weight", H, scale=0.1, offset=1.0)
    add("bert.embeddings.LayerNorm.bias", H, scale=0.1)
    for l in range(2):
        p = f"bert.encoder.layer.{l}."
        for part in ("attention.self.query", "attention.self.key", "attention.self.value", "attention.output.dense"):
            add(p + part + ".weight", H, H)
            add(p + part + ".bias", H, scale=0.1)
        for ln in ("attention.output.LayerNorm", "output.LayerNorm"):
            add(p + ln + ".weight", H, scale=0.1, offset=1.0)
            add(p + ln + ".bias", H, scale=0.1)
        add(p + "intermediate.dense.weight", 2 * H, H)
        add(p + "intermediate.dense.bias", 2 * H, scale=0.1)
        add(p + "output.dense.weight", H, 2 * H)
        add(p + "output.dense.bias", H, scale=0.1)
    add("bert.pooler.dense.weight", H, H)
    add("bert.pooler.dense.bias", H, scale=0.1)
    add("classifier.weight", 1, H)
    add("classifier.bias", 1, scale=0.1)

    os.makedirs(out, exist_ok=True)
    header, at = {}, 0
    for name, (shape, data) in tensors.items():
        header[name] = {"dtype": "F32", "shape": shape, "data_offsets": [at, at + len(data)]}
        at += len(data)
    text = json.dumps(header).encode()
    text += b" " * (-len(text) % 8)
    with open(os.path.join(out, "model.safetensors"), "wb") as f:
        f.write(struct.pack("<Q", len(text)) + text + b"".join(d for _, d in tensors.values()))
    config = {"architectures": ["BertForSequenceClassification"], "model_type": "bert", "vocab_size": VOCAB,
              "hidden_size": H, "num_hidden_layers": 2, "num_attention_heads": 2, "intermediate_size": 2 * H,
              "hidden_act": "gelu", "max_position_embeddings": POSITIONS, "type_vocab_size": 2,
              "id2label": {"0": "LABEL_0"}}
    json.dump(config, open(os.path.join(out, "config.json"), "w"))
    shutil.copy(os.path.join(minilm, "tokenizer.json"), os.path.join(out, "tokenizer.json"))


if __name__ == "__main__":
    main()
