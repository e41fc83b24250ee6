# Sourced (bash) by scripts/cross-image.sh, scripts/ci-aarch64.sh and scripts/cross-build.sh: the
# environment `cross` runs in here, so the literal `cross build`/`cross test` commands work the
# same in CI and by hand.
#  * CROSS_CONTAINER_ENGINE: kept when set; else podman when installed, else docker. (cross
#    itself tries docker first, and a docker client without a daemon, as on the CI machines,
#    would fail.)
#  * CONTAINERS_CONF (podman only): scripts/containers.conf unless already set (runc, cgroupfs,
#    no default ulimits, no network; see that file for why).
#  * PATH: scripts/cross-rustup first, a guard that keeps cross 0.2.5 from updating the shared
#    Rust toolchain (see that file), and CROSS_CUSTOM_TOOLCHAIN=1 so cross installs no
#    components; the aarch64 target is installed beforehand with the real rustup.
# cross_engine_ok: true when the engine answers (podman info / docker info).
_cross_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
if [ -z "${CROSS_CONTAINER_ENGINE:-}" ]; then
  if command -v podman >/dev/null; then CROSS_CONTAINER_ENGINE=podman
  elif command -v docker >/dev/null; then CROSS_CONTAINER_ENGINE=docker
  fi
fi
if [ -n "${CROSS_CONTAINER_ENGINE:-}" ]; then
  export CROSS_CONTAINER_ENGINE
  if [ "$(basename "$CROSS_CONTAINER_ENGINE")" = podman ]; then
    export CONTAINERS_CONF=${CONTAINERS_CONF:-$_cross_root/scripts/containers.conf}
  fi
fi
if [ -z "${DROSERA_REAL_RUSTUP:-}" ]; then
  DROSERA_REAL_RUSTUP=$(command -v rustup || true)
  export DROSERA_REAL_RUSTUP
  case ":$PATH:" in *":$_cross_root/scripts/cross-rustup:"*) ;; *) export PATH="$_cross_root/scripts/cross-rustup:$PATH" ;; esac
fi
export CROSS_CUSTOM_TOOLCHAIN=1
cross_engine_ok() {
  [ -n "${CROSS_CONTAINER_ENGINE:-}" ] && command -v "$CROSS_CONTAINER_ENGINE" >/dev/null \
    && timeout 60 "$CROSS_CONTAINER_ENGINE" info >/dev/null 2>&1
}
# The cross-rs release this project is tested with (scripts/install-deps.sh installs it).
CROSS_VERSION=0.2.5
cross_installed() { cargo install --list 2>/dev/null | grep -q "^cross v$CROSS_VERSION:"; }
