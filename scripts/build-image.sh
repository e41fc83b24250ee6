#!/usr/bin/env bash
# Builds the Drosera Raspberry Pi appliance image: drosera-rpi-arm64.img and .img.xz.
#
#   scripts/build-image.sh [--out DIR] [--rootfs-only] [--no-xz]
#
# Minimal Debian bookworm arm64 (mmdebstrap under qemu-user binfmt), Debian's arm64 kernel and
# the Raspberry Pi firmware from `raspi-firmware` (non-free-firmware), plus the cross-built
# drosera-sensor and the files under image/rootfs. The partitions are assembled WITHOUT loop
# devices: sfdisk on a plain file, a FAT file system made in a separate file and filled with
# mtools, an ext4 file system made with `mke2fs -d`, both copied into place with dd.
#
# Why it is fast enough (a naive build took ~30 minutes, nearly all of it package configuration
# under emulation, and most of that mkinitramfs running again for every kernel/firmware/udev
# trigger): update-initramfs is diverted to a no-op while packages install and runs exactly once
# at the end, after unneeded kernel modules are pruned; dpkg runs under eatmydata with
# --force-unsafe-io; no recommends; man pages and docs are never unpacked; downloaded .debs are
# kept in a local cache reused by the next build; and the finished package stage is cached as a
# tarball keyed on its inputs, so changing the sensor or image/rootfs only redoes the fast stages.
#
# Needs root (mmdebstrap's chroot mode, file ownership in the image) and these tools:
# mmdebstrap, qemu-aarch64 binfmt, sfdisk, mkfs.vfat, mtools, mke2fs, xz.
set -euo pipefail

ROOT_DIR="$(cd "$(dirname "$0")/.." && pwd)"
OUT="$ROOT_DIR/build/image"
ROOTFS_ONLY=0
XZ=1
while [ $# -gt 0 ]; do
  case "$1" in
    --out) OUT="$2"; shift 2 ;;
    --rootfs-only) ROOTFS_ONLY=1; shift ;;
    --no-xz) XZ=0; shift ;;
    -h|--help) sed -n '2,6p' "$0"; exit 0 ;;
    *) echo "usage: scripts/build-image.sh [--out DIR] [--rootfs-only] [--no-xz]" >&2; exit 2 ;;
  esac
done

START=$(date +%s)
stage() { echo "==> [$(( $(date +%s) - START ))s] $*"; }
die() { echo "build-image: ERROR: $*" >&2; exit 1; }

SUITE=bookworm
MIRROR=${DROSERA_MIRROR:-http://deb.debian.org/debian}
BOOT_MB=256
BOOT_LABEL=DROSERABOOT
ROOT_LABEL=drosera-root
# Packages on top of minbase. Everything else the appliance needs is in image/rootfs.
PACKAGES=(
  systemd systemd-sysv systemd-timesyncd systemd-resolved udev kmod dbus
  linux-image-arm64 raspi-firmware initramfs-tools zstd
  firmware-brcm80211 wpasupplicant
  nftables openssh-server iproute2 e2fsprogs fdisk dosfstools netbase
  unattended-upgrades ca-certificates
)
# MODULES=list: the initramfs holds only what finds and mounts the root file system (plus their
# dependencies, which initramfs-tools resolves), instead of MODULES=most's thousands of modules,
# each copied by an emulated fork under qemu-user (that alone took over 19 minutes).
#   Pi 3/4/Zero 2 SD card: sdhci-iproc (Pi 3 EMMC, Pi 4 EMMC2), bcm2835 (Pi sdhost), mmc_block;
#   Pi USB boot: dwc2 (Pi 3), xhci_pci + pcie-brcmstb (Pi 4), usb_storage, uas;
#   QEMU -M virt boot test: virtio_pci, virtio_mmio, virtio_blk; root: ext4; boot partition: vfat.
INITRAMFS_MODULES="sdhci-iproc bcm2835 mmc_block dwc2 xhci_pci pcie-brcmstb usb_storage uas virtio_pci virtio_mmio virtio_blk ext4 vfat nls_cp437 nls_ascii"

# ---------------------------------------------------------------- stage 0: preflight
stage "preflight"
[ "$(id -u)" = 0 ] || die "must run as root (mmdebstrap chroot mode and root-owned files in the image); try: sudo $0"
for t in mmdebstrap arch-test sfdisk mkfs.vfat mcopy mmd mke2fs xz sha256sum tar systemctl; do
  command -v "$t" >/dev/null || die "missing tool '$t'; install: apt-get install mmdebstrap arch-test fdisk dosfstools mtools e2fsprogs xz-utils systemd"
done
[ -e /usr/share/mmdebstrap/hooks/eatmydata ] || die "missing mmdebstrap hooks (/usr/share/mmdebstrap/hooks/eatmydata); install mmdebstrap >= 1.0"
if [ "$(uname -m)" != aarch64 ]; then
  if [ ! -e /proc/sys/fs/binfmt_misc/register ]; then
    mount -t binfmt_misc binfmt_misc /proc/sys/fs/binfmt_misc 2>/dev/null \
      || die "binfmt_misc is not mounted and cannot be mounted (need qemu-aarch64 emulation for arm64 packages)"
  fi
  if [ ! -e /proc/sys/fs/binfmt_misc/qemu-aarch64 ]; then
    [ -e /usr/lib/binfmt.d/qemu-aarch64.conf ] || die "qemu-user-static is not installed; install: apt-get install qemu-user-static"
    cat /usr/lib/binfmt.d/qemu-aarch64.conf > /proc/sys/fs/binfmt_misc/register \
      || die "cannot register qemu-aarch64 with binfmt_misc"
  fi
  grep -q enabled /proc/sys/fs/binfmt_misc/qemu-aarch64 || echo 1 > /proc/sys/fs/binfmt_misc/qemu-aarch64
fi
mkdir -p "$OUT" "$OUT/apt-cache"

# ---------------------------------------------------------------- stage 1: packages (cached)
# The cache key covers everything that shapes the package stage.
KEY=$( { printf '%s\n' "$SUITE" "$MIRROR" "${PACKAGES[@]}"; sed -n '/^# BEGIN-ROOTFS-KEY/,/^# END-ROOTFS-KEY/p' "$0"; } \
       | sha256sum | cut -c1-16)
ROOTFS_CACHE="$OUT/rootfs-$KEY"
# BEGIN-ROOTFS-KEY
build_rootfs() {
  local cache="$OUT/apt-cache" tmp="$ROOTFS_CACHE.partial"
  rm -rf "$tmp"
  local packages
  packages=$(IFS=,; echo "${PACKAGES[*]}")
  # The kernel and raspi-firmware hooks would each run mkinitramfs (slow under emulation):
  # divert update-initramfs to a no-op now, run it once in the customize hook.
  local divert='chroot "$1" dpkg-divert --local --rename --add /usr/sbin/update-initramfs
    printf "#!/bin/sh\necho update-initramfs: deferred until the end of the image build\n" > "$1/usr/sbin/update-initramfs"
    chmod 0755 "$1/usr/sbin/update-initramfs"'
  local finish='set -e
    rm -f "$1/usr/sbin/update-initramfs"
    chroot "$1" dpkg-divert --local --rename --remove /usr/sbin/update-initramfs
    # prune drivers a headless Pi (or the qemu virt boot test) never loads: smaller image,
    # faster single mkinitramfs
    for m in "$1"/lib/modules/*/kernel; do
      rm -rf "$m"/sound "$m"/drivers/gpu "$m"/drivers/media "$m"/drivers/infiniband "$m"/drivers/isdn \
        "$m"/drivers/staging "$m"/drivers/video "$m"/drivers/scsi/qla2xxx "$m"/drivers/scsi/lpfc \
        "$m"/drivers/net/ethernet/mellanox "$m"/drivers/net/ethernet/chelsio "$m"/drivers/net/ethernet/intel \
        "$m"/drivers/net/ethernet/qlogic "$m"/drivers/net/ethernet/broadcom/bnx2x "$m"/drivers/iio \
        "$m"/drivers/bluetooth "$m"/net/bluetooth "$m"/drivers/md "$m"/fs/btrfs "$m"/fs/xfs "$m"/fs/ocfs2 \
        "$m"/fs/gfs2 "$m"/fs/nfs "$m"/fs/ceph "$m"/fs/smb "$m"/fs/cifs "$m"/drivers/net/wireless/ath \
        "$m"/drivers/net/wireless/intel "$m"/drivers/net/wireless/mediatek "$m"/drivers/net/wireless/realtek \
        "$m"/drivers/net/wireless/marvell "$m"/drivers/net/wireless/ti "$m"/drivers/net/wireless/rsi
    done
    for k in "$1"/lib/modules/*; do chroot "$1" depmod -a "$(basename "$k")"; done
    chroot "$1" update-initramfs -c -k all
    rm -rf "$1"/usr/share/doc/* "$1"/usr/share/man/* "$1"/usr/share/info/* "$1"/var/lib/apt/lists/*
    rm -f "$1"/var/cache/apt/*.bin'
  mmdebstrap --variant=minbase --architectures=arm64 --mode=root \
    --components="main non-free-firmware" \
    --include="$packages" \
    --aptopt='APT::Install-Recommends "false"' \
    --dpkgopt=force-unsafe-io --dpkgopt=force-confold --dpkgopt=force-confdef \
    --dpkgopt='path-exclude=/usr/share/man/*' --dpkgopt='path-exclude=/usr/share/doc/*' \
    --dpkgopt='path-include=/usr/share/doc/*/copyright' \
    --dpkgopt='path-exclude=/usr/share/locale/*' --dpkgopt='path-exclude=/usr/share/info/*' \
    --hook-dir=/usr/share/mmdebstrap/hooks/eatmydata \
    --skip=download/empty \
    --setup-hook='mkdir -p "$1/etc/initramfs-tools/conf.d" "$1/etc/default" "$1/boot/firmware"' \
    --setup-hook="printf 'MODULES=list\nCOMPRESS=zstd\n' > \"\$1/etc/initramfs-tools/conf.d/drosera.conf\"" \
    --setup-hook="printf '%s\n' $INITRAMFS_MODULES > \"\$1/etc/initramfs-tools/modules\"" \
    --setup-hook="printf 'ROOTPART=LABEL=$ROOT_LABEL\nCONSOLES=\"ttyS1,115200 tty0\"\n' > \"\$1/etc/default/raspi-firmware\"" \
    --setup-hook='mkdir -p "$1/var/cache/apt/archives"' \
    --setup-hook="sync-in '$cache' /var/cache/apt/archives" \
    --essential-hook="$divert" \
    --customize-hook="sync-out /var/cache/apt/archives '$cache'" \
    --customize-hook='rm -f "$1"/var/cache/apt/archives/*.deb' \
    --customize-hook="$finish" \
    "$SUITE" "$tmp" "$MIRROR" || return 1
  mv "$tmp" "$ROOTFS_CACHE"
}
# END-ROOTFS-KEY
if [ -d "$ROOTFS_CACHE" ]; then
  stage "packages: reusing cached $ROOTFS_CACHE"
else
  stage "packages: mmdebstrap $SUITE arm64 (${#PACKAGES[@]} packages; the slow stage, under emulation)"
  build_rootfs || die "mmdebstrap failed (see the output above)"
fi
stage "packages: done ($(du -sh "$ROOTFS_CACHE" | cut -f1))"
[ "$ROOTFS_ONLY" = 1 ] && exit 0

# ---------------------------------------------------------------- stage 2: sensor binary
SENSOR_BIN=${DROSERA_SENSOR_BIN:-$ROOT_DIR/target-aarch64/aarch64-unknown-linux-gnu/release/drosera-sensor}
if [ -z "${DROSERA_SENSOR_BIN:-}" ]; then
  stage "sensor: cross build (scripts/cross-build.sh)"
  bash "$ROOT_DIR/scripts/cross-build.sh" drosera-sensor || die "cross build failed"
fi
[ -x "$SENSOR_BIN" ] || die "sensor binary $SENSOR_BIN not found"
if command -v file >/dev/null; then
  file -b "$SENSOR_BIN" | grep -qi aarch64 || die "$SENSOR_BIN is not an aarch64 binary"
fi

# ---------------------------------------------------------------- stage 3: root file system
WORK="$OUT/work"
ROOTFS="$WORK/rootfs"
stage "rootfs: unpack and customize"
rm -rf "$WORK"
mkdir -p "$ROOTFS"
cp -a "$ROOTFS_CACHE/." "$ROOTFS/"
# appliance files (units, first boot, nftables, journald cap, sysctl, default config)
cp -a "$ROOT_DIR/image/rootfs/." "$ROOTFS/"
install -m 0755 "$SENSOR_BIN" "$ROOTFS/usr/bin/drosera-sensor"
chmod 0755 "$ROOTFS"/usr/lib/drosera/*
# nobody logs in with a password: root locked, no other login user exists
sed -i -E 's/^root:[^:]*:/root:!*:/' "$ROOTFS/etc/shadow"
# unique per device: host keys and machine-id are created on first boot
rm -f "$ROOTFS"/etc/ssh/ssh_host_*
: > "$ROOTFS/etc/machine-id"
rm -f "$ROOTFS/var/lib/dbus/machine-id"
echo drosera > "$ROOTFS/etc/hostname"
printf '127.0.0.1\tlocalhost\n127.0.1.1\tdrosera\n::1\tlocalhost ip6-localhost ip6-loopback\n' > "$ROOTFS/etc/hosts"
ln -sf ../run/systemd/resolve/stub-resolv.conf "$ROOTFS/etc/resolv.conf"
# enable/disable units offline with the host's systemctl (no emulation needed)
# (ssh.service stays enabled: its drop-in skips it unless an authorized key was installed)
systemctl --root="$ROOTFS" enable systemd-networkd.service systemd-resolved.service systemd-timesyncd.service \
  nftables.service drosera-setup.service drosera-growfs.service drosera-sensor.service drosera-firewall.path ssh.service \
  apt-daily.timer apt-daily-upgrade.timer unattended-upgrades.service
systemctl --root="$ROOTFS" disable wpa_supplicant.service >/dev/null 2>&1 || true
systemctl --root="$ROOTFS" mask systemd-networkd-wait-online.service >/dev/null 2>&1 || true
# the firmware files go to the FAT partition; /boot/firmware stays as its mount point
BOOTSRC="$WORK/bootfiles"
mv "$ROOTFS/boot/firmware" "$BOOTSRC"
mkdir -p "$ROOTFS/boot/firmware" "$BOOTSRC/drosera"
[ -f "$BOOTSRC/config.txt" ] || die "raspi-firmware did not produce config.txt"
cp "$ROOT_DIR/image/boot/README.txt" "$BOOTSRC/drosera/README.txt"
cp "$ROOT_DIR/image/boot/wifi.conf.example" "$BOOTSRC/drosera/wifi.conf.example"
cp "$ROOT_DIR/image/boot/updates.conf.example" "$BOOTSRC/drosera/updates.conf.example"
# kernel + initrd for the qemu boot test (the Pi boots the copies on the FAT partition)
cp "$ROOTFS"/boot/vmlinuz-* "$OUT/vmlinuz"
cp "$ROOTFS"/boot/initrd.img-* "$OUT/initrd.img"
# the sensor binary as installed, for the boot test's signed update (it signs it as a new version)
install -m 0755 "$SENSOR_BIN" "$OUT/drosera-sensor"

# ---------------------------------------------------------------- stage 4: partitions
stage "assemble: FAT boot + ext4 root without loop devices"
ROOT_USED_MB=$(du -sm "$ROOTFS" | cut -f1)
ROOT_MB=$(( ROOT_USED_MB * 13 / 10 + 200 ))   # headroom; grown to the card's size on first boot
IMG="$OUT/drosera-rpi-arm64.img"
BOOT_START=8192                                 # sectors: 4 MiB alignment
ROOT_START=$(( BOOT_START + BOOT_MB * 2048 ))
rm -f "$IMG" "$IMG.xz" "$WORK/boot.vfat" "$WORK/root.ext4"
truncate -s $(( (ROOT_START / 2048 + ROOT_MB) ))M "$IMG"
sfdisk --quiet "$IMG" <<EOF
label: dos
label-id: 0x44524f53
start=$BOOT_START, size=$(( BOOT_MB * 2048 )), type=c, bootable
start=$ROOT_START, type=83
EOF
truncate -s ${BOOT_MB}M "$WORK/boot.vfat"
mkfs.vfat -F 32 -n "$BOOT_LABEL" "$WORK/boot.vfat" >/dev/null
MTOOLS_SKIP_CHECK=1 mcopy -s -p -i "$WORK/boot.vfat" "$BOOTSRC"/* ::/
mke2fs -q -t ext4 -L "$ROOT_LABEL" -E root_owner=0:0 -d "$ROOTFS" "$WORK/root.ext4" ${ROOT_MB}M
dd if="$WORK/boot.vfat" of="$IMG" bs=512 seek=$BOOT_START conv=notrunc,sparse status=none
dd if="$WORK/root.ext4" of="$IMG" bs=1M seek=$(( ROOT_START / 2048 )) conv=notrunc,sparse status=none
rm -f "$WORK/boot.vfat" "$WORK/root.ext4"
stage "image: $IMG ($(( $(stat -c %s "$IMG") / 1048576 )) MiB, root fs ${ROOT_USED_MB} MiB used)"

# ---------------------------------------------------------------- stage 5: compress
if [ "$XZ" = 1 ]; then
  stage "compress: xz"
  xz -T0 -6 -k -f "$IMG"
  stage "compressed: $IMG.xz ($(( $(stat -c %s "$IMG.xz") / 1048576 )) MiB)"
fi
rm -rf "$WORK"
stage "done in $(( $(date +%s) - START ))s"
