#!/usr/bin/env bash
# Training speed, side by side in one run: `aiserve train` (1 epoch, 60k MNIST, batch 32) and the
# seed's Keras `model.fit` (1 epoch, 60k samples, batch 32; ../shared/peers/seed_flask_keras).
#   bench/train_vs_keras.sh            # needs the Keras venv: ../shared/peers/seed_flask_keras/install.sh
# Env: PEERS_HOME (Keras venv location), ROUNDS (default 2: alternating aiserve/Keras runs).
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
shared=$(cd "$here/../shared" && pwd)
PEERS_HOME="${PEERS_HOME:-$HOME/.cache/aiserve-peers}"
ROUNDS="${ROUNDS:-2}"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/aiserve-target}"
(cd "$here" && cargo build --release -q)
bin="$CARGO_TARGET_DIR/release/aiserve"
tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT
echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs), load $(cut -d' ' -f1-3 /proc/loadavg)"
for r in $(seq "$ROUNDS"); do
  /usr/bin/time -f "aiserve round $r: %e s wall, %U+%S s CPU" "$bin" train digits --data "$shared/data/mnist" \
    --repo "$tmp/repo" --epochs 1 --limit-test 1000 --quiet 2>&1 | grep -E "epoch 1:|round"
  # fit #1 includes tf.function tracing; fit #2 is the warm epoch Keras users see from epoch 2 on.
  "$PEERS_HOME/venv/bin/python" "$shared/peers/seed_flask_keras/train.py" "$tmp/keras.keras" 2>/dev/null | grep -E "^fit"
done
