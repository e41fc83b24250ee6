#!/usr/bin/env bash
# Cross-builds the Raspberry Pi (aarch64) release binaries without containers, strips them and
# prints their sizes:
#   scripts/cross-build.sh [PACKAGE...]        (default: drosera-sensor drosera-admin)
# Output: target-aarch64/aarch64-unknown-linux-gnu/release/{drosera-sensor,drosera-admin}
# Uses the rustup aarch64 target and Debian's gcc-aarch64-linux-gnu (linker and C compiler for
# rusqlite's bundled SQLite and ring), configured in .cargo/config.toml; installs them if missing.
set -euo pipefail
cd "$(dirname "$0")/.."
TARGET=aarch64-unknown-linux-gnu
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR_AARCH64:-$PWD/target-aarch64}
PKGS=("$@")
[ ${#PKGS[@]} -gt 0 ] || PKGS=(drosera-sensor drosera-admin)

if ! command -v aarch64-linux-gnu-gcc >/dev/null || ! dpkg -s libc6-dev-arm64-cross >/dev/null 2>&1; then
  echo "cross-build: installing gcc-aarch64-linux-gnu libc6-dev-arm64-cross"
  SUDO=""; [ "$(id -u)" = 0 ] || SUDO=sudo
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends \
    gcc-aarch64-linux-gnu libc6-dev-arm64-cross binutils-aarch64-linux-gnu >/dev/null
fi
command -v rustup >/dev/null || { echo "cross-build: rustup is required (https://rustup.rs)" >&2; exit 1; }
rustup target list --installed | grep -qx $TARGET || rustup target add $TARGET

args=()
for p in "${PKGS[@]}"; do args+=(-p "$p"); done
start=$(date +%s)
cargo build --release --target $TARGET "${args[@]}" --bins
echo "cross-build: release build took $(( $(date +%s) - start ))s"
for p in "${PKGS[@]}"; do
  bin="$CARGO_TARGET_DIR/$TARGET/release/$p"
  [ -f "$bin" ] || continue
  aarch64-linux-gnu-strip "$bin"
  file "$bin" 2>/dev/null | grep -q aarch64 || { file "$bin" 2>/dev/null; }
  echo "cross-build: $bin $(stat -c %s "$bin") bytes ($(( $(stat -c %s "$bin") / 1024 )) KiB, stripped)"
done
