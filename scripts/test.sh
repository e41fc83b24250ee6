#!/usr/bin/env bash
# The whole test suite, as a newcomer and CI run it: installs the protocol clients, runs every
# unit, integration and end-to-end test (real binaries, real clients, loopback only).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-deps.sh
export DROSERA_REQUIRE_CLIENTS=1
cargo build --workspace --bins
cargo test --workspace -- --test-threads=2
