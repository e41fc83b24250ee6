#!/usr/bin/env bash
# Sample shipping throughput (issue 15): how fast samples a sensor kept travel to the admin over
# the mutual-TLS uplink and land in its sample store.
#
#   1. an admin is created (`init`, `sensor add`) but not started; a release sensor with FTP
#      starts and curl uploads N random files of SIZE_MIB each, which the sensor keeps in its
#      sample area (the admin is down, so nothing ships yet);
#   2. the admin starts; the clock runs from its start until the sensor's sample area is empty
#      (the sensor deletes a sample only after the admin answered `SampleStored`, i.e. after the
#      admin received every chunk, verified the sha256, classified it with YARA, compressed it
#      into its store and committed the row);
#   3. throughput = N x SIZE_MIB / that time; the admin's store must then list N samples.
#
# Random files are the worst case for the admin's zstd (nothing to gain, all to try). Loopback
# only; bounded: gives up after 10 minutes. Release builds of the sensor and the admin.
# Usage: scripts/bench-sample-ship.sh   (env: N=20 SIZE_MIB=16 CHUNK_KIB=256). Results: docs/benchmarks.md
# "## Sample shipping".
set -euo pipefail
cd "$(dirname "$0")/.."
N=${N:-20}
SIZE_MIB=${SIZE_MIB:-16}
command -v curl > /dev/null || { echo "bench-sample-ship: needs curl" >&2; exit 1; }
cargo build --release -q -p drosera-sensor -p drosera-admin
BIN=${CARGO_TARGET_DIR:-target}/release
WORK=$(mktemp -d "${BENCH_DIR:-/var/tmp}/drosera-bench-ship.XXXXXX")
PIDS=()
cleanup() {
  for p in "${PIDS[@]}"; do kill -TERM "$p" 2> /dev/null || true; done
  for p in "${PIDS[@]}"; do wait "$p" 2> /dev/null || true; done
  rm -rf "$WORK"
}
trap cleanup EXIT
port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
INGEST=127.0.0.1:$(port)
FTP=$(port)

echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'), $(uname -m)"
echo "date: $(date -u +%Y-%m-%dT%H:%MZ)  samples: $N x $SIZE_MIB MiB  load: $(cut -d' ' -f1-3 /proc/loadavg)"

"$BIN/drosera-admin" init --dir "$WORK/admin" --admin "$INGEST" --listen "$INGEST" \
  --dashboard-listen "127.0.0.1:$(port)" > /dev/null
# into the [samples] section init wrote (appending at the end put it under whatever section
# init writes last)
sed -i "/^\[samples\]/a max_sample_bytes = $((SIZE_MIB * 1048576))" "$WORK/admin/drosera-admin.toml"
# CHUNK_KIB: the admin's samples.chunk_bytes (default: the admin's default, 256 KiB)
[ -z "${CHUNK_KIB:-}" ] || sed -i "/^\[samples\]/a chunk_bytes = $((CHUNK_KIB * 1024))" "$WORK/admin/drosera-admin.toml"
"$BIN/drosera-admin" sensor add bench --out "$WORK/bundle" --config "$WORK/admin/drosera-admin.toml" > /dev/null
{
  printf '[sensor]\nname = "bench"\ndata_dir = "%s/data"\nuser = ""\n\n' "$WORK"
  printf '[store]\ncap_bytes = %d\nreserve_bytes = 0\n\n' $((1 << 30))
  printf '[credentials]\nrefuse_first = 0\naccept = ["bench:bench"]\n\n'
  printf '[samples]\ncap_bytes = %d\nmax_sample_bytes = %d\n\n' $(((N + 2) * SIZE_MIB * 1048576)) $((SIZE_MIB * 1048576))
  printf '[[service]]\nkind = "ftp"\nports = [%d]\nbind = "127.0.0.1"\n\n' "$FTP"
  cat "$WORK/bundle/uplink.toml"
} > "$WORK/sensor.toml"
mkdir -p "$WORK/files"
for i in $(seq "$N"); do head -c "$((SIZE_MIB * 1048576))" /dev/urandom > "$WORK/files/s$i.bin"; done

"$BIN/drosera-sensor" run --config "$WORK/sensor.toml" > "$WORK/sensor.log" 2>&1 &
PIDS+=($!)
for _ in $(seq 100); do grep -q '^ready' "$WORK/sensor.log" 2> /dev/null && break; sleep 0.1; done
grep -q '^ready' "$WORK/sensor.log" || { cat "$WORK/sensor.log" >&2; echo "sensor did not start" >&2; exit 1; }
for i in $(seq "$N"); do
  curl -sS --max-time 120 -T "$WORK/files/s$i.bin" --user bench:bench "ftp://127.0.0.1:$FTP/s$i.bin"
done
kept() { find "$WORK/data/samples" -maxdepth 1 -regextype posix-extended -regex '.*/[0-9a-f]{64}' | wc -l; }
for _ in $(seq 300); do [ "$(kept)" -ge "$N" ] && break; sleep 0.1; done
[ "$(kept)" -eq "$N" ] || { echo "the sensor kept $(kept) of $N samples" >&2; exit 1; }
rm -rf "$WORK/files"

t0=$(date +%s.%N)
"$BIN/drosera-admin" serve --config "$WORK/admin/drosera-admin.toml" > "$WORK/admin.log" 2>&1 &
PIDS+=($!)
deadline=$((SECONDS + 600))
tf=""
while [ "$(kept)" -gt 0 ]; do
  [ $SECONDS -lt $deadline ] || { echo "gave up: $(kept) samples still at the sensor" >&2; exit 1; }
  # the first sample stored: the admin is up, connected and shipping
  [ -z "$tf" ] && [ "$(kept)" -lt "$N" ] && tf=$(date +%s.%N)
  sleep 0.05
done
t1=$(date +%s.%N)
[ -n "$tf" ] || tf=$t1
stored=$("$BIN/drosera-admin" samples list --json --config "$WORK/admin/drosera-admin.toml" | grep -c '"sha256"')
[ "$stored" -eq "$N" ] || { echo "the admin lists $stored of $N samples" >&2; exit 1; }
python3 - "$t0" "$tf" "$t1" "$N" "$SIZE_MIB" << 'PY'
import sys
t0, tf, t1, n, mib = float(sys.argv[1]), float(sys.argv[2]), float(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5])
mb = n * mib * 1048576 / 1e6
print(f"shipped {n} samples, {mb:.0f} MB, in {t1 - t0:.2f} s (admin start included): {mb / (t1 - t0):.1f} MB/s")
if n > 1 and t1 > tf:
    # steady state: samples 2..n, from the first one stored (admin started, sensor connected)
    print(f"first sample stored {tf - t0:.2f} s after the admin started; samples 2..{n}: "
          f"{mb * (n - 1) / n / (t1 - tf):.1f} MB/s")
PY
echo "load after: $(cut -d' ' -f1-3 /proc/loadavg)"
