#!/usr/bin/env bash
# Side by side on the same machine and data: `urbis export` of Montevideo (239,486 features)
# z0-z14 to PMTiles and to MBTiles, against GDAL making the same zooms from the same GeoJSON
# (`ogr2ogr -f MVT -dsco MINZOOM=0 -dsco MAXZOOM=14`, GDAL's MVT writer into a directory of
# tiles; GDAL_MBTILES=1 times `-f MBTiles` instead, the same writer into an archive). The urbis figure includes nothing of the import (the layer is imported once
# before); GDAL's includes reading the GeoJSON, which is its only way in (its read alone is
# timed too, as `ogr2ogr -f FlatGeobuf`, to say how much of its time is reading). tippecanoe
# is not in Debian. Prints the median wall time of each over RUNS runs and the ratios. Needs
# gdal-bin.
set -euo pipefail
cd "$(dirname "$0")/../.."
runs=${RUNS:-1}   # GDAL takes minutes a run here
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
command -v ogr2ogr >/dev/null || { echo "ogr2ogr not found: apt-get install gdal-bin" >&2; exit 1; }
cargo build --release --quiet
src="$work/montevideo.geojson"
gunzip -c tests/data/montevideo/montevideo.geojson.gz > "$src"
./target/release/urbis import "$src" --store "$work/store" --layer montevideo >/dev/null 2>&1
echo "Montevideo, z0-z14; $runs runs each; $(nproc) cores"

median() { sort -n | awk '{a[NR]=$1} END {print (NR%2) ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2}'; }
time_it() { local s e; s=$(date +%s.%N); "$@" >/dev/null 2>&1; e=$(date +%s.%N); echo "$e - $s" | bc -l; }

pm=(); mb=(); gd=(); rd=()
for i in $(seq "$runs"); do
  rm -rf "$work"/out.*
  pm+=("$(time_it ./target/release/urbis export montevideo --store "$work/store" --to "$work/out.pmtiles" --minzoom 0 --maxzoom 14)")
  mb+=("$(time_it ./target/release/urbis export montevideo --store "$work/store" --to "$work/out.mbtiles" --minzoom 0 --maxzoom 14)")
  if [ -n "${GDAL_MBTILES:-}" ]; then
    gd+=("$(time_it ogr2ogr -f MBTiles "$work/out.gdal" "$src" -dsco MINZOOM=0 -dsco MAXZOOM=14)")
  else
    rm -rf "$work/out.gdal"
    gd+=("$(time_it ogr2ogr -f MVT "$work/out.gdal" "$src" -dsco MINZOOM=0 -dsco MAXZOOM=14)")
  fi
  rd+=("$(time_it ogr2ogr -f FlatGeobuf "$work/out.fgb" "$src")")
done
p=$(printf '%s\n' "${pm[@]}" | median); m=$(printf '%s\n' "${mb[@]}" | median)
g=$(printf '%s\n' "${gd[@]}" | median); r=$(printf '%s\n' "${rd[@]}" | median)
printf 'urbis export to PMTiles:  %7.2f s median (%s bytes)\n' "$p" "$(stat -c %s "$work/out.pmtiles")"
printf 'urbis export to MBTiles:  %7.2f s median (%s bytes)\n' "$m" "$(stat -c %s "$work/out.mbtiles")"
printf 'ogr2ogr (GDAL MVT writer): %6.2f s median (%s bytes)\n' "$g" "$(du -sb "$work/out.gdal" | cut -f1)"
printf '  (of which reading the GeoJSON, as ogr2ogr -f FlatGeobuf: %.2f s)\n' "$r"
printf 'ratio ogr2ogr / urbis PMTiles: %.1fx\n' "$(echo "$g / $p" | bc -l)"
printf 'ratio ogr2ogr / urbis MBTiles: %.1fx\n' "$(echo "$g / $m" | bc -l)"
