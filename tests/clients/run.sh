#!/usr/bin/env bash
# Real-client compatibility: starts the release binary on a free loopback port with the bundled
# models plus all-MiniLM-L6-v2 and SmolLM2-135M-Instruct (from $AISERVE_ASSETS, see
# ../shared/fetch-assets.sh) and drives it
# with NVIDIA's tritonclient (HTTP and gRPC), TF Serving's gRPC stubs (tensorflow-serving-api) and
# the official openai and anthropic clients (tools, structured outputs, Responses, Messages),
# unmodified, and seeded cross-encoders and encoders against NumPy; then a
# second server with API keys for the gRPC repository calls; and a repository on S3 (moto).
# Loopback only.
#   tests/clients/run.sh            (after `cargo build --release`; CARGO_TARGET_DIR as for the build)
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
target="${CARGO_TARGET_DIR:-$root/target}"
venv="${AISERVE_CLIENTS_VENV:-$HOME/.cache/aiserve-clients}"
mnist="${AISERVE_MNIST:-$root/../shared/data/mnist}"
assets="${AISERVE_ASSETS:-$HOME/.cache/aiserve-assets}"
if ! "$venv/bin/python" -c 'import tritonclient.http, tritonclient.grpc, openai, grpc_tools, tensorflow_serving, onnxruntime, skl2onnx, PIL, rapidocr_onnxruntime' 2>/dev/null; then
  python3 -m venv "$venv"
  # grpcio-tools 1.80 pairs with protobuf 6, which tritonclient[grpc] needs (newer ones want 7).
  "$venv/bin/pip" install -q --disable-pip-version-check 'tritonclient[http,grpc]==2.73.0' 'openai==3.57.0' 'grpcio-tools==1.80.0'
  # TF Serving's stubs without TensorFlow (hundreds of MB): the TensorFlow messages they import
  # are generated below from aiserve's protocol files, which carry TensorFlow's names and numbers.
  "$venv/bin/pip" install -q --disable-pip-version-check --no-deps 'tensorflow-serving-api==2.21.0'
  # The reference for ONNX outputs (the release aiserve opens), a second producer of graphs,
  # Pillow to resize and draw pictures, and RapidOCR (PP-OCR's Python pipeline, with OpenCV) as
  # the reference for the OCR steps.
  "$venv/bin/pip" install -q --disable-pip-version-check 'onnxruntime==1.32.0' 'onnx==1.23.2' 'skl2onnx==1.20.0' 'scikit-learn==1.9.1' 'pillow==13.0.0' \
    'rapidocr-onnxruntime==1.4.4' 'opencv-python==5.1.0.95' 'pyclipper==1.4.0' 'shapely==2.2.0'
fi
# The official anthropic client and jsonschema, for the agents check, and selenium (a WebDriver
# client) for the playground's check in Chromium (added to the venv above without rebuilding it).
if ! "$venv/bin/python" -c 'import anthropic, jsonschema, selenium' 2>/dev/null; then
  "$venv/bin/pip" install -q --disable-pip-version-check 'anthropic==2.17.0' 'jsonschema==4.26.0' 'selenium==4.39.0'
fi
# Keras 3 on TensorFlow (CPU) with tf2onnx, for a CNN exported by `model.export(format="onnx")`:
# a venv of its own (TensorFlow's protobuf 7 is not tritonclient's), cached outside the clone.
kvenv="${AISERVE_KERAS_VENV:-$HOME/.cache/aiserve-keras}"
if ! "$kvenv/bin/python" -c 'import keras, tf2onnx, onnx' 2>/dev/null; then
  python3 -m venv "$kvenv"
  "$kvenv/bin/pip" install -q --disable-pip-version-check 'tensorflow-cpu==2.21.0' 'keras==3.15.1' 'tf2onnx==1.17.0' 'onnx==1.23.2'
fi
tfproto="$venv/tfproto"
rm -rf "$tfproto" && mkdir -p "$tfproto"
"$venv/bin/python" -m grpc_tools.protoc -I "$root/crates/server/proto" -I "$root/tests/clients/proto" --python_out="$tfproto" \
  tensorflow/core/framework/tensor.proto tensorflow/core/protobuf/meta_graph.proto \
  tensorflow/core/protobuf/error_codes.proto xla/tsl/protobuf/error_codes.proto tensorflow/core/example/example.proto
# A repository of copies (the server refuses symlinks that leave the repository).
repo=$(mktemp -d)
cp -r "$root/models/digits" "$root/models/digit-strings" "$repo/"
mkdir -p "$repo/minilm" && cp -r "$assets/minilm" "$repo/minilm/1"
mkdir -p "$repo/smollm2/1" && cp "$assets/smollm2/SmolLM2-135M-Instruct.Q4_1.gguf" "$repo/smollm2/1/"
# Seeded cross-encoders (checked against NumPy below; the playground's rerank tab uses one).
"$venv/bin/python" "$root/tests/clients/encoders_check.py" write "$repo" rerank-bert rerank-xlmr nli-bert
log=$(mktemp) keys=$(mktemp)
pid=""
trap 'kill $pid 2>/dev/null || true; rm -rf "$log" "$repo" "$keys"' EXIT
# Starts the release binary with free HTTP and gRPC ports (extra flags: "$@") and sets $pid,
# $addr and $grpc_addr from the addresses it logs.
start() {
  "$target/release/aiserve" serve --repo "$repo" --addr 127.0.0.1:0 --grpc-addr 127.0.0.1:0 "$@" >"$log" 2>&1 &
  pid=$!
  addr="" grpc_addr=""
  for _ in $(seq 100); do
    addr=$(sed -n 's/.*aiserve listening addr=\([0-9.:]*\).*/\1/p' "$log" | head -1)
    grpc_addr=$(sed -n 's/.*aiserve gRPC listening addr=\([0-9.:]*\).*/\1/p' "$log" | head -1)
    [ -n "$addr" ] && [ -n "$grpc_addr" ] && return
    sleep 0.1
  done
  cat "$log"; echo "server did not start" >&2; exit 1
}
start
# The listener answers at once; readiness waits for the first repository poll to load the models.
for _ in $(seq 600); do
  "$venv/bin/python" -c "import urllib.request as u; u.urlopen('http://$addr/v2/health/ready')" 2>/dev/null && break
  sleep 0.1
done
timeout 120 "$venv/bin/python" "$root/tests/clients/tritonclient_check.py" "$addr" "$mnist"
for _ in $(seq 100); do  # minilm loads after the port opens
  "$venv/bin/python" -c "import urllib.request as u; u.urlopen('http://$addr/v2/models/minilm/ready')" 2>/dev/null && break
  sleep 0.1
done
timeout 120 "$venv/bin/python" "$root/tests/clients/embeddings_check.py" "$addr" minilm "$root/../shared/reference/minilm_reference.json"
for _ in $(seq 100); do
  "$venv/bin/python" -c "import urllib.request as u; u.urlopen('http://$addr/v2/models/smollm2/ready')" 2>/dev/null && break
  sleep 0.1
done
timeout 300 "$venv/bin/python" "$root/tests/clients/generation_check.py" "$addr" smollm2
timeout 300 "$venv/bin/python" "$root/tests/clients/agents_check.py" "$addr" smollm2
# The playground page in Debian's Chromium (.ci/install-chromium.sh): every tab, by pointer and keyboard.
for _ in $(seq 100); do
  "$venv/bin/python" -c "import urllib.request as u; u.urlopen('http://$addr/v2/models/rerank-bert/ready')" 2>/dev/null && break
  sleep 0.1
done
timeout 300 "$venv/bin/python" "$root/tests/clients/playground_check.py" "$addr"
timeout 300 "$venv/bin/python" "$root/tests/clients/tritonclient_grpc_check.py" "$grpc_addr" "$mnist" "$root/../shared/reference/minilm_reference.json"
PYTHONPATH="$tfproto" timeout 120 "$venv/bin/python" "$root/tests/clients/tfserving_grpc_check.py" "$grpc_addr" "$mnist"
# Cross-encoders (BERT and XLM-RoBERTa heads), and RoBERTa and NomicBERT embedders seeded by the script
# and added while the server runs, against its NumPy forward pass of the same weights.
"$venv/bin/python" "$root/tests/clients/encoders_check.py" write "$repo" embed-roberta embed-nomic embed-nomic-b
for m in rerank-bert rerank-xlmr nli-bert embed-roberta embed-nomic embed-nomic-b; do
  for _ in $(seq 300); do
    "$venv/bin/python" -c "import urllib.request as u; u.urlopen('http://$addr/v2/models/$m/ready')" 2>/dev/null && break
    sleep 0.1
  done
done
timeout 120 "$venv/bin/python" "$root/tests/clients/encoders_check.py" check "$addr" "$grpc_addr"
kill -TERM $pid
wait $pid   # graceful shutdown must exit 0
grep -q "shut down cleanly" "$log" || { cat "$log"; echo "no clean shutdown" >&2; exit 1; }

# The repository calls over gRPC, on a server with API keys (digits only).
admin=admin-key-0123456789abcdef infer=infer-key-0123456789abcdef
printf '%s admin,infer,metrics\n%s infer\n' "$admin" "$infer" >"$keys"
chmod 600 "$keys"
rm -rf "$repo/minilm" "$repo/smollm2" "$repo/rerank-bert" "$repo/rerank-xlmr" "$repo/nli-bert" "$repo/embed-roberta" \
  "$repo/embed-nomic" "$repo/embed-nomic-b"
start --api-keys-file "$keys"
for _ in $(seq 300); do
  "$venv/bin/python" -c "import tritonclient.grpc as g, sys; sys.exit(0 if g.InferenceServerClient('$grpc_addr').is_server_ready() else 1)" 2>/dev/null && break
  sleep 0.1
done
timeout 120 "$venv/bin/python" "$root/tests/clients/tritonclient_grpc_check.py" --keys "$grpc_addr" "$admin" "$infer"
timeout 300 "$venv/bin/python" "$root/tests/clients/playground_check.py" --key "$admin" --no-text "$addr"
kill -TERM $pid
wait $pid
grep -q "shut down cleanly" "$log" || { cat "$log"; echo "no clean shutdown (keys server)" >&2; exit 1; }

# ONNX models on ONNX Runtime from PyPI's wheel: the PP-OCR networks against Python's
# onnxruntime (and as the OCR pipeline against RapidOCR), a scikit-learn model and a Keras CNN added while the server runs, and
# EfficientNet-Lite0 converted from its PyTorch weights by tools/efficientnet_lite_to_onnx.py.
rm -rf "$repo"/*
for m in det:ch_PP-OCRv4_det_infer rec:ch_PP-OCRv4_rec_infer cls:ch_ppocr_mobile_v2.0_cls_infer; do
  mkdir -p "$repo/${m%%:*}/1" && cp "$assets/rapidocr/${m#*:}.onnx" "$repo/${m%%:*}/1/model.onnx"
done
# The OCR pipeline over them, as README shows it.
mkdir -p "$repo/ocr/1" && cp "$root/pipelines/pp-ocr.toml" "$repo/ocr/model.toml"
cp -r "$root/models/digits" "$repo/"
effnet="$assets/efficientnet/efficientnet-lite0-57934424.pth"
"$venv/bin/python" "$root/tools/efficientnet_lite_to_onnx.py" "$effnet" "$repo/efficientnet" \
  --synsets "$assets/imagenet/imagenet_synsets.txt" --lemmas "$assets/imagenet/imagenet_synset_to_lemma.txt"
start --onnxruntime "$("$root/.ci/fetch-onnxruntime.sh" "$assets")" --poll-interval-ms 200
for _ in $(seq 300); do
  "$venv/bin/python" -c "import urllib.request as u; u.urlopen('http://$addr/v2/models/rec/ready')" 2>/dev/null && break
  sleep 0.1
done
keras_ref=$(mktemp --suffix .npz)
PYTHONWARNINGS=ignore::FutureWarning timeout 300 "$kvenv/bin/python" "$root/tests/clients/keras_export.py" "$mnist" "$repo/keras_cnn" "$keras_ref"
timeout 300 "$venv/bin/python" "$root/tests/clients/onnx_check.py" "$addr" "$grpc_addr" "$repo" "$assets/rapidocr" "$mnist" "$keras_ref"
rm -f "$keras_ref"
for _ in $(seq 300); do
  "$venv/bin/python" -c "import urllib.request as u; u.urlopen('http://$addr/v2/models/efficientnet/ready')" 2>/dev/null && break
  sleep 0.1
done
timeout 300 "$venv/bin/python" "$root/tests/clients/efficientnet_check.py" "$addr" "$grpc_addr" "$repo/efficientnet" "$effnet"
# OCR through the pipeline against RapidOCR's own Python package, line for line.
timeout 300 "$venv/bin/python" "$root/tests/clients/ocr_check.py" "$addr" "$grpc_addr" "$("$root/.ci/fetch-fonts.sh" "$assets")"
timeout 300 "$venv/bin/python" "$root/tests/clients/playground_check.py" --no-text --ocr "$("$root/.ci/fetch-fonts.sh" "$assets")" "$addr"
kill -TERM $pid
wait $pid
grep -q "shut down cleanly" "$log" || { cat "$log"; echo "no clean shutdown (ONNX server)" >&2; exit 1; }

# The OCR steps (crates/vision, through its examples/ocr_steps harness) against RapidOCR's own on
# pictures drawn with Debian's fonts.
timeout 300 "$venv/bin/python" "$root/tests/clients/ocr_steps_check.py" "$target/release/examples/ocr_steps" "$("$root/.ci/fetch-fonts.sh" "$assets")"

# A repository on object storage: `--repo s3://...` against moto's S3 server (bench/s3_server.sh)
# with SigV4 authentication on: versions published, retired and deleted in the bucket, restarts,
# refused credentials and a vanished store, no secret in the logs, and the SIGTERM drain.
timeout 300 "$("$root/bench/s3_server.sh" python)" "$root/tests/clients/object_store_check.py" "$target/release/aiserve" "$root/models"
