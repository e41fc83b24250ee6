#!/usr/bin/env bash
# The whole test suite, as a newcomer and CI run it: installs the protocol clients, runs every
# unit, integration and end-to-end test (real binaries, real clients, loopback only).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-deps.sh
export DROSERA_REQUIRE_CLIENTS=1
cargo build --workspace --bins
# Every test executable, built once; their paths (cargo's JSON messages) for the second pass.
artifacts=$(mktemp)
trap 'rm -f "$artifacts"' EXIT
cargo test --workspace --no-run --message-format=json-render-diagnostics >"$artifacts"
cargo test --workspace -- --test-threads=2
# Second pass on PostgreSQL (a throwaway server, see admin/src/testpg.rs): the admin's own unit
# and integration tests and the uplink end-to-end tests, the same tests with the other backend.
# The storage conformance tests above already ran on both. The executables of the first pass
# are run directly: `cargo test -p drosera-admin` would resolve features for that package alone
# and rebuild the admin and 76 dependencies (about 6 minutes on 2 cores) for the same tests.
export DROSERA_TEST_BACKEND=postgres
mapfile -t second < <(python3 scripts/test-executables.py "$artifacts")
[ "${#second[@]}" -gt 0 ] || { echo "test.sh: no test executables for the PostgreSQL pass" >&2; exit 1; }
for entry in "${second[@]}"; do
  dir=${entry%%$'\t'*} exe=${entry#*$'\t'}
  echo "test.sh: PostgreSQL pass: ${exe##*/}"
  (cd "$dir" && "$exe" --test-threads=2)
done
