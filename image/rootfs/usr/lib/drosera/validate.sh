# Strict checks for values that come from files on the boot partition (the bundle's `admin`,
# drosera/updates.conf) and end up in nftables rules, apt's sources or systemd units. Sourced by
# drosera-setup and apt-firewall (POSIX sh). Anything that is not exactly a host name or address
# and a port is refused, so no text from those files can add a rule, a set element or a line:
# `admin = "1.2.3.4:7443 } ; add rule ..."` must never reach `nft -f`.

# one line, only the given characters (a newline inside a value would let grep see two lines)
_dr_one_line() {
  case "$1" in *"
"*) return 1 ;; esac
  return 0
}

# dotted quad, each part 0-255, no leading zeros
valid_ipv4() {
  _dr_one_line "$1" || return 1
  printf '%s\n' "$1" | grep -Eq '^(0|[1-9][0-9]{0,2})(\.(0|[1-9][0-9]{0,2})){3}$' || return 1
  _ifs=$IFS; IFS=.
  # shellcheck disable=SC2086
  set -- $1
  IFS=$_ifs
  for _o in "$@"; do [ "$_o" -le 255 ] || return 1; done
  return 0
}

# hex groups and colons (optionally a dotted IPv4 tail), at most one "::", 2 to 7 colons
valid_ipv6() {
  _dr_one_line "$1" || return 1
  [ ${#1} -le 45 ] || return 1
  printf '%s\n' "$1" | grep -Eq '^[0-9A-Fa-f:.]+$' || return 1
  printf '%s\n' "$1" | grep -Eq ':.*:' || return 1
  printf '%s\n' "$1" | grep -Eq '::.*::|:::' && return 1
  _c=$(printf '%s' "$1" | tr -cd ':' | wc -c)
  [ "$_c" -le 7 ] || return 1
  printf '%s\n' "$1" | grep -Eq '(^|:)[0-9A-Fa-f]{5,}' && return 1
  return 0
}

# RFC 1123 host name: labels of letters, digits and inner hyphens, 1-63 each, 253 in all,
# the last label not all digits (so 999.1.1.1 is neither an address nor a name)
valid_hostname() {
  _dr_one_line "$1" || return 1
  [ ${#1} -ge 1 ] && [ ${#1} -le 253 ] || return 1
  printf '%s\n' "$1" | grep -Eq '^([A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.)*[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?$' || return 1
  printf '%s\n' "${1##*.}" | grep -Eq '^[0-9]+$' && return 1
  return 0
}

# decimal 1-65535, no sign, no leading zero
valid_port() {
  _dr_one_line "$1" || return 1
  printf '%s\n' "$1" | grep -Eq '^[1-9][0-9]{0,4}$' || return 1
  [ "$1" -le 65535 ]
}

# HOST:PORT where HOST is an IPv4 address, a [bracketed] IPv6 address or a host name.
# On success prints "KIND HOST PORT" (KIND v4, v6 or name; HOST without brackets).
valid_hostport() {
  _dr_one_line "$1" || return 1
  case "$1" in *:*) ;; *) return 1 ;; esac
  _port=${1##*:}
  _host=${1%:*}
  valid_port "$_port" || return 1
  case "$_host" in
    \[*\])
      _host=${_host#\[}; _host=${_host%\]}
      valid_ipv6 "$_host" || return 1
      echo "v6 $_host $_port" ;;
    *)
      if valid_ipv4 "$_host"; then echo "v4 $_host $_port"
      elif valid_hostname "$_host"; then echo "name $_host $_port"
      else return 1
      fi ;;
  esac
}

# http(s)://HOST[:PORT][/PATH] for apt; prints "KIND HOST PORT" like valid_hostport
# (PORT 80 or 443 when not given)
valid_mirror_url() {
  _dr_one_line "$1" || return 1
  case "$1" in
    http://*) _rest=${1#http://}; _def=80 ;;
    https://*) _rest=${1#https://}; _def=443 ;;
    *) return 1 ;;
  esac
  _auth=${_rest%%/*}
  _path=${_rest#"$_auth"}
  [ ${#1} -le 200 ] || return 1
  printf '%s\n' "$_path" | grep -Eq '^(/[A-Za-z0-9._~-]*)*$' || return 1
  case "$_auth" in
    \[*\]) valid_hostport "$_auth:$_def" ;;
    \[*\]:*|*:*) valid_hostport "$_auth" ;;
    *) valid_hostport "$_auth:$_def" ;;
  esac
}

# HH:MM, 00:00 to 23:59
valid_clock_time() {
  _dr_one_line "$1" || return 1
  printf '%s\n' "$1" | grep -Eq '^([01][0-9]|2[0-3]):[0-5][0-9]$'
}
