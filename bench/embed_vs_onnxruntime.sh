#!/usr/bin/env bash
# Sentence embeddings against ONNX Runtime, side by side in one run: the anchor in
# ../shared/peers/embeddings_minilm/onnx_anchor.py (all-MiniLM-L6-v2 written as a plain ONNX BERT
# graph from its safetensors, ONNX Runtime 1.32's defaults, padded to the longest in each batch)
# and `cargo bench -p aiserve-models --bench embed_throughput` on the same 1000 sentences at
# batch 32 (tokenisation included) plus batch-of-1 latency, 1 and 2 threads, ROUNDS alternated
# rounds (default 2) so machine noise hits both.
#   bench/embed_vs_onnxruntime.sh        # env: ROUNDS, PEERS_HOME, AISERVE_ASSETS
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
shared=$(cd "$here/../shared" && pwd)
export PEERS_HOME="${PEERS_HOME:-$HOME/.cache/aiserve-peers}"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/aiserve-target}"
export AISERVE_ASSETS="${AISERVE_ASSETS:-$HOME/.cache/aiserve-assets}"
rounds="${ROUNDS:-2}"
peer="$shared/peers/embeddings_minilm"
"$shared/fetch-assets.sh" "$AISERVE_ASSETS" >/dev/null
(cd "$here" && cargo bench -q -p aiserve-models --bench embed_throughput --no-run 2>/dev/null)
bench_bin=$(ls -t "$CARGO_TARGET_DIR"/release/deps/embed_throughput-* | grep -v '\.d$' | head -1)
"$peer/measure_onnx.sh" 1 >/dev/null  # installs the anchor's venv once, checks the graph
py="$PEERS_HOME/venv-ort/bin/python"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
# The anchor's sentences (common.py), so both sides encode the same text.
(cd "$peer" && "$py" -c "from common import sentences; print('\n'.join(sentences(1000)))") >"$tmp/sentences.txt"
show='import json,sys; d=json.load(sys.stdin); k=("sentences_per_second_median","single_sentence_ms_p50","single_sentence_ms_p99"); print("%-12s %7s sentences/s   single p50 %s ms  p99 %s ms" % ((sys.argv[1],)+tuple(d[x] for x in k)))'
echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs), load $(cut -d' ' -f1-3 /proc/loadavg), $(date -u +%FT%TZ)"
for round in $(seq "$rounds"); do
  for threads in 1 2; do
    echo "### round $round, batch 32, $threads thread(s)"
    "$peer/measure_onnx.sh" "$threads" | tail -1 | "$py" -c "$show" "onnxruntime"
    RAYON_NUM_THREADS=$threads AISERVE_EMBED_MODEL="$AISERVE_ASSETS/minilm" AISERVE_EMBED_SENTENCES="$tmp/sentences.txt" \
      "$bench_bin" --bench | "$py" -c "$show" "aiserve"
  done
done
