#!/usr/bin/env bash
# CI for the Raspberry Pi target, so an arm-only bug cannot land. Runs the design's own commands,
# literally, in the project's build image (issue 22):
#  0. scripts/cross-image.sh: the build image, made from Debian packages once and cached (named
#     by the hash of its recipe; Cross.toml names it);
#  1. cross test --target aarch64-unknown-linux-gnu -p drosera-uplink -p drosera-sensor --lib
#     (debug; the tests run under qemu-aarch64-static inside the container, 2 test threads);
#  2. cross build --release --target aarch64-unknown-linux-gnu -p drosera-sensor: the binary the
#     image ships, stripped, with its size.
# The output stays where scripts/build-image.sh and scripts/torture.sh look for it:
# target-aarch64/aarch64-unknown-linux-gnu/release/drosera-sensor (its own target directory,
# so host builds are never invalidated). The container has no network: dependencies are
# fetched on the host first (cargo fetch) and cargo runs offline inside.
#   scripts/ci-aarch64.sh [--no-release]
set -euo pipefail
cd "$(dirname "$0")/.."
TARGET=aarch64-unknown-linux-gnu
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR_AARCH64:-$PWD/target-aarch64}
# the aarch64 standard library, with the real rustup (cross itself may not change toolchains)
rustup target list --installed | grep -qx $TARGET || rustup target add $TARGET
# shellcheck source=cross-env.sh
. scripts/cross-env.sh
cross_installed || { echo "ci-aarch64: cross $CROSS_VERSION missing (scripts/install-deps.sh, or: cargo install cross --locked --version $CROSS_VERSION)" >&2; exit 1; }
cross_engine_ok || { echo "ci-aarch64: container engine '${CROSS_CONTAINER_ENGINE:-none}' does not answer (apt-get install podman runc; scripts/install-deps.sh)" >&2; exit 1; }

t0=$(date +%s)
bash scripts/cross-image.sh
cargo fetch --locked
export CARGO_NET_OFFLINE=true RUST_TEST_THREADS=2
t1=$(date +%s)
echo "ci-aarch64: build image + fetch took $(( t1 - t0 ))s"

echo "ci-aarch64: unit tests for $TARGET under qemu-aarch64 (in the container)"
cross test --target aarch64-unknown-linux-gnu -p drosera-uplink -p drosera-sensor --lib
t2=$(date +%s)
echo "ci-aarch64: tests took $(( t2 - t1 ))s"
if [ "${1:-}" != --no-release ]; then
  cross build --release --target aarch64-unknown-linux-gnu -p drosera-sensor
  bin="$CARGO_TARGET_DIR/$TARGET/release/drosera-sensor"
  [ -f "$bin" ] || { echo "ci-aarch64: $bin was not built" >&2; exit 1; }
  # the release profile strips symbols already; the cross strip removes what is left
  if command -v aarch64-linux-gnu-strip >/dev/null; then aarch64-linux-gnu-strip "$bin"; fi
  file -b "$bin" | grep -q aarch64 || { echo "ci-aarch64: $bin is not an aarch64 binary: $(file -b "$bin")" >&2; exit 1; }
  echo "ci-aarch64: $bin $(stat -c %s "$bin") bytes ($(( $(stat -c %s "$bin") / 1024 )) KiB, stripped)"
  echo "ci-aarch64: release build took $(( $(date +%s) - t2 ))s"
fi
