#!/usr/bin/env bash
# Repair of invalid polygons, side by side on the same files, same run, this machine:
#   urbis import (the whole import: read, repair, levels of detail, write, publish),
#   ogr2ogr -makevalid -f FlatGeobuf (GDAL/GEOS: read, make_valid, write),
#   shapely.make_valid over every feature (GEOS, in memory, no I/O but the read).
# Files: Natural Earth 10 m countries as published (invalid rings along coasts); the same
# made invalid four ways by tests/repair_check.py (reversed rings, pulled vertices, holes
# across shells, bow-ties); and the hard case, the same countries densified to 8 M vertices
# with a crossing every 2,000 vertices of every ring (`repair_check.py dense`: most polygons
# invalid, as a 1:10 m world land layer is as published).
# A peer that runs longer than PEER_TIMEOUT seconds (default 900) is stopped and reported as
# "> PEER_TIMEOUT s". DENSE_VERTICES sets the hard case's size (default 8000000).
# Needs: gdal-bin, python3 with shapely and numpy (installed by .ci/run).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
cd "$here/../.."
work=$(mktemp -d /tmp/urbis-repair-bench.XXXXXX)
trap 'rm -rf "$work"' EXIT
cargo build --release --quiet
src=tests/data/naturalearth/ne-countries-10m.geojson.gz
gunzip -c "$src" > "$work/countries.geojson"
python3 tests/repair_check.py make "$src" "$work/invalid.geojson" "$work/expected.json"
python3 tests/repair_check.py dense "$src" "$work/dense.geojson" "${DENSE_VERTICES:-8000000}"
limit=${PEER_TIMEOUT:-900}
secs() { python3 -c "import sys; print(f'{(int(sys.argv[2]) - int(sys.argv[1])) / 1e9:.2f}')" "$1" "$2"; }
# Runs a peer under the time limit; prints its seconds, or the limit if it was stopped.
peer() {
  local t0 t1
  t0=$(date +%s%N)
  if timeout "$limit" "$@" >/dev/null 2>&1; then
    t1=$(date +%s%N); secs "$t0" "$t1"
  else
    echo "$limit"
  fi
}
for f in countries invalid dense; do
  file="$work/$f.geojson"
  verts=$(python3 -c "import json,sys; from shapely.geometry import shape; print(sum(len(shape(x['geometry']).exterior.coords) if shape(x['geometry']).geom_type=='Polygon' else sum(len(p.exterior.coords)+sum(len(i.coords) for i in p.interiors) for p in shape(x['geometry']).geoms) for x in json.load(open(sys.argv[1]))['features'] if x['geometry'] and x['geometry']['coordinates']))" "$file")
  echo "== $f.geojson: $verts vertices, $(nproc) cores"
  t0=$(date +%s%N)
  ./target/release/urbis import "$file" --store "$work/store-$f" --layer c --json > "$work/u.json"
  t1=$(date +%s%N)
  u=$(secs "$t0" "$t1")
  # -nlt GEOMETRY: make_valid may return collections (a polygon with a dangling line).
  g=$(peer ogr2ogr -makevalid -nlt GEOMETRY -f FlatGeobuf "$work/$f.fgb" "$file")
  s=$(peer python3 -c "
import json, sys, shapely
from shapely.geometry import shape
gs = [shape(x['geometry']) for x in json.load(open(sys.argv[1]))['features'] if x['geometry'] and x['geometry']['coordinates']]
shapely.make_valid(gs)" "$file")
  rebuilt=$(python3 -c "import json; print(json.load(open('$work/u.json'))[0]['quality']['repairs'].get('invalid polygon rebuilt (sweep line)', 0))")
  slow=$(python3 -c "import json; print(', '.join(f\"{x['name'] if x['name'] not in ('', '-') else '#' + str(x['feature'])} {x['ms']/1000:.2f}s\" for x in json.load(open('$work/u.json'))[0]['quality'].get('slowest', [])[:3]))")
  mark() { [ "$1" = "$limit" ] && echo "> ${1}s (stopped)" || echo "${1}s"; }
  echo "   urbis import ${u}s (${rebuilt} polygons rebuilt; slowest: ${slow}) | ogr2ogr -makevalid $(mark "$g") | shapely.make_valid $(mark "$s")"
  python3 -c "import sys; u,g,s=map(float,sys.argv[1:]); print(f'   ratio: GDAL/urbis {g/u:.1f}x, shapely/urbis {s/u:.1f}x')" "$u" "$g" "$s"
done
