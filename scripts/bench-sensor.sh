#!/usr/bin/env bash
# Sensor throughput per service at concurrency 50 and 500 against two baselines run with the same
# generator in the same run: a bare accept-and-close server (`drosera-flood baseline`, probe
# `connect`) and a scripted server that answers each service's probe with fixed bytes
# (`drosera-flood baseline --proto S`: the same round trips, no parsing, nothing stored); plus
# the sensor's peak RSS (VmHWM) during a 20,000-connection flood. Loopback only; every run is
# bounded by count and time. Usage: scripts/bench-sensor.sh [connections-per-run]
set -euo pipefail
cd "$(dirname "$0")/.."
N=${1:-5000}
cargo build --release -p drosera-sensor -p drosera-flood >&2
BIN=${CARGO_TARGET_DIR:-target}/release
WORK=$(mktemp -d)
SCRIPTED=()
cleanup() { kill "${SENSOR:-}" "${BASE:-}" "${SCRIPTED[@]}" 2>/dev/null || true; wait 2>/dev/null || true; rm -rf "$WORK"; }
trap cleanup EXIT
ulimit -n 65536 2>/dev/null || ulimit -n 16384 2>/dev/null || true
declare -A PORT=([http]=18080 [ftp]=18021 [telnet]=18023 [ssh]=18022 [mssql]=18433 [mysql]=18306 [smb]=18445)
{
  printf '[sensor]\nname = "bench"\ndata_dir = "%s/data"\nuser = ""\nhealth_interval_s = 5\n' "$WORK"
  printf '[store]\ncap_bytes = 536870912\nreserve_bytes = 0\n'
  printf '[limits]\nmax_connections = 4096\nmax_per_source = 4096\nrate_per_source = 1000000\nrate_burst = 1000000\nidle_timeout_s = 5\n'
  for s in "${!PORT[@]}"; do printf '[[service]]\nkind = "%s"\nports = [%s]\nbind = "127.0.0.1"\n' "$s" "${PORT[$s]}"; done
} > "$WORK/sensor.toml"
"$BIN/drosera-sensor" run --config "$WORK/sensor.toml" > "$WORK/sensor.log" 2>&1 &
SENSOR=$!
"$BIN/drosera-flood" baseline --listen 127.0.0.1:18999 --max-seconds 3600 > "$WORK/base.log" 2>&1 &
BASE=$!
declare -A SPORT=([http]=18990 [ftp]=18991 [telnet]=18992 [ssh]=18993 [mssql]=18994 [mysql]=18995 [smb]=18996)
for s in "${!SPORT[@]}"; do
  "$BIN/drosera-flood" baseline --listen "127.0.0.1:${SPORT[$s]}" --proto "$s" --max-seconds 3600 > "$WORK/base-$s.log" 2>&1 &
  SCRIPTED+=($!)
done
for _ in $(seq 50); do grep -q '^ready' "$WORK/sensor.log" 2>/dev/null && break; sleep 0.2; done
grep -q '^ready' "$WORK/sensor.log" || { cat "$WORK/sensor.log" >&2; echo "sensor did not start" >&2; exit 1; }
cps() { "$BIN/drosera-flood" run --target "$1" --proto "$2" --connections "$N" --concurrency "$3" --max-seconds 60 \
        | python3 -c 'import json,sys; d=json.load(sys.stdin); print("%.0f %.2f %.2f %d" % (d["connections_per_second"], d["p50_ms"], d["p99_ms"], d["ok"]))'; }
echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs), $N connections per run"
echo
echo "| service | concurrency | sensor conn/s | bare accept-close conn/s | ratio | scripted exchange conn/s | ratio | sensor p50 ms | p99 ms |"
echo "|---|---|---|---|---|---|---|---|---|"
for c in 50 500; do
  read -r b _ _ _ < <(cps 127.0.0.1:18999 connect "$c")
  for s in http ftp telnet ssh mssql mysql smb; do
    read -r x _ _ _ < <(cps "127.0.0.1:${SPORT[$s]}" "$s" "$c")
    read -r v p50 p99 ok < <(cps "127.0.0.1:${PORT[$s]}" "$s" "$c")
    python3 -c "print(f'| $s | $c | $v | $b | {$v/max($b,1):.0%} | $x | {$v/max($x,1):.0%} | $p50 | $p99 |')"
  done
done
# A 20,000-connection flood at 2,000 concurrent across the services, then the peak RSS.
FLOODS=()
for s in http mssql smb mysql; do
  "$BIN/drosera-flood" run --target "127.0.0.1:${PORT[$s]}" --proto "$s" --connections 5000 --concurrency 500 --max-seconds 120 >/dev/null &
  FLOODS+=($!)
done
wait "${FLOODS[@]}" 2>/dev/null || true
echo
echo "sensor peak RSS (VmHWM) after a 20,000-connection flood: $(grep VmHWM /proc/$SENSOR/status | awk '{printf "%.1f MiB", $2/1024}')"
