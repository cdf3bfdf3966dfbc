#!/usr/bin/env bash
# Text generation side by side in one run against llama.cpp's own programs (`llama-bench`,
# `llama-server`, built once by ../shared/peers/llamacpp/build_native.sh), same GGUF files, same
# machine, 2 threads: SmolLM2-135M-Instruct Q4_1 and Gemma 3 270M Q4_K_M.
#   1. model only: llama-bench pp201 / tg128 (-r 3) next to `cargo bench --bench generate`
#      (the same measures: 201 prompt tokens in one pass; 128 single-token passes from BOS,
#      every logit computed), then its greedy steps as the server runs them (the largest logit
#      only, `AISERVE_ARGMAX_ONLY=1`: the greedy head where the model has one),
#   2. over HTTP, servers one at a time, alternated ROUNDS times: one streamed client
#      (`llama-server -np 1` against aiserve with and without drafting), then eight
#      (`llama-server -np 8 -c 8192` against aiserve): bench/generate_load.py, greedy, 128
#      tokens (chat for SmolLM2, plain completions for the base Gemma model).
#   With EIGHT=1 (the default), aiserve also runs with llama.cpp's precision, 8-bit activations
#   (`--activation-bits 8`), beside its default 16-bit ones.
#   After each one-client aiserve run without drafting, the model alone in the same minute (the
#   rates one stream over HTTP is compared with): greedy steps from a short prompt, and the
#   client's four requests answered as the server does, prompts included (`AISERVE_AS_SERVED`).
#   bench/generate_vs_llamacpp.sh     # env: ROUNDS (default 2), EIGHT, MODELS ("smollm2 gemma3"),
#                                     # AISERVE_ASSETS, CARGO_TARGET_DIR
# Loopback only; every server it starts is stopped on exit.
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
shared=$(cd "$here/../shared" && pwd)
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/aiserve-target}"
assets="${AISERVE_ASSETS:-$HOME/.cache/aiserve-assets}"
rounds=${ROUNDS:-2}
EIGHT=${EIGHT:-1}
"$shared/fetch-assets.sh" "$assets" gemma3 >/dev/null
bin=$(bash "$shared/peers/llamacpp/build_native.sh")
(cd "$here" && cargo build --release -q && cargo bench -q -p aiserve-models --bench generate --no-run 2>/dev/null)
bench_bin=$(ls -t "$CARGO_TARGET_DIR"/release/deps/generate-* | grep -v '\.d$' | head -1)
tmp=$(mktemp -d)
pid=""
cleanup() { [ -n "$pid" ] && kill "$pid" 2>/dev/null; rm -rf "$tmp"; }
trap cleanup EXIT
port=18093

wait_ready() { # URL
  for _ in $(seq 600); do curl -sf "$1" >/dev/null && return 0; sleep 0.2; done
  echo "not ready: $1" >&2; exit 1
}
stop() { kill "$pid" 2>/dev/null; wait "$pid" 2>/dev/null || true; pid=""; }

echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2), load $(cut -d' ' -f1-3 /proc/loadavg), $(date -u +%FT%TZ)"
for name in ${MODELS:-smollm2 gemma3}; do
  case $name in
    smollm2) gguf="$assets/smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"; mode=chat ;;
    gemma3) gguf="$assets/gemma3/gemma-3-270m-q4_k_m.gguf"; mode=completions ;;
  esac
  echo; echo "## $name ($(basename "$gguf"))"
  echo; echo "### llama-bench, 2 threads"
  "$bin/llama-bench" -m "$gguf" -t 2 -p 201 -n 128 -r 3 2>/dev/null | grep -E '^\| (model|[a-z])'
  echo; echo "### aiserve model only, 2 threads"
  AISERVE_GGUF="$gguf" AISERVE_BATCHES=1,8 RAYON_NUM_THREADS=2 "$bench_bin" | grep -E 'as llama|prefill|decode batch|^model'
  echo; echo "### aiserve model only, 2 threads, greedy steps (only the largest logit, as the server asks)"
  AISERVE_GGUF="$gguf" AISERVE_ARGMAX_ONLY=1 AISERVE_ONLY_BATCH=1 AISERVE_BATCHES=1,2 RAYON_NUM_THREADS=2 "$bench_bin" |
    grep -E 'decode batch'
  if [ "$EIGHT" = 1 ]; then
    echo; echo "### aiserve model only, 2 threads, 8-bit activations (llama.cpp's precision)"
    AISERVE_GGUF="$gguf" AISERVE_BATCHES=1,8 RAYON_NUM_THREADS=2 AISERVE_ACTIVATION_BITS=8 AISERVE_ONLY_BATCH=1 "$bench_bin" |
      grep -E 'as llama|prefill|decode batch'
  fi

  mkdir -p "$tmp/repo-$name/$name/1" && ln -sf "$gguf" "$tmp/repo-$name/$name/1/"
  for round in $(seq "$rounds"); do
    for clients in 1 8; do
      echo; echo "### over HTTP, $clients client(s), round $round"
      "$bin/llama-server" -m "$gguf" -t 2 -tb 2 -np "$clients" -c $((clients == 1 ? 4096 : 8192)) --jinja \
        --host 127.0.0.1 --port $port -a "$name" >"$tmp/llama.log" 2>&1 &
      pid=$!
      wait_ready "http://127.0.0.1:$port/health"
      printf 'llama-server -np %s:       ' "$clients"
      python3 "$here/bench/generate_load.py" "127.0.0.1:$port" "$name" "$clients" $((clients == 1 ? 4 : 2)) 128 $mode
      stop
      variants=("--draft-tokens 4" "--draft-tokens 0")
      [ "$clients" = 8 ] && variants=("--draft-tokens 4")
      [ "$EIGHT" = 1 ] && variants+=("${variants[-1]} --activation-bits 8")
      for flags in "${variants[@]}"; do
        # shellcheck disable=SC2086 # the flags are words
        "$CARGO_TARGET_DIR/release/aiserve" serve --repo "$tmp/repo-$name" --addr 127.0.0.1:$port \
          --grpc-addr 127.0.0.1:0 $flags >"$tmp/aiserve.log" 2>&1 &
        pid=$!
        wait_ready "http://127.0.0.1:$port/v2/models/$name/ready"
        printf 'aiserve (%s): ' "$flags"
        python3 "$here/bench/generate_load.py" "127.0.0.1:$port" "$name" "$clients" $((clients == 1 ? 4 : 2)) 128 $mode
        stop
        if [ "$clients" = 1 ] && [ "$flags" = "--draft-tokens 0" ]; then
          # The model alone in the same minute, as the server decodes a greedy stream: what the
          # HTTP rate is compared with (this machine drifts by 10-25% over minutes).
          # Twice: greedy steps from a short prompt, and the same four requests as the client's
          # (their prompts, the prefix cache, 128 greedy tokens each).
          AISERVE_GGUF="$gguf" AISERVE_AS_SERVED=1 AISERVE_ARGMAX_ONLY=1 AISERVE_ONLY_BATCH=1 AISERVE_BATCHES=1 \
            RAYON_NUM_THREADS=2 "$bench_bin" | grep -E 'decode batch|as served' |
            sed 's/ aggregate.*//; s/^decode/  model only right after, greedy steps, decode/; s/^as served/  model only right after, as served/'
        fi
      done
    done
  done
done
