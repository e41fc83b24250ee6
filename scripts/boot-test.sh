#!/usr/bin/env bash
# Boots the built appliance image in qemu-system-aarch64 (software emulation) with a real sensor
# bundle pointing at a real admin on this machine, and passes when:
#   1. the sensor in the guest answers an HTTP probe on a forwarded port (host loopback), and
#   2. the admin has stored that probe's event, shipped over mutual TLS from the guest;
# then powers the guest off. Bounded in time (BOOT_TEST_TIMEOUT, default 900 s).
#
#   scripts/boot-test.sh [IMAGE_DIR]     (default build/image, from scripts/build-image.sh)
#   BOOT_MACHINE=virt (default): -M virt, virtio disk and network, the image's kernel + initrd.
#   BOOT_MACHINE=raspi3b: the Raspberry Pi path -- -M raspi3b with the Pi 3 B device tree from
#     the image's boot partition, the image as its SD card (mmcblk0: sdhost/sdhci, the initramfs's
#     MODULES=list), network over the Pi's USB (dwc2) with a usb-net device. QEMU's model of
#     the BCM2835 watchdog resets the moment it is armed (it does not count down), so the
#     emulated run blacklists bcm2835_wdt on the kernel command line; a real Pi keeps it.
#
# BOOT_TEST_UPDATES=1 additionally (needs the Debian mirror deb.debian.org through QEMU's NAT):
# flashes an SSH key, logs in on 22022 and checks the egress rules and the security updates on
# the booted image: STATUS says the firewall loaded with every user's uid; the sensor user gets
# EPERM for DNS (QEMU's resolver 10.0.2.3:53) and for the mirror; apt-daily.service (with
# apt-firewall before it) downloads the package lists as _apt through the firewall;
# `unattended-upgrade --dry-run` runs with the generated settings.
#
# Networking is QEMU user mode: the guest reaches the host's loopback at 10.0.2.2 (QEMU's
# internal address), the host reaches the guest's port 80 at 127.0.0.1:<free port>. The bundle
# is written onto a copy of the image with scripts/flash.sh --force-file (so that is tested too).
# Runs on demand (the image build does not fit CI); docs/appliance.md records the last result.
set -euo pipefail
ROOT_DIR="$(cd "$(dirname "$0")/.." && pwd)"
IMG_DIR=${1:-$ROOT_DIR/build/image}
TIMEOUT=${BOOT_TEST_TIMEOUT:-900}
MACHINE=${BOOT_MACHINE:-virt}
case "$MACHINE" in virt | raspi3b) ;; *) echo "boot-test: BOOT_MACHINE must be virt or raspi3b" >&2; exit 2 ;; esac
ADMIN=${DROSERA_ADMIN_BIN:-}
START=$(date +%s)
say() { echo "==> [$(( $(date +%s) - START ))s] $*"; }
die() { echo "boot-test: FAIL: $*" >&2; exit 1; }

for f in drosera-rpi-arm64.img vmlinuz initrd.img; do
  [ -f "$IMG_DIR/$f" ] || die "$IMG_DIR/$f missing; run scripts/build-image.sh first"
done
if ! command -v qemu-system-aarch64 >/dev/null; then
  say "installing qemu-system-arm"
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends qemu-system-arm >/dev/null \
    || die "qemu-system-aarch64 missing and cannot be installed (apt-get install qemu-system-arm)"
fi
if [ -z "$ADMIN" ]; then
  for c in "$ROOT_DIR/target/release/drosera-admin" "$ROOT_DIR/target/debug/drosera-admin"; do
    [ -x "$c" ] && { ADMIN=$c; break; }
  done
fi
[ -n "$ADMIN" ] && [ -x "$ADMIN" ] || die "no drosera-admin binary (cargo build -p drosera-admin, or set DROSERA_ADMIN_BIN)"

T=$(mktemp -d /tmp/drosera-boot-test.XXXXXX)
QEMU_PID="" ADMIN_PID=""
cleanup() {
  [ -n "$QEMU_PID" ] && kill "$QEMU_PID" 2>/dev/null || true
  [ -n "$ADMIN_PID" ] && kill "$ADMIN_PID" 2>/dev/null || true
  wait 2>/dev/null || true
  if [ "${KEEP:-0}" = 1 ]; then echo "boot-test: kept $T"; else rm -rf "$T"; fi
}
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
INGEST_PORT=$(free_port)
DASH_PORT=$(free_port)
HTTP_PORT=$(free_port)
UPDATES=${BOOT_TEST_UPDATES:-0}
SSH_PORT=$(free_port)

say "admin: init + enroll sensor 'boot-test' (admin address for the guest: 10.0.2.2:$INGEST_PORT)"
"$ADMIN" init --dir "$T/admin" --admin "10.0.2.2:$INGEST_PORT" --listen "127.0.0.1:$INGEST_PORT" \
  --dashboard-listen "127.0.0.1:$DASH_PORT" > "$T/admin-init.log"
CFG="$T/admin/drosera-admin.toml"
"$ADMIN" sensor add boot-test --out "$T/bundle" -c "$CFG" > "$T/admin-add.log"
"$ADMIN" serve -c "$CFG" > "$T/admin-serve.log" 2>&1 &
ADMIN_PID=$!

say "disk: image copy + bundle via scripts/flash.sh --force-file"
cp --sparse=always "$IMG_DIR/drosera-rpi-arm64.img" "$T/disk.img"
flash_extra=()
if [ "$UPDATES" = 1 ]; then
  ssh-keygen -q -t ed25519 -N '' -C drosera-boot-test -f "$T/id" || die "ssh-keygen failed"
  flash_extra=(--ssh-key "$T/id.pub")
fi
bash "$ROOT_DIR/scripts/flash.sh" "$IMG_DIR/drosera-rpi-arm64.img" "$T/disk.img" --bundle "$T/bundle" --force-file --yes \
  "${flash_extra[@]}" > "$T/flash.log" 2>&1 || { cat "$T/flash.log"; die "flash.sh failed"; }
NET="user,id=n0,hostfwd=tcp:127.0.0.1:$HTTP_PORT-:80"
[ "$UPDATES" = 1 ] && NET="$NET,hostfwd=tcp:127.0.0.1:$SSH_PORT-:22022"
if [ "$MACHINE" = virt ]; then
  # a bigger "card" so the first-boot grow has something to do
  truncate -s +512M "$T/disk.img"
  say "qemu -M virt: booting (console log in $T/console.log; HTTP forwarded to 127.0.0.1:$HTTP_PORT)"
  qemu-system-aarch64 -M virt -cpu max -smp 2 -m 1024 -nographic -no-reboot \
    -kernel "$IMG_DIR/vmlinuz" -initrd "$IMG_DIR/initrd.img" \
    -append "root=LABEL=drosera-root rw rootwait console=ttyAMA0 net.ifnames=0 fsck.repair=yes" \
    -drive "file=$T/disk.img,format=raw,if=virtio" \
    -netdev "$NET" -device virtio-net-pci,netdev=n0,romfile= \
    -monitor "unix:$T/monitor.sock,server,nowait" -serial "file:$T/console.log" -display none \
    > "$T/qemu.log" 2>&1 &
else
  # QEMU's SD card must be a power of two: the next one up (also gives growfs room)
  size=$(stat -c %s "$T/disk.img"); card=1; while [ "$card" -le "$size" ]; do card=$(( card * 2 )); done
  truncate -s "$card" "$T/disk.img"
  # the device tree from the image's own boot partition (FAT at 4 MiB)
  mcopy -n -i "$T/disk.img@@4M" ::bcm2837-rpi-3-b.dtb "$T/pi3.dtb" || die "no bcm2837-rpi-3-b.dtb on the boot partition"
  say "qemu -M raspi3b: booting from the SD card (console log in $T/console.log; HTTP forwarded to 127.0.0.1:$HTTP_PORT)"
  qemu-system-aarch64 -M raspi3b -m 1024 -no-reboot \
    -kernel "$IMG_DIR/vmlinuz" -initrd "$IMG_DIR/initrd.img" -dtb "$T/pi3.dtb" \
    -append "root=LABEL=drosera-root rw rootwait console=ttyAMA0,115200 net.ifnames=0 fsck.repair=yes modprobe.blacklist=bcm2835_wdt" \
    -drive "file=$T/disk.img,format=raw,if=sd" \
    -netdev "$NET" -device usb-net,netdev=n0 \
    -monitor "unix:$T/monitor.sock,server,nowait" -serial "file:$T/console.log" -display none \
    > "$T/qemu.log" 2>&1 &
fi
QEMU_PID=$!

deadline=$(( START + TIMEOUT ))
answered=0
while [ "$(date +%s)" -lt "$deadline" ]; do
  kill -0 "$QEMU_PID" 2>/dev/null || { tail -n 40 "$T/console.log"; die "qemu exited early"; }
  if curl -s -m 5 -o "$T/probe.out" -A drosera-boot-test "http://127.0.0.1:$HTTP_PORT/boot-test-probe" 2>/dev/null \
     && [ -s "$T/probe.out" ]; then
    answered=1; break
  fi
  sleep 5
done
[ "$answered" = 1 ] || { tail -n 60 "$T/console.log"; die "the sensor did not answer on port 80 within ${TIMEOUT}s"; }
say "sensor answered the probe ($(head -c 60 "$T/probe.out" | tr -d '\r\n' ) ...)"

stored=0
while [ "$(date +%s)" -lt "$deadline" ]; do
  # the event of our probe: its path, or at least an HTTP event from QEMU's NAT address
  if "$ADMIN" export --format jsonl --sensor boot-test -c "$CFG" 2>/dev/null \
     | grep -E 'boot-test-probe|drosera-boot-test' | grep -q '10.0.2.2'; then
    stored=1; break
  fi
  sleep 5
done
[ "$stored" = 1 ] || { tail -n 40 "$T/console.log"; tail -n 20 "$T/admin-serve.log"; die "the admin did not store the probe event within ${TIMEOUT}s"; }
say "admin stored the probe event: $("$ADMIN" export --format jsonl --sensor boot-test -c "$CFG" | grep -m1 -E 'boot-test-probe|drosera-boot-test' | head -c 400)"

if [ "$UPDATES" = 1 ]; then
  guest() { timeout 900 ssh -q -i "$T/id" -p "$SSH_PORT" -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null \
    -o ConnectTimeout=20 -o BatchMode=yes root@127.0.0.1 "$@"; }
  for _ in $(seq 1 30); do guest true 2>/dev/null && break; sleep 5; done
  guest true || die "no SSH login on 22022 with the flashed key"
  say "updates: SSH login works; checking the firewall and unattended-upgrades in the guest"
  guest cat /boot/firmware/drosera/STATUS.txt > "$T/status.txt" || die "cannot read STATUS.txt"
  sed 's/^/    /' "$T/status.txt"
  grep -q 'firewall: loaded' "$T/status.txt" || die "STATUS.txt: the firewall did not load"
  ! grep -q 'WARNING: no user' "$T/status.txt" || die "STATUS.txt: a system user for the firewall is missing"
  grep -q 'updates: Debian security updates on' "$T/status.txt" || die "STATUS.txt: updates not configured"
  for set in sensor_uid dns_uid ntp_uid apt_uid; do
    out=$(guest nft list set inet drosera $set) || die "nft list set $set failed in the guest"
    grep -q 'elements = {' <<< "$out" || die "nft set $set is empty in the guest"
  done
  # the probe prints blocked (EPERM from the output hook), connected/sent, or an error
  probe='import socket,sys
kind,host,port=sys.argv[1],sys.argv[2],int(sys.argv[3])
try:
    if kind=="udp":
        s=socket.socket(socket.AF_INET,socket.SOCK_DGRAM); s.sendto(b"x",(host,port)); print("sent")
    else:
        socket.create_connection((host,port),timeout=5); print("connected")
except (PermissionError,TimeoutError): print("blocked")'
  as_in_guest() { guest "setpriv --reuid=$1 --regid=\$(id -g $1) --clear-groups python3 -c '$probe' $2 $3 $4"; }
  r=$(as_in_guest drosera udp 10.0.2.3 53); [ "$r" = blocked ] || die "sensor user DNS over UDP: $r (want blocked)"
  r=$(as_in_guest drosera tcp 10.0.2.3 53); [ "$r" = blocked ] || die "sensor user DNS over TCP: $r (want blocked)"
  say "updates: the sensor user is blocked from DNS (10.0.2.3:53 udp+tcp)"
  guest 'systemctl start apt-daily.service; systemctl is-failed apt-daily.service; journalctl -u apt-daily.service --no-pager | tail -n 12' \
    > "$T/apt-daily.log" 2>&1 || true
  sed 's/^/    /' "$T/apt-daily.log"
  grep -q 'apt-firewall: apt may reach' "$T/apt-daily.log" || die "apt-firewall did not open the mirrors before apt-daily"
  guest 'ls /var/lib/apt/lists/ | grep -c _Packages' > "$T/lists.txt" || true
  [ "$(cat "$T/lists.txt")" -ge 3 ] 2>/dev/null || die "apt-daily did not download the package lists (main, updates, security): $(cat "$T/lists.txt")"
  say "updates: apt-daily fetched $(cat "$T/lists.txt") package lists as _apt through the firewall"
  mirror_ip=$(guest "nft list set inet drosera mirror_v4 | grep -Eo '([0-9]+\.){3}[0-9]+ \. 80' | head -n1 | cut -d' ' -f1")
  [ -n "$mirror_ip" ] || die "no mirror address in the guest's rules"
  r=$(as_in_guest drosera tcp "$mirror_ip" 80); [ "$r" = blocked ] || die "sensor user to the mirror $mirror_ip:80: $r (want blocked)"
  r=$(as_in_guest _apt tcp "$mirror_ip" 80); [ "$r" = connected ] || die "_apt to the mirror $mirror_ip:80: $r (want connected)"
  say "updates: _apt reaches the mirror $mirror_ip:80, the sensor user does not"
  guest 'unattended-upgrade --dry-run --debug > /tmp/uu.log 2>&1; echo "rc=$?"; grep -m1 "Allowed origins are" /tmp/uu.log; tail -n 6 /tmp/uu.log' \
    > "$T/uu.log" 2>&1 || true
  sed 's/^/    /' "$T/uu.log"
  grep -qx 'rc=0' "$T/uu.log" || die "unattended-upgrade --dry-run failed"
  grep -q 'Allowed origins are:.*label=Debian-Security' "$T/uu.log" || die "unattended-upgrade does not take Debian-Security"
  say "updates: unattended-upgrade --dry-run ran (exit 0)"
fi

if [ "$MACHINE" = raspi3b ]; then
  # no ACPI power button on the Pi model: the checks below only read the disk image
  say "stopping qemu"
  kill "$QEMU_PID" 2>/dev/null || true
  wait "$QEMU_PID" 2>/dev/null || true
  QEMU_PID=""
fi
[ -z "$QEMU_PID" ] || say "powering off"
[ -z "$QEMU_PID" ] || echo system_powerdown | python3 -c '
import socket, sys
s = socket.socket(socket.AF_UNIX); s.connect(sys.argv[1]); s.sendall(sys.stdin.buffer.read()); s.close()' "$T/monitor.sock" || true
for _ in $(seq 1 60); do [ -n "$QEMU_PID" ] && kill -0 "$QEMU_PID" 2>/dev/null || break; sleep 2; done
if [ -n "$QEMU_PID" ] && kill -0 "$QEMU_PID" 2>/dev/null; then
  say "guest did not power off within 120 s; stopping qemu"
else
  QEMU_PID=""
fi
grep -E "drosera-setup:|Reached target|Power-Off|reboot: Power down" "$T/console.log" | tail -n 15 || true

# First boot grew the root partition and its file system to the end of the (512 MiB bigger) card.
grep -Eq "growfs: /dev/(vda|mmcblk0p)2 grown from" "$T/console.log" || { grep -i growfs "$T/console.log" | tail; die "first boot did not grow the root file system"; }
python3 - "$T/disk.img" <<'PY' || die "the root partition does not reach the end of the card"
import json, os, subprocess, sys
img = sys.argv[1]
t = json.loads(subprocess.run(["sfdisk", "-J", img], check=True, capture_output=True, text=True).stdout)
root = t["partitiontable"]["partitions"][-1]
end = (root["start"] + root["size"]) * 512
size = os.path.getsize(img)
print(f"root partition ends at {end} of {size} bytes")
sys.exit(0 if size - end < 4 << 20 else 1)
PY
say "first boot grew the root file system: $(grep -Eo 'growfs: /dev/(vda|mmcblk0p)2 grown from [0-9]* to [0-9]* bytes' "$T/console.log" | head -1)"
say "PASS ($MACHINE) in $(( $(date +%s) - START ))s"
