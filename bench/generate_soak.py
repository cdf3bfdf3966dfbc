"""Soak for text generation: 8 clients stream chat completions for SECONDS, half of them hanging
up after a few chunks (the server must free those sequences), mixing greedy and sampled answers
of 8-96 tokens. Prints how many finished, how many were cut, and any errors. Standard library.
  generate_soak.py ADDR MODEL SECONDS        (watch the server's RSS and /metrics alongside)"""
import http.client
import json
import random
import sys
import threading
import time

addr, model, secs = sys.argv[1], sys.argv[2], float(sys.argv[3])
host, port = addr.rsplit(":", 1)
stop = time.time() + secs
stats = {"finished": 0, "cut": 0, "errors": 0}
lock = threading.Lock()


def count(key):
    with lock:
        stats[key] += 1


def client(seed):
    rnd = random.Random(seed)
    while time.time() < stop:
        hang_up = rnd.random() < 0.5
        body = json.dumps({"model": model, "stream": True, "max_tokens": rnd.choice([8, 32, 96]),
                           "temperature": rnd.choice([0, 0.8]),
                           "messages": [{"role": "user", "content": rnd.choice(
                               ["Tell me a story.", "What is 2 + 2?", "Name a color."])}]})
        try:
            conn = http.client.HTTPConnection(host, int(port), timeout=120)
            conn.request("POST", "/v1/chat/completions", body, {"content-type": "application/json"})
            resp = conn.getresponse()
            if resp.status != 200:
                count("errors")
                continue
            chunks, done = 0, False
            for line in resp:
                if line.startswith(b"data: [DONE]"):
                    done = True
                    break
                chunks += 1
                if hang_up and chunks > 3:
                    break
            conn.close()
            count("finished" if done else "cut")
        except Exception:
            count("errors")


threads = [threading.Thread(target=client, args=(i,)) for i in range(8)]
[t.start() for t in threads]
[t.join() for t in threads]
print(stats)
