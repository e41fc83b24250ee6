#!/usr/bin/env bash
# CI for the Raspberry Pi target, so an arm-only bug cannot land:
#  1. the unit tests of drosera-uplink and drosera-sensor, built for aarch64 (debug) and run
#     under qemu-aarch64-static through the cargo runner in .cargo/config.toml;
#  2. the stripped aarch64 release binary of drosera-sensor (what the image ships), with its size.
# Uses its own target directory (target-aarch64) so host builds are never invalidated.
#   scripts/ci-aarch64.sh [--no-release]
set -euo pipefail
cd "$(dirname "$0")/.."
TARGET=aarch64-unknown-linux-gnu
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR_AARCH64:-$PWD/target-aarch64}
command -v qemu-aarch64-static >/dev/null || { echo "ci-aarch64: qemu-aarch64-static missing (apt-get install qemu-user-static; scripts/install-deps.sh)" >&2; exit 1; }
command -v aarch64-linux-gnu-gcc >/dev/null || { echo "ci-aarch64: aarch64-linux-gnu-gcc missing (scripts/install-deps.sh)" >&2; exit 1; }
rustup target list --installed | grep -qx $TARGET || rustup target add $TARGET

t0=$(date +%s)
echo "ci-aarch64: unit tests for $TARGET under qemu-aarch64"
cargo test --target $TARGET -p drosera-uplink -p drosera-sensor --lib -- --test-threads=2
t1=$(date +%s)
echo "ci-aarch64: tests took $(( t1 - t0 ))s"
if [ "${1:-}" != --no-release ]; then
  bash scripts/cross-build.sh drosera-sensor
  echo "ci-aarch64: release build took $(( $(date +%s) - t1 ))s"
fi
