#!/usr/bin/env bash
# Tests the appliance's first-boot script (image/rootfs/usr/lib/drosera/setup) on this machine,
# against temporary directories standing in for the FAT boot partition, /etc/drosera and
# /var/lib/drosera, with a real bundle from `drosera-admin sensor add` and the real
# `drosera-sensor check-config`. The generated nftables rules are syntax-checked (`nft -c`) in
# a private network namespace; nothing touches this host's firewall.
#   image/tests/setup-test.sh [SENSOR_BIN] [ADMIN_BIN]   (default: target/debug binaries)
# Needs root (chown to the sensor user, ip netns).
set -euo pipefail
ROOT_DIR="$(cd "$(dirname "$0")/../.." && pwd)"
SENSOR=${1:-${CARGO_TARGET_DIR:-$ROOT_DIR/target}/debug/drosera-sensor}
ADMIN=${2:-${CARGO_TARGET_DIR:-$ROOT_DIR/target}/debug/drosera-admin}
SETUP="$ROOT_DIR/image/rootfs/usr/lib/drosera/setup"
for b in "$SENSOR" "$ADMIN"; do [ -x "$b" ] || { echo "setup-test: $b missing; cargo build --bins first" >&2; exit 1; }; done
[ "$(id -u)" = 0 ] || { echo "setup-test: needs root (chown, ip netns)" >&2; exit 1; }
command -v nft >/dev/null || { echo "setup-test: nft missing (apt-get install nftables)" >&2; exit 1; }

T=$(mktemp -d /tmp/drosera-setup-test.XXXXXX)
NS="drosera-setup-$$"
cleanup() { ip netns del "$NS" 2>/dev/null || true; rm -rf "$T"; }
trap cleanup EXIT
ip netns add "$NS"
fails=0
ok() { echo "ok - $*"; }
fail() { echo "FAIL - $*"; fails=$((fails + 1)); }
check() { if eval "$2"; then ok "$1"; else fail "$1"; fi; }

# the sensor user: daemon exists on every Debian system (the image has its own 'drosera')
USER_=daemon
export DROSERA_BOOT="$T/boot" DROSERA_ETC="$T/etc" DROSERA_STATE="$T/state" DROSERA_SENSOR_BIN="$SENSOR" \
  DROSERA_USER=$USER_ DROSERA_NO_NFT_LOAD=1 DROSERA_NFT_RULES="$T/nftables.conf" DROSERA_SET_CLOCK=0
mkdir -p "$T/boot" "$T/etc" "$T/state"
cp "$ROOT_DIR/image/rootfs/etc/drosera/sensor.base.toml" "$T/etc/"
cp "$ROOT_DIR/image/rootfs/etc/drosera/firewall.nft" "$T/etc/"
sed "s#/etc/drosera/firewall.nft#$T/etc/firewall.nft#" "$ROOT_DIR/image/rootfs/etc/nftables.conf" > "$T/nftables.conf"
run_setup() { ip netns exec "$NS" sh "$SETUP" > "$T/setup.out" 2>&1; }

echo "# base config is valid"
check "sensor.base.toml passes check-config" "'$SENSOR' check-config '$T/etc/sensor.base.toml' >/dev/null"

echo "# 1. no bundle: no config, clear STATUS, exit 0"
run_setup; rc=$?
check "exit status 0" "[ $rc = 0 ]"
check "no sensor.toml" "[ ! -e '$T/etc/sensor.toml' ]"
check "STATUS.txt says not configured" "grep -q 'sensor: NOT configured' '$T/boot/drosera/STATUS.txt'"
check "journal line" "grep -q 'drosera-setup: sensor: NOT configured' '$T/setup.out'"
check "default firewall rules hold the honeypot ports" "grep -q 'honeypot_tcp { 21,22,23,80,445,1433,2222,2323,3306,8080 }' '$T/etc/firewall.nft'"

echo "# 2. a real bundle from drosera-admin (admin on 10.0.2.2:7443, a private address)"
"$ADMIN" init --dir "$T/admin" --admin 10.0.2.2:7443 > /dev/null
"$ADMIN" sensor add pi-test --out "$T/bundle" -c "$T/admin/drosera-admin.toml" > /dev/null
ls "$T/bundle"
echo "# 2a. incomplete bundle (no sensor.key): refused, nothing installed"
mkdir -p "$T/boot/drosera"
cp "$T/bundle/ca.pem" "$T/bundle/sensor.pem" "$T/bundle/uplink.toml" "$T/boot/drosera/"
run_setup
check "incomplete bundle named in STATUS" "grep -q 'incomplete bundle in drosera/: missing sensor.key' '$T/boot/drosera/STATUS.txt'"
check "still no sensor.toml" "[ ! -e '$T/etc/sensor.toml' ]"

echo "# 2b. bundle whose admin address check-config rejects: rolled back, nothing installed"
cp "$T/bundle/sensor.key" "$T/boot/drosera/sensor.key"
sed 's/^admin = .*/admin = "no-port-here"/' "$T/bundle/uplink.toml" > "$T/boot/drosera/uplink.toml"
run_setup
check "STATUS reports the invalid config and names the key" "grep -q 'bundle: ERROR: the composed config is invalid.*uplink.admin' '$T/boot/drosera/STATUS.txt'"
check "no sensor.toml after a bad bundle" "[ ! -e '$T/etc/sensor.toml' ]"
check "no half-installed secrets" "[ ! -e '$T/state/uplink' ]"
check "bundle left on FAT for the owner to fix" "[ -f '$T/boot/drosera/sensor.key' ]"

echo "# 2c. good bundle"
cp "$T/bundle/uplink.toml" "$T/boot/drosera/uplink.toml"
run_setup
cat "$T/boot/drosera/STATUS.txt"
check "installed" "grep -q 'bundle: installed for sensor \"pi-test\" (admin 10.0.2.2:7443)' '$T/boot/drosera/STATUS.txt'"
check "sensor.toml exists and is valid" "'$SENSOR' check-config '$T/etc/sensor.toml' >/dev/null"
check "sensor name from the bundle" "grep -q '^name = \"pi-test\"' '$T/etc/sensor.toml'"
check "enrollment time carried into sensor.toml" "grep -Eq '^# enrolled: [0-9]{10}' '$T/etc/sensor.toml'"
check "clock ahead of the enrollment: left alone" "! grep -q 'clock:' '$T/boot/drosera/STATUS.txt'"
check "uplink paths point to the state dir" "grep -q '^key = \"$T/state/uplink/sensor.key\"' '$T/etc/sensor.toml'"
check "secrets removed from FAT" "[ ! -e '$T/boot/drosera/sensor.key' ] && [ ! -e '$T/boot/drosera/uplink.toml' ]"
check "state dir 0700 owned by the sensor user" "[ \"\$(stat -c '%a %U' '$T/state')\" = '700 $USER_' ]"
check "uplink dir 0700" "[ \"\$(stat -c '%a %U' '$T/state/uplink')\" = '700 $USER_' ]"
check "key 0600 owned by the sensor user" "[ \"\$(stat -c '%a %U' '$T/state/uplink/sensor.key')\" = '600 $USER_' ]"
check "key content is the bundle's" "cmp -s '$T/bundle/sensor.key' '$T/state/uplink/sensor.key'"
check "firewall allows the admin" "grep -q 'admin_v4 { 10.0.2.2 }' '$T/etc/firewall.nft' && grep -q 'admin_tcp { 7443 }' '$T/etc/firewall.nft'"
check "firewall rules pass nft -c" "ip netns exec '$NS' nft -c -f '$T/nftables.conf'"
check "ssh stays off without a key" "! grep -q mgmt_tcp '$T/etc/firewall.nft'"

echo "# 3. next boot without a bundle keeps the installed config"
run_setup
check "still configured" "grep -q 'sensor: configured (pi-test)' '$T/boot/drosera/STATUS.txt'"

echo "# 3b. a clock behind the enrollment (a Pi with no RTC and no NTP yet) is reported (moving it is off in this test)"
future=$(( $(date +%s) + 86400 * 365 ))
sed -i "s/^# enrolled: [0-9]*/# enrolled: $future/" "$T/etc/sensor.toml"
run_setup
check "clock warning in STATUS" "grep -q 'clock: WARNING: .* is before this card.s enrollment' '$T/boot/drosera/STATUS.txt'"
check "still configured with a late clock" "grep -q 'sensor: configured (pi-test)' '$T/boot/drosera/STATUS.txt'"

echo "# 4. the firewall ruleset really separates: load it in the namespace and list it"
check "ruleset loads in a private netns" "ip netns exec '$NS' nft -f '$T/nftables.conf'"
check "private ranges dropped on output" "ip netns exec '$NS' nft list chain inet drosera output | grep 'ip daddr @lan_v4 counter.*drop' >/dev/null"

echo "# 5. packets: the sensor namespace (rules loaded) and a 'home LAN' namespace joined by veth"
LAN="drosera-lan-$$"
ip netns add "$LAN"
trap 'ip netns del "$LAN" 2>/dev/null || true; cleanup' EXIT
ip link add dsr0 netns "$NS" type veth peer name dsr1 netns "$LAN"
ip -n "$NS" addr add 192.168.77.1/24 dev dsr0; ip -n "$NS" link set dsr0 up; ip -n "$NS" link set lo up
ip -n "$LAN" addr add 192.168.77.2/24 dev dsr1; ip -n "$LAN" addr add 10.0.2.2/32 dev dsr1
ip -n "$LAN" link set dsr1 up; ip -n "$LAN" link set lo up
ip -n "$NS" route add 10.0.2.2/32 dev dsr0
listen() { # ns, addr, port: accept one connection, bounded
  ip netns exec "$1" timeout 20 python3 -c 'import socket,sys
s=socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1); s.bind((sys.argv[1], int(sys.argv[2]))); s.listen(4)
while True:
    c,_=s.accept(); c.sendall(b"hi\n"); c.close()' "$2" "$3" & }
connects() { # ns, addr, port
  ip netns exec "$1" timeout 5 python3 -c 'import socket,sys
s=socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=3); print(s.recv(3))' "$2" "$3" >/dev/null 2>&1; }
listen "$LAN" 192.168.77.2 8080; listen "$LAN" 10.0.2.2 7443; listen "$LAN" 10.0.2.2 8443; listen "$NS" 0.0.0.0 80; listen "$NS" 0.0.0.0 9999
sleep 1
check "sensor cannot reach another LAN device (192.168.77.2:8080)" "! connects '$NS' 192.168.77.2 8080"
check "sensor reaches the admin (10.0.2.2:7443)" "connects '$NS' 10.0.2.2 7443"
check "sensor cannot reach another port on the admin host (10.0.2.2:8443)" "! connects '$NS' 10.0.2.2 8443"
check "attacker reaches the honeypot port 80" "connects '$LAN' 192.168.77.1 80"
check "attacker cannot reach a non-honeypot port 9999" "! connects '$LAN' 192.168.77.1 9999"
check "the LAN side itself is fine (control: 8080 answers locally)" "connects '$LAN' 192.168.77.2 8080"
kill $(jobs -p) 2>/dev/null || true
check "admin element present" "ip netns exec '$NS' nft list set inet drosera admin_v4 | grep '10.0.2.2' >/dev/null"

echo "# 6. FTP from the internet through the real rules: the passive range is open, exactly"
# The sensor config's range as the sensor itself reads it, and the rules generated from it.
range=$("$SENSOR" passive-ports "$T/etc/sensor.toml")
first=${range%-*} last=${range#*-}
check "the config names a passive range ($range)" "echo '$range' | grep -Eqx '[0-9]+-[0-9]+'"
check "the generated rules open exactly that range" "grep -qx 'add element inet drosera honeypot_tcp { $range }' '$T/etc/firewall.nft'"
check "the loaded ruleset holds it" "ip netns exec '$NS' nft list set inet drosera honeypot_tcp | grep -q '$range'"
# "The internet": a public client address (TEST-NET-2) on the far side of the sensor's link.
ip -n "$LAN" addr add 198.51.100.20/32 dev dsr1
ip -n "$NS" route add 198.51.100.0/24 dev dsr0
# The real sensor in the sensor namespace, behind the loaded rules: FTP on 21 with that range.
mkdir -p "$T/ftp-data"
printf '[sensor]\nname = "netns-ftp"\ndata_dir = "%s"\nuser = ""\n[credentials]\nrefuse_first = 0\n[[service]]\nkind = "ftp"\nports = [21]\npassive_ports = [%s, %s]\n' \
  "$T/ftp-data" "$first" "$last" > "$T/ftp-sensor.toml"
ip netns exec "$NS" timeout 120 "$SENSOR" run --config "$T/ftp-sensor.toml" > "$T/ftp-sensor.log" 2>&1 &
FTP_SENSOR=$!
for _ in $(seq 100); do grep -q '^ready' "$T/ftp-sensor.log" 2>/dev/null && break; sleep 0.1; done
check "the sensor runs in the sensor namespace" "grep -q '^ready' '$T/ftp-sensor.log'"
head -c 200000 /dev/urandom > "$T/upload.bin"
sha=$(sha256sum "$T/upload.bin" | cut -d' ' -f1)
ftp_upload() { # source address: a passive FTP upload (curl's default mode) to the sensor
  ip netns exec "$LAN" timeout 30 curl -sS --max-time 25 --interface "$1" -T "$T/upload.bin" --user root:root ftp://192.168.77.1/x86.bin
}
check "curl from the internet (198.51.100.20) uploads over FTP through the firewall" "ftp_upload 198.51.100.20"
check "the upload arrived whole in the sensor's sample area" "cmp -s '$T/upload.bin' '$T/ftp-data/samples/$sha'"
# Only the range: a port just past it stays closed (before this fix every data port was).
listen "$NS" 0.0.0.0 $((last + 1))
sleep 0.5
check "a port just past the range stays closed ($((last + 1)))" "! connects '$LAN' 192.168.77.1 $((last + 1))"
kill "$FTP_SENSOR" $(jobs -p) 2>/dev/null || true
wait "$FTP_SENSOR" 2>/dev/null || true

if [ "$fails" -gt 0 ]; then echo "setup-test: $fails FAILED"; exit 1; fi
echo "setup-test: all passed"
