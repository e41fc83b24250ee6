#!/usr/bin/env bash
# Uplink benchmark (issue 4): how fast a full backlog drains from the sensor's store into the
# admin's database over mutual TLS, and how many bytes each event costs on the wire.
#
#   1. `drosera-sensor debug-store-writer` fills a store with N synthetic events while no admin
#      exists (the typical mix: 88% connection events, 10% logins, 2% payloads);
#   2. an admin is created (`init`, `sensor add`) and started, then the sensor on that store;
#   3. the clock runs from the sensor's start until `status` shows every event acknowledged
#      (so it covers reading, compressing, TLS, the admin's decode, insert and commit);
#   4. bytes on the wire = `bytes_acked` of the sensor's TCP connection to the admin (`ss -ti`,
#      TLS records and handshake included), divided by N.
#
# Usage: scripts/bench-uplink.sh [EVENTS]   (default 1000000). Release build; loopback only;
# bounded: gives up after 10 minutes. Not run in CI. Results go to docs/benchmarks.md "## Uplink".
set -euo pipefail
cd "$(dirname "$0")/.."
n=${1:-1000000}
case "$n" in '' | *[!0-9]*) echo "usage: scripts/bench-uplink.sh [EVENTS]" >&2; exit 2 ;; esac
command -v ss >/dev/null || { echo "bench-uplink: needs ss (Debian package iproute2)" >&2; exit 1; }
cargo build --release -q -p drosera-sensor -p drosera-admin
BIN=${CARGO_TARGET_DIR:-target}/release
WORK=$(mktemp -d "${BENCH_DIR:-/var/tmp}/drosera-bench-uplink.XXXXXX")
PIDS=()
cleanup() {
  for p in "${PIDS[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
  for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null || true; done
  rm -rf "$WORK"
}
trap cleanup EXIT
port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
INGEST=127.0.0.1:$(port)
HTTP=$(port)

echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'), $(uname -m)"
echo "date: $(date -u +%Y-%m-%dT%H:%MZ)  events: $n  dir: $WORK"

t0=$(date +%s.%N)
"$BIN/drosera-sensor" debug-store-writer --data-dir "$WORK/data" --cap-bytes $((8 << 30)) --events "$n" > /dev/null
t1=$(date +%s.%N)
echo "backlog written in $(python3 -c "print(f'{$t1-$t0:.1f}')") s; store $(du -sh "$WORK/data" | cut -f1)"

"$BIN/drosera-admin" init --dir "$WORK/admin" --admin "$INGEST" --listen "$INGEST" \
  --dashboard-listen "127.0.0.1:$(port)" > /dev/null
"$BIN/drosera-admin" sensor add bench --out "$WORK/bundle" --config "$WORK/admin/drosera-admin.toml" > /dev/null
cat > "$WORK/sensor.toml" <<TOML
[sensor]
name = "bench"
data_dir = "$WORK/data"
user = ""

[store]
cap_bytes = $((8 << 30))
reserve_bytes = 0

[[service]]
kind = "http"
ports = [$HTTP]
bind = "127.0.0.1"

TOML
cat "$WORK/bundle/uplink.toml" >> "$WORK/sensor.toml"
status() { "$BIN/drosera-sensor" status --config "$WORK/sensor.toml" --json; }
field() { python3 -c "import json,sys; print(json.load(sys.stdin)['$1'])"; }
last=$(status | field last_seq)

"$BIN/drosera-admin" serve --config "$WORK/admin/drosera-admin.toml" > "$WORK/admin.log" 2>&1 &
PIDS+=($!)
ADMIN_PID=$!
for _ in $(seq 100); do ss -Htln "sport = :${INGEST##*:}" | grep -q . && break; sleep 0.1; done

t0=$(date +%s.%N)
"$BIN/drosera-sensor" run --config "$WORK/sensor.toml" > "$WORK/sensor.log" 2>&1 &
PIDS+=($!)
SENSOR_PID=$!
# CPU seconds (user + system) a process has used so far.
cpu() { awk -v hz="$(getconf CLK_TCK)" '{printf "%.2f", ($14 + $15) / hz}' "/proc/$1/stat"; }
admin_cpu0=$(cpu "$ADMIN_PID")
deadline=$((SECONDS + 600))
while :; do
  acked=$(status 2> /dev/null | field acked_seq || echo 0)
  [ "$acked" -ge "$last" ] && break
  [ $SECONDS -lt $deadline ] || { echo "bench-uplink: not drained after 10 minutes (acked $acked of $last)" >&2; tail "$WORK/sensor.log" >&2; exit 1; }
  sleep 0.05
done
t1=$(date +%s.%N)
wire=$(ss -Htin "dport = :${INGEST##*:}" | grep -o 'bytes_acked:[0-9]*' | head -1 | cut -d: -f2)
rows=$(python3 - "$WORK/admin/admin.db" <<'PY'
import sqlite3, sys
print(sqlite3.connect(sys.argv[1]).execute("SELECT COUNT(*) FROM events").fetchone()[0])
PY
)
admin_cpu=$(python3 -c "print(f'{$(cpu "$ADMIN_PID") - $admin_cpu0:.2f}')")
sensor_cpu=$(cpu "$SENSOR_PID")
python3 - "$n" "$last" "$rows" "$t0" "$t1" "${wire:-0}" "$admin_cpu" "$sensor_cpu" <<'PY'
import sys
n, last, rows, t0, t1, wire = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4]), float(sys.argv[5]), int(sys.argv[6])
acpu, scpu = float(sys.argv[7]), float(sys.argv[8])
s = t1 - t0
print(f"drained {last} events (admin rows {rows}) in {s:.2f} s: {last / s:,.0f} events/s end to end")
print(f"CPU while draining: admin {acpu:.2f} s ({last / max(acpu, 0.01):,.0f} events per admin CPU-second), "
      f"sensor {scpu:.2f} s ({last / max(scpu, 0.01):,.0f} events per sensor CPU-second)")
print(f"on the wire (sensor->admin TCP payload, TLS included): {wire:,} bytes = {wire / max(last, 1):.1f} bytes/event")
if rows < n:
    sys.exit(f"bench-uplink: the admin holds {rows} rows, fewer than the {n} events written")
PY
