#!/usr/bin/env bash
# Sample capture under load (issue 15): N (default 50) concurrent FTP uploads (PROTO=http: HTTP
# PUT bodies) of SIZE_MIB (default 16, the default per-sample cap) each, from curl processes started together (one per upload,
# each bounded by --max-time and paced by --limit-rate so that all of them are in flight at the
# same time), against a release sensor with the appliance's memory limits (soft 48 MiB, hard
# 64 MiB). Pass: the sensor's peak RSS (VmHWM) stays under 64 MiB, and every upload is kept
# whole: the sample area holds exactly N files, each named by and hashing to the sha256 of what
# was sent. Loopback only; the files live in a temporary folder that is deleted at the end
# (about 2 x N x SIZE_MIB of disk while it runs).
# Usage: scripts/bench-samples.sh     (env: N=50 SIZE_MIB=16 RATE=8M PROTO=ftp|http)
set -euo pipefail
cd "$(dirname "$0")/.."
N=${N:-50}
SIZE_MIB=${SIZE_MIB:-16}
RATE=${RATE:-8M}
PROTO=${PROTO:-ftp}
case "$PROTO" in ftp | http) ;; *) echo "PROTO must be ftp or http" >&2; exit 2 ;; esac
cargo build --release -p drosera-sensor >&2
BIN=${CARGO_TARGET_DIR:-target}/release
WORK=$(mktemp -d)
cleanup() { kill "${SENSOR:-}" 2>/dev/null || true; wait 2>/dev/null || true; rm -rf "$WORK"; }
trap cleanup EXIT
PORT=18121
HTTP_PORT=18180
{
  printf '[sensor]\nname = "bench-samples"\ndata_dir = "%s/data"\nuser = ""\n' "$WORK"
  printf '[limits]\nmax_per_source = 256\n'
  printf '[credentials]\nrefuse_first = 0\naccept = ["bench:bench"]\n'
  # room for every upload: the point is memory, not the area's cap (tested elsewhere)
  printf '[samples]\ncap_bytes = %d\nmax_sample_bytes = %d\n' $(( (N + 2) * SIZE_MIB * 1048576 )) $(( SIZE_MIB * 1048576 ))
  printf '[[service]]\nkind = "ftp"\nports = [%d]\nbind = "127.0.0.1"\npassive_ports = [50100, 50227]\n' "$PORT"
  printf '[[service]]\nkind = "http"\nports = [%d]\nbind = "127.0.0.1"\n' "$HTTP_PORT"
} > "$WORK/sensor.toml"
mkdir -p "$WORK/files"
for i in $(seq "$N"); do head -c "$((SIZE_MIB * 1048576))" /dev/urandom > "$WORK/files/up$i.bin"; done
(cd "$WORK/files" && sha256sum up*.bin | awk '{print $1}' | sort) > "$WORK/sent.sha"
"$BIN/drosera-sensor" run --config "$WORK/sensor.toml" > "$WORK/sensor.log" 2>&1 &
SENSOR=$!
for _ in $(seq 100); do grep -q '^ready' "$WORK/sensor.log" 2>/dev/null && break; sleep 0.1; done
grep -q '^ready' "$WORK/sensor.log" || { cat "$WORK/sensor.log" >&2; echo "sensor did not start" >&2; exit 1; }
rss_before=$(awk '/VmRSS/ {print $2}' "/proc/$SENSOR/status")
load=$(cut -d' ' -f1-3 /proc/loadavg)
start=$(date +%s.%N)
pids=()
for i in $(seq "$N"); do
  # FTP logs in (the policy accepts bench:bench); HTTP just PUTs the body.
  if [ "$PROTO" = ftp ]; then auth=(--user bench:bench); url="ftp://127.0.0.1:$PORT/up$i.bin"
  else auth=(); url="http://127.0.0.1:$HTTP_PORT/up$i.bin"; fi
  curl -sS --max-time 300 --limit-rate "$RATE" -T "$WORK/files/up$i.bin" "${auth[@]}" \
    -w '%{time_total}\n' -o /dev/null "$url" > "$WORK/curl.$i" 2>&1 &
  pids+=($!)
done
fails=0
for p in "${pids[@]}"; do wait "$p" || fails=$((fails + 1)); done
end=$(date +%s.%N)
sleep 1
hwm=$(awk '/VmHWM/ {print $2}' "/proc/$SENSOR/status")
rss_after=$(awk '/VmRSS/ {print $2}' "/proc/$SENSOR/status")
kill "$SENSOR"; wait "$SENSOR" 2>/dev/null || true; SENSOR=
ls "$WORK/data/samples" | grep -E '^[0-9a-f]{64}$' | sort > "$WORK/kept.names" || true
(cd "$WORK/data/samples" && for f in $(cat "$WORK/kept.names"); do sha256sum "$f"; done) | awk '$1 == $2 {print $1}' | sort > "$WORK/kept.sha" || true
kept=$(comm -12 "$WORK/sent.sha" "$WORK/kept.sha" | wc -l)
files=$(wc -l < "$WORK/kept.names")
times=$(cat "$WORK"/curl.* | grep -E '^[0-9.]+$' | sort -n)
wall=$(python3 -c "print(round($end - $start, 1))")
echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs), load average before the run: $load"
echo "uploads: $N x $SIZE_MIB MiB over $PROTO (curl --limit-rate $RATE each, all started together); wall ${wall} s;" \
     "per upload min/median/max $(echo "$times" | head -n1) / $(echo "$times" | sed -n "$(( (N + 1) / 2 ))p") / $(echo "$times" | tail -n1) s; curl failures: $fails"
echo "sensor RSS: $((rss_before / 1024)) MiB at start, peak (VmHWM) $((hwm / 1024)) MiB, $((rss_after / 1024)) MiB after"
echo "samples: $kept of $N kept with matching sha256 ($files files in the area)"
echo
echo "| date | load before | uploads | wall s | peak RSS (VmHWM) | kept, sha256 checked |"
echo "|---|---|---|---|---|---|"
echo "| $(date -u '+%Y-%m-%d %H:%M UTC') | $load | $N x $SIZE_MIB MiB $PROTO | $wall | $((hwm / 1024)) MiB | $kept / $N |"
ok=1
[ "$hwm" -lt $((64 * 1024)) ] || { echo "FAIL: peak RSS $((hwm / 1024)) MiB is not under 64 MiB" >&2; ok=0; }
[ "$kept" -eq "$N" ] && [ "$files" -eq "$N" ] || { echo "FAIL: $kept of $N samples kept ($files files)" >&2; tail -n 20 "$WORK/sensor.log" >&2; ok=0; }
[ "$fails" -eq 0 ] || { echo "FAIL: $fails curl uploads failed" >&2; cat "$WORK"/curl.* | grep -v -E '^[0-9.]+$' | sort | uniq -c >&2; ok=0; }
[ "$ok" = 1 ] && echo "bench-samples: pass"
[ "$ok" = 1 ]
