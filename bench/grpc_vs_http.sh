#!/usr/bin/env bash
# gRPC against HTTP on the same server: the release binary serves the bundled digits model on
# free loopback ports, and `aiserve bench` sends the same images as KServe JSON, KServe with the
# binary tensor extension (tritonclient.http's default), KServe gRPC (raw tensors), and TF
# Serving REST and gRPC. ROUNDS alternations so the machine's drift hits every protocol alike.
#   bench/grpc_vs_http.sh [ROUNDS] [SECONDS]        # defaults 3 4
# 1. one image per request at concurrency 32, client and server sharing both cores; gRPC with a
#    connection per call in flight (as HTTP/1.1 needs) and multiplexed over 4 (as gRPC channels do);
# 2. the same with the server on core 0 and the client on core 1 (taskset), so the client's own
#    cost (an HTTP/2 client costs more CPU per call than an HTTP/1.1 one) does not slow the server;
# 3. one request of 256 images at a time (concurrency 1), where moving the tensors dominates.
# Prints one line per run (protocol, req/s, p50 and p99 ms) and the mean req/s per protocol.
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
rounds="${1:-3}"; secs="${2:-4}"
bin="${CARGO_TARGET_DIR:-$here/target}/release/aiserve"
tmp=$(mktemp -d)
pid=""
cleanup() { [ -n "$pid" ] && kill "$pid" 2>/dev/null; rm -rf "$tmp"; }
trap cleanup EXIT
mkdir -p "$tmp/repo" && cp -r "$here/models/digits" "$tmp/repo/"
start() {  # [taskset prefix...]
  [ -n "$pid" ] && kill "$pid" 2>/dev/null && wait "$pid" 2>/dev/null || true
  "$@" "$bin" serve --repo "$tmp/repo" --addr 127.0.0.1:0 --grpc-addr 127.0.0.1:0 >"$tmp/log" 2>&1 &
  pid=$!
  http=""; grpc=""
  for _ in $(seq 300); do
    http=$(sed -n 's/.*aiserve listening addr=\([0-9.:]*\).*/\1/p' "$tmp/log" | head -1)
    grpc=$(sed -n 's/.*aiserve gRPC listening addr=\([0-9.:]*\).*/\1/p' "$tmp/log" | head -1)
    [ -n "$http" ] && [ -n "$grpc" ] && curl -sf "http://$http/v2/models/digits/ready" >/dev/null 2>&1 && break
    sleep 0.1
  done
}
measure() {  # LABEL CONCURRENCY BATCH [taskset prefix...] -- PROTOCOLS...
  local label=$1 conc=$2 batch=$3; shift 3
  local prefix=()
  while [ "$1" != "--" ]; do prefix+=("$1"); shift; done
  shift
  : >"$tmp/$label.txt"
  for _ in $(seq "$rounds"); do
    for spec in "$@"; do
      # PROTOCOL or PROTOCOL:N (gRPC calls multiplexed over N connections; default one per call)
      local proto=${spec%%:*} url="http://$http" conns=()
      case "$proto" in *grpc) url="http://$grpc" ;; esac
      [ "$spec" != "$proto" ] && conns=(--grpc-connections "${spec#*:}")
      ${prefix[@]+"${prefix[@]}"} "$bin" bench --url "$url" --protocol "$proto" --concurrency "$conc" --batch "$batch" \
        ${conns[@]+"${conns[@]}"} --duration "${secs}s" --warmup 20 --json "$tmp/out.json" >/dev/null
      python3 - "$label" "$spec" "$tmp/out.json" <<'PY' | tee -a "$tmp/$label.txt"
import json, sys
label, proto, path = sys.argv[1:4]
r = json.load(open(path))["levels"][0]
print(f"{label} {proto:15s} {r['throughput']:8.1f} req/s  p50 {r['p50_ms']:6.2f} ms  p99 {r['p99_ms']:6.2f} ms  errors {r['errors']}")
PY
    done
  done
  python3 - "$tmp/$label.txt" <<'PY'
import sys, collections
rows = collections.defaultdict(list)
for line in open(sys.argv[1]):
    parts = line.split()
    rows[parts[1]].append(float(parts[2]))
print("  mean req/s: " + ", ".join(f"{k} {sum(v)/len(v):.1f}" for k, v in rows.items()))
PY
}
start
measure shared 32 1 -- kserve kserve-binary kserve-grpc kserve-grpc:4 tfserving-grpc:4
start taskset -c 0
measure pinned 32 1 taskset -c 1 -- kserve kserve-binary kserve-grpc kserve-grpc:4
start
measure batch256 1 256 -- kserve kserve-binary kserve-grpc tfserving tfserving-grpc
