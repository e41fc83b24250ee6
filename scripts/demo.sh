#!/usr/bin/env bash
# The main job on embedded defaults: a local admin + sensor demo on loopback with high ports.
# Creates a CA and one sensor bundle in a temporary folder, starts the admin (ingest + dashboard)
# and a sensor, sends one harmless login to the sensor's HTTP service so there is something to
# see, and prints where to look. Ctrl-C stops both and removes the folder (DROSERA_KEEP=1 keeps it).
set -euo pipefail
cd "$(dirname "$0")/.."
command -v cargo >/dev/null || { echo "demo: needs the Rust toolchain (cargo) on PATH" >&2; exit 1; }
echo "demo: building drosera-admin and drosera-sensor (release)..."
cargo build --release -q -p drosera-admin -p drosera-sensor
BIN="${CARGO_TARGET_DIR:-$PWD/target}/release"
WORK=$(mktemp -d -t drosera-demo.XXXXXX)
PIDS=()
stop() {
  trap - INT TERM EXIT
  echo; echo "demo: stopping"
  for p in "${PIDS[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
  for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null || true; done
  if [ "${DROSERA_KEEP:-0}" = 1 ]; then echo "demo: kept $WORK"; else rm -rf "$WORK"; fi
}
trap stop INT TERM EXIT

INGEST=127.0.0.1:17443
DASH=127.0.0.1:19080
"$BIN/drosera-admin" init --dir "$WORK/admin" --admin "$INGEST" --listen "$INGEST" --dashboard-listen "$DASH" >/dev/null
ACFG="$WORK/admin/drosera-admin.toml"
"$BIN/drosera-admin" sensor add demo-sensor --out "$WORK/bundle" --config "$ACFG" >/dev/null
PASS=$(head -c 12 /dev/urandom | od -An -tx1 | tr -d ' \n')
printf '%s\n%s\n' "$PASS" "$PASS" | "$BIN/drosera-admin" user add admin --config "$ACFG" >/dev/null

cat > "$WORK/sensor.toml" <<TOML
[sensor]
name = "demo-sensor"
data_dir = "$WORK/sensor-data"
user = ""
health_interval_s = 10

[store]
cap_bytes = 67108864
reserve_bytes = 0

[[service]]
kind = "http"
ports = [18080]
bind = "127.0.0.1"
[[service]]
kind = "ftp"
ports = [18021]
bind = "127.0.0.1"
[[service]]
kind = "telnet"
ports = [18023]
bind = "127.0.0.1"
[[service]]
kind = "ssh"
ports = [18022]
bind = "127.0.0.1"
[[service]]
kind = "mssql"
ports = [11433]
bind = "127.0.0.1"
[[service]]
kind = "mysql"
ports = [13306]
bind = "127.0.0.1"
[[service]]
kind = "smb"
ports = [14445]
bind = "127.0.0.1"
[[service]]
kind = "redis"
ports = [16379]
bind = "127.0.0.1"
[[service]]
kind = "adb"
ports = [15555]
bind = "127.0.0.1"
[[service]]
kind = "docker"
ports = [12375]
bind = "127.0.0.1"
[[service]]
kind = "smtp"
ports = [12525]
bind = "127.0.0.1"
[[service]]
kind = "rdp"
ports = [13389]
bind = "127.0.0.1"
[[service]]
kind = "vnc"
ports = [15900]
bind = "127.0.0.1"
[[service]]
kind = "mqtt"
ports = [11883]
bind = "127.0.0.1"
[[service]]
kind = "mongodb"
ports = [17017]
bind = "127.0.0.1"
[[service]]
kind = "epmap"
ports = [10135]
bind = "127.0.0.1"
[[service]]
kind = "pptp"
ports = [11723]
bind = "127.0.0.1"
[[service]]
kind = "printer"
ports = [19100]
bind = "127.0.0.1"

TOML
cat "$WORK/bundle/uplink.toml" >> "$WORK/sensor.toml"
"$BIN/drosera-sensor" check-config "$WORK/sensor.toml" >/dev/null

"$BIN/drosera-admin" serve --config "$ACFG" > "$WORK/admin.log" 2>&1 &
PIDS+=($!)
"$BIN/drosera-sensor" run --config "$WORK/sensor.toml" > "$WORK/sensor.log" 2>&1 &
PIDS+=($!)
for _ in $(seq 100); do grep -q '^ready' "$WORK/sensor.log" 2>/dev/null && break; sleep 0.1; done
grep -q '^ready' "$WORK/sensor.log" || { echo "demo: the sensor did not start:" >&2; cat "$WORK/sensor.log" >&2; exit 1; }

# One harmless login so the report has something to show.
if command -v curl >/dev/null; then
  curl -s -o /dev/null -u demo:hunter2 -A "drosera-demo" "http://127.0.0.1:18080/admin" || true
fi

cat <<MSG

Drosera demo running (folder: $WORK)
  sensor services (loopback): http 18080, ftp 18021, telnet 18023, ssh 18022,
                              mssql 11433, mysql 13306, smb 14445, redis 16379, adb 15555,
                              docker 12375, smtp 12525, rdp 13389, vnc 15900,
                              mqtt 11883, mongodb 17017, epmap 10135, pptp 11723, printer 19100
  admin ingest (mutual TLS):  $INGEST
  dashboard:                  http://$DASH/   user: admin   password: $PASS

Try an attack, then look:
  curl -u root:toor http://127.0.0.1:18080/
  redis-cli -p 16379 CONFIG SET dir /var/spool/cron
  $BIN/drosera-admin report --config $ACFG
  $BIN/drosera-sensor status --config $WORK/sensor.toml --json
Logs: $WORK/admin.log, $WORK/sensor.log.  Ctrl-C stops both.
MSG
wait "${PIDS[@]}"
