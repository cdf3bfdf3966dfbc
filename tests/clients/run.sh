#!/usr/bin/env bash
# Real-client compatibility: starts the release binary on a free loopback port with the bundled
# models plus all-MiniLM-L6-v2 and SmolLM2-135M-Instruct (from $AISERVE_ASSETS, see
# ../shared/fetch-assets.sh) and drives it
# with NVIDIA's tritonclient (HTTP) and the official openai client, unmodified. Loopback only.
#   tests/clients/run.sh            (after `cargo build --release`; CARGO_TARGET_DIR as for the build)
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
target="${CARGO_TARGET_DIR:-$root/target}"
venv="${AISERVE_CLIENTS_VENV:-$HOME/.cache/aiserve-clients}"
mnist="${AISERVE_MNIST:-$root/../shared/data/mnist}"
assets="${AISERVE_ASSETS:-$HOME/.cache/aiserve-assets}"
if ! "$venv/bin/python" -c 'import tritonclient.http, openai' 2>/dev/null; then
  python3 -m venv "$venv"
  "$venv/bin/pip" install -q --disable-pip-version-check 'tritonclient[http]==2.73.0' 'openai==3.57.0'
fi
# A repository of copies (the server refuses symlinks that leave the repository).
repo=$(mktemp -d)
cp -r "$root/models/digits" "$repo/"
mkdir -p "$repo/minilm" && cp -r "$assets/minilm" "$repo/minilm/1"
mkdir -p "$repo/smollm2/1" && cp "$assets/smollm2/SmolLM2-135M-Instruct.Q4_1.gguf" "$repo/smollm2/1/"
log=$(mktemp)
"$target/release/aiserve" serve --repo "$repo" --addr 127.0.0.1:0 >"$log" 2>&1 &
pid=$!
trap 'kill $pid 2>/dev/null || true; rm -rf "$log" "$repo"' EXIT
addr=""
for _ in $(seq 100); do
  addr=$(sed -n 's/.*aiserve listening addr=\([0-9.:]*\).*/\1/p' "$log" | head -1)
  [ -n "$addr" ] && break
  sleep 0.1
done
[ -n "$addr" ] || { cat "$log"; echo "server did not start" >&2; exit 1; }
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
kill -TERM $pid
wait $pid   # graceful shutdown must exit 0
grep -q "shut down cleanly" "$log" || { cat "$log"; echo "no clean shutdown" >&2; exit 1; }
