#!/usr/bin/env bash
# OCR: aiserve's PP-OCR pipeline (pipelines/pp-ocr.toml over RapidOCR 1.4.4's three networks on
# ONNX Runtime 1.32) against RapidOCR's own Python API on the same pictures, 1 and 8 concurrent
# clients, side by side (bench/ocr_vs_rapidocr.py). With SPINNING=1 the three networks'
# `[onnx] spinning = true` (ONNX Runtime's default) for comparison; with FUSE=0 the networks run
# as written (`[onnx] fuse = false`: no folded scales, hard-swish as four operators).
#   bench/ocr_vs_rapidocr.sh [SECONDS] [CLIENTS]         # defaults 20 1,8
# Needs the client venv (tests/clients/run.sh makes it) and the fonts (.ci/fetch-fonts.sh).
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
secs="${1:-20}"; clients="${2:-1,8}"
bin="${CARGO_TARGET_DIR:-$here/target}/release/aiserve"
py="${AISERVE_CLIENTS_VENV:-$HOME/.cache/aiserve-clients}/bin/python"
assets="${AISERVE_ASSETS:-$HOME/.cache/aiserve-assets}"
"$here/../shared/fetch-assets.sh" "$assets" rapidocr >/dev/null
lib=$("$here/.ci/fetch-onnxruntime.sh" "$assets")
fonts=$("$here/.ci/fetch-fonts.sh" "$assets")
tmp=$(mktemp -d)
pid=""
cleanup() { [ -n "$pid" ] && kill "$pid" 2>/dev/null; rm -rf "$tmp"; }
trap cleanup EXIT
for m in det:ch_PP-OCRv4_det_infer rec:ch_PP-OCRv4_rec_infer cls:ch_ppocr_mobile_v2.0_cls_infer; do
  mkdir -p "$tmp/repo/${m%%:*}/1" && cp "$assets/rapidocr/${m#*:}.onnx" "$tmp/repo/${m%%:*}/1/model.onnx"
  toml="[onnx]\n"
  [ "${SPINNING:-0}" = 1 ] && toml+="spinning = true\n"
  [ "${FUSE:-1}" = 0 ] && toml+="fuse = false\n"
  printf "$toml" >"$tmp/repo/${m%%:*}/model.toml"
done
mkdir -p "$tmp/repo/ocr/1" && cp "$here/pipelines/pp-ocr.toml" "$tmp/repo/ocr/model.toml"
"$bin" serve --repo "$tmp/repo" --addr 127.0.0.1:0 --grpc-addr off --onnxruntime "$lib" >"$tmp/log" 2>&1 &
pid=$!
for _ in $(seq 300); do
  addr=$(sed -n 's/.*aiserve listening addr=\([0-9.:]*\).*/\1/p' "$tmp/log" | head -1)
  [ -n "$addr" ] && curl -sf "http://$addr/v2/models/ocr/ready" >/dev/null 2>&1 && break
  sleep 0.1
done
curl -sf "http://$addr/v2/models/ocr/ready" >/dev/null || { cat "$tmp/log"; echo "server did not get ready" >&2; exit 1; }
"$py" "$here/bench/ocr_vs_rapidocr.py" "$addr" "$fonts" "$secs" "$clients"
echo "per step, mean ms per request (aiserve_pipeline_step_duration_seconds):"
curl -s "http://$addr/metrics" | awk '/pipeline_step_duration_seconds_(sum|count)/ {
  split($1, a, "step=\""); split(a[2], b, "\""); if ($1 ~ /_sum/) s[b[1]] = $2; else c[b[1]] = $2 }
  END { for (k in s) printf "  %-10s %7.1f\n", k, 1000 * s[k] / c[k] }' | sort -k2 -n -r
echo "rows per batch each network took from its queue (aiserve_batch_rows; above 6 for rec: lines of several requests joined):"
curl -s "http://$addr/metrics" | awk '/^aiserve_batch_rows_(sum|count)/ {
  split($1, a, "model=\""); split(a[2], b, "\""); if ($1 ~ /_sum/) s[b[1]] = $2; else c[b[1]] = $2 }
  END { for (k in s) printf "  %-4s %5.2f rows per batch over %d batches\n", k, s[k] / c[k], c[k] }' | sort
