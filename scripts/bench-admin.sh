#!/usr/bin/env bash
# Admin analytics benchmark (issue 5): generates synthetic events through the ingest write path,
# folds them into the analytics tables, then times every report query over several ranges.
# Usage: scripts/bench-admin.sh [EVENTS]   (default 10,000,000; needs ~10 GB free disk in $BENCH_DIR)
# BENCH_NO_DRILL_INDEXES=1: generate without the drill-down's events_source/events_session
# indexes, then build them (timed): compare the generation rate with a default run to get the
# insert cost of those indexes (use a fresh BENCH_DIR for each).
# Prints the report query table, then the dashboard page table (drill-down, time chart, map).
# Not run in CI. Results go into docs/benchmarks.md "## Admin" by hand.
set -euo pipefail
cd "$(dirname "$0")/.."
n=${1:-10000000}
dir=${BENCH_DIR:-$(mktemp -d)}
db="$dir/bench-admin.db"
cargo build --release -q -p drosera-admin --example bench_admin
bin=${CARGO_TARGET_DIR:-target}/release/examples/bench_admin
if [ ! -f "$db" ]; then
  echo "generating $n events into $db"
  if [ "${BENCH_NO_DRILL_INDEXES:-0}" = 1 ]; then
    "$bin" gen "$db" "$n" --no-drill-indexes
  else
    "$bin" gen "$db" "$n"
  fi
fi
nproc_=$(nproc); mem=$(free -g | awk '/Mem:/{print $2}')
echo "machine: $(uname -m), $nproc_ cores, ${mem} GiB RAM, $(date -u +%Y-%m-%d)"
"$bin" time "$db"
echo "database kept in $dir (delete it when done)"
