#!/usr/bin/env bash
# Tests scripts/flash.sh without a card: a small synthetic image (same partition layout as the
# real one: FAT32 boot partition at sector 8192, then a root partition) is written into a
# regular file with --force-file, and the bundle must then be on the FAT partition. Also checks
# the refusals: a regular file without --force-file, a partition instead of a disk, the block
# device holding this machine's / (refused BEFORE the confirmation prompt; stdin is /dev/null,
# so even a broken check could not write), and an incomplete bundle.
set -euo pipefail
ROOT_DIR="$(cd "$(dirname "$0")/../.." && pwd)"
FLASH="$ROOT_DIR/scripts/flash.sh"
T=$(mktemp -d /tmp/drosera-flash-test.XXXXXX)
trap 'rm -rf "$T"' EXIT
fails=0
ok() { echo "ok - $*"; }
fail() { echo "FAIL - $*"; fails=$((fails + 1)); }
export MTOOLS_SKIP_CHECK=1

# synthetic image: 4 MiB gap, 40 MiB FAT32 "DROSERABOOT", 8 MiB root
img="$T/test.img"
truncate -s 52M "$img"
printf 'label: dos\nstart=8192, size=81920, type=c, bootable\nstart=90112, type=83\n' | sfdisk --quiet "$img"
truncate -s 40M "$T/boot.vfat"
mkfs.vfat -F 32 -n DROSERABOOT "$T/boot.vfat" >/dev/null
echo "firmware" > "$T/config.txt"
mcopy -i "$T/boot.vfat" "$T/config.txt" ::/config.txt
dd if="$T/boot.vfat" of="$img" bs=512 seek=8192 conv=notrunc status=none
xz -T1 -k -0 "$img"

mkdir -p "$T/bundle"
printf '# Uplink for sensor "pi-flash"\n[uplink]\nadmin = "192.0.2.1:7443"\n' > "$T/bundle/uplink.toml"
for f in ca.pem sensor.pem sensor.key; do echo "-----BEGIN $f-----" > "$T/bundle/$f"; done
printf '%064d\n' 7 > "$T/bundle/update.pub"   # the admin's update key: the sensor takes no update without it
echo "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIBogusBogusBogusBogusBogusBogusBogusBogus test" > "$T/key.pub"
printf 'network={\n ssid="x"\n psk="y"\n}\n' > "$T/wifi.conf"

for src in "$img" "$img.xz"; do
  out="$T/card-$(basename "$src").bin"
  : > "$out"
  if bash "$FLASH" "$src" "$out" --bundle "$T/bundle" --wifi "$T/wifi.conf" --ssh-key "$T/key.pub" --force-file --yes \
       > "$T/flash.log" 2>&1; then ok "flash $(basename "$src") into a regular file"; else cat "$T/flash.log"; fail "flash $(basename "$src")"; continue; fi
  fat="$out@@$((8192 * 512))"
  listing=$(mdir -b -i "$fat" ::/drosera 2>/dev/null || true)
  for f in ca.pem sensor.pem sensor.key uplink.toml update.pub wifi.conf authorized_keys; do
    if echo "$listing" | grep -q "/$f\$"; then ok "drosera/$f on the FAT partition"; else fail "drosera/$f missing ($listing)"; fi
  done
  mtype -i "$fat" ::/drosera/uplink.toml | grep -q 'pi-flash' && ok "uplink.toml content" || fail "uplink.toml content"
  mtype -i "$fat" ::/config.txt | grep -q firmware && ok "image content kept" || fail "image content lost"
  cmp -s <(dd if="$out" bs=512 skip=90112 count=16 status=none) <(dd if="$img" bs=512 skip=90112 count=16 status=none) \
    && ok "root partition bytes written" || fail "root partition differs"
done

expect_refusal() {  # name, expected message, args...
  local name=$1 msg=$2; shift 2
  if bash "$FLASH" "$@" < /dev/null > "$T/refuse.log" 2>&1; then fail "$name: accepted"; return; fi
  if grep -q "$msg" "$T/refuse.log"; then ok "$name: refused ($msg)"; else cat "$T/refuse.log"; fail "$name: wrong message"; fi
}
: > "$T/plain"
expect_refusal "regular file without --force-file" "not a block device; pass --force-file" "$img" "$T/plain" --bundle "$T/bundle" --yes
expect_refusal "missing --bundle" "usage" "$img" "$T/plain" --force-file --yes
mkdir -p "$T/partial"; cp "$T/bundle/uplink.toml" "$T/partial/"
expect_refusal "incomplete bundle" "lacks ca.pem" "$img" "$T/plain" --bundle "$T/partial" --force-file --yes
rootdev=$(findmnt -no SOURCE / || true)
if [ -b "$rootdev" ]; then
  disk=/dev/$(lsblk -no PKNAME "$rootdev" 2>/dev/null | head -n1)
  if [ "$disk" != /dev/ ] && [ -b "$disk" ]; then
    expect_refusal "disk holding / ($disk)" "mounted" "$img" "$disk" --bundle "$T/bundle"
    expect_refusal "partition ($rootdev)" "not a whole disk" "$img" "$rootdev" --bundle "$T/bundle"
  else
    # / is on a whole-disk file system (no partition table), e.g. a VM's /dev/vda
    expect_refusal "device holding / ($rootdev)" "mounted" "$img" "$rootdev" --bundle "$T/bundle"
  fi
else
  echo "skip - / is not on a block device here ($rootdev)"
fi
if [ "$fails" -gt 0 ]; then echo "flash-test: $fails FAILED"; exit 1; fi
echo "flash-test: all passed"
