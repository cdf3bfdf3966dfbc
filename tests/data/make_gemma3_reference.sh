#!/usr/bin/env bash
# Writes tests/data/gemma3_llamacpp.json: llama.cpp's own token ids and greedy continuations of
# Gemma 3 270M Q4_K_M, from `llama-server` (built by ../shared/peers/llamacpp/build_native.sh)
# through its `/tokenize` and `/completion` endpoints. Run once; the ids are committed.
#   tests/data/make_gemma3_reference.sh        # env: AISERVE_ASSETS, PORT (default 8093)
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
SHARED=$HERE/../../../shared
ASSETS=${AISERVE_ASSETS:-$HOME/.cache/aiserve-assets}
GGUF=$ASSETS/gemma3/gemma-3-270m-q4_k_m.gguf
[ -f "$GGUF" ] || "$SHARED/fetch-assets.sh" "$ASSETS" gemma3 >/dev/null
BIN=$(bash "$SHARED/peers/llamacpp/build_native.sh")
PORT=${PORT:-8093}
# f32 KV caches (aiserve's default), one slot, no prompt cache: each answer computed afresh.
"$BIN/llama-server" -m "$GGUF" -t 2 -tb 2 -np 1 -c 4096 -ctk f32 -ctv f32 --host 127.0.0.1 --port "$PORT" \
  >/tmp/gemma3-reference-server.log 2>&1 &
server=$!
trap 'kill $server 2>/dev/null || true' EXIT
python3 - "$PORT" "$HERE/gemma3_llamacpp.json" <<'PY'
import json, sys, time, urllib.request
port, out = sys.argv[1], sys.argv[2]
def post(path, body):
    req = urllib.request.Request(f"http://127.0.0.1:{port}{path}", json.dumps(body).encode(),
                                 {"Content-Type": "application/json"})
    return json.load(urllib.request.urlopen(req, timeout=600))
for _ in range(600):
    try:
        if json.load(urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=5)).get("status") == "ok":
            break
    except Exception:
        pass
    time.sleep(0.5)
texts = [
    "Hello, world!",
    "The quick brown fox jumps over the lazy dog.",
    "日本語のテキストを分割します。中文分词测试：我们今天去北京。",
    "Emoji: 🙂👍🏽🚀 and flags 🇫🇷🇯🇵, ZWJ 👩‍👩‍👧",
    "Accents: café, naïve, Zürich, São Paulo, Ångström, Œuvre, ß",
    "fn main() {\n    let x: Vec<u32> = (0..10).collect();\n\tprintln!(\"{x:?}\");\n}\n",
    "  leading spaces, double  spaces,   triple,\n\n\nnewlines\t\ttabs \r\n end  ",
    "def f(a, b):\n        return a ** b  # comment\n\n\n",
    "<start_of_turn>user\nHi<end_of_turn>\n<start_of_turn>model\n",
    "1234567890 3.14159 -42 1e10 0x1F",
    "   ",
    "a",
    "Привет, мир! Γειά σου κόσμε! مرحبا بالعالم",
    "<div class=\"x\"><h1>Title</h1></div>",
]
tokenized = [{"text": t, "ids": post("/tokenize", {"content": t, "add_special": False})["tokens"]} for t in texts]
prompts = [
    "The capital of France is",
    "Once upon a time, in a small village,",
    "def fibonacci(n):\n",
    "The three primary colors are",
    "Water boils at",
    "Translate to French: Good morning, how are you?\nFrench:",
]
continuations = []
for p in prompts:
    r = post("/completion", {"prompt": p, "n_predict": 32, "temperature": 0, "top_k": 1, "cache_prompt": False,
                             "return_tokens": True, "add_special": True})
    prompt_ids = post("/tokenize", {"content": p, "add_special": True})["tokens"]
    continuations.append({"prompt": p, "prompt_ids": prompt_ids, "ids": r["tokens"], "text": r["content"]})
json.dump({"model": "gemma-3-270m-q4_k_m.gguf (sha256 a5fd3b62…)", "made_by": "llama-server (llama-cpp-python 0.3.36's llama.cpp), f32 KV caches",
           "tokenize": tokenized, "greedy": continuations}, open(out, "w"), ensure_ascii=False, indent=1)
print(f"wrote {out}")
PY
