#!/usr/bin/env bash
# The digits CNN forward pass against ONNX Runtime, side by side in one run: models/digits/1
# written as an ONNX graph (tools/digits_to_onnx.py, checked against NumPy) on ONNX Runtime 1.32
# in-process (bench/digits_onnxruntime.py), and `cargo bench -p aiserve-models --bench
# digits_forward` (`fast`, our fused NHWC kernels), batch 1, 32 and 256, 1 and 2 threads, ROUNDS
# alternated rounds (default 2). Then served (SERVED=0 skips it): one `aiserve serve` with
# models/digits/1 on our kernels and the same graph as an ONNX model on ONNX Runtime (the
# ONNX backend), KServe v2 binary at concurrency 32, 1 and 32 pictures per request, alternated.
#   bench/digits_vs_onnxruntime.sh        # env: ROUNDS, SERVED, PEERS_HOME, AISERVE_ASSETS
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
shared=$(cd "$here/../shared" && pwd)
export PEERS_HOME="${PEERS_HOME:-$HOME/.cache/aiserve-peers}"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/aiserve-target}"
. "$here/bench/lib/serve.sh"
rounds="${ROUNDS:-2}" served="${SERVED:-1}"
"$shared/peers/embeddings_minilm/measure_onnx.sh" 1 >/dev/null  # installs ONNX Runtime 1.32's venv once
py="$PEERS_HOME/venv-ort/bin/python"
"$py" -c 'import onnx' 2>/dev/null || "$PEERS_HOME/venv-ort/bin/pip" install -q --disable-pip-version-check 'onnx==1.23.2'
(cd "$here" && cargo bench -q -p aiserve-models --bench digits_forward --no-run 2>/dev/null)
bench_bin=$(ls -t "$CARGO_TARGET_DIR"/release/deps/digits_forward-* | grep -v '\.d$' | head -1)
tmp=$(mktemp -d)
cleanup() { [ -n "${pid:-}" ] && kill "$pid" 2>/dev/null; rm -rf "$tmp"; }
trap cleanup EXIT
"$py" "$here/tools/digits_to_onnx.py" "$here/models/digits/1" "$tmp/digits.onnx"
echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs), load $(cut -d' ' -f1-3 /proc/loadavg), $(date -u +%FT%TZ)"
for round in $(seq "$rounds"); do
  for threads in 1 2; do
    echo "### round $round, $threads thread(s)"
    "$py" "$here/bench/digits_onnxruntime.py" "$tmp/digits.onnx" "$threads"
    RAYON_NUM_THREADS=$threads "$bench_bin" --bench fast 2>/dev/null | awk '
      /^digits_forward\/fast\// { split($1, p, "/"); b = p[3] }
      /time:/ && b != "" { for (i = 1; i <= NF; i++) if ($i == "time:") break
        v = $(i + 3); u = $(i + 4); us = (u == "ms") ? v * 1000 : (u == "ns") ? v / 1000 : v
        printf "aiserve     batch %3d: %10.1f us per pass, %10.0f images/s\n", b, us, b / us * 1e6; b = "" }'
  done
done
[ "$served" = 0 ] && exit 0
echo "### served: aiserve serve (2 threads), digits (our kernels) and digits_onnx (ONNX Runtime), KServe v2 binary"
(cd "$here" && cargo build -q --release)
lib=$("$here/.ci/fetch-onnxruntime.sh")
mkdir -p "$tmp/repo/digits_onnx/1" && cp -r "$here/models/digits" "$tmp/repo/" && cp "$tmp/digits.onnx" "$tmp/repo/digits_onnx/1/model.onnx"
RAYON_NUM_THREADS=2 "$CARGO_TARGET_DIR/release/aiserve" serve --repo "$tmp/repo" --onnxruntime "$lib" \
  --addr 127.0.0.1:0 --grpc-addr 127.0.0.1:0 >"$tmp/log" 2>&1 &
pid=$!
serve_ready "$tmp/log" "$pid" digits digits_onnx
for round in $(seq "$rounds"); do
  for model in digits digits_onnx; do
    for batch in 1 32; do
      printf '%-11s %2d per request: ' "$model" "$batch"
      "$CARGO_TARGET_DIR/release/aiserve" bench --url "http://$addr" --protocol kserve-binary --model "$model" \
        --batch "$batch" --concurrency 32 --duration 5s | tail -n 1 |
        awk -F'|' -v b="$batch" '{ printf "%9.0f req/s = %7.0f images/s, p50 %s ms\n", $3, $3 * b, $4 }'
    done
  done
done
