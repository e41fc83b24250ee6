#!/usr/bin/env bash
# Fails unless `systemd-analyze security --offline=true` rates every appliance service unit that
# runs the sensor at an exposure of MAX (default 2.0) or lower, and drosera-firewall.service
# (root by necessity: nft needs CAP_NET_ADMIN; it runs `drosera-sensor` on the pushed config
# only as the sensor user) at FIREWALL_MAX (default 3.0) or lower. Offline: only the unit files
# under image/rootfs are read; nothing is installed or started on this machine.
#   scripts/check-unit-security.sh [MAX]
set -euo pipefail
cd "$(dirname "$0")/.."
MAX=${1:-2.0}
FIREWALL_MAX=${FIREWALL_MAX:-3.0}
UNITDIR=image/rootfs/etc/systemd/system
command -v systemd-analyze >/dev/null || { echo "check-unit-security: systemd-analyze missing; apt-get install systemd" >&2; exit 1; }
status=0
for spec in "drosera-sensor.service $MAX" "drosera-firewall.service $FIREWALL_MAX"; do
  unit=${spec% *} max=${spec#* }
  [ -f "$UNITDIR/$unit" ] || { echo "check-unit-security: $UNITDIR/$unit missing" >&2; exit 1; }
  out=$(cd "$UNITDIR" && systemd-analyze security --offline=true --no-pager "$unit" 2>&1) || true
  level=$(printf '%s\n' "$out" | sed -n 's/.*Overall exposure level for [^:]*: \([0-9.]*\).*/\1/p' | tail -1)
  if [ -z "$level" ]; then
    printf '%s\n' "$out" >&2
    echo "check-unit-security: FAIL: no exposure level reported for $unit" >&2
    status=1
    continue
  fi
  # a unit file error (unknown directive, bad value) would silently lower the protection
  if printf '%s\n' "$out" | grep -Ei "unknown (key|lvalue)|failed to parse|invalid" >&2; then
    echo "check-unit-security: FAIL: $unit has directives systemd does not understand" >&2
    status=1
  fi
  if awk -v l="$level" -v m="$max" 'BEGIN { exit !(l + 0 <= m + 0) }'; then
    echo "check-unit-security: $unit exposure $level <= $max: ok"
  else
    printf '%s\n' "$out" | grep '✗' >&2 || true
    echo "check-unit-security: FAIL: $unit exposure $level > $max" >&2
    status=1
  fi
done
exit $status
