#!/usr/bin/env bash
# Serving throughput side by side in one run, one load generator (`aiserve bench`), one payload
# (../shared/peers/payload_28x28.json, the seed's own): the seed's Flask + Keras /classify
# (direct model call and model.predict) vs aiserve's /classify and KServe v2 infer.
#   bench/serve_vs_seed.sh        # env: DURATION (10s), LEVELS (1,8,32), PEERS_HOME
# Loopback only; every server it starts is stopped on exit.
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
. "$here/bench/lib/serve.sh"
shared=$(cd "$here/../shared" && pwd)
export PEERS_HOME="${PEERS_HOME:-$HOME/.cache/aiserve-peers}"
DURATION="${DURATION:-10s}"; LEVELS="${LEVELS:-1,8,32}"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/aiserve-target}"
(cd "$here" && cargo build --release -q)
bin="$CARGO_TARGET_DIR/release/aiserve"
payload="$shared/peers/payload_28x28.json"
seed="$shared/peers/seed_flask_keras"
"$seed/install.sh" >/dev/null
if [ ! -f "$PEERS_HOME/seed/model.keras" ]; then
  mkdir -p "$PEERS_HOME/seed"
  "$PEERS_HOME/venv/bin/python" "$seed/train.py" "$PEERS_HOME/seed/model.keras" --samples 6000 --fits 1 >/dev/null
fi
tmp=$(mktemp -d)
cleanup() { "$seed/serve.sh" stop flask >/dev/null 2>&1 || true; [ -n "${pid:-}" ] && kill "$pid" 2>/dev/null; rm -rf "$tmp"; }
trap cleanup EXIT

# KServe body carrying the same pixels as the seed's payload.
python3 - "$payload" >"$tmp/kserve.json" <<'PY'
import json, sys
img = json.load(open(sys.argv[1]))["image"]
print(json.dumps({"inputs": [{"name": "image", "shape": [1, 28, 28, 1], "datatype": "FP32", "data": img}]}))
PY

echo "machine: $(nproc) cores, load $(cut -d' ' -f1-3 /proc/loadavg), $(date -u +%FT%TZ)"
for mode in call predict; do
  PREDICT_MODE=$mode "$seed/serve.sh" start flask >/dev/null
  for _ in $(seq 100); do curl -sf -o /dev/null http://127.0.0.1:5000/healthz && break; sleep 0.2; done
  echo; echo "### seed Flask + Keras, PREDICT_MODE=$mode"
  "$bin" bench --url http://127.0.0.1:5000 --protocol classify --payload "$payload" \
    --concurrency "$LEVELS" --duration "$DURATION" --warmup 5 --json "$tmp/seed-$mode.json" | tail -n +2
  "$seed/serve.sh" stop flask >/dev/null
done

"$bin" serve --addr 127.0.0.1:0 --grpc-addr 127.0.0.1:0 --repo "$here/models" 2>"$tmp/serve.log" &
pid=$!
# Ready, not just listening: requests sent while the models load get 404 and 503.
serve_ready "$tmp/serve.log" "$pid" digits
echo; echo "### aiserve POST /classify"
"$bin" bench --url "http://$addr" --protocol classify --payload "$payload" --concurrency "$LEVELS" --duration "$DURATION" | tail -n +2
echo; echo "### aiserve KServe v2 infer"
"$bin" bench --url "http://$addr" --protocol kserve --payload "$tmp/kserve.json" --concurrency "$LEVELS" --duration "$DURATION" | tail -n +2
