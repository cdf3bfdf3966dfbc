#!/usr/bin/env bash
# The seed's CNN + LSTM sequence model, training speed side by side in one run: `aiserve train
# digit-strings` (1 epoch of 24,000 composed strings, batch 32, latent_dim 128; the epoch line's
# seconds are training only) and the same architecture in Keras (bench/strings_keras.py: 24,000
# strings composed the same way, batch 32; fit 1 includes tf.function tracing, fit 2 is the warm
# epoch Keras users see from epoch 2 on).
#   bench/strings_vs_keras.sh     # needs a Keras venv: KERAS_VENV (default ~/.cache/aiserve-keras,
#                                 # which .ci/run's Keras check creates) or PEERS_HOME/venv
# Env: ROUNDS (default 2: alternating aiserve/Keras runs).
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
shared=$(cd "$here/../shared" && pwd)
ROUNDS="${ROUNDS:-2}"
KERAS_VENV="${KERAS_VENV:-$HOME/.cache/aiserve-keras}"
[ -x "$KERAS_VENV/bin/python" ] || KERAS_VENV="${PEERS_HOME:-$HOME/.cache/aiserve-peers}/venv"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/aiserve-target}"
(cd "$here" && cargo build --release -q)
bin="$CARGO_TARGET_DIR/release/aiserve"
tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT
echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs), load $(cut -d' ' -f1-3 /proc/loadavg)"
for r in $(seq "$ROUNDS"); do
  /usr/bin/time -f "aiserve round $r: %e s wall, %U+%S s CPU" "$bin" train digit-strings --data "$shared/data/mnist" \
    --repo "$tmp/repo" --epochs 1 --strings 30000 --limit-test 500 --quiet 2>&1 | grep -E "epoch 1:|round"
  "$KERAS_VENV/bin/python" "$here/bench/strings_keras.py" "$shared/data/mnist" --strings 24000 2>/dev/null | grep -E "^(fit|keras)"
done
