#!/usr/bin/env bash
# Sustained device reports per second into `urbis serve`, fsync on (group commit: a report is
# acknowledged only after fdatasync), on this machine, loopback only, every run bounded:
#  (a) CoAP: confirmable reports from thousands of simulated devices (examples/ingest_load.rs),
#  (b) HTTP: batches of compact records with an ingest key,
#  (c) report-to-stream latency p50/p99 at a fixed rate (10 k reports/s by default),
#  (d) Redis (Debian redis-server) GEOADD on the same machine with appendfsync always and
#      everysec, by redis-benchmark, pipelined and not, for comparison.
# Needs: redis-server redis-tools (apt; installed here if missing).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
cd "$here/../.."
SECONDS_RUN=${SECONDS_RUN:-10}
DEVICES=${DEVICES:-5000}
RATE=${RATE:-10000}
work=$(mktemp -d /tmp/urbis-ingest-bench.XXXXXX)
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  rm -rf "$work"
}
trap cleanup EXIT

need=()
for p in redis-server redis-tools; do dpkg -s "$p" >/dev/null 2>&1 || need+=("$p"); done
if [ "${#need[@]}" -gt 0 ]; then apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null; fi

cargo build --release --quiet --example ingest_load
cargo build --release --quiet
load=./target/release/examples/ingest_load
echo "== $DEVICES simulated devices, ${SECONDS_RUN}s per run, $(nproc) cores; store on $(df --output=source "$work" | tail -1)"

start_server() {
  rm -rf "$work/store"
  $load setup "$work/store" "$DEVICES" >/dev/null
  # The stream subscriber of (c) needs an API key; the HTTP load comes from one address, so
  # the per-address ingest limit is off for the bench.
  URBIS_API_KEY=$(./target/release/urbis keys create --role admin --name bench --store "$work/store" 2>/dev/null)
  export URBIS_API_KEY
  ./target/release/urbis serve --store "$work/store" --no-demo --bind 127.0.0.1:0 --coap-bind 127.0.0.1:0 --rate-ingest 0 \
    > "$work/serve.out" 2> "$work/serve.err" &
  pids+=($!)
  for _ in $(seq 100); do grep -q listening "$work/serve.out" 2>/dev/null && break; sleep 0.1; done
  http=$(sed -n 's#.*http://\([0-9.:]*\) .*#\1#p' "$work/serve.out")
  coap=$(sed -n 's#.*coap on udp://\([0-9.:]*\).*#\1#p' "$work/serve.out")
}
stop_server() { kill "${pids[-1]}" 2>/dev/null || true; wait "${pids[-1]}" 2>/dev/null || true; }

echo "== (a) urbis CoAP, confirmable, fsync per group"
start_server
$load coap "$coap" "$DEVICES" "$SECONDS_RUN" 32 32 | tee "$work/coap.txt"
stop_server

echo "== (b) urbis HTTP batches (1000 records), fsync per group"
start_server
$load http "$http" "$DEVICES" "$SECONDS_RUN" 8 1000 | tee "$work/http.txt"
stop_server

echo "== (c) report-to-stream latency at $RATE reports/s (CoAP)"
start_server
$load latency "$http" "$coap" "$DEVICES" "$RATE" "$SECONDS_RUN" | tee "$work/latency.txt"
stop_server

echo "== (d) Redis GEOADD (redis-benchmark, 50 clients)"
redis_run() {
  local mode=$1 pipeline=$2
  mkdir -p "$work/redis-$mode"
  redis-server --port 0 --unixsocket "$work/redis.sock" --dir "$work/redis-$mode" --appendonly yes \
    --appendfsync "$mode" --save '' --daemonize no > "$work/redis-$mode.log" 2>&1 &
  local rp=$!
  pids+=($rp)
  for _ in $(seq 50); do [ -S "$work/redis.sock" ] && break; sleep 0.1; done
  local n=$(( pipeline > 1 ? 2000000 : 300000 ))
  local rps
  rps=$(redis-benchmark -s "$work/redis.sock" -q -c 50 -P "$pipeline" -n "$n" -r "$DEVICES" \
    GEOADD fleet 24.9384 60.1699 dev:__rand_int__ | tr '\r' '\n' | grep -o '[0-9.]* requests per second' | tail -1 | cut -d' ' -f1)
  echo "redis appendfsync=$mode pipeline=$pipeline geoadd_per_s=$rps"
  kill "$rp" 2>/dev/null || true; wait "$rp" 2>/dev/null || true
  rm -f "$work/redis.sock"
}
for mode in always everysec; do
  for p in 1 16; do redis_run "$mode" "$p"; done
done | tee "$work/redis.txt"

echo "== summary"
python3 - "$work" <<'PY'
import re, sys
w = sys.argv[1]
def val(f, k):
    m = re.search(rf"{k}=([\d.]+)", open(f"{w}/{f}").read())
    return float(m[1]) if m else float("nan")
c, h = val("coap.txt", "reports_per_s"), val("http.txt", "reports_per_s")
p50, p99 = val("latency.txt", "p50_ms"), val("latency.txt", "p99_ms")
red = {}
for line in open(f"{w}/redis.txt"):
    m = re.search(r"appendfsync=(\w+) pipeline=(\d+) geoadd_per_s=([\d.]+)", line)
    if m:
        red[(m[1], int(m[2]))] = float(m[3])
print(f"urbis CoAP {c:.0f} reports/s (target >= 50000) | HTTP batches {h:.0f} reports/s (target >= 200000)")
print(f"report-to-stream at the fixed rate: p50 {p50:.2f} ms, p99 {p99:.2f} ms (target p99 < 50 ms)")
for (mode, p), v in sorted(red.items()):
    print(f"redis GEOADD appendfsync={mode} pipeline={p}: {v:.0f}/s  (urbis CoAP/redis {c/v:.2f}x, HTTP/redis {h/v:.2f}x)")
PY
