#!/usr/bin/env bash
# aiserve serving an ONNX model against Python's onnxruntime running it in-process, same model,
# same batch, same run (ROUNDS alternations so drift hits both alike). MODEL is `cls`, PP-OCR's
# angle classifier (a MobileNet-style CNN, [N,3,48,192] -> [N,2]), or `efficientnet`,
# EfficientNet-Lite0 ([N,3,224,224] -> [N,1000]) converted by tools/efficientnet_lite_to_onnx.py;
# both from the asset cache.
#   bench/onnx_vs_onnxruntime.sh [ROUNDS] [SECONDS] [MODEL]       # defaults 3 5 cls
# 1. batch 8 and 32 per request: onnxruntime.InferenceSession.run in-process (2 threads) vs
#    `aiserve bench --protocol kserve-binary` at concurrency 2 (images/s = req/s x batch), on a
#    model whose max_batch_size is that batch (so two requests never run as one bigger pass);
# 2. one picture per request: concurrency 1, concurrency 32 without batching (max_batch_size 1),
#    concurrency 32 with dynamic batching (max_queue_delay_us 2000), and in-process batch 1, the
#    ceiling of what batching can gain being in-process batch 32 over batch 1.
# Needs the client venv (tests/clients/run.sh makes it) for onnxruntime; loopback only.
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
rounds="${1:-3}"; secs="${2:-5}"; which="${3:-cls}"
bin="${CARGO_TARGET_DIR:-$here/target}/release/aiserve"
py="${AISERVE_CLIENTS_VENV:-$HOME/.cache/aiserve-clients}/bin/python"
assets="${AISERVE_ASSETS:-$HOME/.cache/aiserve-assets}"
"$here/../shared/fetch-assets.sh" "$assets" rapidocr efficientnet >/dev/null
lib=$("$here/.ci/fetch-onnxruntime.sh" "$assets")
tmp=$(mktemp -d)
pid=""
cleanup() { [ -n "$pid" ] && kill "$pid" 2>/dev/null; rm -rf "$tmp"; }
trap cleanup EXIT
case "$which" in
  cls) model="$assets/rapidocr/ch_ppocr_mobile_v2.0_cls_infer.onnx" ;;
  efficientnet)
    "$py" "$here/tools/efficientnet_lite_to_onnx.py" "$assets/efficientnet/efficientnet-lite0-57934424.pth" "$tmp/effnet" >/dev/null
    model="$tmp/effnet/1/model.onnx" ;;
  *) echo "MODEL must be cls or efficientnet, got $which" >&2; exit 2 ;;
esac
# `cls`: dynamic batching up to 64 rows; `cls8`, `cls32`: passes of exactly the batch compared,
# so requests in flight together cannot be joined into bigger (faster) passes than in-process;
# `cls1`: no batching.
for m in cls:64 cls1:1 cls8:8 cls32:32; do
  mkdir -p "$tmp/repo/${m%%:*}/1" && cp "$model" "$tmp/repo/${m%%:*}/1/model.onnx"
  printf 'max_queue_delay_us = 2000\nmax_batch_size = %s\n' "${m#*:}" >"$tmp/repo/${m%%:*}/model.toml"
done
# 64 MiB bodies: 32 EfficientNet pictures are 19 MB (the default limit is 8 MiB).
"$bin" serve --repo "$tmp/repo" --addr 127.0.0.1:0 --grpc-addr off --onnxruntime "$lib" --max-body-bytes 67108864 >"$tmp/log" 2>&1 &
pid=$!
for _ in $(seq 300); do
  addr=$(sed -n 's/.*aiserve listening addr=\([0-9.:]*\).*/\1/p' "$tmp/log" | head -1)
  [ -n "$addr" ] && curl -sf "http://$addr/v2/models/cls/ready" >/dev/null 2>&1 && break
  sleep 0.1
done
curl -sf "http://$addr/v2/models/cls/ready" >/dev/null || { cat "$tmp/log"; echo "server did not get ready" >&2; exit 1; }
served() {  # BATCH CONCURRENCY MODEL -> images/s
  "$py" "$here/bench/onnx_vs_onnxruntime.py" payload "$model" "$1" "$tmp/p$1.bin"
  "$bin" bench --url "http://$addr" --protocol kserve-binary --model "$3" --payload "$tmp/p$1.bin" \
    --concurrency "$2" --duration "${secs}s" --json "$tmp/r.json" >/dev/null 2>&1
  "$py" -c "import json,sys; r=json.load(open('$tmp/r.json'))['levels'][0]; r['errors'] and sys.exit(f'$3: {r}'); print(f\"{r['throughput'] * $1:.1f}\")"
}
echo "| round | batch | onnxruntime in-process images/s | aiserve KServe binary images/s | ratio |"
echo "|---|---|---|---|---|"
for r in $(seq "$rounds"); do
  for b in 8 32; do
    base=$("$py" "$here/bench/onnx_vs_onnxruntime.py" inprocess "$model" "$b" "$secs")
    got=$(served "$b" 2 "cls$b")
    echo "| $r | $b | $base | $got | $(awk -v a="$got" -v b="$base" 'BEGIN{printf "%.2f", a/b}') |"
  done
done
echo
echo "| round | one picture per request, concurrency 1 (images/s) | concurrency 32, no batching | concurrency 32, dynamic batching | batching vs concurrency 1 / vs no batching | in-process batch 1 / batch 32 |"
echo "|---|---|---|---|---|---|"
ratio() { awk -v a="$1" -v b="$2" 'BEGIN{printf "%.2f", a/b}'; }
for r in $(seq "$rounds"); do
  one=$(served 1 1 cls); flat=$(served 1 32 cls1); many=$(served 1 32 cls)
  b1=$("$py" "$here/bench/onnx_vs_onnxruntime.py" inprocess "$model" 1 "$secs")
  b32=$("$py" "$here/bench/onnx_vs_onnxruntime.py" inprocess "$model" 32 "$secs")
  echo "| $r | $one | $flat | $many | $(ratio "$many" "$one")× / $(ratio "$many" "$flat")× | $b1 / $b32 ($(ratio "$b32" "$b1")×) |"
done
