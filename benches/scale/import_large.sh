#!/usr/bin/env bash
# An import larger than its memory budget, at the issue's size: Montevideo repeated 42 times with
# offsets (10,058,412 features, about 2 GB of GeoJSON), imported with `--memory-mb` (default
# here 256, so that the sort spills; the data alone is about 1 GB) and again in memory; the
# test asserts peak RSS under the budget + 300 MB and the same tiles, byte for byte, from both
# stores (sampled through two running servers). Prints times and peak RSS of both imports.
# Needs python3 with mapbox-vector-tile (as the test suite). Takes a few minutes.
set -euo pipefail
cd "$(dirname "$0")/../.."
export URBIS_LARGE_COPIES=${COPIES:-42}
export URBIS_LARGE_MEMORY_MB=${MEMORY_MB:-256}
export URBIS_LARGE_MARGIN_MB=${MARGIN_MB:-300}
cargo test --release --test import_large an_import -- --nocapture 2>&1 |
  grep -E 'generated|memory|RSS|test result|panicked|assert'
