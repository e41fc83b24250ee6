#!/usr/bin/env bash
# Cross-builds the Raspberry Pi (aarch64) release binaries, strips them and prints their sizes:
#   scripts/cross-build.sh [PACKAGE...]        (default: drosera-sensor drosera-admin)
# Output: target-aarch64/aarch64-unknown-linux-gnu/release/{drosera-sensor,drosera-admin}
#
# Two ways, the same result:
#  * with `cross` (Podman or Docker, the image of scripts/cross-image.sh; what CI runs) when
#    cross is installed and a container engine answers;
#  * else without containers: the rustup aarch64 target and Debian's gcc-aarch64-linux-gnu
#    (linker and C compiler for rusqlite's bundled SQLite and ring), configured in
#    .cargo/config.toml; installs them if missing.
# DROSERA_CROSS=1 insists on cross, DROSERA_CROSS=0 on the host toolchain. Keep to one way per
# target directory: the two see different paths (/project, /cargo in the container), so
# switching rebuilds everything once.
set -euo pipefail
cd "$(dirname "$0")/.."
TARGET=aarch64-unknown-linux-gnu
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR_AARCH64:-$PWD/target-aarch64}
PKGS=("$@")
[ ${#PKGS[@]} -gt 0 ] || PKGS=(drosera-sensor drosera-admin)
command -v rustup >/dev/null || { echo "cross-build: rustup is required (https://rustup.rs)" >&2; exit 1; }
rustup target list --installed | grep -qx $TARGET || rustup target add $TARGET
# shellcheck source=cross-env.sh
. scripts/cross-env.sh

use_cross=0
case "${DROSERA_CROSS:-auto}" in
  1) use_cross=1 ;;
  0) use_cross=0 ;;
  auto) if cross_installed && cross_engine_ok; then use_cross=1; fi ;;
  *) echo "cross-build: DROSERA_CROSS must be 1, 0 or auto" >&2; exit 2 ;;
esac

args=()
for p in "${PKGS[@]}"; do args+=(-p "$p"); done
start=$(date +%s)
if [ "$use_cross" = 1 ]; then
  echo "cross-build: with cross ($CROSS_CONTAINER_ENGINE, image $(bash scripts/cross-image.sh --name))"
  bash scripts/cross-image.sh
  cargo fetch --locked
  CARGO_NET_OFFLINE=true cross build --release --target $TARGET "${args[@]}" --bins
else
  if ! command -v aarch64-linux-gnu-gcc >/dev/null || ! dpkg -s libc6-dev-arm64-cross >/dev/null 2>&1; then
    echo "cross-build: installing gcc-aarch64-linux-gnu libc6-dev-arm64-cross"
    SUDO=""; [ "$(id -u)" = 0 ] || SUDO=sudo
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends \
      gcc-aarch64-linux-gnu libc6-dev-arm64-cross binutils-aarch64-linux-gnu >/dev/null
  fi
  echo "cross-build: without containers (Debian's gcc-aarch64-linux-gnu)"
  cargo build --release --target $TARGET "${args[@]}" --bins
fi
echo "cross-build: release build took $(( $(date +%s) - start ))s"
for p in "${PKGS[@]}"; do
  bin="$CARGO_TARGET_DIR/$TARGET/release/$p"
  [ -f "$bin" ] || continue
  if command -v aarch64-linux-gnu-strip >/dev/null; then aarch64-linux-gnu-strip "$bin"; fi
  file "$bin" 2>/dev/null | grep -q aarch64 || { file "$bin" 2>/dev/null; }
  echo "cross-build: $bin $(stat -c %s "$bin") bytes ($(( $(stat -c %s "$bin") / 1024 )) KiB, stripped)"
done
