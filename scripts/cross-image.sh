#!/usr/bin/env bash
# Creates the container image that `cross` builds and tests the Raspberry Pi (aarch64) binaries
# in, from Debian packages only: cross-rs's own images live on ghcr.io, which CI (and many build
# machines) cannot reach, so the image is a small amd64 Debian made with mmdebstrap from the
# Debian mirror and imported into the container engine. Idempotent and cached: the image is
# named by a hash of its recipe (the BEGIN-RECIPE..END-RECIPE part of this file), so it is built
# again only when the recipe changes, and `Cross.toml` names exactly that image.
#
#   scripts/cross-image.sh              make the image unless it exists (prints its name)
#   scripts/cross-image.sh --name       print the image name the recipe gives, do nothing else
#   scripts/cross-image.sh --check      fail if Cross.toml does not name that image (no engine)
#   scripts/cross-image.sh --rebuild    make it again (newer Debian packages, same recipe)
#
# Engine: as scripts/cross-env.sh picks it: $CROSS_CONTAINER_ENGINE (podman or docker, as `cross`
# reads it), else podman when installed, else docker. With podman, CONTAINERS_CONF defaults to
# scripts/containers.conf (runc, cgroupfs, no default ulimits, no network: what works here).
# Needs: mmdebstrap (root, or unprivileged user namespaces for its unshare mode), the engine.
set -euo pipefail
ROOT_DIR="$(cd "$(dirname "$0")/.." && pwd)"
MIRROR=${DROSERA_MIRROR:-http://deb.debian.org/debian}
REPO=localhost/drosera-cross-aarch64

# BEGIN-RECIPE
# What `cross build`/`cross test --target aarch64-unknown-linux-gnu` need inside the container
# (the Rust toolchain itself is the host's, mounted by cross at /rust):
#  * gcc, libc6-dev: the host C toolchain that links build scripts and proc macros (x86_64);
#  * gcc-aarch64-linux-gnu, libc6-dev-arm64-cross: linker and C compiler for rusqlite's bundled
#    SQLite and ring, as named in .cargo/config.toml;
#  * qemu-user-static: the `cross test` runner, `qemu-aarch64-static -L /usr/aarch64-linux-gnu`
#    (.cargo/config.toml), no binfmt registration needed; its other ~30 emulators (450 MB) are
#    deleted.
RECIPE_SUITE=bookworm
RECIPE_PACKAGES=(gcc libc6-dev gcc-aarch64-linux-gnu libc6-dev-arm64-cross qemu-user-static)
recipe_rootfs() { # OUT.tar
  mmdebstrap --variant=minbase --architectures=amd64 --components=main \
    --include="$(IFS=,; echo "${RECIPE_PACKAGES[*]}")" \
    --aptopt='APT::Install-Recommends "false"' \
    --dpkgopt='path-exclude=/usr/share/man/*' --dpkgopt='path-exclude=/usr/share/doc/*' \
    --dpkgopt='path-include=/usr/share/doc/*/copyright' \
    --dpkgopt='path-exclude=/usr/share/locale/*' --dpkgopt='path-exclude=/usr/share/info/*' \
    --customize-hook='rm -rf "$1"/var/lib/apt/lists/* "$1"/var/cache/apt/*.bin "$1"/var/log/*.log' \
    --customize-hook='find "$1"/usr/bin -name "qemu-*-static" ! -name qemu-aarch64-static -delete' \
    "$RECIPE_SUITE" "$1" "$MIRROR"
}
RECIPE_CHANGES=(
  'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin'
  'CMD ["/bin/sh"]'
)
# END-RECIPE

HASH=$(sed -n '/^# BEGIN-RECIPE/,/^# END-RECIPE/p' "$0" | sha256sum | cut -c1-16)
IMAGE="$REPO:$HASH"
die() { echo "cross-image: ERROR: $*" >&2; exit 1; }

check_cross_toml() {
  local named
  named=$(sed -n 's/^image *= *"\(.*\)".*/\1/p' "$ROOT_DIR/Cross.toml" | head -n1)
  [ "$named" = "$IMAGE" ] || die "Cross.toml names image \"$named\" but the recipe in scripts/cross-image.sh makes \"$IMAGE\"; set image = \"$IMAGE\" under [target.aarch64-unknown-linux-gnu] in Cross.toml"
}

MODE=make
case "${1:-}" in
  "") ;;
  --name) echo "$IMAGE"; exit 0 ;;
  --check) check_cross_toml; echo "cross-image: Cross.toml names $IMAGE (the recipe's image)"; exit 0 ;;
  --rebuild) MODE=rebuild ;;
  -h|--help) sed -n '2,18p' "$0"; exit 0 ;;
  *) echo "usage: scripts/cross-image.sh [--name|--check|--rebuild]" >&2; exit 2 ;;
esac
check_cross_toml

# shellcheck source=cross-env.sh
. "$ROOT_DIR/scripts/cross-env.sh"
ENGINE=${CROSS_CONTAINER_ENGINE:-}
[ -n "$ENGINE" ] && command -v "$ENGINE" >/dev/null \
  || die "no container engine; install podman (apt-get install podman runc) or Docker, or set CROSS_CONTAINER_ENGINE"

if [ "$MODE" = make ] && "$ENGINE" image inspect "$IMAGE" >/dev/null 2>&1; then
  echo "cross-image: $IMAGE is up to date"
  exit 0
fi
command -v mmdebstrap >/dev/null || die "mmdebstrap missing (apt-get install mmdebstrap; scripts/install-deps.sh)"

start=$(date +%s)
TMP=$(mktemp -d "${TMPDIR:-/tmp}/drosera-cross-image.XXXXXX")
trap 'rm -rf "$TMP"' EXIT
echo "cross-image: making $IMAGE (mmdebstrap $RECIPE_SUITE amd64: ${RECIPE_PACKAGES[*]})"
recipe_rootfs "$TMP/rootfs.tar" || die "mmdebstrap failed (see above); it needs the Debian mirror $MIRROR"
changes=()
for c in "${RECIPE_CHANGES[@]}"; do changes+=(--change "$c"); done
"$ENGINE" import "${changes[@]}" "$TMP/rootfs.tar" "$IMAGE" >/dev/null || die "$ENGINE import failed"
# the image must run and hold the tools .cargo/config.toml names
"$ENGINE" run --rm "$IMAGE" sh -c \
  'aarch64-linux-gnu-gcc --version >/dev/null && cc --version >/dev/null && qemu-aarch64-static --version >/dev/null && test -e /usr/aarch64-linux-gnu/lib/ld-linux-aarch64.so.1' \
  || die "$IMAGE does not run or lacks a tool (engine $ENGINE, CONTAINERS_CONF=${CONTAINERS_CONF:-unset})"
# older recipes' images only take disk space
for old in $("$ENGINE" images --format '{{.Repository}}:{{.Tag}}' | grep "^$REPO:" | grep -vx "$IMAGE" || true); do
  "$ENGINE" rmi "$old" >/dev/null 2>&1 && echo "cross-image: removed the older $old" || true
done
echo "cross-image: made $IMAGE in $(( $(date +%s) - start ))s ($(( $(stat -c %s "$TMP/rootfs.tar") / 1048576 )) MiB)"
