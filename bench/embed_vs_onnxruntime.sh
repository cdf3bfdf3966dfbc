#!/usr/bin/env bash
# Sentence embeddings against ONNX Runtime, side by side in one run: the anchor in
# ../shared/peers/embeddings_minilm/onnx_anchor.py (all-MiniLM-L6-v2 written as a plain ONNX BERT
# graph from its safetensors, ONNX Runtime 1.32's defaults, padded to the longest in each batch)
# and `cargo bench -p aiserve-models --bench embed_throughput` on the same 1000 sentences at
# batch 32 (tokenisation included) plus batch-of-1 latency, 1 and 2 threads, ROUNDS alternated
# rounds (default 2) so machine noise hits both. Each round ends with aiserve over HTTP (`aiserve
# serve` on 2 threads, `aiserve bench --payloads` cycling the same 1000 sentences, one per
# request, at concurrency 1 and 32; HTTP=0 skips it), to set against the in-process batch-32 rate.
#   bench/embed_vs_onnxruntime.sh        # env: ROUNDS, HTTP, DURATION, PEERS_HOME, AISERVE_ASSETS
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
shared=$(cd "$here/../shared" && pwd)
export PEERS_HOME="${PEERS_HOME:-$HOME/.cache/aiserve-peers}"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/aiserve-target}"
export AISERVE_ASSETS="${AISERVE_ASSETS:-$HOME/.cache/aiserve-assets}"
. "$here/bench/lib/serve.sh"
rounds="${ROUNDS:-2}" http="${HTTP:-1}" duration="${DURATION:-8s}"
peer="$shared/peers/embeddings_minilm"
"$shared/fetch-assets.sh" "$AISERVE_ASSETS" >/dev/null
(cd "$here" && cargo bench -q -p aiserve-models --bench embed_throughput --no-run 2>/dev/null)
[ "$http" = 0 ] || (cd "$here" && cargo build -q --release)
bench_bin=$(ls -t "$CARGO_TARGET_DIR"/release/deps/embed_throughput-* | grep -v '\.d$' | head -1)
"$peer/measure_onnx.sh" 1 >/dev/null  # installs the anchor's venv once, checks the graph
py="$PEERS_HOME/venv-ort/bin/python"
tmp=$(mktemp -d)
cleanup() { [ -n "${pid:-}" ] && kill "$pid" 2>/dev/null; rm -rf "$tmp"; }
trap cleanup EXIT
# The anchor's sentences (common.py), so both sides encode the same text.
(cd "$peer" && "$py" -c "from common import sentences; print('\n'.join(sentences(1000)))") >"$tmp/sentences.txt"
if [ "$http" != 0 ]; then
  "$py" -c 'import json,sys
for s in open(sys.argv[1]).read().split("\n"):
    if s: print(json.dumps({"model": "minilm", "input": s}))' "$tmp/sentences.txt" >"$tmp/requests.jsonl"
  mkdir -p "$tmp/repo/minilm" && cp -r "$AISERVE_ASSETS/minilm" "$tmp/repo/minilm/1"
fi
show='import json,sys; d=json.load(sys.stdin); k=("sentences_per_second_median","single_sentence_ms_p50","single_sentence_ms_p99"); print("%-12s %7s sentences/s   single p50 %s ms  p99 %s ms" % ((sys.argv[1],)+tuple(d[x] for x in k)))'
echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs), load $(cut -d' ' -f1-3 /proc/loadavg), $(date -u +%FT%TZ)"
for round in $(seq "$rounds"); do
  for threads in 1 2; do
    echo "### round $round, batch 32, $threads thread(s)"
    "$peer/measure_onnx.sh" "$threads" | tail -1 | "$py" -c "$show" "onnxruntime"
    RAYON_NUM_THREADS=$threads AISERVE_EMBED_MODEL="$AISERVE_ASSETS/minilm" AISERVE_EMBED_SENTENCES="$tmp/sentences.txt" \
      "$bench_bin" --bench | "$py" -c "$show" "aiserve"
  done
  if [ "$http" != 0 ]; then
    echo "### round $round, HTTP: aiserve serve (2 threads), one sentence per request, the same sentences in turn"
    RAYON_NUM_THREADS=2 "$CARGO_TARGET_DIR/release/aiserve" serve --repo "$tmp/repo" --addr 127.0.0.1:0 \
      --grpc-addr 127.0.0.1:0 >"$tmp/log" 2>&1 &
    pid=$!
    serve_ready "$tmp/log" "$pid" minilm
    "$CARGO_TARGET_DIR/release/aiserve" bench --url "http://$addr" --protocol embeddings --model minilm \
      --payloads "$tmp/requests.jsonl" --concurrency 1,32 --duration "$duration" | tail -n +2
    kill "$pid"; wait "$pid" 2>/dev/null || true; pid=
  fi
done
