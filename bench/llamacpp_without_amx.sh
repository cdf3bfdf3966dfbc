#!/usr/bin/env bash
# On CPUs with AMX (`amx_int8` in /proc/cpuinfo), llama-cpp-python 0.3.36 built the default way
# (-march=native) crashes with a segmentation fault in its AMX path as soon as a prompt has more
# than one token (seen 2026-11-29). This builds it with AMX off, everything else this CPU has on,
# into its own peers home (about 10 minutes on 2 cores, once), and prints that home for
# PEERS_HOME (../shared/peers/llamacpp/measure.sh takes its venv from there).
#   PEERS_HOME=$(bench/llamacpp_without_amx.sh) ../shared/peers/llamacpp/measure.sh
set -euo pipefail
home=${NOAMX_PEERS_HOME:-$HOME/.cache/aiserve-peers-noamx}
venv=$home/venv-llamacpp
if ! "$venv/bin/python" -c 'import llama_cpp' 2>/dev/null; then
  mkdir -p "$home"
  python3 -m venv "$venv"
  CMAKE_BUILD_PARALLEL_LEVEL=2 CMAKE_ARGS="-DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON \
-DGGML_F16C=ON -DGGML_BMI2=ON -DGGML_AVX512=ON -DGGML_AVX512_VNNI=ON -DGGML_AVX512_VBMI=ON \
-DGGML_AVX512_BF16=ON -DGGML_AVX_VNNI=ON -DGGML_AMX_INT8=OFF -DGGML_AMX_TILE=OFF -DGGML_AMX_BF16=OFF" \
    "$venv/bin/pip" install -q --no-cache-dir --disable-pip-version-check llama-cpp-python==0.3.36 >&2
fi
echo "$home"
