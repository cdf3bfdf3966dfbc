#!/usr/bin/env bash
# Decode speed under a JSON schema against free decoding, same server, same run:
# bench/structured_decode.py against the release binary serving SmolLM2-135M-Instruct Q4_1
# (from $AISERVE_ASSETS, see ../shared/fetch-assets.sh) on a free loopback port.
#   bench/structured_decode.sh [ROUNDS] [MAX_TOKENS]      (after `cargo build --release`)
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
target="${CARGO_TARGET_DIR:-$root/target}"
assets="${AISERVE_ASSETS:-$HOME/.cache/aiserve-assets}"
repo=$(mktemp -d) log=$(mktemp)
mkdir -p "$repo/smollm2/1" && cp "$assets/smollm2/SmolLM2-135M-Instruct.Q4_1.gguf" "$repo/smollm2/1/"
"$target/release/aiserve" serve --repo "$repo" --addr 127.0.0.1:0 --grpc-addr 127.0.0.1:0 >"$log" 2>&1 &
pid=$!
trap 'kill $pid 2>/dev/null || true; rm -rf "$repo" "$log"' EXIT
addr=""
for _ in $(seq 100); do
  addr=$(sed -n 's/.*aiserve listening addr=\([0-9.:]*\).*/\1/p' "$log" | head -1)
  [ -n "$addr" ] && python3 -c "import urllib.request as u; u.urlopen('http://$addr/v2/models/smollm2/ready')" 2>/dev/null && break
  sleep 0.2
done
echo "| | free: per-stream decode / aggregate tok/s | JSON schema: per-stream / aggregate | ratio |"
echo "|---|---|---|---|"
python3 "$root/bench/structured_decode.py" "$addr" smollm2 "${1:-3}" "${2:-128}"
