#!/usr/bin/env bash
# Fetches ONNX Runtime's shared library from PyPI's `onnxruntime` wheel (the library Python's
# onnxruntime loads), verifies the wheel's sha256, and keeps the library in the asset cache
# outside the clone. Prints the library's path.
#
#   .ci/fetch-onnxruntime.sh [DEST]    DEST defaults to $AISERVE_ASSETS or ~/.cache/aiserve-assets
#
# `aiserve serve --onnxruntime "$(.ci/fetch-onnxruntime.sh)"` then serves ONNX models.
set -euo pipefail
dest=${1:-${AISERVE_ASSETS:-$HOME/.cache/aiserve-assets}}/onnxruntime
version=1.32.0
wheel=onnxruntime-$version-cp311-cp311-manylinux_2_28_x86_64.whl
sha=5a34fc4dfeb5a7b4a74c95dcba1e773d722abda720b474edf1b0c419dc6d163d
lib=$dest/libonnxruntime.so.$version
if [ ! -f "$lib" ]; then
  echo "fetching ONNX Runtime $version (PyPI wheel) ..." >&2
  tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT
  python3 -m pip download --quiet --no-deps --disable-pip-version-check --only-binary=:all: \
    --python-version 3.11 --implementation cp --abi cp311 --platform manylinux_2_28_x86_64 \
    -d "$tmp" "onnxruntime==$version"
  echo "$sha  $tmp/$wheel" | sha256sum -c --quiet - || { echo "onnxruntime wheel: sha256 mismatch" >&2; exit 1; }
  mkdir -p "$dest"
  python3 - "$tmp/$wheel" "onnxruntime/capi/libonnxruntime.so.$version" "$lib.tmp" <<'PY'
import sys, zipfile
with zipfile.ZipFile(sys.argv[1]) as z, open(sys.argv[3], "wb") as out:
    out.write(z.read(sys.argv[2]))
PY
  mv "$lib.tmp" "$lib"
fi
echo "$lib"
