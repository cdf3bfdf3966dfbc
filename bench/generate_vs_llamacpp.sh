#!/usr/bin/env bash
# Text generation side by side in one run, SmolLM2-135M-Instruct Q4_1 (GGUF), same file, same
# machine: llama.cpp (through llama-cpp-python 0.3.36, ../shared/peers/llamacpp) then aiserve,
# model only (decode tokens/s, time to first token, prefill, aggregate decode at 1-16 sequences
# per forward pass; 1 and 2 threads), then aiserve over HTTP (streamed chat completions, 1 and 8
# concurrent clients: aggregate tokens/s and time to first token).
#   bench/generate_vs_llamacpp.sh      # env: PEERS_HOME, AISERVE_ASSETS, CARGO_TARGET_DIR
# On CPUs with AMX, llama.cpp comes from bench/llamacpp_without_amx.sh unless PEERS_HOME is set.
# Loopback only; the server it starts is stopped on exit.
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
shared=$(cd "$here/../shared" && pwd)
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/aiserve-target}"
assets="${AISERVE_ASSETS:-$HOME/.cache/aiserve-assets}"
gguf="$assets/smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
"$shared/fetch-assets.sh" "$assets" >/dev/null
(cd "$here" && cargo build --release -q && cargo bench -q -p aiserve-models --bench generate --no-run 2>/dev/null)
bench_bin=$(ls -t "$CARGO_TARGET_DIR"/release/deps/generate-* | grep -v '\.d$' | head -1)
tmp=$(mktemp -d)
cleanup() { [ -n "${pid:-}" ] && kill "$pid" 2>/dev/null; rm -rf "$tmp"; }
trap cleanup EXIT

echo "machine: $(nproc) cores, load $(cut -d' ' -f1-3 /proc/loadavg), $(date -u +%FT%TZ)"
echo; echo "### llama.cpp (llama-cpp-python 0.3.36)"
# Its default build crashes in its AMX path on CPUs that have AMX: use one built without it.
if [ -z "${PEERS_HOME:-}" ] && grep -qw amx_int8 /proc/cpuinfo; then
  export PEERS_HOME=$("$here/bench/llamacpp_without_amx.sh")
  echo "(built without AMX: $PEERS_HOME)"
fi
"$shared/peers/llamacpp/measure.sh" "$gguf"
for threads in 1 2; do
  echo; echo "### aiserve model only, $threads thread(s)"
  AISERVE_GGUF="$gguf" RAYON_NUM_THREADS=$threads "$bench_bin"
done

echo; echo "### aiserve over HTTP (streamed chat, greedy, 128 tokens per answer)"
mkdir -p "$tmp/repo/smollm2/1" && cp "$gguf" "$tmp/repo/smollm2/1/"
"$CARGO_TARGET_DIR/release/aiserve" serve --repo "$tmp/repo" --addr 127.0.0.1:0 --grpc-addr 127.0.0.1:0 >"$tmp/log" 2>&1 &
pid=$!
addr=""
for _ in $(seq 100); do
  addr=$(sed -n 's/.*aiserve listening addr=\([0-9.:]*\).*/\1/p' "$tmp/log" | head -1)
  [ -n "$addr" ] && break
  sleep 0.1
done
for _ in $(seq 100); do
  curl -sf "http://$addr/v2/models/smollm2/ready" >/dev/null && break
  sleep 0.1
done
python3 "$here/bench/generate_load.py" "$addr" smollm2 1 4
python3 "$here/bench/generate_load.py" "$addr" smollm2 8 2
