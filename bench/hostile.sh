#!/usr/bin/env bash
# Hostile-request battery on loopback: starts the release binary (built beforehand; this script
# builds nothing) with digits, all-MiniLM-L6-v2 (`minilm`), SmolLM2-135M-Instruct GGUF
# (`smollm2`), PP-OCR's recogniser as an ONNX model (`rec`) and the OCR pipeline (`ocr`, on ONNX Runtime from
# .ci/fetch-onnxruntime.sh) from $AISERVE_ASSETS, and a tiny seeded reranker (`ranker`, written by
# bench/tiny_reranker.py), waits until the models are ready, runs
# bench/hostile.py against it (standard library only), then SIGTERMs the server and checks that
# it shuts down cleanly with exit status 0.
#   cargo build --release && bench/hostile.sh [--quick] [--rss-bound-mb N] [--only a,b] [--list]
# Environment: CARGO_TARGET_DIR (default ~/.cache/aiserve-target), AISERVE_ASSETS (default
# ~/.cache/aiserve-assets), AISERVE_HOSTILE_ARGS (extra `aiserve serve` flags, split on spaces,
# e.g. AISERVE_HOSTILE_ARGS="--max-body-bytes 8388608 --kv-cache-mb 256"), AISERVE_HOSTILE_BIN
# (another aiserve binary to test, e.g. an older build; default $CARGO_TARGET_DIR/release/aiserve).
# Exit status: 0 when every case passed and the server exited 0 after SIGTERM; 1 otherwise.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
target="${CARGO_TARGET_DIR:-$HOME/.cache/aiserve-target}"
assets="${AISERVE_ASSETS:-$HOME/.cache/aiserve-assets}"
bin="${AISERVE_HOSTILE_BIN:-$target/release/aiserve}"
gguf="$assets/smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"

for a in "$@"; do
  if [ "$a" = "--list" ]; then exec python3 "$root/bench/hostile.py" - 0 --list; fi
done
[ -x "$bin" ] || { echo "hostile: $bin not found; run \`cargo build --release\` first" >&2; exit 1; }
[ -f "$assets/minilm/model.safetensors" ] || { echo "hostile: $assets/minilm missing (../shared/fetch-assets.sh)" >&2; exit 1; }
[ -f "$gguf" ] || { echo "hostile: $gguf missing (../shared/fetch-assets.sh)" >&2; exit 1; }
rec="$assets/rapidocr/ch_PP-OCRv4_rec_infer.onnx"
[ -f "$rec" ] || { echo "hostile: $rec missing (../shared/fetch-assets.sh DEST rapidocr)" >&2; exit 1; }
ort=$("$root/.ci/fetch-onnxruntime.sh" "$assets")

# A repository of copies (the server refuses symlinks that leave the repository).
tmp=$(mktemp -d)
repo="$tmp/repo"
log="$tmp/server.log"
mkdir -p "$repo"
cp -r "$root/models/digits" "$repo/"
mkdir -p "$repo/minilm" && cp -r "$assets/minilm" "$repo/minilm/1"
mkdir -p "$repo/smollm2/1" && cp "$gguf" "$repo/smollm2/1/"
mkdir -p "$repo/rec/1" && cp "$rec" "$repo/rec/1/model.onnx"
# The OCR pipeline over PP-OCR's detector, angle classifier and that recogniser.
mkdir -p "$repo/det/1" "$repo/cls/1" "$repo/ocr/1"
cp "$assets/rapidocr/ch_PP-OCRv4_det_infer.onnx" "$repo/det/1/model.onnx"
cp "$assets/rapidocr/ch_ppocr_mobile_v2.0_cls_infer.onnx" "$repo/cls/1/model.onnx"
cp "$root/pipelines/pp-ocr.toml" "$repo/ocr/model.toml"
python3 "$root/bench/tiny_reranker.py" "$assets/minilm" "$repo/ranker/1"

read -r -a extra <<<"${AISERVE_HOSTILE_ARGS:-}"
pid=""
cleanup() {
  if [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null; then kill -KILL "$pid" 2>/dev/null || true; fi
  rm -rf "$tmp"
}
trap cleanup EXIT
"$bin" serve --repo "$repo" --addr 127.0.0.1:0 --grpc-addr 127.0.0.1:0 --onnxruntime "$ort" ${extra[@]+"${extra[@]}"} >"$log" 2>&1 &
pid=$!

addr=""
for _ in $(seq 300); do  # at most 30 s for the port
  addr=$(sed -n 's/.*aiserve listening addr=\([0-9.:]*\).*/\1/p' "$log" | head -1)
  [ -n "$addr" ] && break
  kill -0 "$pid" 2>/dev/null || break
  sleep 0.1
done
if [ -z "$addr" ]; then tail -n 40 "$log" >&2; echo "hostile: the server did not start" >&2; exit 1; fi
echo "hostile: server pid $pid at $addr (log $log; extra flags: ${AISERVE_HOSTILE_ARGS:-none})"

# The models load after the port opens: wait (bounded) for all of them.
if ! python3 - "$addr" "$pid" <<'PY'
import http.client, os, sys, time
addr, pid = sys.argv[1], int(sys.argv[2])
host, port = addr.rsplit(":", 1)
deadline = time.monotonic() + 180
for model in ("digits", "minilm", "smollm2", "rec", "ocr", "ranker"):
    while True:
        try:
            c = http.client.HTTPConnection(host, int(port), timeout=2)
            c.request("GET", f"/v2/models/{model}/ready")
            status = c.getresponse().status
            c.close()
        except OSError:
            status = None
        if status == 200:
            print(f"hostile: {model} ready")
            break
        try:
            os.kill(pid, 0)
        except OSError:
            sys.exit(f"hostile: the server died while {model} loaded")
        if time.monotonic() > deadline:
            sys.exit(f"hostile: {model} not ready after 180 s (last status {status})")
        time.sleep(0.2)
PY
then
  tail -n 40 "$log" >&2
  exit 1
fi

rc=0
python3 "$root/bench/hostile.py" "$addr" "$pid" "$@" || rc=$?

# Graceful shutdown must exit 0 (bounded: the shutdown timeout is 30 s by default).
if kill -0 "$pid" 2>/dev/null; then
  kill -TERM "$pid"
  for _ in $(seq 450); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
  if kill -0 "$pid" 2>/dev/null; then
    echo "hostile: FAIL server still running 45 s after SIGTERM; killing it" >&2
    kill -KILL "$pid" 2>/dev/null || true
    rc=1
  fi
  status=0
  wait "$pid" || status=$?
  pid=""
  if [ "$status" -ne 0 ]; then
    echo "hostile: FAIL server exited $status after SIGTERM (expected 0)" >&2
    rc=1
  elif ! grep -q "shut down cleanly" "$log"; then
    echo "hostile: FAIL server exited 0 but logged no clean shutdown" >&2
    rc=1
  else
    echo "hostile: server shut down cleanly (exit 0)"
  fi
else
  status=0
  wait "$pid" || status=$?
  pid=""
  echo "hostile: FAIL the server was already dead before SIGTERM (exit status $status)" >&2
  rc=1
fi
if [ "$rc" -ne 0 ]; then
  echo "---- last 30 lines of the server log ----" >&2
  tail -n 30 "$log" >&2
fi
exit "$rc"
