#!/usr/bin/env bash
# The whole test suite, as a newcomer and CI run it: installs the protocol clients, runs every
# unit, integration and end-to-end test (real binaries, real clients, loopback only).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-deps.sh
export DROSERA_REQUIRE_CLIENTS=1
cargo build --workspace --bins
cargo test --workspace -- --test-threads=2
# Second pass on PostgreSQL (a throwaway server, see admin/src/testpg.rs): the admin's own unit
# and integration tests and the uplink end-to-end tests, the same tests with the other backend.
# The storage conformance tests above already ran on both.
export DROSERA_TEST_BACKEND=postgres
cargo test -p drosera-admin --tests -- --test-threads=2
cargo test -p drosera-e2e --test uplink_e2e -- --test-threads=2
