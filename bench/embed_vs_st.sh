#!/usr/bin/env bash
# Sentence embeddings side by side in one run: sentence-transformers (PyTorch, CPU; the peer in
# ../shared/peers/embeddings_minilm) vs aiserve on all-MiniLM-L6-v2, the same 1000 ~12-word
# sentences at batch 32 (tokenisation included), 1 and 2 threads, plus batch-of-1 latency; then
# aiserve over HTTP: one sentence per request (latency, and dynamic batching under concurrency)
# and 32 sentences per request.
#   bench/embed_vs_st.sh        # env: DURATION (10s), PEERS_HOME, AISERVE_ASSETS
# Loopback only; the server it starts is stopped on exit.
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
. "$here/bench/lib/serve.sh"
shared=$(cd "$here/../shared" && pwd)
export PEERS_HOME="${PEERS_HOME:-$HOME/.cache/aiserve-peers}"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/aiserve-target}"
assets="${AISERVE_ASSETS:-$HOME/.cache/aiserve-assets}"
DURATION="${DURATION:-10s}"
peer="$shared/peers/embeddings_minilm"
"$shared/fetch-assets.sh" "$assets" >/dev/null
"$peer/install.sh" >/dev/null
py="$PEERS_HOME/venv-st/bin/python"
(cd "$here" && cargo build --release -q && cargo bench -q -p aiserve-models --bench embed_throughput --no-run 2>/dev/null)
bench_bin=$(ls -t "$CARGO_TARGET_DIR"/release/deps/embed_throughput-* | grep -v '\.d$' | head -1)
tmp=$(mktemp -d)
cleanup() { [ -n "${pid:-}" ] && kill "$pid" 2>/dev/null; rm -rf "$tmp"; }
trap cleanup EXIT
(cd "$peer" && HF_HUB_OFFLINE=1 "$py" -c "from common import sentences; print('\n'.join(sentences(1000)))") >"$tmp/sentences.txt"

echo "machine: $(nproc) cores, load $(cut -d' ' -f1-3 /proc/loadavg), $(date -u +%FT%TZ)"
for threads in 1 2; do
  echo; echo "### batch 32, $threads thread(s)"
  (cd "$peer" && HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 "$py" bench_encode.py --threads "$threads" 2>/dev/null | tail -1) |
    "$py" -c "import json,sys; d=json.load(sys.stdin); print(f\"sentence-transformers: {d['sentences_per_second_median']} sentences/s, runs {d['seconds_per_run']} s, single p50 {d['single_sentence_ms_p50']} ms p99 {d['single_sentence_ms_p99']} ms\")"
  RAYON_NUM_THREADS=$threads AISERVE_EMBED_MODEL="$assets/minilm" AISERVE_EMBED_SENTENCES="$tmp/sentences.txt" "$bench_bin" --bench |
    "$py" -c "import json,sys; d=json.load(sys.stdin); print(f\"aiserve:               {d['sentences_per_second_median']} sentences/s, runs {d['seconds_per_run']} s, single p50 {d['single_sentence_ms_p50']} ms p99 {d['single_sentence_ms_p99']} ms\")"
done

mkdir -p "$tmp/repo/minilm" && cp -r "$assets/minilm" "$tmp/repo/minilm/1"
"$CARGO_TARGET_DIR/release/aiserve" serve --repo "$tmp/repo" --addr 127.0.0.1:0 --grpc-addr 127.0.0.1:0 >"$tmp/log" 2>&1 &
pid=$!
serve_ready "$tmp/log" "$pid" minilm
"$py" - "$tmp/sentences.txt" >"$tmp/batch32.json" <<'PY'
import json, sys
print(json.dumps({"model": "minilm", "input": open(sys.argv[1]).read().split("\n")[:32]}))
PY
echo; echo "### aiserve HTTP, one sentence per request (POST /v1/embeddings)"
"$CARGO_TARGET_DIR/release/aiserve" bench --url "http://$addr" --protocol embeddings --model minilm \
  --concurrency 1,8,32 --duration "$DURATION" | tail -n +2
echo; echo "### aiserve HTTP, 32 sentences per request (sentences/s = req/s x 32)"
"$CARGO_TARGET_DIR/release/aiserve" bench --url "http://$addr" --protocol embeddings --model minilm \
  --payload "$tmp/batch32.json" --concurrency 1,4 --duration "$DURATION" --warmup 5 | tail -n +2
