#!/usr/bin/env bash
# Checks the systemd units of deploy/systemd/ with `systemd-analyze verify`
# (Debian's systemd package, installed when missing), against a given
# exim-pilot binary:
#
#   scripts/check-deploy.sh [BINARY]     default: target/release/exim-pilot
#
# Each unit is copied to a temporary folder with /usr/bin/exim-pilot
# replaced by BINARY (verify refuses a command that does not exist), and
# must pass without a single warning.
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
binary=$(realpath "${1:-$root/target/release/exim-pilot}")
[ -x "$binary" ] || { echo "check-deploy: no executable $binary" >&2; exit 1; }

sudo_cmd() {
  if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi
}

if ! command -v systemd-analyze >/dev/null; then
  echo "check-deploy: installing Debian's systemd package for systemd-analyze" >&2
  sudo_cmd apt-get update -qq
  sudo_cmd env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends systemd >&2
fi

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
failed=0
for unit in "$root"/deploy/systemd/*.service; do
  name=$(basename "$unit")
  sed "s#/usr/bin/exim-pilot#$binary#g" "$unit" >"$work/$name"
  if ! out=$(cd "$work" && systemd-analyze verify "$work/$name" 2>&1) || [ -n "$out" ]; then
    echo "check-deploy: $name:" >&2
    echo "$out" >&2
    failed=1
  else
    echo "check-deploy: $name: ok"
  fi
done
exit $failed
