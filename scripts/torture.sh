#!/usr/bin/env bash
# The reliability suite (issue 7): builds the release binaries and runs drosera-torture against
# the real drosera-admin and drosera-sensor on loopback (plus a tmpfs when root).
#   scripts/torture.sh            full by-hand run (flood 10 min, soak 30 min, faults, arm64)
#   scripts/torture.sh --short    CI sizes (a few minutes)
# Any other flag goes to drosera-torture (see `drosera-torture --help`), e.g. --phases flood,faults
# --rate 500 --burst-count 20000 --burst-concurrency 2000 --report docs/last-torture.md
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --bins -p drosera-sensor -p drosera-admin -p drosera-e2e
exec target/release/drosera-torture --bin-dir target/release "$@"
