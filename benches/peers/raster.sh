#!/usr/bin/env bash
# PNG raster tiles against the vector tiles of the same list, over HTTP, same server, same
# run: Montevideo (239,486 features, public) and the fixed tiles at z10, z12 and z14 of
# montevideo_tiles.txt, fetched one after another on one keep-alive connection by a Python
# client (so that tiles/s is the server's cost of a tile, not the client's). Per zoom:
#   mvt cold        the vector tiles, made on request (a fresh server)
#   png (mvt hot)   the PNGs once their vector tiles are cached: drawing and PNG encoding only
#   png cold        the PNGs on a fresh server: vector tile and drawing
#   png cached      the PNGs again (the PNG cache)
# The layer is drawn with the light drawing of layers no style draws (points from z14).
# Needs python3; builds the release binary.
set -euo pipefail
cd "$(dirname "$0")/../.."
work=$(mktemp -d)
pid=""
trap '[ -n "$pid" ] && kill "$pid" 2>/dev/null; rm -rf "$work"' EXIT
cargo build --release --quiet
gunzip -c tests/data/montevideo/montevideo.geojson.gz > "$work/montevideo.geojson"
./target/release/urbis import "$work/montevideo.geojson" --store "$work/store" --layer montevideo --classification public >/dev/null 2>&1
start() {
  ./target/release/urbis serve --store "$work/store" --no-demo --bind 127.0.0.1:0 \
    --coap-bind 127.0.0.1:0 --coaps-bind 127.0.0.1:0 > "$work/out" 2>/dev/null &
  pid=$!
  for _ in $(seq 100); do grep -q "http://" "$work/out" 2>/dev/null && break; sleep 0.1; done
  addr=$(grep -o 'http://[0-9.:]*' "$work/out" | head -1 | sed 's|http://||')
}
stop() { kill "$pid"; wait "$pid" 2>/dev/null || true; pid=""; : > "$work/out"; }
fetch() { # $1 address, $2 suffix (.mvt, .png), $3 label
  python3 - "$1" "$2" "$3" benches/peers/montevideo_tiles.txt <<'PY'
import http.client, sys, time, collections
addr, suffix, label, listing = sys.argv[1:5]
host, port = addr.rsplit(':', 1)
c = http.client.HTTPConnection(host, int(port))
tiles = [l.strip() for l in open(listing) if l.strip()]
by_zoom = collections.defaultdict(list)
for t in tiles:
    z = t.split('/')[0]
    started = time.perf_counter()
    c.request('GET', f'/tiles/montevideo/{t}{suffix}', headers={'Accept-Encoding': 'gzip'})
    r = c.getresponse(); body = r.read()
    assert r.status in (200, 204), (t, r.status, body[:200])
    by_zoom[z].append((time.perf_counter() - started, len(body)))
for z, v in sorted(by_zoom.items(), key=lambda kv: int(kv[0])):
    s = sum(t for t, _ in v)
    print(f'{label:<14} z{z}: {len(v):4d} tiles {len(v)/s:9.1f} tiles/s  mean {s/len(v)*1000:7.2f} ms  mean size {sum(b for _, b in v)/len(v)/1024:6.1f} KB')
PY
}
echo "== $(wc -l < benches/peers/montevideo_tiles.txt) tiles (z10/z12/z14) of Montevideo; $(nproc) cores"
start; fetch "$addr" .mvt "mvt cold"; fetch "$addr" ".png" "png (mvt hot)"; fetch "$addr" ".png" "png cached"; stop
start; fetch "$addr" ".png" "png cold"; fetch "$addr" "@2x.png" "png@2x cold*"; stop
echo "(* @2x after the 1x pass: its vector tiles were cached)"
