#!/usr/bin/env bash
# Scale-out on one machine, same run, same load generator (examples/ingest_load.rs):
#  (a) device reports/s over CoAP (confirmable): one `urbis serve` with its local fsynced log,
#      then three servers in cluster mode on a three-node NATS JetStream cluster (Debian's
#      nats-server, stream replicas 3), the load spread over the three servers' CoAP ports;
#  (b) report-to-stream latency p50/p99 at a fixed rate: CoAP to one server, /stream read from
#      another (in the cluster: A to C, through the stream);
#  (c) cached tiles/s with wrk: one server directly, and the three through HAProxy (Debian).
# Everything on loopback of this machine: the three servers, three NATS nodes and HAProxy
# share its cores with the load generators, so the cluster figures are a floor, not what
# three hosts give (see the README's scale-out section).
# Needs: nats-server haproxy wrk (apt; installed here if missing).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
cd "$here/../.."
SECONDS_RUN=${SECONDS_RUN:-10}
DEVICES=${DEVICES:-3000}
RATE=${RATE:-2000}
DURATION=${DURATION:-10}
work=$(mktemp -d /tmp/urbis-cluster-bench.XXXXXX)
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

need=()
for p in nats-server haproxy wrk; do dpkg -s "$p" >/dev/null 2>&1 || need+=("$p"); done
if [ "${#need[@]}" -gt 0 ]; then apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null; fi

cargo build --release --quiet --example ingest_load
cargo build --release --quiet
urbis=./target/release/urbis
load=./target/release/examples/ingest_load
echo "== $DEVICES devices, ${SECONDS_RUN}s per run, $(nproc) cores"

addr_of() { sed -n 's#.*http://\([0-9.:]*\) .*#\1#p' "$1"; }
coap_of() { sed -n 's#.*coap on udp://\([0-9.:]*\).*#\1#p' "$1"; }
wait_line() { for _ in $(seq 600); do grep -q listening "$1" 2>/dev/null && return; sleep 0.1; done; echo "no listening line in $1" >&2; cat "${1%.out}.err" >&2; exit 1; }
wait_ready() { for _ in $(seq 600); do curl -fs "http://$1/ready" >/dev/null 2>&1 && return; sleep 0.1; done; echo "$1 never ready" >&2; exit 1; }

# --- one server, local fsynced log --------------------------------------------------------
$load setup "$work/single" "$DEVICES" >/dev/null
key=$($urbis keys create --role admin --name bench --store "$work/single" 2>/dev/null)
$urbis serve --store "$work/single" --bind 127.0.0.1:0 --coap-bind 127.0.0.1:0 --coaps-bind 127.0.0.1:0 \
  --rate-ingest 0 --rate-tiles 0 > "$work/single.out" 2> "$work/single.err" &
pids+=($!); single_pid=$!
wait_line "$work/single.out"
s_http=$(addr_of "$work/single.out"); s_coap=$(coap_of "$work/single.out")
echo "== (a) single server: CoAP reports/s"
$load coap "$s_coap" "$DEVICES" "$SECONDS_RUN" 32 32 | tee "$work/single-coap.txt"
echo "== (b) single server: report-to-stream at $RATE reports/s"
URBIS_API_KEY=$key $load latency "$s_http" "$s_coap" "$DEVICES" "$RATE" "$SECONDS_RUN" | tee "$work/single-latency.txt"
tile_paths() {
  cat > "$work/paths.lua" <<'LUA'
local paths = {}
for x = 9320, 9331 do for y = 4736, 4745 do paths[#paths + 1] = "/tiles/helsinki_lines,helsinki_multipolygons/14/" .. x .. "/" .. y .. ".mvt" end end
local i = 0
request = function()
  i = i % #paths + 1
  return wrk.format("GET", paths[i], { ["Authorization"] = "Bearer " .. os.getenv("KEY") })
end
LUA
}
tile_paths
echo "== (c) single server: cached tiles/s (wrk -t2 -c64)"
KEY=$key wrk -t2 -c64 -d2s -s "$work/paths.lua" "http://$s_http" >/dev/null
KEY=$key wrk -t2 -c64 -d"${DURATION}s" -s "$work/paths.lua" "http://$s_http" | tee "$work/single-wrk.txt" | grep -E "Requests/sec|Non-2xx" || true
kill "$single_pid"; wait "$single_pid" 2>/dev/null || true

# --- three servers, three NATS nodes, HAProxy -----------------------------------------------
routes=""
for i in 1 2 3; do routes="$routes${routes:+, }nats-route://127.0.0.1:$((16221 + i))"; done
urls=""
for i in 1 2 3; do
  mkdir -p "$work/nats-$i"
  cat > "$work/nats-$i.conf" <<EOF
server_name: n$i
listen: 127.0.0.1:$((14221 + i))
jetstream { store_dir: "$work/nats-$i" }
cluster { name: bench, listen: 127.0.0.1:$((16221 + i)), routes: [$routes] }
EOF
  nats-server -c "$work/nats-$i.conf" > "$work/nats-$i.log" 2>&1 &
  pids+=($!)
  urls="$urls${urls:+,}nats://127.0.0.1:$((14221 + i))"
done
$load setup "$work/store-a" "$DEVICES" >/dev/null
key=$($urbis keys create --role admin --name bench --store "$work/store-a" 2>/dev/null)
http=(); coap=()
for n in a b c; do
  demo=--no-demo
  [ "$n" = a ] && demo=
  $urbis serve --store "$work/store-$n" $demo --cluster "$urls" --bind 127.0.0.1:0 --coap-bind 127.0.0.1:0 \
    --coaps-bind 127.0.0.1:0 --rate-ingest 0 --rate-tiles 0 > "$work/$n.out" 2> "$work/$n.err" &
  pids+=($!)
  wait_line "$work/$n.out"
  http+=("$(addr_of "$work/$n.out")"); coap+=("$(coap_of "$work/$n.out")")
done
for h in "${http[@]}"; do wait_ready "$h"; done
# Every server knows every device (the registry rows come through the cluster).
for h in "${http[@]}"; do
  for _ in $(seq 600); do
    [ "$(curl -s -o /dev/null -w '%{http_code}' -H "Authorization: Bearer $key" "http://$h/devices/dev-$((DEVICES - 1))")" = 200 ] && break
    sleep 0.1
  done
done
lb_port=18480
cat > "$work/haproxy.cfg" <<EOF
global
  maxconn 4000
defaults
  mode http
  timeout connect 2s
  timeout client 1h
  timeout server 30s
frontend urbis
  bind 127.0.0.1:$lb_port
  default_backend api
backend api
  balance roundrobin
  option httpchk
  http-check send meth GET uri /ready
  server a ${http[0]} check inter 1s
  server b ${http[1]} check inter 1s
  server c ${http[2]} check inter 1s
EOF
haproxy -db -f "$work/haproxy.cfg" > "$work/haproxy.log" 2>&1 &
pids+=($!)
sleep 2.5   # the first health checks

echo "== (a) cluster of three: CoAP reports/s, one load generator per server"
loads=()
for i in 0 1 2; do
  $load coap "${coap[$i]}" "$DEVICES" "$SECONDS_RUN" 11 32 > "$work/cluster-coap-$i.txt" &
  loads+=($!)
done
wait "${loads[@]}"
cat "$work"/cluster-coap-*.txt
echo "== (b) cluster: report-to-stream at $RATE reports/s, CoAP to A, /stream on C"
URBIS_API_KEY=$key $load latency "${http[2]}" "${coap[0]}" "$DEVICES" "$RATE" "$SECONDS_RUN" | tee "$work/cluster-latency.txt"
echo "== (c) cluster: cached tiles/s through HAProxy (wrk -t2 -c64)"
KEY=$key wrk -t2 -c64 -d2s -s "$work/paths.lua" "http://127.0.0.1:$lb_port" >/dev/null
KEY=$key wrk -t2 -c64 -d"${DURATION}s" -s "$work/paths.lua" "http://127.0.0.1:$lb_port" | tee "$work/cluster-wrk.txt" | grep -E "Requests/sec|Non-2xx" || true

echo "== summary"
python3 - "$work" <<'PY'
import glob, re, sys
w = sys.argv[1]
def val(text, k):
    m = re.search(rf"{k}=([\d.]+)", text)
    return float(m[1]) if m else float("nan")
def rps(f):
    m = re.search(r"Requests/sec:\s*([\d.]+)", open(f).read())
    return float(m[1]) if m else float("nan")
single = val(open(f"{w}/single-coap.txt").read(), "reports_per_s")
cluster = sum(val(open(f).read(), "reports_per_s") for f in glob.glob(f"{w}/cluster-coap-*.txt"))
sl, cl = open(f"{w}/single-latency.txt").read(), open(f"{w}/cluster-latency.txt").read()
st, ct = rps(f"{w}/single-wrk.txt"), rps(f"{w}/cluster-wrk.txt")
print(f"reports/s: single {single:.0f} | cluster of 3 {cluster:.0f} ({cluster / single:.2f}x)")
print(f"report-to-stream: single p50 {val(sl, 'p50_ms'):.2f} ms p99 {val(sl, 'p99_ms'):.2f} ms | "
      f"cluster (A to C) p50 {val(cl, 'p50_ms'):.2f} ms p99 {val(cl, 'p99_ms'):.2f} ms")
print(f"cached tiles/s: single direct {st:.0f} | three through HAProxy {ct:.0f} ({ct / st:.2f}x)")
PY
