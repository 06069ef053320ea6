#!/usr/bin/env bash
# End-to-end benchmark of exim-pilot against eximstats on one large
# generated mainlog, in one run so the ratios hold on a noisy machine.
#
#   benches/run.sh [LINES]        (default 1,000,000)
#
# Measures, each the best of three runs: eximstats' full text report (the
# baseline), `exim-pilot parse --format summary` (parse only), and
# `exim-pilot report --format json` (parse, correlate, aggregate), with
# wall time, records per second and peak memory (max RSS).
set -euo pipefail
cd "$(dirname "$0")/.."
lines=${1:-1000000}
runs=3

scripts/install-exim-tools.sh
cargo build --release --locked --bin exim-pilot >&2
target=${CARGO_TARGET_DIR:-target}
bin="$target/release/exim-pilot"

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
log="$work/mainlog"
python3 benches/genlog.py "$log" "$lines"
bytes=$(stat -c %s "$log")

# best_of NAME CMD...: runs CMD $runs times, keeps the fastest wall time
# and the largest peak RSS, and records them as NAME.
best_of() {
  local name=$1; shift
  local best="" rss=0
  for _ in $(seq $runs); do
    /usr/bin/time -f "%e %M" -o "$work/time" "$@" >/dev/null 2>"$work/err" || {
      cat "$work/err" >&2; exit 1; }
    read -r secs kb <"$work/time"
    if [ -z "$best" ] || awk "BEGIN{exit !($secs < $best)}"; then best=$secs; fi
    [ "$kb" -gt "$rss" ] && rss=$kb
  done
  printf '%s %s %s\n' "$name" "$best" "$rss" >>"$work/results"
}

best_of eximstats eximstats -txt "$log"
best_of parse "$bin" parse --format summary "$log"
best_of report "$bin" report --format json --timezone utc --host bench "$log"

awk -v lines="$lines" -v bytes="$bytes" '
  { secs[$1] = $2; rss[$1] = $3 }
  END {
    base = secs["eximstats"]
    printf "%d lines, %.1f MB\n", lines, bytes / 1e6
    printf "%-10s %9s %14s %10s %12s %12s\n", "tool", "seconds", "records/s", "MB/s", "peak MB", "vs eximstats"
    n = split("eximstats parse report", order, " ")
    for (i = 1; i <= n; i++) {
      t = order[i]; s = secs[t] > 0 ? secs[t] : 0.001
      printf "%-10s %9.2f %14.0f %10.1f %12.1f %11.1fx\n", t, secs[t], lines / s, bytes / 1e6 / s, rss[t] / 1024, base / s
    }
  }' "$work/results"
