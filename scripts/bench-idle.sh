#!/usr/bin/env bash
# Idle cost of a sensor (issue 18): wake-ups per second, CPU share and RSS of a sensor that gets
# no traffic, measured as in docs/benchmarks.md "Idle wake-ups": after a warm-up, the sum over
# all its threads of voluntary + involuntary context switches (/proc/PID/task/*/status) over a
# window, the process's user + system CPU time (/proc/PID/stat) over the same window, and
# VmRSS / VmHWM at the end. With `uplink`, a local admin is created and started first, so the
# shipper is connected (and idle) too. Loopback only, high ports; nothing is sent to the sensor.
# Services: HTTP, FTP, Telnet, SSH, SMB, MySQL, MSSQL (tcp) and TFTP, SIP, memcached, UPnP (udp).
# With FLOOD=1, afterwards the flood of scripts/bench-sensor.sh (4 x 5,000 connections at 500
# concurrent: http, mssql, smb, mysql; drosera-flood from the same $BIN) and the peak RSS (VmHWM).
# Usage: scripts/bench-idle.sh [none|uplink] [WINDOW_S] [HEALTH_S]   (defaults: none 30 60)
# Binaries: $BIN, else ${CARGO_TARGET_DIR:-target}/release (build them first:
#   cargo build --release -p drosera-sensor -p drosera-admin).
set -euo pipefail
cd "$(dirname "$0")/.."
MODE=${1:-none}
WINDOW=${2:-30}
HEALTH=${3:-60}
WARMUP=${WARMUP:-10}
# Ports: PORT_BASE + a small offset each (loopback; below the ephemeral range).
B=${PORT_BASE:-31000}
BIN=${BIN:-${CARGO_TARGET_DIR:-$PWD/target}/release}
[ -x "$BIN/drosera-sensor" ] || { echo "bench-idle: no $BIN/drosera-sensor (build it, or set BIN)" >&2; exit 1; }
WORK=$(mktemp -d -t drosera-idle.XXXXXX)
PIDS=()
stop() {
  for p in "${PIDS[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
  for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null || true; done
  rm -rf "$WORK"
}
trap stop EXIT

cat > "$WORK/sensor.toml" <<TOML
[sensor]
name = "idle-sensor"
data_dir = "$WORK/sensor-data"
user = ""
health_interval_s = $HEALTH

[store]
cap_bytes = 67108864
reserve_bytes = 0

[limits]
max_connections = 4096
max_per_source = 4096
rate_per_source = 1000000
rate_burst = 1000000
idle_timeout_s = 5

[[service]]
kind = "http"
ports = [$((B+80))]
bind = "127.0.0.1"
[[service]]
kind = "ftp"
ports = [$((B+21))]
bind = "127.0.0.1"
[[service]]
kind = "telnet"
ports = [$((B+23))]
bind = "127.0.0.1"
[[service]]
kind = "ssh"
ports = [$((B+22))]
bind = "127.0.0.1"
[[service]]
kind = "smb"
ports = [$((B+445))]
bind = "127.0.0.1"
[[service]]
kind = "mysql"
ports = [$((B+306))]
bind = "127.0.0.1"
[[service]]
kind = "mssql"
ports = [$((B+433))]
bind = "127.0.0.1"
[[service]]
kind = "tftp"
ports = [$((B+69))]
bind = "127.0.0.1"
[[service]]
kind = "sip"
ports = [$((B+60))]
bind = "127.0.0.1"
[[service]]
kind = "memcached"
ports = [$((B+211))]
transport = "both"
bind = "127.0.0.1"
[[service]]
kind = "upnp"
ports = [$((B+900))]
description_port = $((B+152))
bind = "127.0.0.1"

TOML
if [ "$MODE" = uplink ]; then
  [ -x "$BIN/drosera-admin" ] || { echo "bench-idle: no $BIN/drosera-admin" >&2; exit 1; }
  INGEST=127.0.0.1:$((B+443))
  "$BIN/drosera-admin" init --dir "$WORK/admin" --admin "$INGEST" --listen "$INGEST" \
    --dashboard-listen 127.0.0.1:$((B+180)) >/dev/null
  ACFG="$WORK/admin/drosera-admin.toml"
  "$BIN/drosera-admin" sensor add idle-sensor --out "$WORK/bundle" --config "$ACFG" >/dev/null
  cat "$WORK/bundle/uplink.toml" >> "$WORK/sensor.toml"
  "$BIN/drosera-admin" serve --config "$ACFG" > "$WORK/admin.log" 2>&1 &
  PIDS+=($!)
fi
"$BIN/drosera-sensor" run --config "$WORK/sensor.toml" > "$WORK/sensor.log" 2>&1 &
SPID=$!
PIDS+=("$SPID")
for _ in $(seq 100); do grep -q '^ready' "$WORK/sensor.log" 2>/dev/null && break; sleep 0.1; done
grep -q '^ready' "$WORK/sensor.log" || { echo "bench-idle: the sensor did not start:" >&2; cat "$WORK/sensor.log" >&2; exit 1; }

# Per thread: "tid name switches" (names may repeat: several tokio workers share one).
switches() {
  for t in /proc/"$SPID"/task/*; do
    awk -v id="${t##*/}" -v n="$(tr ' ' _ < "$t/comm" 2>/dev/null)" \
      '/^voluntary_ctxt_switches|^nonvoluntary_ctxt_switches/ {s += $2} END {print id, n, s}' "$t/status" 2>/dev/null || true
  done | sort -k1,1
}
cpu_ticks() { awk '{print $14 + $15}' /proc/"$SPID"/stat; }

sleep "$WARMUP"
switches > "$WORK/before"
c0=$(cpu_ticks)
sleep "$WINDOW"
switches > "$WORK/after"
c1=$(cpu_ticks)
hz=$(getconf CLK_TCK)
echo "date: $(date -u +%Y-%m-%dT%H:%MZ)  load: $(cut -d' ' -f1-3 /proc/loadavg)  mode: $MODE  window: ${WINDOW}s  health_interval_s: $HEALTH"
echo "binary: $BIN/drosera-sensor"
# Matched by thread id; a thread started during the window counts from zero.
join -a 2 -e 0 -o 2.1,2.2,2.3,1.3 "$WORK/before" "$WORK/after" | awk -v w="$WINDOW" '
  { d = $3 - $4; total += d; per[$2] += d }
  END {
    for (n in per) printf "  thread %-18s %6.2f wake-ups/s\n", n, per[n] / w
    printf "wake-ups/s (all threads): %.2f\n", total / w
  }'
awk -v c0="$c0" -v c1="$c1" -v hz="$hz" -v w="$WINDOW" \
  'BEGIN { printf "cpu: %d ticks in %ds = %.3f %% of a core\n", c1 - c0, w, 100 * (c1 - c0) / hz / w }'
grep -E '^(VmRSS|VmHWM)' /proc/"$SPID"/status | tr -s ' \t' ' '

if [ "${FLOOD:-0}" = 1 ]; then
  ulimit -n 65536 2>/dev/null || ulimit -n 16384 2>/dev/null || true
  FLOODS=()
  for sp in http:$((B+80)) mssql:$((B+433)) smb:$((B+445)) mysql:$((B+306)); do
    "$BIN/drosera-flood" run --target "127.0.0.1:${sp#*:}" --proto "${sp%%:*}" --connections 5000 \
      --concurrency 500 --max-seconds 120 >/dev/null &
    FLOODS+=($!)
  done
  wait "${FLOODS[@]}" 2>/dev/null || true
  echo "after a 20,000-connection flood (4 x 5,000 at 500 concurrent):"
  grep -E '^(VmRSS|VmHWM)' /proc/"$SPID"/status | tr -s ' \t' ' '
fi
