#!/usr/bin/env bash
# Tests the appliance's first-boot script (image/rootfs/usr/lib/drosera/setup) on this machine,
# against temporary directories standing in for the FAT boot partition, /etc/drosera and
# /var/lib/drosera, with a real bundle from `drosera-admin sensor add` and the real
# `drosera-sensor check-config`. The generated nftables rules are syntax-checked (`nft -c`) in
# a private network namespace; nothing touches this host's firewall.
#   image/tests/setup-test.sh [SENSOR_BIN] [ADMIN_BIN]   (default: target/debug binaries)
# Also: the strict check of the bundle's `admin` (nothing can be injected into the nft rules),
# drosera/updates.conf (unattended-upgrades settings, apt sources, mirrors), and, with packets
# between namespaces, which user may send what: the sensor user only to the admin, DNS/NTP only
# for the resolver/time users, the Debian mirrors only for apt's _apt; and `setup --firewall`
# following a pushed config that became active (a new port opened, a removed one closed, an
# invalid one keeping the last good rules, the admin never taken from the pushed file).
# Needs root (chown to the sensor user, ip netns, setpriv to run as those users).
set -euo pipefail
ROOT_DIR="$(cd "$(dirname "$0")/../.." && pwd)"
SENSOR=${1:-${CARGO_TARGET_DIR:-$ROOT_DIR/target}/debug/drosera-sensor}
ADMIN=${2:-${CARGO_TARGET_DIR:-$ROOT_DIR/target}/debug/drosera-admin}
SETUP="$ROOT_DIR/image/rootfs/usr/lib/drosera/setup"
for b in "$SENSOR" "$ADMIN"; do [ -x "$b" ] || { echo "setup-test: $b missing; cargo build --bins first" >&2; exit 1; }; done
[ "$(id -u)" = 0 ] || { echo "setup-test: needs root (chown, ip netns)" >&2; exit 1; }
command -v nft >/dev/null || { echo "setup-test: nft missing (apt-get install nftables)" >&2; exit 1; }
command -v setpriv >/dev/null || { echo "setup-test: setpriv missing (apt-get install util-linux)" >&2; exit 1; }

T=$(mktemp -d /tmp/drosera-setup-test.XXXXXX)
NS="drosera-setup-$$"
cleanup() { ip netns del "$NS" 2>/dev/null || true; rm -rf "$T"; }
trap cleanup EXIT
ip netns add "$NS"
fails=0
ok() { echo "ok - $*"; }
fail() { echo "FAIL - $*"; fails=$((fails + 1)); }
check() { if eval "$2"; then ok "$1"; else fail "$1"; fi; }

# the sensor user: daemon exists on every Debian system (the image has its own 'drosera');
# stand-ins for the image's systemd-resolve and systemd-timesync users from base-passwd (on
# every Debian system); apt's _apt is the real one
USER_=daemon RESOLVER_=proxy TIMESYNC_=list APT_=_apt
export DROSERA_BOOT="$T/boot" DROSERA_ETC="$T/etc" DROSERA_STATE="$T/state" DROSERA_SENSOR_BIN="$SENSOR" \
  DROSERA_USER=$USER_ DROSERA_NO_NFT_LOAD=1 DROSERA_NFT_RULES="$T/nftables.conf" DROSERA_SET_CLOCK=0 \
  DROSERA_RESOLVER_USER=$RESOLVER_ DROSERA_TIMESYNC_USER=$TIMESYNC_ DROSERA_APT_USER=$APT_ \
  DROSERA_APT_DIR="$T/apt" DROSERA_SYSTEMD_DIR="$T/systemd"
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
check "default firewall rules hold the honeypot ports" "grep -qx 'add element inet drosera honeypot_tcp { 21,22,23,25,80,135,445,587,1433,1723,1883,2222,2323,2375,3306,5060,5555,6379,8080,9100,11211,27017,49152 }' '$T/etc/firewall.nft'"
check "default firewall rules hold the UDP honeypot ports (TFTP, SSDP, SIP, memcached), UDP only" "grep -qx 'add element inet drosera honeypot_udp { 69,1900,5060,11211 }' '$T/etc/firewall.nft'"
check "the image's default firewall.nft is what setup generates (TCP and UDP)" "grep -q 'honeypot_tcp { 21, 22, 23, 25, 80, 135, 445, 587, 1433, 1723, 1883, 2222, 2323, 2375, 3306, 5060, 5555, 6379, 8080, 9100, 11211, 27017, 49152 }' '$ROOT_DIR/image/rootfs/etc/drosera/firewall.nft' && grep -q 'honeypot_udp { 69, 1900, 5060, 11211 }' '$ROOT_DIR/image/rootfs/etc/drosera/firewall.nft'"
uid() { id -u "$1"; }
check "firewall: the sensor user's uid" "grep -qx 'add element inet drosera sensor_uid { $(uid $USER_) }' '$T/etc/firewall.nft'"
check "firewall: the resolver user's uid (DNS)" "grep -qx 'add element inet drosera dns_uid { $(uid $RESOLVER_) }' '$T/etc/firewall.nft'"
check "firewall: the time-sync user's uid (NTP)" "grep -qx 'add element inet drosera ntp_uid { $(uid $TIMESYNC_) }' '$T/etc/firewall.nft'"
check "firewall: apt's download user's uid" "grep -qx 'add element inet drosera apt_uid { $(uid $APT_) }' '$T/etc/firewall.nft'"
check "default firewall rules pass nft -c" "ip netns exec '$NS' nft -c -f '$T/nftables.conf'"

echo "# 1b. security updates without drosera/updates.conf: the defaults"
UU="$T/apt/apt.conf.d/52drosera-updates"
check "STATUS: updates on" "grep -q 'updates: Debian security updates on (install from 03:00 UTC' '$T/boot/drosera/STATUS.txt'"
check "unattended-upgrades enabled" "grep -qx 'APT::Periodic::Unattended-Upgrade \"1\";' '$UU' && grep -qx 'APT::Periodic::Update-Package-Lists \"1\";' '$UU'"
check "reboot when needed, at 04:00" "grep -qx 'Unattended-Upgrade::Automatic-Reboot \"true\";' '$UU' && grep -qx 'Unattended-Upgrade::Automatic-Reboot-Time \"04:00\";' '$UU'"
check "conffiles kept, never a prompt" "grep -q 'force-confold' '$UU'"
check "apt parses the generated apt.conf" "APT_CONFIG='$UU' apt-config dump | grep 'Unattended-Upgrade::Automatic-Reboot-Time \"04:00\";' >/dev/null"
check "sources: Debian + security from deb.debian.org" "grep -qx 'deb http://deb.debian.org/debian-security bookworm-security main non-free-firmware' '$T/apt/sources.list' && grep -qx 'deb http://deb.debian.org/debian bookworm main non-free-firmware' '$T/apt/sources.list'"
check "upgrade timer at 03:00 UTC" "grep -qx 'OnCalendar=\*-\*-\* 03:00 UTC' '$T/systemd/apt-daily-upgrade.timer.d/drosera.conf'"
check "systemd understands the calendar spec" "systemd-analyze calendar '*-*-* 03:00 UTC' >/dev/null"
check "mirrors for apt-firewall" "[ \"\$(cat '$T/etc/mirrors')\" = \"\$(printf 'http://deb.debian.org/debian\nhttp://deb.debian.org/debian-security')\" ]"

echo "# 1b2. the image's updates.conf.example is valid and says what the defaults are"
cp "$UU" "$T/uu.defaults"; cp "$T/apt/sources.list" "$T/sources.defaults"
cp "$ROOT_DIR/image/boot/updates.conf.example" "$T/boot/drosera/updates.conf"
run_setup
check "example accepted" "! grep -q 'updates: ERROR' '$T/boot/drosera/STATUS.txt'"
check "example = the defaults" "cmp -s '$UU' '$T/uu.defaults' && cmp -s '$T/apt/sources.list' '$T/sources.defaults'"

echo "# 1c. drosera/updates.conf with a LAN mirror (apt-cacher-ng style) and an internet one"
cat > "$T/boot/drosera/updates.conf" <<'CONF'
# Debian security updates on this sensor
updates = on
upgrade_time = 02:30     # UTC
reboot = on
reboot_time = "05:15"
mirror = http://192.168.77.2:3142/debian
security_mirror = http://203.0.113.80/debian-security
CONF
run_setup
check "STATUS: the configured times and mirrors" "grep -q 'updates: Debian security updates on (install from 02:30 UTC within 30 min; reboot when needed: on at 05:15; mirrors http://192.168.77.2:3142/debian, http://203.0.113.80/debian-security)' '$T/boot/drosera/STATUS.txt'"
check "reboot time 05:15" "grep -qx 'Unattended-Upgrade::Automatic-Reboot-Time \"05:15\";' '$UU'"
check "upgrade timer at 02:30 UTC" "grep -qx 'OnCalendar=\*-\*-\* 02:30 UTC' '$T/systemd/apt-daily-upgrade.timer.d/drosera.conf'"
check "sources use the mirrors" "grep -qx 'deb http://192.168.77.2:3142/debian bookworm-updates main non-free-firmware' '$T/apt/sources.list' && grep -qx 'deb http://203.0.113.80/debian-security bookworm-security main non-free-firmware' '$T/apt/sources.list'"
check "firewall: the mirrors by address and port" "grep -qx 'add element inet drosera mirror_v4 { 192.168.77.2 . 3142,203.0.113.80 . 80 }' '$T/etc/firewall.nft'"
check "firewall rules with mirrors pass nft -c" "ip netns exec '$NS' nft -c -f '$T/nftables.conf'"
cp "$UU" "$T/uu.good"; cp "$T/apt/sources.list" "$T/sources.good"
cp "$T/boot/drosera/updates.conf" "$T/updates.good"
bad_updates() { # name, line, expected STATUS text
  { cat "$T/updates.good"; printf '%s\n' "$2"; } > "$T/boot/drosera/updates.conf"
  run_setup
  check "bad updates.conf ($1): refused, line and key named" "grep -q \"updates: ERROR: drosera/updates.conf: line 8: $3\" '$T/boot/drosera/STATUS.txt'"
  check "bad updates.conf ($1): previous settings stay" "cmp -s '$UU' '$T/uu.good' && cmp -s '$T/apt/sources.list' '$T/sources.good'"
  check "bad updates.conf ($1): nothing of it in the rules or apt" "! grep -Eq 'add rule|evil|25:00|yes' '$T/etc/firewall.nft' '$UU' '$T/apt/sources.list'"
}
bad_updates "unknown key" "reboot_window = 04:00" "unknown key 'reboot_window'"
bad_updates "bad time" "reboot_time = 25:00" "reboot_time must be HH:MM"
bad_updates "bad on/off" "reboot = yes" "reboot must be on or off"
bad_updates "nft text in a mirror" 'mirror = http://203.0.113.80/x } ; add rule inet drosera output accept' "mirror must be an http:// or https:// URL"
bad_updates "apt text in a mirror" 'security_mirror = http://evil.example/debian bookworm main' "security_mirror must be an http:// or https:// URL"
bad_updates "not key = value" 'just words' "expected key = value"
printf '\357\273\277updates = on\r\nreboot = off\r\n' > "$T/boot/drosera/updates.conf"
run_setup
check "reboot = off (file from Windows: BOM, CRLF)" "grep -qx 'Unattended-Upgrade::Automatic-Reboot \"false\";' '$UU'"
printf 'updates = off\n' > "$T/boot/drosera/updates.conf"
run_setup
check "updates = off: nothing periodic" "grep -qx 'APT::Periodic::Unattended-Upgrade \"0\";' '$UU' && grep -qx 'APT::Periodic::Update-Package-Lists \"0\";' '$UU'"
check "updates = off: STATUS says so" "grep -q 'updates: OFF' '$T/boot/drosera/STATUS.txt'"
check "updates = off: no mirror in the firewall" "! grep -q mirror_v '$T/etc/firewall.nft'"
cp "$T/updates.good" "$T/boot/drosera/updates.conf"
run_setup
check "back to the LAN + internet mirrors" "grep -q 'mirror_v4 { 192.168.77.2 . 3142,203.0.113.80 . 80 }' '$T/etc/firewall.nft'"

echo "# 1d. apt-firewall resolves mirror names and ignores what is not a mirror URL"
mkdir -p "$T/af"
printf 'http://localhost:8080/debian\nhttp://x/ } ; add rule inet drosera output accept\nhttps://[fd00::5]/d\n' > "$T/af/mirrors"
DROSERA_ETC="$T/af" sh "$(dirname "$SETUP")/apt-firewall" --print > "$T/af/out" 2> "$T/af/err"
cat "$T/af/out"
check "name resolved (localhost -> 127.0.0.1 . 8080)" "grep -q 'mirror_v4 { 127.0.0.1 . 8080 }' '$T/af/out'"
check "IPv6 mirror with the https port" "grep -q 'mirror_v6 { fd00::5 . 443 }' '$T/af/out'"
check "injection line ignored and reported" "! grep -q 'add rule' '$T/af/out' && grep -q 'ignoring' '$T/af/err'"

echo "# 1e. --check-admin: exactly HOST:PORT"
for good in 1.2.3.4:7443 '[2001:db8::1]:7443' admin.example.org:7443 localhost:1 a-b.example:65535; do
  check "admin '$good' accepted" "sh '$SETUP' --check-admin '$good' >/dev/null"
done
for bad in '1.2.3.4:7443 } ; add rule inet drosera output accept' '1.2.3.4:7443}' 'h$(id):1' '1.2.3.4' '1.2.3.4:0' \
  '1.2.3.4:65536' '999.1.1.1:7443' '::1:7443' '[::1]' '-x.example:1' 'a b:1' '1.2.3.4:7443,5.6.7.8' ''; do
  check "admin '$bad' refused" "! sh '$SETUP' --check-admin '$bad' >/dev/null"
done

echo "# 1b. scan detection: CAP_NET_RAW stays only while [scan] enabled = true"
DROPIN="$T/systemd/drosera-sensor.service.d/scan.conf"
check "scan on in the base config: no drop-in" "[ ! -e '$DROPIN' ] && grep -q 'scan: detection on' '$T/setup.out'"
cp "$T/etc/sensor.base.toml" "$T/base.scan-on"
awk '/^\[/ { s = ($1 == "[scan]") } s && /^enabled *=/ { print "enabled = false"; next } { print }' "$T/base.scan-on" > "$T/etc/sensor.base.toml"
run_setup
check "scan off: the drop-in removes CAP_NET_RAW and AF_PACKET" "grep -qx 'AmbientCapabilities=~CAP_NET_RAW' '$DROPIN' && grep -qx 'CapabilityBoundingSet=~CAP_NET_RAW' '$DROPIN' && grep -qx 'RestrictAddressFamilies=~AF_PACKET' '$DROPIN'"
check "scan off: logged" "grep -q 'scan: detection off' '$T/setup.out'"
cp "$T/base.scan-on" "$T/etc/sensor.base.toml"
run_setup
check "scan on again: the drop-in is gone" "[ ! -e '$DROPIN' ]"

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
check "STATUS names uplink.admin and the form HOST:PORT" "grep -q 'bundle: ERROR: drosera/uplink.toml: uplink.admin is not HOST:PORT' '$T/boot/drosera/STATUS.txt'"
check "no sensor.toml after a bad bundle" "[ ! -e '$T/etc/sensor.toml' ]"
check "no half-installed secrets" "[ ! -e '$T/state/uplink' ]"
check "bundle left on FAT for the owner to fix" "[ -f '$T/boot/drosera/sensor.key' ]"

echo "# 2b1. bundle that check-config rejects (an unknown [uplink] key): rolled back, nothing installed"
sed 's/^\[uplink\]$/[uplink]\nno_such_key = 1/' "$T/bundle/uplink.toml" > "$T/boot/drosera/uplink.toml"
grep -q '^no_such_key = 1' "$T/boot/drosera/uplink.toml" || { echo "setup-test: could not make the 2b1 bundle" >&2; exit 1; }
run_setup
check "STATUS reports the invalid config and names the key" "grep -q 'bundle: ERROR: the composed config is invalid.*no_such_key' '$T/boot/drosera/STATUS.txt'"
check "no sensor.toml after a rejected config" "[ ! -e '$T/etc/sensor.toml' ]"
check "no half-installed secrets after a rejected config" "[ ! -e '$T/state/uplink' ]"

echo "# 2b2. bundle whose admin would inject nft text: refused before anything is installed"
sed 's/^admin = .*/admin = "10.0.2.2:7443 } ; add rule inet drosera output accept ; add element inet drosera admin_tcp { 1"/' "$T/bundle/uplink.toml" > "$T/boot/drosera/uplink.toml"
run_setup
check "STATUS names uplink.admin and the form" "grep -q 'bundle: ERROR: drosera/uplink.toml: uplink.admin is not HOST:PORT' '$T/boot/drosera/STATUS.txt'"
check "no sensor.toml after an injection attempt" "[ ! -e '$T/etc/sensor.toml' ]"
check "no secrets installed" "[ ! -e '$T/state/uplink' ]"
check "nothing of it in the firewall" "! grep -Eq 'add rule|admin' '$T/etc/firewall.nft'"

echo "# 2c. good bundle (with the update public key of signed updates)"
cp "$T/bundle/uplink.toml" "$T/boot/drosera/uplink.toml"
cp "$T/bundle/update.pub" "$T/boot/drosera/update.pub"
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
check "update public key installed beside ca.pem" "cmp -s '$T/bundle/update.pub' '$T/state/uplink/update.pub'"
check "the sensor finds the update key (check-config loads it)" "'$SENSOR' check-config '$T/etc/sensor.toml' >/dev/null"
check "firewall allows the admin" "grep -q 'admin_v4 { 10.0.2.2 }' '$T/etc/firewall.nft' && grep -q 'admin_tcp { 7443 }' '$T/etc/firewall.nft'"
check "firewall rules pass nft -c" "ip netns exec '$NS' nft -c -f '$T/nftables.conf'"
check "ssh stays off without a key" "! grep -q mgmt_tcp '$T/etc/firewall.nft'"

echo "# 3. next boot without a bundle keeps the installed config"
run_setup
check "still configured" "grep -q 'sensor: configured (pi-test)' '$T/boot/drosera/STATUS.txt'"

echo "# 3a. a sensor.toml whose admin was edited by hand into nft text: no admin rule, nothing injected"
cp "$T/etc/sensor.toml" "$T/sensor.toml.good"
sed -i 's/^admin = .*/admin = "10.0.2.2:7443 } ; add rule inet drosera output accept"/' "$T/etc/sensor.toml"
run_setup
check "STATUS: firewall ERROR for uplink.admin" "grep -q 'firewall: ERROR: uplink.admin in .* is not HOST:PORT' '$T/boot/drosera/STATUS.txt'"
check "no admin element, no injected rule" "! grep -Eq 'add rule|admin_' '$T/etc/firewall.nft'"
cp "$T/sensor.toml.good" "$T/etc/sensor.toml"
run_setup
check "admin back with the good config" "grep -q 'admin_v4 { 10.0.2.2 }' '$T/etc/firewall.nft'"

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
# "the internet": a public DNS server and the Debian security mirror (TEST-NET-3 addresses)
ip -n "$LAN" addr add 203.0.113.53/32 dev dsr1; ip -n "$LAN" addr add 203.0.113.80/32 dev dsr1
ip -n "$LAN" link set dsr1 up; ip -n "$LAN" link set lo up
ip -n "$NS" route add 10.0.2.2/32 dev dsr0
ip -n "$NS" route add 203.0.113.0/24 dev dsr0
listen() { # ns, addr, port: accept one connection, bounded
  ip netns exec "$1" timeout 120 python3 -c 'import socket,sys
s=socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1); s.bind((sys.argv[1], int(sys.argv[2]))); s.listen(4)
while True:
    c,_=s.accept(); c.sendall(b"hi\n"); c.close()' "$2" "$3" & }
connects() { # ns, addr, port
  ip netns exec "$1" timeout 5 python3 -c 'import socket,sys
s=socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=3); print(s.recv(3))' "$2" "$3" >/dev/null 2>&1; }
# UDP: every datagram received is written (its payload, a token naming the check) to a file
udp_listen() { # ns, addr, port
  ip netns exec "$1" timeout 120 python3 -c 'import socket,sys
s=socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.bind((sys.argv[1], int(sys.argv[2])))
while True:
    d,_=s.recvfrom(512)
    with open(sys.argv[3], "ab") as f: f.write(d + b"\n")' "$2" "$3" "$T/udp-$2-$3.log" & }
as_user() { # user ns cmd...: run a command in the namespace as that user (uid, gid, no groups)
  local u=$1 ns=$2; shift 2
  ip netns exec "$ns" setpriv --reuid="$u" --regid="$(id -g "$u")" --clear-groups "$@"
}
# Debian's python3 by its path: other users may not be able to run a python3 found in root's PATH
PY=/usr/bin/python3
[ -x "$PY" ] || { echo "setup-test: $PY missing (apt-get install python3)" >&2; exit 1; }
tcp_as() { # user, addr, port (from the sensor namespace): prints connected, blocked or error
  as_user "$1" "$NS" timeout 6 "$PY" -c 'import socket,sys
try:
    s=socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=3); s.recv(3); print("connected")
except (PermissionError, TimeoutError):
    print("blocked")' "$2" "$3" 2>/dev/null || echo error; }
udp_as() { # user, addr, port: one datagram with a fresh token; prints arrived, blocked, lost or error
  local tok="tok-$1-$2-$3-$RANDOM" r
  r=$(as_user "$1" "$NS" "$PY" -c 'import socket,sys
s=socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
try:
    s.sendto(sys.argv[3].encode(), (sys.argv[1], int(sys.argv[2]))); print("sent")
except PermissionError:
    print("blocked")' "$2" "$3" "$tok" 2>/dev/null) || r=error
  if [ "$r" = sent ]; then
    sleep 0.5
    if grep -qx "$tok" "$T/udp-$2-$3.log" 2>/dev/null; then r=arrived; else r=lost; fi
  fi
  echo "${r:-error}"
}
# a "blocked" result is the firewall's EPERM (or a dropped SYN), never a harness failure
is() { [ "$1" = "$2" ] || { echo "  (got $1, want $2)"; return 1; }; }
listen "$LAN" 192.168.77.2 8080; listen "$LAN" 10.0.2.2 7443; listen "$LAN" 10.0.2.2 8443; listen "$NS" 0.0.0.0 80; listen "$NS" 0.0.0.0 9999
listen "$LAN" 192.168.77.2 53; listen "$LAN" 203.0.113.53 53; listen "$LAN" 203.0.113.53 80; listen "$LAN" 192.168.77.2 3142; listen "$LAN" 203.0.113.80 80
udp_listen "$LAN" 192.168.77.2 53; udp_listen "$LAN" 203.0.113.53 53; udp_listen "$LAN" 203.0.113.53 123; udp_listen "$LAN" 192.168.77.2 67
sleep 1
check "sensor cannot reach another LAN device (192.168.77.2:8080)" "! connects '$NS' 192.168.77.2 8080"
check "sensor reaches the admin (10.0.2.2:7443)" "connects '$NS' 10.0.2.2 7443"
check "sensor cannot reach another port on the admin host (10.0.2.2:8443)" "! connects '$NS' 10.0.2.2 8443"
check "attacker reaches the honeypot port 80" "connects '$LAN' 192.168.77.1 80"
check "attacker cannot reach a non-honeypot port 9999" "! connects '$LAN' 192.168.77.1 9999"
check "the LAN side itself is fine (control: 8080 answers locally)" "connects '$LAN' 192.168.77.2 8080"
echo "# 5b. by user: the sensor user reaches the admin and nothing else"
check "sensor user reaches the admin (10.0.2.2:7443)" "is \$(tcp_as $USER_ 10.0.2.2 7443) connected"
check "sensor user blocked from LAN:53/tcp (the router's DNS)" "is \$(tcp_as $USER_ 192.168.77.2 53) blocked"
check "sensor user blocked from internet:53/tcp" "is \$(tcp_as $USER_ 203.0.113.53 53) blocked"
check "sensor user blocked from LAN:53/udp" "is \$(udp_as $USER_ 192.168.77.2 53) blocked"
check "sensor user blocked from internet:53/udp" "is \$(udp_as $USER_ 203.0.113.53 53) blocked"
check "sensor user blocked from internet:123/udp (NTP)" "is \$(udp_as $USER_ 203.0.113.53 123) blocked"
check "sensor user blocked from the mirrors" "is \$(tcp_as $USER_ 203.0.113.80 80) blocked && is \$(tcp_as $USER_ 192.168.77.2 3142) blocked"
check "sensor user blocked from another LAN device" "is \$(tcp_as $USER_ 192.168.77.2 8080) blocked"
check "sensor user blocked from the LAN's DHCP server port (67/udp)" "is \$(udp_as $USER_ 192.168.77.2 67) blocked"
check "DHCP (67/udp) stays open for system processes (here root; on the Pi systemd-networkd renews)" "is \$(udp_as root 192.168.77.2 67) arrived"
check "resolver user reaches LAN:53 and internet:53 over TCP" "is \$(tcp_as $RESOLVER_ 192.168.77.2 53) connected && is \$(tcp_as $RESOLVER_ 203.0.113.53 53) connected"
check "resolver user reaches LAN:53 and internet:53 over UDP" "is \$(udp_as $RESOLVER_ 192.168.77.2 53) arrived && is \$(udp_as $RESOLVER_ 203.0.113.53 53) arrived"
check "resolver user: no NTP, no mirror, no other LAN port" "is \$(udp_as $RESOLVER_ 203.0.113.53 123) blocked && is \$(tcp_as $RESOLVER_ 203.0.113.80 80) blocked && is \$(tcp_as $RESOLVER_ 192.168.77.2 8080) blocked"
check "time-sync user reaches NTP (internet:123/udp)" "is \$(udp_as $TIMESYNC_ 203.0.113.53 123) arrived"
check "time-sync user: no DNS" "is \$(udp_as $TIMESYNC_ 203.0.113.53 53) blocked && is \$(tcp_as $TIMESYNC_ 203.0.113.53 53) blocked"
check "root (any other process): no DNS either" "is \$(tcp_as root 203.0.113.53 53) blocked && is \$(udp_as root 203.0.113.53 53) blocked"
echo "# 5c. security updates: apt's _apt reaches the configured mirrors, and only them"
check "_apt reaches the internet mirror (203.0.113.80:80)" "is \$(tcp_as $APT_ 203.0.113.80 80) connected"
check "_apt reaches the LAN mirror (192.168.77.2:3142)" "is \$(tcp_as $APT_ 192.168.77.2 3142) connected"
check "_apt: not another port of a mirror host, not another LAN port, no DNS" "is \$(tcp_as $APT_ 192.168.77.2 8080) blocked && is \$(tcp_as $APT_ 10.0.2.2 8443) blocked && is \$(tcp_as $APT_ 203.0.113.53 53) blocked"
check "a mirror is not open to other users (root)" "is \$(tcp_as root 203.0.113.80 80) blocked"
echo "# 5d. apt-firewall replaces the mirror addresses in the running rules (what runs before apt)"
printf 'http://203.0.113.53/debian\n' > "$T/etc/mirrors"
check "apt-firewall loads" "ip netns exec '$NS' env DROSERA_ETC='$T/etc' sh '$(dirname "$SETUP")/apt-firewall' | grep 'apt may reach 203.0.113.53 . 80' >/dev/null"
check "_apt reaches the new mirror" "is \$(tcp_as $APT_ 203.0.113.53 80) connected"
ip netns exec "$NS" nft list set inet drosera mirror_v4 > "$T/mirror_v4.list"   # (grep -q on a pipe: SIGPIPE under pipefail)
check "the old mirror is gone, the new one is in" "grep -q '203.0.113.53 . 80' '$T/mirror_v4.list' && ! grep -q '203.0.113.80' '$T/mirror_v4.list'"
check "_apt no longer reaches the old mirror" "is \$(tcp_as $APT_ 203.0.113.80 80) blocked"
kill $(jobs -p) 2>/dev/null || true
check "admin element present" "ip netns exec '$NS' nft list set inet drosera admin_v4 | grep '10.0.2.2' >/dev/null"

echo "# 6. FTP from the internet through the real rules: the passive range is open, exactly"
# The sensor config's range as the sensor itself reads it, and the rules generated from it.
range=$("$SENSOR" passive-ports "$T/etc/sensor.toml")
first=${range%-*} last=${range#*-}
check "the config names a passive range ($range)" "echo '$range' | grep -Eqx '[0-9]+-[0-9]+'"
check "the generated rules open exactly that range" "grep -qx 'add element inet drosera honeypot_tcp { $range }' '$T/etc/firewall.nft'"
check "the loaded ruleset holds it" "ip netns exec '$NS' nft list set inet drosera honeypot_tcp | grep '$range' >/dev/null"
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

echo "# 7. UDP from the internet through the real rules: UDP honeypot ports only, replies only to the requester"
udp_list=$("$SENSOR" listen-ports "$T/etc/sensor.toml" | sed -n 's/^udp //p')
check "the sensor config names UDP ports ($udp_list)" "[ '$udp_list' = '69,1900,5060,11211' ]"
check "the loaded ruleset opens them for UDP" "ip netns exec '$NS' nft list set inet drosera honeypot_udp | grep '69, 1900, 5060, 11211' >/dev/null"
# A stand-in for a UDP service, run as the sensor user: it answers each datagram to its source
# and then tries what a reflector would do from the same socket: send to a LAN device and to
# the requester's next port (a forged-source victim). Each attempt's outcome goes to a file.
udp_responder() { # port
  as_user "$USER_" "$NS" timeout 60 "$PY" -u -c 'import socket,sys
s=socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.bind(("0.0.0.0", int(sys.argv[1])))
while True:
    d,a=s.recvfrom(512)
    s.sendto(b"re:"+d, a)
    for t in (("192.168.77.2", 53), (a[0], a[1] + 1)):
        try:
            s.sendto(b"x", t); r="sent"
        except PermissionError:
            r="blocked"
        print("%s:%d %s" % (t[0], t[1], r))' "$1" > "$T/udp-responder-$1.log" 2>&1 & }
udp_ask() { # port: one datagram from the internet address 198.51.100.20; prints the reply or none
  ip netns exec "$LAN" timeout 6 "$PY" -c 'import socket,sys
s=socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.bind(("198.51.100.20", 0)); s.settimeout(2)
s.sendto(b"OPTIONS", ("192.168.77.1", int(sys.argv[1])))
try:
    print(s.recv(64).decode())
except socket.timeout:
    print("none")' "$1" 2>/dev/null || echo error; }
udp_responder 5060; udp_responder 5070; udp_responder 1883
sleep 1
check "a UDP honeypot port (5060) answers the requester" "is \$(udp_ask 5060) re:OPTIONS"
check "a UDP port the config does not name (5070) is closed" "is \$(udp_ask 5070) none"
check "a TCP-only honeypot port (MQTT's 1883) is closed for UDP" "is \$(udp_ask 1883) none"
check "the UDP service cannot send to a LAN device or to another port of the requester" "[ \$(grep -c ' blocked\$' '$T/udp-responder-5060.log') = 2 ] && ! grep -q ' sent\$' '$T/udp-responder-5060.log'"
# read once, then match (a `nft | grep -q` pipeline under pipefail fails when grep's early exit
# SIGPIPEs nft); on a failure the listing is printed
fwd=$(ip netns exec "$NS" nft list chain inet drosera forward 2>&1 || echo "nft failed: $?")
before=$fails
check "nothing is forwarded (forward chain: policy drop, no rule)" "grep -q 'policy drop;' <<<\"\$fwd\" && ! grep -q accept <<<\"\$fwd\""
[ "$fails" = "$before" ] || sed 's/^/# /' <<<"$fwd"
kill $(jobs -p) 2>/dev/null || true

echo "# 8. a pushed config that became active (update/config-active.toml): the firewall follows it"
# What the launcher leaves when a pushed config proved healthy: the file renamed into place and
# state.json naming its serial, both the sensor user's. `setup --firewall` is what
# drosera-firewall.service runs (real nft in the sensor namespace, rules loaded).
chmod 0755 "$T"   # the sensor user reads the installed config to find its data directory
# the sensor's data directory here is $T/state (the image's /var/lib/drosera)
sed -i "s#^data_dir = .*#data_dir = \"$T/state\"#" "$T/etc/sensor.toml"
grep -qx "data_dir = \"$T/state\"" "$T/etc/sensor.toml" || { echo "setup-test: could not set data_dir" >&2; exit 1; }
cp "$T/etc/sensor.toml" "$T/installed.toml"
UPD="$T/state/update"
mkdir -p "$UPD"
activate() { # file serial
  cp "$1" "$UPD/config-active.toml.tmp" && mv -f "$UPD/config-active.toml.tmp" "$UPD/config-active.toml"
  printf '{\n  "config_active": %s\n}\n' "$2" > "$UPD/state.json"
  chown -R "$USER_:$(id -g $USER_)" "$UPD"; chmod 0700 "$UPD"; chmod 0600 "$UPD"/*
}
fw_only() { ip netns exec "$NS" env -u DROSERA_NO_NFT_LOAD sh "$SETUP" --firewall > "$T/fw.out" 2>&1; }
honeypot_set() { ip netns exec "$NS" nft list set inet drosera honeypot_tcp 2>&1 | tr -d '\n'; }
# a new HTTP port, and (what a tampered file could try) another admin on the LAN
sed -e 's/^ports = \[80, 8080\]$/ports = [80, 8080, 8088]/' -e 's/^admin = .*/admin = "192.168.77.2:8080"/' \
  "$T/etc/sensor.toml" > "$T/push-8088.toml"
grep -q '8088' "$T/push-8088.toml" || { echo "setup-test: could not make the pushed config" >&2; exit 1; }
check "the pushed config is valid (check-config)" "'$SENSOR' check-config '$T/push-8088.toml' >/dev/null"
listen "$NS" 0.0.0.0 8088; listen "$LAN" 192.168.77.2 8080
sleep 1
check "before: 8088 is closed" "! connects '$LAN' 192.168.77.1 8088"
activate "$T/push-8088.toml" 2
check "active-config names the pushed file (as the sensor user)" "[ \"\$(as_user $USER_ '$NS' '$SENSOR' active-config '$T/etc/sensor.toml')\" = '$UPD/config-active.toml' ]"
rc=0; fw_only || rc=$?
cat "$T/fw.out"
check "setup --firewall: exit 0, loaded, says the ports came from the pushed config" "[ $rc = 0 ] && grep -q 'firewall: loaded (.*ports from the pushed config $UPD/config-active.toml' '$T/fw.out'"
check "the regenerated rules open 8088" "grep -Eqx 'add element inet drosera honeypot_tcp \{ ([0-9]+,)*8088(,[0-9]+)* \}' '$T/etc/firewall.nft'"
check "the loaded ruleset holds 8088" "honeypot_set | grep -q '8088'"
check "an attacker reaches the new port 8088 through the loaded rules" "connects '$LAN' 192.168.77.1 8088"
check "the admin still comes from the installed config (10.0.2.2:7443), not the pushed file" "grep -q 'admin_v4 { 10.0.2.2 }' '$T/etc/firewall.nft' && grep -q 'admin_tcp { 7443 }' '$T/etc/firewall.nft' && ! grep -q '192.168.77.2' '$T/etc/firewall.nft'"
check "the sensor user still cannot reach the pushed file's admin (192.168.77.2:8080)" "is \$(tcp_as $USER_ 192.168.77.2 8080) blocked"
rc=0; fw_only || rc=$?
check "run again with nothing changed: unchanged, exit 0" "[ $rc = 0 ] && grep -q 'firewall: unchanged' '$T/fw.out'"
cp "$T/etc/firewall.nft" "$T/firewall.good"
sed 's/^\[sensor\]$/[sensor]\nno_such_key = 1/' "$T/push-8088.toml" > "$T/push-bad.toml"
activate "$T/push-bad.toml" 3
rc=0; fw_only || rc=$?
cat "$T/fw.out"
check "an invalid active config: exit 1, the error names the key, the last good firewall is kept" "[ $rc = 1 ] && grep -q 'firewall: ERROR: the active pushed config .*no_such_key.*keeping the last good firewall' '$T/fw.out'"
check "an invalid active config: firewall.nft unchanged" "cmp -s '$T/etc/firewall.nft' '$T/firewall.good'"
check "an invalid active config: the loaded rules still open 8088" "connects '$LAN' 192.168.77.1 8088"
activate "$T/installed.toml" 4
rc=0; fw_only || rc=$?
check "a pushed config without 8088: exit 0, loaded" "[ $rc = 0 ] && grep -q 'firewall: loaded' '$T/fw.out'"
check "8088 is gone from the rules and the loaded set" "! grep -q 8088 '$T/etc/firewall.nft' && ! honeypot_set | grep -q 8088"
check "8088 is closed again" "! connects '$LAN' 192.168.77.1 8088"
activate "$T/push-8088.toml" 5
run_setup
check "at boot the setup opens the active pushed config's ports too" "grep -q 8088 '$T/etc/firewall.nft' && grep -q 'ports from the pushed config' '$T/boot/drosera/STATUS.txt'"
printf '{}\n' > "$UPD/state.json"
run_setup
check "a config-active.toml that state.json does not name is not what the launcher runs: not opened" "! grep -q 8088 '$T/etc/firewall.nft'"
kill $(jobs -p) 2>/dev/null || true

if [ "$fails" -gt 0 ]; then echo "setup-test: $fails FAILED"; exit 1; fi
echo "setup-test: all passed"
