#!/usr/bin/env bash
# Writes the Drosera appliance image to an SD card and puts a sensor bundle on its boot
# partition, ready for a headless first boot.
#
#   scripts/flash.sh IMAGE DEVICE --bundle DIR [--wifi FILE] [--ssh-key FILE] [--force-file] [--yes]
#
#   IMAGE        drosera-rpi-arm64.img or drosera-rpi-arm64.img.xz
#   DEVICE       the whole card, e.g. /dev/sdb or /dev/mmcblk0 (never a partition)
#   --bundle     directory written by `drosera-admin sensor add NAME --out DIR`
#                (ca.pem, sensor.pem, sensor.key, uplink.toml)
#   --wifi       optional wpa_supplicant network block(s), installed as drosera/wifi.conf
#   --ssh-key    optional public key file, installed as drosera/authorized_keys (enables SSH
#                on port 22022 for root, keys only)
#   --force-file allow DEVICE to be a regular file (tests, or preparing an image to copy later)
#   --yes        do not ask for confirmation
#
# Refuses a device that holds (or whose partitions hold) a mounted file system or swap.
# The bundle goes into the FAT partition with mtools at the partition's offset: no mounting.
set -euo pipefail

usage() { echo "usage: scripts/flash.sh IMAGE DEVICE --bundle DIR [--wifi FILE] [--ssh-key FILE] [--force-file] [--yes]" >&2; sed -n '8,17p' "$0" | sed 's/^# \{0,1\}//' >&2; exit 2; }
die() { echo "flash: ERROR: $*" >&2; exit 1; }

IMAGE="" DEV="" BUNDLE="" WIFI="" SSHKEY="" FORCE_FILE=0 YES=0
while [ $# -gt 0 ]; do
  case "$1" in
    --bundle) [ $# -ge 2 ] || usage; BUNDLE="$2"; shift 2 ;;
    --wifi) [ $# -ge 2 ] || usage; WIFI="$2"; shift 2 ;;
    --ssh-key) [ $# -ge 2 ] || usage; SSHKEY="$2"; shift 2 ;;
    --force-file) FORCE_FILE=1; shift ;;
    --yes|-y) YES=1; shift ;;
    -h|--help) usage ;;
    -*) echo "flash: unknown option $1" >&2; usage ;;
    *) if [ -z "$IMAGE" ]; then IMAGE="$1"; elif [ -z "$DEV" ]; then DEV="$1"; else usage; fi; shift ;;
  esac
done
[ -n "$IMAGE" ] && [ -n "$DEV" ] && [ -n "$BUNDLE" ] || usage
[ -f "$IMAGE" ] || die "image $IMAGE not found"
for f in ca.pem sensor.pem sensor.key uplink.toml; do
  [ -f "$BUNDLE/$f" ] || die "bundle $BUNDLE lacks $f (expected the output of drosera-admin sensor add NAME --out DIR)"
done
grep -q '^\[uplink\]' "$BUNDLE/uplink.toml" || die "$BUNDLE/uplink.toml has no [uplink] section"
[ -z "$WIFI" ] || [ -f "$WIFI" ] || die "Wi-Fi file $WIFI not found"
[ -z "$SSHKEY" ] || grep -Eq '^(ssh-|ecdsa-|sk-)' "$SSHKEY" || die "$SSHKEY holds no public key (ssh-ed25519 ...)"
for t in sfdisk mcopy mmd; do command -v "$t" >/dev/null || die "missing tool $t (apt-get install fdisk mtools)"; done

# ---------------------------------------------------------------- target checks
if [ -b "$DEV" ]; then
  real=$(readlink -f "$DEV")
  [ "$(lsblk -dno TYPE "$real" 2>/dev/null)" = disk ] || die "$DEV is not a whole disk (give /dev/sdX, not a partition)"
  # the device and every partition on it: mounted anywhere, or used as swap?
  mapfile -t nodes < <(lsblk -lnpo NAME "$real")
  for n in "${nodes[@]}"; do
    if grep -q "^$n " /proc/mounts; then die "$n is mounted ($(grep "^$n " /proc/mounts | cut -d' ' -f2 | head -n1)); unmount it first"; fi
    if grep -q "^$n " /proc/swaps 2>/dev/null; then die "$n is in use as swap"; fi
    mp=$(lsblk -no MOUNTPOINTS "$n" 2>/dev/null | tr -d '[:space:]' || true)
    [ -z "$mp" ] || die "$n is mounted at $mp; unmount it first"
  done
  # also by major:minor, in case /proc/mounts names it differently (dm, by-id links)
  majmin=$(lsblk -lno MAJ:MIN "$real" | tr -d ' ' | paste -sd'|' -)
  if awk -v re="^($majmin)\$" '$3 ~ re { found = 1 } END { exit !found }' /proc/self/mountinfo; then
    die "$DEV (or one of its partitions) holds a mounted file system"
  fi
  [ -w "$real" ] || die "no write permission on $DEV (run as root)"
  size_note="$(lsblk -dno SIZE,MODEL "$real" | xargs)"
elif [ -e "$DEV" ] && [ ! -f "$DEV" ]; then
  die "$DEV is neither a block device nor a regular file"
else
  [ "$FORCE_FILE" = 1 ] || die "$DEV is not a block device; pass --force-file to write into a regular file"
  real="$DEV"
  size_note="regular file"
fi

if [ "$YES" != 1 ]; then
  printf 'Write %s to %s (%s)? ALL DATA ON IT IS LOST. Type yes: ' "$IMAGE" "$DEV" "$size_note"
  read -r answer
  [ "$answer" = yes ] || die "aborted"
fi

# ---------------------------------------------------------------- write
echo "flash: writing $IMAGE to $DEV"
conv=fsync; [ -b "$real" ] || conv=notrunc,fsync
case "$IMAGE" in
  *.xz) xz -dc "$IMAGE" | dd of="$real" bs=4M conv=$conv iflag=fullblock status=progress ;;
  *) dd if="$IMAGE" of="$real" bs=4M conv=$conv status=progress ;;
esac
sync
[ -b "$real" ] && command -v blockdev >/dev/null && blockdev --rereadpt "$real" 2>/dev/null || true

# ---------------------------------------------------------------- bundle onto the FAT partition
# the first FAT32-LBA (type c) partition: the image's boot partition
start=$(sfdisk -d "$real" 2>/dev/null | sed -n 's/.*start= *\([0-9]*\),.*type=c\b.*/\1/p' | head -n1)
[ -n "$start" ] || die "no boot partition found on $DEV after writing (bad image?)"
fat="$real@@$(( start * 512 ))"
export MTOOLS_SKIP_CHECK=1
mmd -i "$fat" ::/drosera 2>/dev/null || true
for f in ca.pem sensor.pem sensor.key uplink.toml; do
  mcopy -o -i "$fat" "$BUNDLE/$f" "::/drosera/$f"
done
# the admin's update public key (signed updates and pushed configs); bundles made before signed
# updates have none, and such a sensor takes no updates
[ ! -f "$BUNDLE/update.pub" ] || mcopy -o -i "$fat" "$BUNDLE/update.pub" ::/drosera/update.pub
[ -z "$WIFI" ] || mcopy -o -i "$fat" "$WIFI" ::/drosera/wifi.conf
[ -z "$SSHKEY" ] || mcopy -o -i "$fat" "$SSHKEY" ::/drosera/authorized_keys
sync
echo "flash: bundle for $(sed -n 's/^# Uplink for sensor "\(.*\)".*/\1/p' "$BUNDLE/uplink.toml" | head -n1) written to drosera/ on the boot partition:"
mdir -b -i "$fat" ::/drosera
echo "flash: done. Put the card in the Pi and power it on; drosera/STATUS.txt on the card reports the setup."
