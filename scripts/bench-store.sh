#!/usr/bin/env bash
# Store benchmark: ingest rate with group commit, bytes on disk per typical connection event,
# batch-read rate. Release build (the bench profile). Results go to docs/benchmarks.md "## Store".
# Usage: scripts/bench-store.sh [EVENTS] [mixed]   (default 1000000; BENCH_DIR picks the filesystem)
# `mixed`: a mixed workload (connections, logins, commands, HTTP requests with headers,
# fingerprints, payload prefixes; see sensor/benches/store.rs) instead of the typical connection.
set -euo pipefail
cd "$(dirname "$0")/.."
echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'), $(uname -m)"
echo "date: $(date -u +%Y-%m-%dT%H:%MZ)  dir: ${BENCH_DIR:-/var/tmp} ($(df -T "${BENCH_DIR:-/var/tmp}" | awk 'NR==2 {print $2}'))"
cargo bench -p drosera-sensor --bench store -- "${1:-1000000}" ${2:+"$2"}
