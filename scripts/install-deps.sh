#!/usr/bin/env bash
# Installs what the test suite needs from Debian's packages, rustup and crates.io: the ordinary
# clients of every emulated protocol, the aarch64 cross toolchain and qemu-user for arm64 tests,
# `cross` with Podman (runc) and mmdebstrap for the aarch64 CI (scripts/ci-aarch64.sh,
# scripts/cross-image.sh), and PostgreSQL (its binaries only: tests start their own throwaway
# server, see admin/src/testpg.rs).
# Safe to run again; does nothing for packages already present. Needs root (or sudo).
set -euo pipefail
PKGS=(curl lftp mariadb-client freetds-bin smbclient openssh-client sshpass telnet netcat-openbsd
      gcc-aarch64-linux-gnu libc6-dev-arm64-cross qemu-user-static chromium procps iproute2 python3
      python3-pandas systemd nftables mtools dosfstools fdisk xz-utils faketime
      podman runc mmdebstrap arch-test file util-linux postgresql)
# The attacker tools the Telnet and SSH tests run (hydra; nmap -sV and its ssh NSE scripts).
PKGS+=(hydra nmap python3-impacket)
# Clients of the services of issue 17 (Redis, ADB, Docker Engine API, SMTP).
PKGS+=(redis-tools adb docker.io swaks)
# RDP and VNC clients (issue 17): FreeRDP's xfreerdp (/auth-only, run under xvfb-run: it opens
# an X display first) and vncsnapshot (RFB 3.3).
PKGS+=(freerdp2-x11 xvfb xauth vncsnapshot)
# Clients of issue 16's TCP services: mosquitto_pub/sub (MQTT), pymongo (MongoDB), pptp
# (PPTP, run with --nolaunchpppd); rpcdump.py comes with python3-impacket.
PKGS+=(mosquitto-clients python3-pymongo pptp-linux)
missing=()
# hydra: the login tests run the brute forcer attackers use (issue 14)
PKGS+=(hydra)
# Samples (issue 15): the admin's password-protected ZIP must open with both unzip -P and 7z x -p.
PKGS+=(unzip p7zip-full)
# Servers the admin's sample fetcher is tested against on loopback (issue 15): FTP (pyftpdlib),
# TFTP (tftpd-hpa's in.tftpd, run in the foreground); archivers for the file-type tests.
PKGS+=(python3-pyftpdlib tftpd-hpa gzip bzip2 xz-utils tar)
# Scan detection (issue 16): the Mirai-style SYN burst of sensor/tests/scan_netns.rs is built
# with scapy (nmap is above); scripts/bench-scan.sh floods SYNs with `drosera-flood syn`.
PKGS+=(python3-scapy)
# Clients of the UDP services of issue 16 (TFTP, SIP, memcached, UPnP): tftp-hpa's tftp, sipsak,
# SIPVicious (svmap), libmemcached-tools (memcstat, memccat), miniupnpc (upnpc).
PKGS+=(tftp-hpa sipsak sipvicious libmemcached-tools miniupnpc)
# Issue 21: the dashboard's flags are emoji; admin/tests/dashboard_screenshots.rs checks that
# headless Chromium draws them with a colour emoji font.
PKGS+=(fonts-noto-color-emoji)
for p in "${PKGS[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
SUDO=""
if [ "$(id -u)" != 0 ]; then
  if command -v sudo >/dev/null; then SUDO="sudo"; else
    if [ ${#missing[@]} -gt 0 ]; then
      echo "install-deps: missing packages ${missing[*]} and not root; install them or run as root" >&2
      exit 1
    fi
  fi
fi
if [ ${#missing[@]} -gt 0 ]; then
  echo "install-deps: installing ${missing[*]}"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
if command -v rustup >/dev/null; then
  rustup target list --installed | grep -q aarch64-unknown-linux-gnu || rustup target add aarch64-unknown-linux-gnu
  rustup component list --installed | grep -q clippy || rustup component add clippy rustfmt
fi
# cross from crates.io, the version scripts/cross-env.sh guards (once; `cargo install --list`
# does not run cross, whose own start-up could update the toolchain: see scripts/cross-rustup)
CROSS_VERSION=$(sed -n 's/^CROSS_VERSION=//p' "$(dirname "$0")/cross-env.sh")
if command -v cargo >/dev/null && ! cargo install --list | grep -q "^cross v$CROSS_VERSION:"; then
  echo "install-deps: cargo install cross --locked --version $CROSS_VERSION"
  cargo install cross --locked --version "$CROSS_VERSION"
fi
echo "install-deps: ok"
