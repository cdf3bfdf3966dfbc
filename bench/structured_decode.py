"""Decode speed with and without grammar-constrained sampling, side by side on one server:
C concurrent streamed chats (greedy, MAX_TOKENS each, the end token ignored by asking for long
stories) answered freely or under a JSON schema, alternated round by round. Reports each
stream's decode rate (tokens after the first over the time after the first) and the aggregate
tokens/s, and the constrained/free ratio. Standard library only.
  structured_decode.py ADDR MODEL [ROUNDS] [MAX_TOKENS]"""
import http.client
import json
import statistics
import sys
import threading
import time

addr, model = sys.argv[1], sys.argv[2]
rounds = int(sys.argv[3]) if len(sys.argv) > 3 else 3
max_tokens = int(sys.argv[4]) if len(sys.argv) > 4 else 128
host, port = addr.rsplit(":", 1)
topics = ["a robot who learns to paint", "the sea at night", "a city of glass", "an old lighthouse keeper",
          "a dragon who loves books", "the first day of school", "a journey to the moon", "a forgotten garden"]
SCHEMA = {"type": "object", "properties": {"title": {"type": "string"}, "characters": {"type": "array", "items": {"type": "string"}},
                                           "story": {"type": "string"}},
          "required": ["title", "characters", "story"], "additionalProperties": False}


def one(i, constrained, out):
    body = {"model": model, "stream": True, "max_tokens": max_tokens, "temperature": 0,
            "stream_options": {"include_usage": True},
            "messages": [{"role": "user", "content": f"Write a long story about {topics[i % len(topics)]}."}]}
    if constrained:
        body["response_format"] = {"type": "json_schema", "json_schema": {"name": "story", "schema": SCHEMA}}
    conn = http.client.HTTPConnection(host, int(port), timeout=600)
    conn.request("POST", "/v1/chat/completions", json.dumps(body), {"content-type": "application/json"})
    resp = conn.getresponse()
    first, n, text = None, 0, ""
    for line in resp:
        line = line.decode().strip()
        if not line.startswith("data: ") or line == "data: [DONE]":
            continue
        chunk = json.loads(line[6:])
        if first is None and chunk["choices"] and chunk["choices"][0]["delta"].get("content"):
            first = time.time()
        if chunk["choices"]:
            text += chunk["choices"][0]["delta"].get("content") or ""
        if chunk.get("usage"):
            n = chunk["usage"]["completion_tokens"]
    end = time.time()
    conn.close()
    out.append((n, first, end, text))


def run(conc, constrained):
    out = []
    start = time.time()
    threads = [threading.Thread(target=one, args=(i, constrained, out)) for i in range(conc)]
    [t.start() for t in threads]
    [t.join() for t in threads]
    wall = time.time() - start
    rates = [(n - 1) / (end - first) for n, first, end, _ in out if n > 1]
    if constrained:
        for n, _, _, text in out:
            if n < max_tokens:
                json.loads(text)  # a finished constrained answer always parses
    return sum(o[0] for o in out) / wall, statistics.median(rates)


for conc in (1, 8):
    free, constrained = [], []
    run(conc, False), run(conc, True)  # warm-up: the vocabulary's trie, caches
    for _ in range(rounds):
        free.append(run(conc, False))
        constrained.append(run(conc, True))
    fa, fs = max(f[0] for f in free), max(f[1] for f in free)
    ca, cs = max(c[0] for c in constrained), max(c[1] for c in constrained)
    print(f"| {conc} stream{'s' if conc > 1 else ''} | {fs:.1f} / {fa:.1f} | {cs:.1f} / {ca:.1f} | "
          f"{cs / fs:.2f}x / {ca / fa:.2f}x |", flush=True)
