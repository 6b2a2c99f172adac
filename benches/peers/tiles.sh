#!/usr/bin/env bash
# Side by side, same machine, same run, same data (Montevideo, 239,486 features) and the same
# fixed tiles at z10, z12 and z14 (montevideo_tiles.txt):
#  (a) Urbis cold tile generation (no cache, one thread),
#  (b) PostgreSQL + PostGIS (Debian) ST_AsMVT(ST_AsMVTGeom(...)), data loaded with ogr2ogr,
#  (c) geojson-vt + vt-pbf in Node (npm), getTile on a fresh index,
# printing tiles/s and raw tile size p50/p95 for each, and the ratios; then
#  (d) cached serving: wrk (Debian) against `urbis serve` and against nginx serving the same
#      tile bytes from disk, printing requests/s and the ratio; once without compression and
#      once with `Accept-Encoding: gzip` as browsers send it (nginx `gzip_static` serving the
#      same gzip bytes urbis serves).
# Every load run is bounded (DURATION seconds) and hits only 127.0.0.1 / a unix socket.
# Needs: gdal-bin postgresql-15-postgis-3 nginx-light wrk nodejs npm bc (apt) — installed
# here if missing.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
cd "$here/../.."
DURATION=${DURATION:-10}
work=$(mktemp -d /tmp/urbis-tiles-bench.XXXXXX)
chmod 1777 "$work"
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  [ -f "$work/pg/postmaster.pid" ] && runuser -u postgres -- /usr/lib/postgresql/15/bin/pg_ctl -D "$work/pg" -m fast stop >/dev/null 2>&1 || true
  rm -rf "$work"
}
trap cleanup EXIT

need=()
for p in gdal-bin postgresql-15-postgis-3 nginx-light wrk bc; do dpkg -s "$p" >/dev/null 2>&1 || need+=("$p"); done
if [ "${#need[@]}" -gt 0 ]; then apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null; fi

cargo build --release --quiet --example render_tiles
cargo build --release --quiet
tiles=benches/peers/montevideo_tiles.txt
gunzip -c tests/data/montevideo/montevideo.geojson.gz > "$work/montevideo.geojson"
./target/release/urbis import "$work/montevideo.geojson" --store "$work/store" --layer montevideo --classification public >/dev/null
echo "== $(wc -l < $tiles) tiles (z10/z12/z14) of Montevideo; $(nproc) cores"

echo "== (a) urbis, cold"
./target/release/examples/render_tiles "$work/store" montevideo "$tiles" 5 | tee "$work/urbis.txt"

echo "== (b) PostGIS"
mkdir -p "$work/pg" && chown postgres "$work/pg"
pg=/usr/lib/postgresql/15/bin
runuser -u postgres -- "$pg/initdb" -D "$work/pg" -U postgres --auth=trust >/dev/null
runuser -u postgres -- "$pg/pg_ctl" -D "$work/pg" -o "-p 55432 -k $work -c listen_addresses='' -c shared_buffers=512MB -c jit=off" -l "$work/pg.log" start >/dev/null
psql_() { psql -h "$work" -p 55432 -U postgres -v ON_ERROR_STOP=1 -qAt "$@"; }
psql_ -c "CREATE DATABASE bench"
psql_ -d bench -c "CREATE EXTENSION postgis"
ogr2ogr -f PostgreSQL "PG:host=$work port=55432 user=postgres dbname=bench" "$work/montevideo.geojson" \
  -nln montevideo -t_srs EPSG:3857 -nlt GEOMETRY -lco GEOMETRY_NAME=geom -lco SPATIAL_INDEX=GIST
psql_ -d bench -c "VACUUM ANALYZE montevideo"
tr '/' ',' < "$tiles" > "$work/tiles.csv"
sed "s#TILES_CSV#$work/tiles.csv#" benches/peers/postgis_tiles.sql > "$work/postgis.sql"
psql_ -d bench -f "$work/postgis.sql" | tee "$work/postgis.txt"

echo "== (c) geojson-vt + vt-pbf"
cp benches/peers/node/package.json benches/peers/node/geojson_vt.mjs "$work/"
(cd "$work" && npm install --silent --no-audit --no-fund >/dev/null 2>&1)
node --max-old-space-size=8000 "$work/geojson_vt.mjs" "$work/montevideo.geojson" "$tiles" 3 | tee "$work/gvt.txt"

echo "== cold tiles/s ratios (urbis / peer) and p95 tile size"
python3 - "$work" <<'PY'
import re, sys
w = sys.argv[1]
def load(name):
    out = {}
    for line in open(f"{w}/{name}.txt"):
        m = re.search(r"z(\d+) tiles=(\d+) seconds=([\d.]+) tiles_per_s=([\d.]+) p50=(\d+) p95=(\d+)", line)
        if m:
            out[int(m[1])] = dict(tps=float(m[4]), p50=int(m[5]), p95=int(m[6]))
    return out
u, p, g = load("urbis"), load("postgis"), load("gvt")
for z in sorted(u):
    print(f"z{z}: urbis {u[z]['tps']:.0f} tiles/s | postgis {p[z]['tps']:.0f} ({u[z]['tps']/p[z]['tps']:.1f}x) | geojson-vt {g[z]['tps']:.0f} ({u[z]['tps']/g[z]['tps']:.1f}x)"
          f" || p50/p95 bytes: urbis {u[z]['p50']}/{u[z]['p95']}, postgis {p[z]['p50']}/{p[z]['p95']}, geojson-vt {g[z]['p50']}/{g[z]['p95']}")
PY

echo "== (d) cached serving: wrk against urbis and nginx (${DURATION}s each, 127.0.0.1)"
# wrk is one address: the per-address tile limit is off for the comparison with nginx.
./target/release/urbis serve --store "$work/store" --no-demo --bind 127.0.0.1:18090 --rate-tiles 0 > "$work/serve.log" 2>&1 &
pids+=($!)
for _ in $(seq 100); do curl -sf http://127.0.0.1:18090/health >/dev/null && break; sleep 0.1; done
mkdir -p "$work/www/tiles/montevideo"
paths=()
while read -r t; do
  [ -n "$t" ] || continue
  code=$(curl -s -o "$work/tile.bin" -w '%{http_code}' "http://127.0.0.1:18090/tiles/montevideo/$t.mvt")
  [ "$code" = 200 ] || continue
  mkdir -p "$work/www/tiles/montevideo/$(dirname "$t")"
  cp "$work/tile.bin" "$work/www/tiles/montevideo/$t.mvt"
  curl -s -H 'Accept-Encoding: gzip' -o "$work/www/tiles/montevideo/$t.mvt.gz" "http://127.0.0.1:18090/tiles/montevideo/$t.mvt"
  paths+=("/tiles/montevideo/$t.mvt")
done < "$tiles"
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
cat > "$work/nginx.conf" <<NGINX
worker_processes 2;
pid $work/nginx.pid;
error_log $work/nginx.err;
events { worker_connections 1024; }
http {
  access_log off;
  sendfile on;
  tcp_nopush on;
  types { application/vnd.mapbox-vector-tile mvt; }
  server { listen 127.0.0.1:18091; root $work/www; etag on; gzip_static on; }
}
NGINX
nginx -c "$work/nginx.conf" -p "$work"
pids+=("$(cat "$work/nginx.pid" 2>/dev/null || echo 0)")
sleep 0.5
wrk -t2 -c64 -d2s -s "$work/paths.lua" http://127.0.0.1:18090 >/dev/null   # warm the tile cache
u_rps=$(wrk -t2 -c64 -d"${DURATION}s" -s "$work/paths.lua" http://127.0.0.1:18090 | tee "$work/wrk-urbis.txt" | awk '/Requests\/sec/ {print $2}')
n_rps=$(wrk -t2 -c64 -d"${DURATION}s" -s "$work/paths.lua" http://127.0.0.1:18091 | tee "$work/wrk-nginx.txt" | awk '/Requests\/sec/ {print $2}')
gz=(-H 'Accept-Encoding: gzip')
wrk -t2 -c64 -d2s "${gz[@]}" -s "$work/paths.lua" http://127.0.0.1:18090 >/dev/null   # warm the gzip entries
ug_rps=$(wrk -t2 -c64 -d"${DURATION}s" "${gz[@]}" -s "$work/paths.lua" http://127.0.0.1:18090 | tee "$work/wrk-urbis-gz.txt" | awk '/Requests\/sec/ {print $2}')
ng_rps=$(wrk -t2 -c64 -d"${DURATION}s" "${gz[@]}" -s "$work/paths.lua" http://127.0.0.1:18091 | tee "$work/wrk-nginx-gz.txt" | awk '/Requests\/sec/ {print $2}')
nginx -c "$work/nginx.conf" -p "$work" -s stop || true
echo "${#paths[@]} distinct tiles; identity: urbis ${u_rps} req/s, nginx ${n_rps} req/s; urbis/nginx = $(echo "$u_rps / $n_rps" | bc -l | cut -c1-5)"
echo "${#paths[@]} distinct tiles; gzip:     urbis ${ug_rps} req/s, nginx ${ng_rps} req/s; urbis/nginx = $(echo "$ug_rps / $ng_rps" | bc -l | cut -c1-5)"
