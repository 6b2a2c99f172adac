#!/usr/bin/env bash
# Three NATS JetStream nodes, three urbis servers in cluster mode and HAProxy in front, all
# on this machine: http://127.0.0.1:8080 is the cluster. Ctrl-C stops everything.
#
#   examples/cluster/run.sh            # state in ./urbis-cluster (kept between runs)
#   URBIS=target/release/urbis WORK=/tmp/c examples/cluster/run.sh
#
# Server A imports the demo layers once; B and C fetch them from the cluster. Devices can
# report over CoAP to any server (udp 5691, 5692, 5693) or over HTTP through HAProxy.
# Needs Debian's nats-server and haproxy (apt install nats-server haproxy).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
work=${WORK:-$PWD/urbis-cluster}
if [ -z "${URBIS:-}" ]; then
  (cd "$root" && cargo build --release --quiet)
  URBIS=$root/target/release/urbis
fi
for tool in nats-server haproxy; do
  command -v "$tool" >/dev/null || { echo "$tool is missing: apt install nats-server haproxy" >&2; exit 1; }
done
mkdir -p "$work"
pids=()
stop() { kill "${pids[@]}" 2>/dev/null || true; wait 2>/dev/null || true; }
trap stop EXIT INT TERM

for i in 1 2 3; do
  (cd "$work" && exec nats-server -c "$here/nats-$i.conf") > "$work/nats-$i.log" 2>&1 &
  pids+=($!)
done
echo "== NATS on 4222-4224 (logs in $work/nats-*.log)"

urls=nats://127.0.0.1:4222,nats://127.0.0.1:4223,nats://127.0.0.1:4224
for i in 1 2 3; do
  name=$(printf "\\x$(printf %x $((96 + i)))")   # a, b, c
  demo=--no-demo
  [ "$i" = 1 ] && demo=
  "$URBIS" serve --store "$work/store-$name" $demo --cluster "$urls" \
    --bind 127.0.0.1:$((8080 + i)) --coap-bind 127.0.0.1:$((5690 + i)) --coaps-bind 127.0.0.1:$((5693 + i)) \
    > "$work/urbis-$name.log" 2>&1 &
  pids+=($!)
done
for port in 8081 8082 8083; do
  for _ in $(seq 600); do
    curl -fs "http://127.0.0.1:$port/ready" >/dev/null 2>&1 && break
    sleep 0.1
  done
done
echo "== urbis on 8081 8082 8083 (logs in $work/urbis-*.log)"

haproxy -db -f "$here/haproxy.cfg" > "$work/haproxy.log" 2>&1 &
pids+=($!)
echo "== HAProxy on http://127.0.0.1:8080: the cluster. An admin key for every server:"
echo "   $URBIS keys create --role admin --name me --store $work/store-a"
wait -n "${pids[@]}"
