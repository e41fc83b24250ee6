#!/usr/bin/env bash
# Sensor throughput per service at concurrency 50 and 500 against two baselines run with the same
# generator in the same run: a bare accept-and-close server (`drosera-flood baseline`, probe
# `connect`) and a scripted server that answers each service's probe with fixed bytes
# (`drosera-flood baseline --proto S`: the same round trips, no parsing, nothing stored); plus
# the sensor's peak RSS (VmHWM) during a 20,000-connection flood. Each figure is the median of
# REPEAT (default 3) runs taken in turn (bare, scripted, sensor), so a noisy neighbour moves all
# three alike; the CPU columns are the server process's own CPU time per connection
# (/proc/PID/stat), which the generator sharing the cores does not blur. At the end the sensor's
# store must hold at least one event per sensor connection with nothing shed or evicted.
# Loopback only; every run is bounded by count and time.
# Paced runs (issue 18): the cost of one connection at the rates a sensor sees, not only at
# saturation. Per service and rate (RATES, default 100, 1,000 and 10,000 new connections/s, the
# generator pacing them, plus `max`: as fast as concurrency 50 allows), the sensor's and the
# scripted server's CPU µs per connection (from /proc/PID/stat utime+stime, 10 ms ticks, and from
# the threads' /proc/PID/task/*/schedstat run time in ns, which is exact at 100/s where a run is a
# few ticks), their context switches per connection (voluntary + nonvoluntary in
# /proc/PID/task/*/status, summed over the threads: each is a thread going to sleep or being
# preempted, so roughly one wake-up each), and before any traffic the idle sensor's wake-ups/s.
# A paced run lasts PACED_SECONDS (default 5) and at most N connections.
# Usage: scripts/bench-sensor.sh [connections-per-run]   (env: REPEAT=3, SERVICES="redis smtp" for
# a subset of the table; PACED_SERVICES (default: SERVICES, else every service), RATES,
# PACED_SECONDS; TABLE=0 skips the concurrency table, PACED=0 the paced runs; SENSOR_WORKERS;
# BIN; LEGACY_CONFIG=1 for a BIN from before 2026-12-02; the flood, RSS and store check run
# either way)
set -euo pipefail
cd "$(dirname "$0")/.."
N=${1:-20000}
REPEAT=${REPEAT:-3}
# BIN=DIR measures the binaries in DIR instead of building (to compare two builds in turn).
if [ -z "${BIN:-}" ]; then
  cargo build --release -p drosera-sensor -p drosera-flood >&2
  BIN=${CARGO_TARGET_DIR:-target}/release
fi
WORK=$(mktemp -d)
SCRIPTED=()
cleanup() { kill "${SENSOR:-}" "${BASE:-}" "${SCRIPTED[@]}" 2>/dev/null || true; wait 2>/dev/null || true; rm -rf "$WORK"; }
trap cleanup EXIT
ulimit -n 65536 2>/dev/null || ulimit -n 16384 2>/dev/null || true
declare -A PORT=([http]=18080 [ftp]=18021 [telnet]=18023 [ssh]=18022 [mssql]=18433 [mysql]=18306 [smb]=18445
                 [redis]=18379 [adb]=18555 [docker]=18375 [smtp]=18025 [rdp]=13389 [vnc]=15900
                 [mqtt]=11883 [mongodb]=17017 [epmap]=10135 [pptp]=11723 [printer]=19100
                 [sip]=15060 [memcached]=11311)
{
  printf '[sensor]\nname = "bench"\ndata_dir = "%s/data"\nuser = ""\nhealth_interval_s = 5\n' "$WORK"
  printf '[store]\ncap_bytes = 536870912\nreserve_bytes = 0\n'
  printf '[limits]\nmax_connections = 4096\nmax_per_source = 4096\nrate_per_source = 1000000\nrate_burst = 1000000\nidle_timeout_s = 5\n'
  # FTP answers a refused login after vsftpd's one-second delay; the probe's anonymous login is
  # accepted here (and the probes' root:root) so that the rows measure the sensor's work, not
  # that deliberate pause.
  # LEGACY_CONFIG=1: for a BIN from before the login policy (2026-12-02), which has no
  # [credentials] section (its FTP accepts every login).
  [ "${LEGACY_CONFIG:-0}" = 1 ] || printf '[credentials]\nrefuse_first = 0\naccept = ["anonymous:*", "root:root"]\n'
  # With SERVICES set, only the services measured (and the flood's) listen, so that an older
  # BIN without the newer services can run the same config.
  if [ -n "${SERVICES:-}" ]; then
    CONFIGURED=$(printf '%s\n' $SERVICES ${PACED_SERVICES:-} http mssql smb mysql | sort -u)
  else
    CONFIGURED="${!PORT[*]}"
  fi
  for s in $CONFIGURED; do printf '[[service]]\nkind = "%s"\nports = [%s]\nbind = "127.0.0.1"\n' "$s" "${PORT[$s]}"; done
} > "$WORK/sensor.toml"
# SENSOR_WORKERS=N tries another runtime width (tokio's TOKIO_WORKER_THREADS, the sensor alone).
env ${SENSOR_WORKERS:+TOKIO_WORKER_THREADS=$SENSOR_WORKERS} "$BIN/drosera-sensor" run --config "$WORK/sensor.toml" > "$WORK/sensor.log" 2>&1 &
SENSOR=$!
"$BIN/drosera-flood" baseline --listen 127.0.0.1:18999 --max-seconds 3600 > "$WORK/base.log" 2>&1 &
BASE=$!
declare -A SPID=()
declare -A SPORT=([http]=18990 [ftp]=18991 [telnet]=18992 [ssh]=18993 [mssql]=18994 [mysql]=18995 [smb]=18996
                  [redis]=18980 [adb]=18981 [docker]=18982 [smtp]=18983 [rdp]=18984 [vnc]=18985
                  [mqtt]=18986 [mongodb]=18987 [epmap]=18988 [pptp]=18989 [printer]=18979
                  [sip]=18978 [memcached]=18977)
for s in "${!SPORT[@]}"; do
  "$BIN/drosera-flood" baseline --listen "127.0.0.1:${SPORT[$s]}" --proto "$s" --max-seconds 3600 > "$WORK/base-$s.log" 2>&1 &
  SCRIPTED+=($!)
  SPID[$s]=$!
done
for _ in $(seq 50); do grep -q '^ready' "$WORK/sensor.log" 2>/dev/null && break; sleep 0.2; done
grep -q '^ready' "$WORK/sensor.log" || { cat "$WORK/sensor.log" >&2; echo "sensor did not start" >&2; exit 1; }
cps() { "$BIN/drosera-flood" run --target "$1" --proto "$2" --connections "$N" --concurrency "$3" --max-seconds 60 \
        | python3 -c 'import json,sys; d=json.load(sys.stdin); print("%.0f %.2f %.2f %d" % (d["connections_per_second"], d["p50_ms"], d["p99_ms"], d["ok"]))'; }
HZ=$(getconf CLK_TCK)
ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
# measure PID TARGET PROBE CONCURRENCY -> "conn/s p50 p99 ok cpu-us-per-connection"
measure() {
  local a b v p50 p99 ok
  a=$(ticks "$1")
  read -r v p50 p99 ok < <(cps "$2" "$3" "$4")
  b=$(ticks "$1")
  echo "$v $p50 $p99 $ok $(python3 -c "print(round(($b - $a) * 1e6 / $HZ / max($ok, 1), 1))")"
}
median() { python3 -c 'import statistics, sys; print(statistics.median(float(x) for x in sys.argv[1:]))' "$@"; }
# snap PID FILE: the process's CPU ticks and, per thread, run time (ns) and context switches.
cat > "$WORK/snap.py" <<'PY'
import json, os, sys
pid, out = sys.argv[1], sys.argv[2]
f = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
tasks = {}
for tid in os.listdir(f"/proc/{pid}/task"):
    try:
        ns = int(open(f"/proc/{pid}/task/{tid}/schedstat").read().split()[0])
        st = {l.split(":")[0]: int(l.split()[1]) for l in open(f"/proc/{pid}/task/{tid}/status") if "ctxt_switches" in l}
        cs, vol = st["voluntary_ctxt_switches"] + st["nonvoluntary_ctxt_switches"], st["voluntary_ctxt_switches"]
        name = open(f"/proc/{pid}/task/{tid}/comm").read().strip()
    except OSError:
        continue  # the thread ended meanwhile
    tasks[tid] = [ns, cs, vol, name]
json.dump({"ticks": int(f[11]) + int(f[12]), "tasks": tasks}, open(out, "w"))
PY
# cost A B CONNECTIONS -> "stat-µs/conn schedstat-µs/conn switches/conn writer-µs/conn voluntary/conn"
# between two snaps (a thread that appeared counts whole; one that ended between them is missing
# from all but the first; writer: the sensor's store-writer thread alone, 0 for the scripted
# server; voluntary: the switches where a thread went to sleep, i.e. wake-ups, without the
# preemptions a busy machine adds).
cat > "$WORK/cost.py" <<'PY'
import json, os, sys
a, b = json.load(open(sys.argv[1])), json.load(open(sys.argv[2]))
n = max(int(sys.argv[3]), 1); hz = os.sysconf("SC_CLK_TCK")
ns = cs = vol = wn = 0
for tid, (bn, bc, bv, name) in b["tasks"].items():
    an, ac, av, _ = a["tasks"].get(tid, [0, 0, 0, ""])
    ns += bn - an; cs += bc - ac; vol += bv - av
    if name == "store-writer":
        wn += bn - an
print("%.1f %.1f %.2f %.1f %.2f" % ((b["ticks"] - a["ticks"]) * 1e6 / hz / n, ns / 1e3 / n, cs / n, wn / 1e3 / n, vol / n))
PY
snap() { python3 "$WORK/snap.py" "$1" "$2"; }
# paced PID TARGET PROBE RATE COUNT -> "conn/s p50 p99 ok stat-µs sched-µs switches writer-µs
# voluntary" per connection
paced() {
  local rate=() v p50 p99 ok
  [ "$4" = max ] || rate=(--rate "$4")
  snap "$1" "$WORK/a.json"
  read -r v p50 p99 ok < <("$BIN/drosera-flood" run --target "$2" --proto "$3" --connections "$5" --concurrency 50 \
      --max-seconds 60 "${rate[@]}" \
    | python3 -c 'import json,sys; d=json.load(sys.stdin); print("%.0f %.2f %.2f %d" % (d["connections_per_second"], d["p50_ms"], d["p99_ms"], d["ok"]))')
  snap "$1" "$WORK/b.json"
  echo "$v $p50 $p99 $ok $(python3 "$WORK/cost.py" "$WORK/a.json" "$WORK/b.json" "$ok")"
}
echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs), $N connections per run, median of $REPEAT"
# The idle sensor's wake-ups: context switches of all its threads over 10 s, before any traffic.
sleep 5
snap "$SENSOR" "$WORK/a.json"; sleep 10; snap "$SENSOR" "$WORK/b.json"
read -r _ idle_us idle_cs _ idle_vol < <(python3 "$WORK/cost.py" "$WORK/a.json" "$WORK/b.json" 10)
echo "idle sensor (10 s, no traffic): $idle_cs wake-ups/s (context switches, all threads; $idle_vol voluntary), $(python3 -c "print(round($idle_us / 1e4, 3))") % of a core"
SENSOR_OK=0
if [ "${TABLE:-1}" != 0 ]; then
echo
echo "| service | concurrency | sensor conn/s | bare accept-close conn/s | ratio | scripted exchange conn/s | ratio | sensor CPU µs/conn | scripted CPU µs/conn | sensor p50 ms | p99 ms |"
echo "|---|---|---|---|---|---|---|---|---|---|---|"
for c in 50 500; do
  for s in ${SERVICES:-http ftp telnet ssh mssql mysql smb redis adb docker smtp rdp vnc mqtt mongodb epmap pptp printer sip memcached}; do
    B=() X=() XC=() V=() VC=() P50=() P99=()
    for _ in $(seq "$REPEAT"); do
      read -r b _ _ _ _ < <(measure "$BASE" 127.0.0.1:18999 connect "$c")
      read -r x _ _ _ xc < <(measure "${SPID[$s]}" "127.0.0.1:${SPORT[$s]}" "$s" "$c")
      read -r v p50 p99 ok vc < <(measure "$SENSOR" "127.0.0.1:${PORT[$s]}" "$s" "$c")
      SENSOR_OK=$((SENSOR_OK + ok))
      B+=("$b") X+=("$x") XC+=("$xc") V+=("$v") VC+=("$vc") P50+=("$p50") P99+=("$p99")
    done
    b=$(median "${B[@]}") x=$(median "${X[@]}") xc=$(median "${XC[@]}") v=$(median "${V[@]}")
    vc=$(median "${VC[@]}") p50=$(median "${P50[@]}") p99=$(median "${P99[@]}")
    python3 -c "print(f'| $s | $c | {$v:.0f} | {$b:.0f} | {$v/max($b,1):.0%} | {$x:.0f} | {$v/max($x,1):.0%} | $vc | $xc | $p50 | $p99 |')"
  done
done
fi
if [ "${PACED:-1}" != 0 ]; then
  PACED_SECONDS=${PACED_SECONDS:-5}
  echo
  echo "Paced runs: concurrency at most 50, PACED_SECONDS=$PACED_SECONDS s per run (at most $N connections), median of $REPEAT"
  echo
  echo "| service | offered conn/s | sensor conn/s | sensor CPU µs/conn (stat) | sensor CPU µs/conn (schedstat) | of which store writer | sensor switches/conn (voluntary) | scripted CPU µs/conn (schedstat) | scripted switches/conn (voluntary) | sensor p50 ms | p99 ms |"
  echo "|---|---|---|---|---|---|---|---|---|---|---|"
  for s in ${PACED_SERVICES:-${SERVICES:-$(printf '%s\n' "${!PORT[@]}" | sort)}}; do
    for r in ${RATES:-100 1000 10000 max}; do
      if [ "$r" = max ]; then n=$N; else n=$(python3 -c "print(min($N, int($r * $PACED_SECONDS)))"); fi
      V=() ST=() SC=() CS=() W=() VO=() XS=() XCS=() XVO=() P50=() P99=()
      for _ in $(seq "$REPEAT"); do
        read -r _ _ _ _ _ xs xcs _ xvo < <(paced "${SPID[$s]}" "127.0.0.1:${SPORT[$s]}" "$s" "$r" "$n")
        read -r v p50 p99 ok st sc cs w vo < <(paced "$SENSOR" "127.0.0.1:${PORT[$s]}" "$s" "$r" "$n")
        SENSOR_OK=$((SENSOR_OK + ok))
        V+=("$v") ST+=("$st") SC+=("$sc") CS+=("$cs") W+=("$w") VO+=("$vo") XS+=("$xs") XCS+=("$xcs") XVO+=("$xvo") P50+=("$p50") P99+=("$p99")
      done
      echo "| $s | $r | $(median "${V[@]}") | $(median "${ST[@]}") | $(median "${SC[@]}") | $(median "${W[@]}") | $(median "${CS[@]}") ($(median "${VO[@]}")) | $(median "${XS[@]}") | $(median "${XCS[@]}") ($(median "${XVO[@]}")) | $(median "${P50[@]}") | $(median "${P99[@]}") |"
    done
  done
fi
# A 20,000-connection flood at 2,000 concurrent across the services, then the peak RSS.
FLOODS=()
for s in http mssql smb mysql; do
  "$BIN/drosera-flood" run --target "127.0.0.1:${PORT[$s]}" --proto "$s" --connections 5000 --concurrency 500 --max-seconds 120 >/dev/null &
  FLOODS+=($!)
done
wait "${FLOODS[@]}" 2>/dev/null || true
echo
echo "sensor peak RSS (VmHWM) after a 20,000-connection flood: $(grep VmHWM /proc/$SENSOR/status | awk '{printf "%.1f MiB", $2/1024}')"
# Every sensor connection above must be in the store: at least one event each, none shed into
# rollups, none evicted.
sleep 2
"$BIN/drosera-sensor" status --config "$WORK/sensor.toml" --json > "$WORK/status.json"
python3 - "$WORK/status.json" "$SENSOR_OK" <<'PY'
import json, sys
st = json.load(open(sys.argv[1])); conns = int(sys.argv[2])
print(f"store: {st['backlog_events']} events for {conns} probe connections in the table, "
      f"{st['shed_connections']} shed, {st['evicted_events']} evicted")
if st['shed_connections'] or st['evicted_events'] or st['backlog_events'] < conns:
    sys.exit("not every connection was stored as an event")
PY
