#!/usr/bin/env bash
# The reliability suite (issue 7): builds the binaries and runs drosera-torture against the real
# drosera-admin and drosera-sensor on loopback (plus a tmpfs when root).
#   scripts/torture.sh            full by-hand run (flood 10 min, soak 30 min, faults, arm64)
#   scripts/torture.sh --short    CI sizes (a few minutes)
# Any other flag goes to drosera-torture (see `drosera-torture --help`), e.g. --phases flood,faults
# --rate 500 --burst-count 20000 --burst-concurrency 2000 --report docs/last-torture.md
# TORTURE_PROFILE=debug uses the debug binaries (what CI has already built) instead of release.
# The arm64 phase uses target-aarch64/aarch64-unknown-linux-gnu/release/drosera-sensor
# (scripts/cross-build.sh) under qemu-aarch64; it is reported as SKIPPED when that is missing.
set -euo pipefail
cd "$(dirname "$0")/.."
PROFILE=${TORTURE_PROFILE:-release}
case "$PROFILE" in
  release) cargo build --release --bins -p drosera-sensor -p drosera-admin -p drosera-e2e ;;
  debug) cargo build --bins -p drosera-sensor -p drosera-admin -p drosera-e2e ;;
  *) echo "torture.sh: TORTURE_PROFILE must be release or debug, not $PROFILE" >&2; exit 2 ;;
esac
BIN=${CARGO_TARGET_DIR:-target}/$PROFILE
ARM=${CARGO_TARGET_DIR_AARCH64:-target-aarch64}/aarch64-unknown-linux-gnu/release/drosera-sensor
extra=()
if [ -x "$ARM" ] && [[ " $* " != *" --arm64-sensor"* ]]; then extra=(--arm64-sensor "$ARM"); fi
exec "$BIN/drosera-torture" --bin-dir "$BIN" "${extra[@]}" "$@"
