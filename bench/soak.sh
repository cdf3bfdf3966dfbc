#!/usr/bin/env bash
# Bounded soak test on loopback: the release server with the bundled digits model (and
# all-MiniLM-L6-v2 when $AISERVE_ASSETS has it), mixed traffic from four `aiserve bench` clients
# at once (/classify, KServe infer, TF Serving predict, OpenAI embeddings) for MINUTES, then
# requests, errors and the server's RSS after warm-up and at the end.
#   bench/soak.sh [MINUTES] [CONCURRENCY_PER_CLIENT]      # defaults 5 and 8
# Pass: zero failed requests (any 5xx or other non-200) and RSS growth under 5%.
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
minutes="${1:-5}"; conc="${2:-8}"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/aiserve-target}"
assets="${AISERVE_ASSETS:-$HOME/.cache/aiserve-assets}"
(cd "$here" && cargo build --release -q)
bin="$CARGO_TARGET_DIR/release/aiserve"
tmp=$(mktemp -d)
cleanup() { [ -n "${pid:-}" ] && kill "$pid" 2>/dev/null; rm -rf "$tmp"; }
trap cleanup EXIT
mkdir -p "$tmp/repo" && cp -r "$here/models/digits" "$tmp/repo/"
protocols="classify kserve tfserving"; models=1
if [ -f "$assets/minilm/model.safetensors" ]; then
  mkdir -p "$tmp/repo/minilm" && cp -r "$assets/minilm" "$tmp/repo/minilm/1"
  protocols="$protocols embeddings"; models=2
fi
"$bin" serve --repo "$tmp/repo" --addr 127.0.0.1:0 --grpc-addr 127.0.0.1:0 >"$tmp/log" 2>&1 &
pid=$!
for _ in $(seq 200); do
  addr=$(sed -n 's/.*aiserve listening addr=\([0-9.:]*\).*/\1/p' "$tmp/log" | head -1)
  [ -n "$addr" ] && [ "$(grep -c 'version available' "$tmp/log")" -ge "$models" ] && break
  sleep 0.1
done
rss() { awk '/VmRSS/ {print $2}' "/proc/$pid/status"; }
model_of() { [ "$1" = embeddings ] && echo minilm || echo digits; }
# Warm-up (allocator pools, caches), then the measured soak.
clients=()
for p in $protocols; do
  "$bin" bench --url "http://$addr" --protocol "$p" --model "$(model_of "$p")" --concurrency "$conc" --duration 20s >/dev/null &
  clients+=($!)
done
wait "${clients[@]}"
rss_start=$(rss)
echo "soak: ${minutes} min, protocols: $protocols, concurrency $conc each, server RSS after warm-up ${rss_start} KiB"
clients=()
for p in $protocols; do
  "$bin" bench --url "http://$addr" --protocol "$p" --model "$(model_of "$p")" --concurrency "$conc" \
    --duration "${minutes}m" --warmup 0 --json "$tmp/$p.json" >/dev/null &
  clients+=($!)
done
wait "${clients[@]}"
rss_end=$(rss)
python3 - "$tmp" "$rss_start" "$rss_end" $protocols <<'PY'
import json, sys
tmp, start, end, protos = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4:]
total = errors = 0
for p in protos:
    r = json.load(open(f"{tmp}/{p}.json"))["levels"][0]
    total += r["requests"]; errors += r["errors"]
    print(f"  {p:11s} {r['requests']:>9} requests {r['errors']:>4} failed  {r['throughput']:>8.1f} req/s  p99 {r['p99_ms']:.1f} ms  {r['failures']}")
growth = (end - start) / start * 100
print(f"total {total} requests, {errors} failed; RSS {start} -> {end} KiB ({growth:+.2f}%)")
sys.exit(0 if errors == 0 and growth < 5 else 1)
PY
