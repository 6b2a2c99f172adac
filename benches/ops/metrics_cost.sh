#!/usr/bin/env bash
# What metrics cost on cached tile serving, same machine, same run, same store: two servers,
# one with metrics (the default) and one with --no-metrics, taking turns under wrk over the
# same fixed Montevideo tiles (benches/peers/montevideo_tiles.txt, all from the cache), ROUNDS
# rounds of DURATION seconds each; prints requests/s of every run, the medians and the cost
# (the median of the rounds' paired ratios).
# The issue's bound: at most 3 %. Needs wrk (Debian) and curl.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
cd "$here/../.."
DURATION=${DURATION:-8}
ROUNDS=${ROUNDS:-5}
work=$(mktemp -d /tmp/urbis-metrics-bench.XXXXXX)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; rm -rf "$work"; }
trap cleanup EXIT
command -v wrk >/dev/null || { echo "wrk not found: apt-get install wrk" >&2; exit 1; }
cargo build --release --quiet
gunzip -c tests/data/montevideo/montevideo.geojson.gz > "$work/montevideo.geojson"
./target/release/urbis import "$work/montevideo.geojson" --store "$work/store" --layer montevideo --classification public >/dev/null
# One store each: a store's device log is written by one server at a time.
cp -r "$work/store" "$work/store-off"
# The per-address tile limit is off: wrk is one address.
./target/release/urbis serve --store "$work/store" --no-demo --bind 127.0.0.1:18190 --coap-bind 127.0.0.1:0 --coaps-bind 127.0.0.1:0 --rate-tiles 0 > "$work/on.log" 2>&1 &
pids+=($!)
./target/release/urbis serve --store "$work/store-off" --no-demo --bind 127.0.0.1:18191 --coap-bind 127.0.0.1:0 --coaps-bind 127.0.0.1:0 --rate-tiles 0 --no-metrics > "$work/off.log" 2>&1 &
pids+=($!)
for port in 18190 18191; do
  for _ in $(seq 100); do curl -sf "http://127.0.0.1:$port/health" >/dev/null && break; sleep 0.1; done
done
paths=()
while read -r t; do
  [ -n "$t" ] || continue
  code=$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:18190/tiles/montevideo/$t.mvt")
  [ "$code" = 200 ] && paths+=("/tiles/montevideo/$t.mvt")
done < benches/peers/montevideo_tiles.txt
printf '%s\n' "${paths[@]}" > "$work/paths.txt"
cat > "$work/paths.lua" <<LUA
local paths = {}
for line in io.lines("$work/paths.txt") do paths[#paths + 1] = line end
local i = 0
request = function()
  i = i % #paths + 1
  return wrk.format("GET", paths[i])
end
LUA
echo "== ${#paths[@]} cached tiles; $ROUNDS rounds of ${DURATION}s per server; $(nproc) cores"
for port in 18190 18191; do wrk -t2 -c64 -d2s -s "$work/paths.lua" "http://127.0.0.1:$port" >/dev/null; done
on=(); off=()
for r in $(seq "$ROUNDS"); do
  a=$(wrk -t2 -c64 -d"${DURATION}s" -s "$work/paths.lua" http://127.0.0.1:18190 | awk '/Requests\/sec/ {print $2}')
  b=$(wrk -t2 -c64 -d"${DURATION}s" -s "$work/paths.lua" http://127.0.0.1:18191 | awk '/Requests\/sec/ {print $2}')
  echo "   round $r: with metrics $a req/s, without $b req/s"
  on+=("$a"); off+=("$b")
done
median() { printf '%s\n' "$@" | sort -n | awk '{a[NR]=$1} END {print (NR%2) ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2}'; }
m_on=$(median "${on[@]}"); m_off=$(median "${off[@]}")
python3 -c "import sys; on,off=map(float,sys.argv[1:]); print(f'median with metrics {on:.0f} req/s, without {off:.0f} req/s')" "$m_on" "$m_off"
# The rounds drift with the machine (±10 % here): each round's pair ran back to back, so the
# cost is the median of the paired ratios, not the ratio of the medians.
python3 -c "
import sys
n = len(sys.argv) // 2
on, off = sys.argv[1:n + 1], sys.argv[n + 1:]
r = sorted(float(a) / float(b) for a, b in zip(on, off))
m = r[len(r) // 2] if len(r) % 2 else (r[len(r) // 2 - 1] + r[len(r) // 2]) / 2
print(f'paired: with/without per round {[round(x, 3) for x in r]}; metrics cost {(1 - m) * 100:.1f} % (median)')
" "${on[@]}" "${off[@]}"
# The counters did count: the metered server's exposition shows the cache hits.
key=$(./target/release/urbis keys create --role admin --name bench --store "$work/store" 2>/dev/null | grep -o 'uk_[A-Za-z0-9_]*' | head -1)
sleep 1.5   # a new key reaches a running server within a second
curl -s -H "Authorization: Bearer $key" http://127.0.0.1:18190/metrics | grep -E '^urbis_tile_cache_hits_total' || true
