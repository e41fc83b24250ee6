#!/usr/bin/env bash
# Fleet benchmark (issue 20): N simulated sensors ship their backlogs at once to one or two
# admins, on SQLite and on PostgreSQL (a server started for each run, durable settings), then the
# 30-day report on PostgreSQL over a large database. Not run in CI; results go into
# docs/benchmarks.md "## Fleet" by hand, with the load average printed here.
#
# Usage: scripts/bench-fleet.sh [EVENTS] [SENSOR COUNTS...]
#   EVENTS         events per run, split between the sensors (default 1,000,000)
#   SENSOR COUNTS  default "1 10 100 1000"
# Environment:
#   BACKENDS       default "sqlite postgres postgres2" (postgres2 = two admins on one PostgreSQL)
#   REPORT_EVENTS  events for the report part (default 10,000,000; 0 skips it); it needs about
#                  3 GiB (SQLite) + 5 GiB (PostgreSQL) free in BENCH_DIR per 10 M events
#   BENCH_DIR      where the report's SQLite database is made (default: a new dir in /var/tmp)
set -euo pipefail
cd "$(dirname "$0")/.."
n=${1:-1000000}
shift || true
counts=${*:-1 10 100 1000}
cargo build --release -q -p drosera-admin -p drosera-e2e --bin drosera-admin --bin drosera-fleet --example bench_admin
bin=${CARGO_TARGET_DIR:-target}/release
ulimit -n "$(ulimit -Hn)"
echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'), $(free -g | awk '/Mem:/{print $2}') GiB RAM"
echo "date: $(date -u +%Y-%m-%dT%H:%MZ)  load: $(cut -d' ' -f1-3 /proc/loadavg)"
echo
echo "| backend | admins | sensors | events | time | end to end | admin CPU | PostgreSQL CPU | admin RSS idle / all connected / peak | RSS per connected sensor | failovers | exactly once |"
echo "|---|---|---|---|---|---|---|---|---|---|---|---|"
for s in $counts; do
  for b in ${BACKENDS:-sqlite postgres postgres2}; do
    case $b in
      sqlite) args=(--backend sqlite --admins 1) ;;
      postgres) args=(--backend postgres --admins 1) ;;
      postgres2) args=(--backend postgres --admins 2) ;;
    esac
    "$bin/drosera-fleet" "${args[@]}" --sensors "$s" --events "$n" 2> >(grep -v '^drosera-fleet: fleet-' >&2)
  done
done
echo "load after the ingest runs: $(cut -d' ' -f1-3 /proc/loadavg)"

r=${REPORT_EVENTS:-10000000}
if [ "$r" != 0 ]; then
  dir=${BENCH_DIR:-$(mktemp -d /var/tmp/bench-fleet.XXXXXX)}
  db="$dir/report-src.db"
  if [ ! -f "$db" ]; then
    echo "generating $r events into $db (bench_admin gen)"
    "$bin/examples/bench_admin" gen "$db" "$r"
  fi
  echo "report part, load: $(cut -d' ' -f1-3 /proc/loadavg)"
  "$bin/drosera-fleet" --report-db "$db"
  echo "SQLite database kept in $dir (delete it when done)"
fi
