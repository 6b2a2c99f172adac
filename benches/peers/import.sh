#!/usr/bin/env bash
# Side by side on the same machine and data: `urbis import` (read, validate, repair, build
# every level of detail and its R-tree, write, publish) against GDAL's plain conversion
# `ogr2ogr -f FlatGeobuf` (with its spatial index) of Montevideo (239,486 features).
# Prints the median wall time of each over N runs and the ratio. Needs gdal-bin.
set -euo pipefail
cd "$(dirname "$0")/../.."
runs=${RUNS:-5}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
command -v ogr2ogr >/dev/null || { echo "ogr2ogr not found: apt-get install gdal-bin" >&2; exit 1; }
cargo build --release --quiet
src="$work/montevideo.geojson"
gunzip -c tests/data/montevideo/montevideo.geojson.gz > "$src"
echo "input: $(du -h "$src" | cut -f1) GeoJSON, $(grep -c '"type":"Feature"' "$src") features; $runs runs each; $(nproc) cores"

median() { sort -n | awk '{a[NR]=$1} END {print (NR%2) ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2}'; }
time_it() { local s e; s=$(date +%s.%N); "$@" >/dev/null 2>&1; e=$(date +%s.%N); echo "$e - $s" | bc -l; }

urbis_times=(); gdal_times=()
for i in $(seq "$runs"); do
  rm -rf "$work/store" "$work/out.fgb"
  urbis_times+=("$(time_it ./target/release/urbis import "$src" --store "$work/store" --layer montevideo)")
  gdal_times+=("$(time_it ogr2ogr -f FlatGeobuf "$work/out.fgb" "$src")")
done
u=$(printf '%s\n' "${urbis_times[@]}" | median)
g=$(printf '%s\n' "${gdal_times[@]}" | median)
./target/release/urbis layers --store "$work/store" | sed -n 2p
printf 'urbis import (with LOD build): %.3f s median\n' "$u"
printf 'ogr2ogr -f FlatGeobuf:         %.3f s median (%s bytes out)\n' "$g" "$(stat -c %s "$work/out.fgb")"
printf 'ratio ogr2ogr / urbis: %.2fx (>= 1 means urbis is no slower)\n' "$(echo "$g / $u" | bc -l)"
