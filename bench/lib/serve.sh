# Sourced by the bench scripts: waits for an `aiserve serve` started in the background.
#
#   serve_ready LOG PID MODEL...   sets `addr` to its HTTP address once every MODEL answers
#                                  KServe v2's ready check; prints the log and fails after 60 s
#                                  or when the server exits first.
serve_ready() {
  local log=$1 pid=$2 m ok
  shift 2
  addr=
  for _ in $(seq 600); do
    kill -0 "$pid" 2>/dev/null || break
    addr=$(sed -n 's/.*aiserve listening addr=\([0-9.:]*\).*/\1/p' "$log" | head -1)
    if [ -n "$addr" ]; then
      ok=1
      for m in "$@"; do
        curl -sf "http://$addr/v2/models/$m/ready" >/dev/null 2>&1 || { ok=; break; }
      done
      [ -n "$ok" ] && return 0
    fi
    sleep 0.1
  done
  cat "$log" >&2
  echo "aiserve serve did not get ready (models: $*)" >&2
  return 1
}
