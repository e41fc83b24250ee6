#!/usr/bin/env bash
# Scan detection under a SYN flood (issue 16): the release sensor, with [scan] enabled, runs in
# a network namespace this script creates; `drosera-flood syn` in a second namespace sends SYNs
# over a veth pair at RATE per second (default 50,000) for DURATION seconds (default 10), once
# from one address to rising ports and once from random source addresses (so the per-window
# source cap overflows). (hping3 was the sender until 2026-12-03: two of them reached ~28,000/s
# on 2 cores, and its "packets transmitted" is not exact.) Reported: the rate reached, the
# sensor's CPU (its own utime+stime from /proc/PID/stat, as % of one core over the flood) and
# the accounting, which must be exact: every SYN the sender sent arrived (an nftables counter at
# the sensor side's ingress), every arrived SYN is either counted in a scan_window event or
# reported as a kernel drop, and every counted SYN is in an event.
# Network namespaces only; the sender is bounded by count and time. Needs root and nft.
# Usage: scripts/bench-scan.sh   (env: RATE=50000 DURATION=10)
set -euo pipefail
cd "$(dirname "$0")/.."
RATE=${RATE:-50000}
DURATION=${DURATION:-10}
[ "$(id -u)" = 0 ] || { echo "bench-scan: needs root (network namespaces)" >&2; exit 1; }
command -v nft >/dev/null || { echo "bench-scan: nft missing (scripts/install-deps.sh)" >&2; exit 1; }
# the same package set as bench-sensor.sh, so the two share one build
cargo build --release -p drosera-sensor -p drosera-flood >&2
BIN=${CARGO_TARGET_DIR:-target}/release/drosera-sensor
FLOOD=${CARGO_TARGET_DIR:-target}/release/drosera-flood
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
# the sensor user must reach data_dir (which the sensor hands to it) through mktemp's 0700 dir
chmod 755 "$WORK"
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

run_phase() { # name, extra drosera-flood syn args...
  local name=$1; shift
  ip netns exec "$NS_S" "$BIN" run --config "$WORK/sensor.toml" > "$WORK/sensor.out" 2> "$WORK/sensor.err" &
  SENSOR=$!
  for _ in $(seq 1 100); do grep -q '^ready ' "$WORK/sensor.out" 2>/dev/null && break; sleep 0.1; done
  grep -q '^ready ' "$WORK/sensor.out" || { cat "$WORK/sensor.err" >&2; echo "bench-scan: sensor not ready" >&2; exit 1; }
  # every TCP SYN arriving at the sensor's side, counted where the packet socket sees it
  ip netns exec "$NS_S" nft -f - <<NFT
table netdev drsbench
delete table netdev drsbench
table netdev drsbench {
  chain in { type filter hook ingress device "$VS" priority 0; tcp flags & (syn | ack) == syn counter; }
}
NFT
  local t0 c0 t1 c1
  c0=$(ticks "$SENSOR"); t0=$(date +%s.%N)
  ip netns exec "$NS_A" "$FLOOD" syn --target 10.214.0.1 --first-port 1000 --count $((RATE * DURATION)) \
    --rate "$RATE" --max-seconds $((DURATION * 3 + 10)) "$@" > "$WORK/syn.json"
  t1=$(date +%s.%N); c1=$(ticks "$SENSOR")
  sleep 1.5 # the last window ends, the kernel queue drains
  kill -TERM "$SENSOR"; wait "$SENSOR" || true; SENSOR=""
  local sent arrived
  sent=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["sent"])' "$WORK/syn.json")
  arrived=$(ip netns exec "$NS_S" nft list table netdev drsbench | sed -n 's/.*counter packets \([0-9]*\).*/\1/p')
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
  if [ "$arrived" != "$sent" ] || [ "$in_events" != "$probes" ] || [ $((probes + drops)) != "$arrived" ] \
    || [ "$unparsed" != 0 ]; then ok=MISMATCH; fi
  printf '| %s | %d | %d | %s | %d | %s | %d | %d | %d | %d | %d | %s |\n' \
    "$name" "$sent" "$arrived" "$secs" "$rate" "$cpu" "$probes" "$in_events" "$drops" "$overflow" "$events" "$ok"
  [ "$ok" = exact ] || FAILED=1
}

FAILED=0
echo "bench-scan: RATE=$RATE/s DURATION=${DURATION}s, $(nproc) cores, load $(cut -d' ' -f1-3 /proc/loadavg)"
echo "| flood | SYNs sent | arrived (nft) | seconds | SYN/s reached | sensor CPU % of one core | counted | in events | kernel drops | unattributed (past source cap) | events | accounting |"
echo "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"
run_phase "one source, rising ports" --source 10.214.0.2
run_phase "random sources"
exit $FAILED
