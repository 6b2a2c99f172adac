#!/usr/bin/env bash
# The viewer under a moving fleet: registers DEVICES devices (default 5,000) on a fresh store
# with the demo layers, starts `urbis serve`, and runs fleet.mjs (headless Debian Chromium,
# Playwright from tests/browser: `npm ci --prefix tests/browser` first, as .ci/run does).
# RATE reports/s (default 1,000) for SECONDS_RUN s (default 15) per view.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
cd "$here/../.."
export DEVICES=${DEVICES:-5000} RATE=${RATE:-1000} SECONDS_RUN=${SECONDS_RUN:-15}
work=$(mktemp -d /tmp/urbis-fleet-bench.XXXXXX)
pid=
cleanup() { [ -n "$pid" ] && kill "$pid" 2>/dev/null; rm -rf "$work"; }
trap cleanup EXIT
cargo build --release --quiet --example ingest_load
cargo build --release --quiet
./target/release/examples/ingest_load setup "$work/store" "$DEVICES" >/dev/null
./target/release/urbis import data/helsinki/helsinki_layers.gpkg --store "$work/store" --classification public >/dev/null 2>&1
# The page signs in with an operator's key (the fleet's live layer is internal).
URBIS_API_KEY=$(./target/release/urbis keys create --role operator --name bench --store "$work/store" 2>/dev/null)
export URBIS_API_KEY
./target/release/urbis serve --store "$work/store" --no-demo --bind 127.0.0.1:0 --coap-bind 127.0.0.1:0 --rate-ingest 0 \
  > "$work/serve.out" 2> "$work/serve.err" &
pid=$!
for _ in $(seq 100); do grep -q listening "$work/serve.out" 2>/dev/null && break; sleep 0.1; done
url=$(sed -n 's#.*\(http://[0-9.:]*\) .*#\1#p' "$work/serve.out")
echo "== $DEVICES devices, $RATE reports/s, ${SECONDS_RUN}s per view, $(nproc) cores (server, load and browser share them)"
URBIS_URL=$url node benches/viewer/fleet.mjs
