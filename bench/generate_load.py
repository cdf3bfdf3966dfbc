"""Streams chat completions from an aiserve (or any OpenAI-compatible) server with C concurrent
clients and reports aggregate generated tokens/s, time to first token, and each stream's rate
after its first token (the median over requests). MODE `completions`
sends the same requests as plain prompts to /v1/completions (base models without a chat
template). Standard library only.
  generate_load.py ADDR MODEL CONCURRENCY [REQUESTS_PER_CLIENT] [MAX_TOKENS] [chat|completions]"""
import http.client
import json
import statistics
import sys
import threading
import time

addr, model, conc = sys.argv[1], sys.argv[2], int(sys.argv[3])
per_client = int(sys.argv[4]) if len(sys.argv) > 4 else 2
max_tokens = int(sys.argv[5]) if len(sys.argv) > 5 else 128
chat = (sys.argv[6] if len(sys.argv) > 6 else "chat") == "chat"
host, port = addr.rsplit(":", 1)
topics = ["a robot who learns to paint", "the sea at night", "a city of glass", "an old lighthouse keeper",
          "a dragon who loves books", "the first day of school", "a journey to the moon", "a forgotten garden"]
ttfts, rates, tokens, lock = [], [], [0], threading.Lock()


def client(i):
    for r in range(per_client):
        ask = f"Write a long story about {topics[(i + r) % len(topics)]}."
        body = {"model": model, "stream": True, "max_tokens": max_tokens, "temperature": 0,
                "stream_options": {"include_usage": True}}
        if chat:
            body["messages"] = [{"role": "user", "content": ask}]
        else:
            body["prompt"] = f"{ask}\n\n"
        conn = http.client.HTTPConnection(host, int(port), timeout=600)
        t0 = time.time()
        conn.request("POST", "/v1/chat/completions" if chat else "/v1/completions", json.dumps(body),
                     {"content-type": "application/json"})
        resp = conn.getresponse()
        first = last = None
        n = 0
        for line in resp:
            line = line.decode().strip()
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            chunk = json.loads(line[6:])
            choice = chunk["choices"][0] if chunk.get("choices") else {}
            piece = choice.get("delta", {}).get("content") if chat else choice.get("text")
            if piece:
                last = time.time() - t0
                if first is None:
                    first = last
            if chunk.get("usage"):
                n = chunk["usage"]["completion_tokens"]
                with lock:
                    tokens[0] += n
        with lock:
            ttfts.append(first)
            if first is not None and last > first and n > 1:
                rates.append((n - 1) / (last - first))
        conn.close()


start = time.time()
threads = [threading.Thread(target=client, args=(i,)) for i in range(conc)]
[t.start() for t in threads]
[t.join() for t in threads]
wall = time.time() - start
print(f"concurrency {conc}: {tokens[0]} tokens in {wall:.1f} s = {tokens[0] / wall:.1f} tok/s aggregate, "
      f"time to first token p50 {statistics.median(ttfts) * 1000:.0f} ms, "
      f"after it p50 {statistics.median(rates) if rates else float('nan'):.1f} tok/s per stream")
