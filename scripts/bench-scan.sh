#!/usr/bin/env bash
# Scan detection under a SYN flood (issue 16): the release sensor, with [scan] enabled, runs in
# a network namespace this script creates; hping3 in a second namespace sends SYNs over a veth
# pair at RATE per second (default 50,000; SENDERS parallel hping3 processes share it) for
# DURATION seconds (default 10), once from one address to rising ports and once from random
# source addresses (so the per-window source cap overflows). Reported: the rate reached, the
# sensor's CPU (its own utime+stime from /proc/PID/stat, as % of one core over the flood) and
# the accounting, which must be exact: every SYN hping3 says it sent is either counted in a
# scan_window event or reported as a kernel drop, and every counted SYN is in an event.
# Network namespaces only; every sender is bounded by count and time. Needs root and hping3.
# Usage: scripts/bench-scan.sh   (env: RATE=50000 DURATION=10 SENDERS=2)
set -euo pipefail
cd "$(dirname "$0")/.."
RATE=${RATE:-50000}
DURATION=${DURATION:-10}
SENDERS=${SENDERS:-2}
[ "$(id -u)" = 0 ] || { echo "bench-scan: needs root (network namespaces)" >&2; exit 1; }
command -v hping3 >/dev/null || { echo "bench-scan: hping3 missing (scripts/install-deps.sh)" >&2; exit 1; }
cargo build --release -p drosera-sensor >&2
BIN=${CARGO_TARGET_DIR:-target}/release/drosera-sensor
WORK=$(mktemp -d)
NS_S=drs-bscan-s$$ NS_A=drs-bscan-a$$ VS=dbs$$ VA=dba$$
cleanup() {
  [ -n "${SENSOR:-}" ] && kill "$SENSOR" 2>/dev/null || true
  wait 2>/dev/null || true
  ip netns del "$NS_S" 2>/dev/null || true
  ip netns del "$NS_A" 2>/dev/null || true
  rm -rf "$WORK"
}
trap cleanup EXIT
ip netns add "$NS_S"
ip netns add "$NS_A"
ip link add "$VS" netns "$NS_S" type veth peer name "$VA" netns "$NS_A"
ip -n "$NS_S" addr add 10.214.0.1/24 dev "$VS"
ip -n "$NS_A" addr add 10.214.0.2/24 dev "$VA"
for x in "$NS_S $VS" "$NS_A $VA"; do
  set -- $x
  ip -n "$1" link set lo up
  ip -n "$1" link set "$2" up
done
# The sensor's RST answers to random sources have no route: give them one into the veth.
ip -n "$NS_S" route add default dev "$VS"
user=""; id nobody >/dev/null 2>&1 && user=nobody
cat > "$WORK/sensor.toml" <<CONF
[sensor]
name = "bench-scan"
data_dir = "$WORK/data"
user = "$user"
health_interval_s = 3600
[store]
cap_bytes = 268435456
reserve_bytes = 0
[scan]
enabled = true
window_s = 1
max_sources = 4096
rcvbuf_bytes = 4194304
CONF

ticks() { awk '{ print $14 + $15 }' "/proc/$1/stat"; }
HZ=$(getconf CLK_TCK)

run_phase() { # name, extra hping3 args...
  local name=$1; shift
  ip netns exec "$NS_S" "$BIN" run --config "$WORK/sensor.toml" > "$WORK/sensor.out" 2> "$WORK/sensor.err" &
  SENSOR=$!
  for _ in $(seq 1 100); do grep -q '^ready ' "$WORK/sensor.out" 2>/dev/null && break; sleep 0.1; done
  grep -q '^ready ' "$WORK/sensor.out" || { cat "$WORK/sensor.err" >&2; echo "bench-scan: sensor not ready" >&2; exit 1; }
  local per=$((RATE * DURATION / SENDERS)) gap=$((1000000 * SENDERS / RATE))
  local t0 c0 t1 c1 pids=()
  c0=$(ticks "$SENSOR"); t0=$(date +%s.%N)
  for i in $(seq 1 "$SENDERS"); do
    ip netns exec "$NS_A" timeout $((DURATION * 4 + 30)) hping3 -S -q -p ++$((i * 1000)) -i "u$gap" -c "$per" "$@" 10.214.0.1 \
      > "$WORK/hping.$i" 2>&1 &
    pids+=($!)
  done
  for p in "${pids[@]}"; do wait "$p" || true; done
  t1=$(date +%s.%N); c1=$(ticks "$SENSOR")
  sleep 1.5 # the last window ends, the kernel queue drains
  kill -TERM "$SENSOR"; wait "$SENSOR" || true; SENSOR=""
  local sent=0
  for i in $(seq 1 "$SENDERS"); do
    s=$(sed -n 's/^\([0-9]*\) packets transmitted.*/\1/p' "$WORK/hping.$i" | tail -1)
    sent=$((sent + ${s:-0}))
  done
  local line; line=$(grep '^scan totals ' "$WORK/sensor.out" || true)
  [ -n "$line" ] || { cat "$WORK/sensor.err" >&2; echo "bench-scan: no scan totals line" >&2; exit 1; }
  get() { printf '%s\n' "$line" | tr ' ' '\n' | sed -n "s/^$1=//p"; }
  local probes in_events drops overflow events unparsed
  probes=$(get probes); in_events=$(get in_events); drops=$(get kernel_drops); overflow=$(get overflow)
  events=$(get events); unparsed=$(get unparsed)
  local secs rate cpu
  secs=$(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.2f", b - a }')
  rate=$(awk -v n="$sent" -v s="$secs" 'BEGIN { printf "%d", n / s }')
  cpu=$(awk -v c=$((c1 - c0)) -v hz="$HZ" -v s="$secs" 'BEGIN { printf "%.1f", 100 * c / hz / s }')
  local ok=exact
  if [ "$in_events" != "$probes" ] || [ $((probes + drops)) != "$sent" ] || [ "$unparsed" != 0 ]; then ok=MISMATCH; fi
  printf '| %s | %d | %s | %d | %s | %d | %d | %d | %d | %d | %s |\n' \
    "$name" "$sent" "$secs" "$rate" "$cpu" "$probes" "$in_events" "$drops" "$overflow" "$events" "$ok"
  [ "$ok" = exact ] || FAILED=1
}

FAILED=0
echo "bench-scan: RATE=$RATE/s DURATION=${DURATION}s SENDERS=$SENDERS, $(nproc) cores, load $(cut -d' ' -f1-3 /proc/loadavg)"
echo "| flood | SYNs sent | seconds | SYN/s reached | sensor CPU % of one core | counted | in events | kernel drops | unattributed (past source cap) | events | accounting |"
echo "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"
run_phase "one source, rising ports"
run_phase "random sources" --rand-source
exit $FAILED
