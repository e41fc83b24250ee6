#!/usr/bin/env bash
# The appliance checks that need no image build (seconds): the sensor unit's systemd-analyze
# exposure, flash.sh on regular files, the first-boot setup with a real bundle and the nftables
# rules (checked in a private network namespace). Needs the host debug binaries
# (cargo build --workspace --bins) and root. CI runs it after scripts/test.sh.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${CARGO_TARGET_DIR:-$PWD/target}/debug
bash scripts/check-unit-security.sh
bash image/tests/flash-test.sh
bash image/tests/setup-test.sh "$BIN/drosera-sensor" "$BIN/drosera-admin"
