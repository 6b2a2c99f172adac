#!/usr/bin/env bash
# What security costs a user: cached tile serving over HTTP (wrk, loopback) from `urbis serve`
# with a policy file, a restricted layer, an API key on every request (SHA-256 check, role,
# layer rule with an attribute allow-list, its view in the cache key) and the rate limiter on
# (at a rate it never reaches), against the same server and the same tiles of the same data
# with no policy, a public layer and no key; alternating runs, same session; prints the ratio.
# Needs: wrk (apt; installed here if missing).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
cd "$here/../.."
DURATION=${DURATION:-8}
ROUNDS=${ROUNDS:-3}
work=$(mktemp -d /tmp/urbis-security-bench.XXXXXX)
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  rm -rf "$work"
}
trap cleanup EXIT
dpkg -s wrk >/dev/null 2>&1 || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq wrk >/dev/null; }
cargo build --release --quiet
bin=./target/release/urbis
gunzip -c tests/data/montevideo/montevideo.geojson.gz > "$work/montevideo.geojson"
$bin import "$work/montevideo.geojson" --store "$work/store" --layer open --classification public >/dev/null
$bin import "$work/montevideo.geojson" --store "$work/store" --layer guarded --classification restricted >/dev/null
# The rule's allow-list names every field: the tiles are the same bytes as the open layer's,
# so the runs differ only by the security work (stripping fields would make smaller tiles
# and a faster run).
fields=$(./target/release/urbis layers --store "$work/store" --json | python3 -c "import json,sys; ls=json.load(sys.stdin); ls=ls if isinstance(ls,list) else ls['layers']; print(json.dumps(sorted(next(l for l in ls if l['name']=='open')['fields'])))")
cat > "$work/policy.toml" <<TOML
[roles.analyst]
clearance = "restricted"
rights = ["tiles"]
[[roles.analyst.layers]]
layer = "guarded"
attributes = $fields
TOML
key=$($bin keys create --role analyst --name bench --store "$work/store" 2>/dev/null)
high=1000000
$bin serve --store "$work/store" --no-demo --bind 127.0.0.1:18095 --coap-bind 127.0.0.1:0 --rate-tiles $high > "$work/a.log" 2>&1 &
pids+=($!)
$bin serve --store "$work/store" --no-demo --bind 127.0.0.1:18096 --coap-bind 127.0.0.1:0 --rate-tiles $high \
  --policy "$work/policy.toml" > "$work/b.log" 2>&1 &
pids+=($!)
for port in 18095 18096; do
  for _ in $(seq 100); do curl -sf "http://127.0.0.1:$port/health" >/dev/null && break; sleep 0.1; done
done
for layer in open guarded; do
  awk -v l=$layer 'NF {print "/tiles/" l "/" $1 ".mvt"}' benches/peers/montevideo_tiles.txt > "$work/$layer.txt"
  cat > "$work/$layer.lua" <<LUA
local paths = {}
for line in io.lines("$work/$layer.txt") do paths[#paths + 1] = line end
local i = 0
request = function()
  i = i % #paths + 1
  return wrk.format("GET", paths[i])
end
LUA
done
# Both answer every tile (and the guarded one only with the key).
code=$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:18096/tiles/guarded/$(head -1 benches/peers/montevideo_tiles.txt).mvt")
[ "$code" = 404 ] || { echo "the guarded layer answered $code without a key"; exit 1; }
auth=(-H "Authorization: Bearer $key")
wrk -t2 -c64 -d2s -s "$work/open.lua" http://127.0.0.1:18095 >/dev/null
wrk -t2 -c64 -d2s "${auth[@]}" -s "$work/guarded.lua" http://127.0.0.1:18096 >/dev/null
echo "== cached tiles, wrk -t2 -c64 -d${DURATION}s, $ROUNDS rounds, $(nproc) cores"
for r in $(seq "$ROUNDS"); do
  a=$(wrk -t2 -c64 -d"${DURATION}s" -s "$work/open.lua" http://127.0.0.1:18095 | awk '/Requests\/sec/ {print $2}')
  b=$(wrk -t2 -c64 -d"${DURATION}s" "${auth[@]}" -s "$work/guarded.lua" http://127.0.0.1:18096 | tee "$work/wrk-b.txt" | awk '/Requests\/sec/ {print $2}')
  grep -q "Non-2xx" "$work/wrk-b.txt" && { echo "the keyed run got errors:"; cat "$work/wrk-b.txt"; exit 1; }
  echo "round $r: no policy $a req/s | policy + key + rule $b req/s | ratio $(echo "$b / $a" | bc -l | cut -c1-5)"
  echo "$a $b" >> "$work/all.txt"
done
awk '{a += $1; b += $2} END {printf "mean: no policy %.0f req/s, policy + key %.0f req/s, overhead %.1f %%\n", a/NR, b/NR, (1 - b/a) * 100}' "$work/all.txt"
