#!/usr/bin/env bash
# Installs Debian's Exim tools used by benchmarks and queue tests:
# eximstats (exim4-base) and, with --daemon, exim4-daemon-light. Package
# scripts are kept from starting any mail service: the tests start their own
# Exim with their own configuration on loopback ports.
set -euo pipefail
want=(exim4-base)
[ "${1:-}" = "--daemon" ] && want+=(exim4-daemon-light)

missing=()
command -v eximstats >/dev/null 2>&1 || missing+=(exim4-base)
if [ "${1:-}" = "--daemon" ] && ! [ -x /usr/sbin/exim4 ]; then
  missing+=(exim4-daemon-light)
fi
[ ${#missing[@]} -eq 0 ] && exit 0

sudo=""
[ "$(id -u)" -eq 0 ] || sudo="sudo"
policy=/usr/sbin/policy-rc.d
had_policy=0
[ -e "$policy" ] && had_policy=1
if [ $had_policy -eq 0 ]; then
  printf '#!/bin/sh\nexit 101\n' | $sudo tee "$policy" >/dev/null
  $sudo chmod +x "$policy"
fi
trap '[ $had_policy -eq 0 ] && $sudo rm -f "$policy"' EXIT
$sudo apt-get update -qq
DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${want[@]}"
