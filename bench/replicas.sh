#!/usr/bin/env bash
# Three aiserve replicas behind nginx (Debian's package, .ci/install-nginx.sh), all reading one
# repository on S3 (moto's server, bench/s3_server.sh), on loopback. `aiserve bench` keeps
# CONCURRENCY /classify requests in flight through nginx while, phase by phase:
#   steady   nothing happens (the baseline);
#   publish  a new digits version is uploaded to the bucket; every replica mirrors it and swaps;
#   rolling  each replica in turn gets SIGTERM (readiness 503 and still serving for the drain
#            delay, then in-flight requests finish), exits, and is started again;
#   kill     one replica gets SIGKILL;
#   after    the two survivors carry everything.
# Reports requests, failures and p99 per phase (and writes them to $OUT as JSON lines),
# and the upstream errors nginx met and retried on another replica (its error log).
# Pass: no failed request in steady, publish, rolling and after; in kill, no more failures
# than requests that can be in flight (CONCURRENCY).
#   bench/replicas.sh [--quick]       (--quick: shorter phases, as CI runs it)
#
# Without `non_idempotent` in nginx's proxy_next_upstream, a POST that reached a replica is
# never replayed: the kill phase then fails exactly the requests in flight on the killed
# process, and a rolling restart can fail the odd request that raced a closing keep-alive
# connection or the listener's accept queue (REPLAY=0 runs it that way; see BENCHMARKS.md).
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
quick=0; [ "${1:-}" = --quick ] && quick=1
conc="${CONCURRENCY:-32}"
if [ $quick = 1 ]; then steady=3; publish=8; rolling=20; kill_s=4; after=3; drain_ms=1000
else steady=10; publish=15; rolling=40; kill_s=10; after=10; drain_ms=2000; fi
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/aiserve-target}"
out="${OUT:-/dev/null}"
(cd "$here" && cargo build --release -q)
bin="$CARGO_TARGET_DIR/release/aiserve"
"$here/.ci/install-nginx.sh" >/dev/null
nginx_bin=$(command -v nginx || echo /usr/sbin/nginx)
py=$("$here/bench/s3_server.sh" python)
tmp=$(mktemp -d)
chmod 755 "$tmp"
pids=(); moto=""; ngx=""
cleanup() {
  for p in "${pids[@]}" $moto; do { kill -9 "$p" && wait "$p"; } 2>/dev/null || true; done
  [ -n "$ngx" ] && kill "$ngx" 2>/dev/null || true
  [ -n "${KEEP:-}" ] && echo "kept $tmp" >&2 || rm -rf "$tmp"
}
trap cleanup EXIT
free_port() { "$py" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

# The repository: digits version 1 in s3://models/prod.
s3_port=$(free_port)
"$here/bench/s3_server.sh" serve "$s3_port" >"$tmp/moto.log" 2>&1 &
moto=$!
export AWS_ACCESS_KEY_ID=bench AWS_SECRET_ACCESS_KEY=bench AWS_REGION=us-east-1 \
  AWS_ENDPOINT_URL="http://127.0.0.1:$s3_port" AWS_ALLOW_HTTP=true
upload() {  # upload VERSION
  "$py" - "$here/models/digits/1" "$1" <<'PY'
import pathlib, sys, time, boto3
src, version = pathlib.Path(sys.argv[1]), sys.argv[2]
s3 = boto3.client("s3")
for _ in range(100):
    try:
        s3.head_bucket(Bucket="models") if version != "1" else s3.create_bucket(Bucket="models")
        break
    except Exception:
        time.sleep(0.1)
for f in sorted(src.iterdir()):
    s3.put_object(Bucket="models", Key=f"prod/digits/{version}/{f.name}", Body=f.read_bytes())
PY
}
upload 1

# Three replicas, each with its own mirror directory.
ports=()
start() {  # start INDEX (the port is kept across restarts)
  local i=$1
  "$bin" serve --repo s3://models/prod --repo-cache "$tmp/mirror$i" --addr "127.0.0.1:${ports[$i]}" --grpc-addr off \
    --poll-interval-ms 500 --drain-delay-ms "$drain_ms" >>"$tmp/replica$i.log" 2>&1 &
  pids[$i]=$!
}
ready() {  # ready INDEX [VERSION]
  local path=/v2/health/ready
  [ -n "${2:-}" ] && path=/v2/models/digits/versions/$2/ready
  curl -sf -o /dev/null "http://127.0.0.1:${ports[$1]}$path"
}
wait_ready() {  # wait_ready INDEX [VERSION]
  for _ in $(seq 600); do ready "$@" && return 0; sleep 0.1; done
  cat "$tmp/replica$1.log" >&2; echo "replica $1 not ready" >&2; exit 1
}
for i in 0 1 2; do ports[$i]=$(free_port); start $i; done
for i in 0 1 2; do wait_ready $i 1; done

# nginx in front, open source and so without active health checks: a replica that refuses a
# connection, resets one or answers 503 is left out for fail_timeout, and the request goes to the
# next one. Inference requests have no side effects, so POSTs that reached a replica which died
# before answering are replayed too (`non_idempotent`); the error log counts them per phase.
lb=$(free_port)
mkdir -p "$tmp/nginx" && chmod 777 "$tmp/nginx"
replay=" non_idempotent"; [ "${REPLAY:-1}" = 0 ] && replay=""
cat >"$tmp/nginx/nginx.conf" <<CONF
worker_processes 1;
pid $tmp/nginx/nginx.pid;
error_log $tmp/nginx/error.log error;
events { worker_connections 1024; }
http {
  access_log off;
  client_body_temp_path $tmp/nginx/body;
  proxy_temp_path $tmp/nginx/proxy;
  upstream aiserve {
    server 127.0.0.1:${ports[0]} max_fails=1 fail_timeout=1s;
    server 127.0.0.1:${ports[1]} max_fails=1 fail_timeout=1s;
    server 127.0.0.1:${ports[2]} max_fails=1 fail_timeout=1s;
    keepalive 64;
  }
  server {
    listen 127.0.0.1:$lb;
    location / {
      proxy_pass http://aiserve;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_next_upstream error timeout http_502 http_503$replay;
      proxy_next_upstream_tries 3;
    }
  }
}
CONF
"$nginx_bin" -p "$tmp/nginx" -c "$tmp/nginx/nginx.conf" -g 'daemon off;' &
ngx=$!
for _ in $(seq 100); do curl -sf -o /dev/null "http://127.0.0.1:$lb/v2/health/live" && break; sleep 0.1; done
upstream_errors() { grep -c '\[error\]' "$tmp/nginx/error.log" 2>/dev/null || true; }

failed=0
phase_start() {  # phase_start NAME SECONDS: the load runs in the background
  name=$1
  errors_before=$(upstream_errors)
  "$bin" bench --url "http://127.0.0.1:$lb" --protocol classify --concurrency "$conc" --duration "${2}s" \
    --warmup 0 --json "$tmp/$name.json" >/dev/null 2>"$tmp/$name.err" &
  load=$!
}
phase_end() {  # phase_end MAX_FAILURES
  wait "$load" || { cat "$tmp/$name.err" >&2; exit 1; }
  local replayed=$(( $(upstream_errors) - errors_before ))
  "$py" - "$tmp/$name.json" "$name" "$1" "$out" "$replayed" <<'PY' || failed=1
import json, sys
path, name, allowed, out, replayed = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4], int(sys.argv[5])
r = json.load(open(path))["levels"][0]
fails = ", ".join(f"{k}: {n}" for k, n in r["failures"]) or "-"
ok = r["errors"] <= allowed
print(f"| {name} | {r['seconds']:.1f} | {r['requests']} | {r['errors']} ({fails}) | {replayed} | {r['throughput']:.0f} | {r['p50_ms']:.1f} | {r['p99_ms']:.1f} | {'ok' if ok else f'FAIL: more than {allowed}'} |")
with open(out, "a") as f:
    f.write(json.dumps({"phase": name, "upstream_errors": replayed, **r}) + "\n")
sys.exit(0 if ok else 1)
PY
}

echo "aiserve replicas: 3 x aiserve (--drain-delay-ms $drain_ms) behind nginx (proxy_next_upstream ...$replay) $("$nginx_bin" -v 2>&1 | sed 's/.*\///'), concurrency $conc, /classify"
echo "| phase | seconds | requests | failed | upstream errors (retried by nginx) | req/s | p50 ms | p99 ms | verdict |"
echo "|---|---|---|---|---|---|---|---|---|"
phase_start steady $steady; phase_end 0

phase_start publish $publish
sleep 1; upload 2
for i in 0 1 2; do wait_ready $i 2; done
phase_end 0

phase_start rolling $rolling
sleep 1
for i in 0 1 2; do
  kill -TERM "${pids[$i]}"
  wait "${pids[$i]}" || { echo "replica $i exited non-zero after SIGTERM" >&2; failed=1; }
  start $i
  wait_ready $i 2
  # nginx left it out for fail_timeout (1 s) after its listener closed; taking the next one out
  # before it is back in rotation could leave none (Kubernetes' minReadySeconds, in effect).
  sleep 1.5
done
phase_end 0

phase_start kill $kill_s
sleep 1; { kill -9 "${pids[0]}" && wait "${pids[0]}"; } 2>/dev/null || true
phase_end "$conc"
phase_start after $after; phase_end 0
[ $failed = 0 ] && echo "replicas: pass" || { echo "replicas: FAIL" >&2; exit 1; }
