#!/usr/bin/env bash
# The device registry at city scale, as an operator meets it (release build, fresh processes,
# loopback, this machine):
#  (a) `urbis devices import` of DEVICES devices (CSV, generated secrets) into an empty store;
#  (b) `urbis devices add` with DEVICES registered (five runs, each a fresh process);
#  (c) how long a running server takes to serve a device added by another process;
#  (d) the server's memory (VmRSS, VmHWM) with DEVICES registered, before and after each of
#      them has reported once (HTTP batches of 10,000 with an ingest key).
# Targets (governance issue): (a) < 60 s for 1,000,000; (b) < 100 ms; (c) < 1 s; (d) < 500 MB.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
cd "$here/../.."
DEVICES=${DEVICES:-1000000}
work=$(mktemp -d /tmp/urbis-registry-bench.XXXXXX)
pid=
cleanup() {
  [ -n "$pid" ] && kill "$pid" 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT
cargo build --release --quiet
urbis=./target/release/urbis
store="$work/store"
now_ms() { date +%s%3N; }

echo "== $DEVICES devices, $(nproc) cores, store on $(df --output=source "$work" | tail -1)"
python3 - "$work/devices.csv" "$DEVICES" <<'PY'
import sys
path, n = sys.argv[1], int(sys.argv[2])
kinds = ["tracker", "meter", "sensor", "asset"]
layers = ["buses", "water_meters", "manholes", "streetlights"]
with open(path, "w") as f:
    f.write("id,layer,kind,interval\n")
    for i in range(n):
        f.write(f"nb-{i:07d},{layers[i % 4]},{kinds[i % 4]},{['1m','6h','1h','15m'][i % 4]}\n")
PY
t0=$(now_ms)
$urbis devices import "$work/devices.csv" --store "$store" --secrets-out "$work/secrets.csv" | tail -2
t1=$(now_ms)
echo "(a) devices import of $DEVICES: $(( t1 - t0 )) ms (target < 60000)"

for i in 1 2 3 4 5; do
  t0=$(now_ms)
  $urbis devices add "extra-$i" --layer buses --store "$store" >/dev/null
  t1=$(now_ms)
  echo "(b) devices add #$i with $(( DEVICES + i - 1 )) registered: $(( t1 - t0 )) ms (target < 100)"
done

key=$($urbis keys create --role admin --name bench --store "$store" 2>/dev/null)
ikey=$($urbis devices key bench --store "$store" | awk '/ik_/ {for (i=1;i<=NF;i++) if ($i ~ /^ik_/) {print $i; exit}}')
t0=$(now_ms)
$urbis serve --store "$store" --no-demo --bind 127.0.0.1:0 --coap-bind 127.0.0.1:0 \
  --rate-ingest 0 --rate-tiles 0 > "$work/serve.out" 2>&1 &
pid=$!
addr=
for _ in $(seq 1 600); do
  addr=$(grep -o 'http://127.0.0.1:[0-9]*' "$work/serve.out" | head -1 | sed 's#http://##') || true
  [ -n "$addr" ] && curl -sf "http://$addr/health" >/dev/null && break
  sleep 0.1
done
t1=$(now_ms)
echo "    server up with $(( DEVICES + 5 )) devices in $(( t1 - t0 )) ms"
rss() { awk '/VmRSS|VmHWM/ {printf "%s %d MB  ", $1, $2/1024}' "/proc/$pid/status"; echo; }
echo "(d) memory, registered, none reported: $(rss)"

for i in 1 2 3; do
  $urbis devices add "late-$i" --layer buses --store "$store" >/dev/null
  t0=$(now_ms)
  until curl -sf -H "Authorization: Bearer $key" "http://$addr/devices/late-$i" >/dev/null; do sleep 0.01; done
  t1=$(now_ms)
  echo "(c) a device added by the CLI served by the running server after $(( t1 - t0 )) ms (target < 1000)"
done

t0=$(now_ms)
python3 - "$addr" "$ikey" "$DEVICES" <<'PY'
import http.client, json, sys
addr, key, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
host, port = addr.split(":")
c = http.client.HTTPConnection(host, int(port), timeout=120)
batch = 10000
for start in range(0, n, batch):
    recs = []
    for i in range(start, min(n, start + batch)):
        a = i * 0.6180339887
        recs.append({"device": f"nb-{i:07d}", "lon": round(24.80 + (a % 1) * 0.35, 6),
                     "lat": round(60.12 + ((a * 7) % 1) * 0.15, 6), "battery": 3.6})
    body = json.dumps(recs)
    c.request("POST", "/ingest", body, {"Authorization": "Bearer " + key,
                                        "Content-Type": "application/json"})
    r = c.getresponse()
    j = json.loads(r.read())
    if r.status != 200 or j.get("accepted") != len(recs):
        sys.exit(f"batch at {start}: {r.status} {j}")
PY
t1=$(now_ms)
echo "    $DEVICES reports (one per device) acknowledged in $(( t1 - t0 )) ms"
sleep 2
echo "(d) memory, every device reported once: $(rss)"
curl -sf -H "Authorization: Bearer $key" "http://$addr/devices?layer=buses&state=live" \
  | python3 -c 'import json,sys; j=json.load(sys.stdin); print("    live buses:", len(j["devices"]))'
echo "(d) memory after a /devices listing: $(rss)"
