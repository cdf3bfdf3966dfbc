#!/usr/bin/env bash
# The request path of two aiserve binaries side by side: each serves the bundled digits model
# in turn on a free loopback port, and the same `aiserve bench` client measures /classify and
# KServe infer against it; ROUNDS alternations so the machine's drift hits both alike.
#   bench/request_path_ab.sh OLD_BIN NEW_BIN [ROUNDS] [SECONDS] [CONCURRENCY]   # defaults 3 8 32
# Prints one line per run (binary, protocol, req/s, p50/p99 ms) and the new/old ratio of the means.
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
old="$1"; new="$2"; rounds="${3:-3}"; secs="${4:-8}"; conc="${5:-32}"
client="$new"
tmp=$(mktemp -d)
pid=""
cleanup() { [ -n "$pid" ] && kill "$pid" 2>/dev/null; rm -rf "$tmp"; }
trap cleanup EXIT
mkdir -p "$tmp/repo" && cp -r "$here/models/digits" "$tmp/repo/"
run() {  # BIN LABEL
  # Binaries from before gRPC have no --grpc-addr; newer ones take a free port, not 8001.
  local grpc=()
  "$1" serve --help | grep -q -- --grpc-addr && grpc=(--grpc-addr 127.0.0.1:0)
  "$1" serve --repo "$tmp/repo" --addr 127.0.0.1:0 ${grpc[@]+"${grpc[@]}"} >"$tmp/log" 2>&1 &
  pid=$!
  local addr=""
  for _ in $(seq 300); do
    addr=$(sed -n 's/.*aiserve listening addr=\([0-9.:]*\).*/\1/p' "$tmp/log" | head -1)
    [ -n "$addr" ] && curl -sf "http://$addr/v2/models/digits/ready" >/dev/null 2>&1 && break
    sleep 0.1
  done
  for proto in classify kserve; do
    "$client" bench --url "http://$addr" --protocol "$proto" --concurrency "$conc" --duration "${secs}s" --json "$tmp/out.json" >/dev/null
    python3 - "$2" "$proto" "$tmp/out.json" <<'PY'
import json, sys
label, proto, path = sys.argv[1:4]
r = json.load(open(path))
row = r["levels"][0]
print(f"{label} {proto} {row['throughput']:.0f} {row['p50_ms']:.2f} {row['p99_ms']:.2f} errors={row['errors']}")
PY
  done
  kill "$pid"; wait "$pid" 2>/dev/null || true; pid=""
}
for _ in $(seq "$rounds"); do
  run "$old" old
  run "$new" new
done | tee "$tmp/rows"
python3 - "$tmp/rows" <<'PY'
import sys, collections
rows = collections.defaultdict(list)
for line in open(sys.argv[1]):
    label, proto, rps = line.split()[:3]
    rows[(label, proto)].append(float(rps))
for proto in ("classify", "kserve"):
    o, n = rows[("old", proto)], rows[("new", proto)]
    mo, mn = sum(o) / len(o), sum(n) / len(n)
    print(f"{proto}: old mean {mo:.0f} req/s, new mean {mn:.0f} req/s, new/old {mn / mo:.3f}")
PY
