"""Single-stream decode speed over HTTP on a prompt whose answer copies from its context and on
one whose answer does not (OpenAI completions, streamed, greedy, MAX_TOKENS tokens): tokens/s
after the first token, median of ROUNDS. Run against servers with --draft-tokens 4 and 0 to see
what prompt-lookup drafting buys and costs. Standard library only.
  draft_speed.py ADDR MODEL [ROUNDS] [MAX_TOKENS]"""
import http.client
import json
import statistics
import sys
import time

addr, model = sys.argv[1], sys.argv[2]
rounds = int(sys.argv[3]) if len(sys.argv) > 3 else 3
max_tokens = int(sys.argv[4]) if len(sys.argv) > 4 else 128
host, port = addr.rsplit(":", 1)
passage = ("The committee met on Tuesday to review the budget for the new library. After a long discussion, "
           "the members agreed to spend most of the money on books for children, a reading room with large "
           "windows, and computers that visitors can use for free. The remaining funds will pay for longer "
           "opening hours on weekends, so that families who work during the week can visit together. The "
           "library is expected to open next spring, and volunteers are already helping to sort donated books "
           "into boxes by subject and age group.")
prompts = {
    "copies its context": f"Text: {passage}\n\nThe same text, copied word for word:\n{passage[:40]}",
    "does not": "Once upon a time, in a small village by the sea, there lived",
}


def rate(prompt):
    body = json.dumps({"model": model, "prompt": prompt, "max_tokens": max_tokens, "temperature": 0,
                       "stream": True, "stream_options": {"include_usage": True}})
    conn = http.client.HTTPConnection(host, int(port), timeout=600)
    conn.request("POST", "/v1/completions", body, {"content-type": "application/json"})
    resp = conn.getresponse()
    assert resp.status == 200, resp.read()
    first, tokens = None, 0
    for line in resp:
        line = line.decode().strip()
        if not line.startswith("data: ") or line == "data: [DONE]":
            continue
        chunk = json.loads(line[6:])
        if first is None and chunk.get("choices") and chunk["choices"][0].get("text"):
            first = time.time()
        if chunk.get("usage"):
            tokens = chunk["usage"]["completion_tokens"]
    took = time.time() - first
    conn.close()
    return (tokens - 1) / took


for name, prompt in prompts.items():
    rate(prompt)  # warm-up
    r = statistics.median(rate(prompt) for _ in range(rounds))
    print(f"{model}, answer {name}: {r:.1f} tok/s after the first token ({max_tokens} tokens, {rounds} rounds)")
