#!/usr/bin/env bash
# Runs one fuzz target (or all) for N seconds each on stable Rust (no sanitizer), seeded with
# fuzz/regressions/TARGET/. A crash is copied into fuzz/regressions/TARGET/ so that
# `cargo test --test fuzz_regressions` replays it from then on.
#   fuzz/run.sh [TARGET|all] [SECONDS]      (needs `cargo install cargo-fuzz`)
set -euo pipefail
cd "$(dirname "$0")"
targets=${1:-all}
seconds=${2:-300}
[ "$targets" = all ] && targets="geojson flatgeobuf geopackage shapefile coap senml_json senml_cbor policy api_key tile_path"
for t in $targets; do
  mkdir -p "corpus/$t" "artifacts/$t"
  cp -n regressions/"$t"/* "corpus/$t/" 2>/dev/null || true
  echo "== fuzzing $t for ${seconds}s"
  status=0
  cargo fuzz run "$t" -s none -O "corpus/$t" -- -max_total_time="$seconds" -max_len=65536 \
    -rss_limit_mb=4096 -artifact_prefix="artifacts/$t/" -print_final_stats=1 || status=$?
  for crash in artifacts/"$t"/*; do
    [ -e "$crash" ] || continue
    cp "$crash" "regressions/$t/$(basename "$crash")"
    echo "kept $crash as regressions/$t/$(basename "$crash")"
  done
  [ "$status" -eq 0 ] || { echo "fuzzing $t found a crash (exit $status)"; exit "$status"; }
done
