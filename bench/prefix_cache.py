"""Time to first token of a long prompt seen before against the same prompt cold, over HTTP
(OpenAI completions, streamed, 1 token). Each round sends a prompt of about N tokens that no
earlier round sent (a fresh numbered text), then the same prompt again; reports the medians and
their ratio. Standard library only; works against aiserve and llama-server alike.
  prefix_cache.py ADDR MODEL [ROUNDS] [WORDS]"""
import http.client
import json
import random
import statistics
import sys
import time

addr, model = sys.argv[1], sys.argv[2]
rounds = int(sys.argv[3]) if len(sys.argv) > 3 else 5
words = int(sys.argv[4]) if len(sys.argv) > 4 else 700
host, port = addr.rsplit(":", 1)
vocab = ("time person year way day thing man world life hand part child eye woman place work week case point "
         "government company number group problem fact river mountain garden window letter music answer").split()


def first_token(prompt):
    body = json.dumps({"model": model, "prompt": prompt, "max_tokens": 1, "temperature": 0, "stream": True})
    conn = http.client.HTTPConnection(host, int(port), timeout=600)
    t0 = time.time()
    conn.request("POST", "/v1/completions", body, {"content-type": "application/json"})
    resp = conn.getresponse()
    assert resp.status == 200, resp.read()
    for line in resp:
        if line.startswith(b"data: ") and b"[DONE]" not in line:
            break
    took = time.time() - t0
    resp.read()
    conn.close()
    return took


rng = random.Random(7)
cold, warm = [], []
for r in range(rounds + 1):
    prompt = f"Note {r}-{rng.random()}: " + " ".join(rng.choice(vocab) for _ in range(words))
    c, w = first_token(prompt), first_token(prompt)
    if r > 0:  # the first round warms the server up
        cold.append(c)
        warm.append(w)
c, w = statistics.median(cold), statistics.median(warm)
print(f"time to first token, ~{words}-word prompt: cold p50 {c * 1000:.0f} ms, seen before p50 {w * 1000:.0f} ms "
      f"= {w / c * 100:.1f}% of cold ({rounds} rounds)")
