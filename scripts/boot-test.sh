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

say "admin: init + enroll sensor 'boot-test' (admin address for the guest: 10.0.2.2:$INGEST_PORT)"
"$ADMIN" init --dir "$T/admin" --admin "10.0.2.2:$INGEST_PORT" --listen "127.0.0.1:$INGEST_PORT" \
  --dashboard-listen "127.0.0.1:$DASH_PORT" > "$T/admin-init.log"
CFG="$T/admin/drosera-admin.toml"
"$ADMIN" sensor add boot-test --out "$T/bundle" -c "$CFG" > "$T/admin-add.log"
"$ADMIN" serve -c "$CFG" > "$T/admin-serve.log" 2>&1 &
ADMIN_PID=$!

say "disk: image copy + bundle via scripts/flash.sh --force-file"
cp --sparse=always "$IMG_DIR/drosera-rpi-arm64.img" "$T/disk.img"
bash "$ROOT_DIR/scripts/flash.sh" "$IMG_DIR/drosera-rpi-arm64.img" "$T/disk.img" --bundle "$T/bundle" --force-file --yes \
  > "$T/flash.log" 2>&1 || { cat "$T/flash.log"; die "flash.sh failed"; }
NET="user,id=n0,hostfwd=tcp:127.0.0.1:$HTTP_PORT-:80"
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
