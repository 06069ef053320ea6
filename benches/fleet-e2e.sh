#!/usr/bin/env bash
# End-to-end benchmark of fleet mode on this machine: a log file, `exim-pilot
# tail`, the Kafka-protocol broker, `exim-pilot process`, ClickHouse.
#
#   benches/fleet-e2e.sh [LINES]        (default 1,000,000)
#
# Environment: RATE (lines/s of the freshness run, default 2000),
# DURATION (its length in seconds, default 30), EVERY (sample one line in
# EVERY, default 20), KEEP_LOGS (a folder that receives the tailer's and
# the processor's logs; RUST_LOG sets what they log), BIN (an exim-pilot
# binary to measure instead of building one).
#
# 1. Throughput: LINES generated lines (benches/genlog.py) appear at once as
#    the mainlog of a tailer; the time until all of them can be counted in
#    ClickHouse (`SELECT count() FROM events`) gives lines per second from
#    file to queryable rows. The tailer's and the processor's metrics say
#    when the last line was published to the broker and how long the store
#    took, and each process's CPU time (from /proc) bounds what this machine
#    could do if every core were busy all the time, to show where the time
#    goes.
# 2. Freshness: lines are appended to the same mainlog at a steady RATE; for
#    one line in EVERY, the time from its write to the moment a ClickHouse
#    query sees it (the largest stored offset reaching it, polled every
#    20 ms), reported as p50/p99/max.
# 3. Disk: ClickHouse's bytes on disk for all of it once merged, per million
#    messages and per log line, and the largest tables.
#
# Everything runs on this machine, servers on loopback ports, started with
# scripts/services.sh in a temporary folder that is removed at the end.
set -euo pipefail
cd "$(dirname "$0")/.."
lines=${1:-1000000}
rate=${RATE:-2000}
seconds=${DURATION:-30}
every=${EVERY:-20}
tools=${EXIM_PILOT_TOOLS:-${XDG_CACHE_HOME:-$HOME/.cache}/exim-pilot/tools}

if [ -n "${BIN:-}" ]; then
  bin=$BIN
else
  cargo build --release --locked --bin exim-pilot >&2
  bin="${CARGO_TARGET_DIR:-target}/release/exim-pilot"
fi

work=$(mktemp -d)
pids=()
cleanup() {
  for pid in "${pids[@]}"; do
    kill "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
  done
  for dir in "$work/kafka" "$work/clickhouse"; do
    [ -e "$dir/pid" ] && scripts/services.sh stop "$dir" >/dev/null 2>&1 || true
  done
  if [ -n "${KEEP_LOGS:-}" ]; then
    mkdir -p "$KEEP_LOGS" && cp "$work/tail.log" "$work/process.log" "$KEEP_LOGS/" || true
  fi
  rm -rf "$work"
}
trap cleanup EXIT

echo "generating $lines lines, and $((rate * seconds)) more for the freshness run" >&2
python3 benches/genlog.py "$work/bulk" "$lines"
python3 benches/genlog.py "$work/steady" $((rate * seconds)) --seed 2
records=$(wc -l <"$work/bulk")

mkdir -p "$work/kafka" "$work/clickhouse" "$work/logs"
brokers=$(scripts/services.sh start kafka "$work/kafka")
clickhouse=$(scripts/services.sh start clickhouse "$work/clickhouse")
topic=exim-pilot-bench
"$tools/bin/tansu" topic create "$topic" --broker "tcp://$brokers" --partitions 1 >&2

free_port() {
  python3 -c "import socket; s=socket.socket(); s.bind(('127.0.0.1',0)); print(s.getsockname()[1])"
}
process_metrics=127.0.0.1:$(free_port)
"$bin" process --no-queue --kafka "$brokers" --topic "$topic" --group bench \
  --clickhouse "$clickhouse" --database bench --timezone utc --quiet \
  --listen "$process_metrics" 2>"$work/process.log" &
pids+=($!)
tail_metrics=127.0.0.1:$(free_port)
"$bin" tail --no-queue --log "$work/logs/mainlog" --host mx1.bench.test --kafka "$brokers" \
  --topic "$topic" --checkpoints "$work/checkpoints" \
  --listen "$tail_metrics" 2>"$work/tail.log" &
pids+=($!)

cpu_pids="tail=${pids[1]} broker=$(cat "$work/kafka/pid") process=${pids[0]} clickhouse=$(cat "$work/clickhouse/pid")"
python3 - "$clickhouse" "$work" "$records" "$rate" "$every" \
  "$tail_metrics" "$process_metrics" "$cpu_pids" <<'EOF'
import os
import statistics
import sys
import threading
import time
import urllib.request

url, work, records, rate, every, tail_metrics, process_metrics, cpu_pids = sys.argv[1:]
records, rate, every = int(records), int(rate), int(every)
cpu_pids = dict(item.split("=") for item in cpu_pids.split())
log = os.path.join(work, "logs", "mainlog")


def query(sql):
    req = urllib.request.Request(url + "/?database=bench", data=sql.encode())
    with urllib.request.urlopen(req, timeout=30) as r:
        return r.read().decode().strip()


def metrics(address):
    """Metric name -> value, summed over labels."""
    out = {}
    try:
        with urllib.request.urlopen(f"http://{address}/metrics", timeout=5) as r:
            text = r.read().decode()
    except OSError:
        return out
    for line in text.splitlines():
        if line.startswith("#") or " " not in line:
            continue
        name, value = line.rsplit(" ", 1)
        name = name.split("{", 1)[0]
        out[name] = out.get(name, 0.0) + float(value)
    return out


def cpu_seconds():
    """Each process's CPU time so far (user and system), by name."""
    ticks = os.sysconf("SC_CLK_TCK")
    out = {}
    for name, pid in cpu_pids.items():
        try:
            with open(f"/proc/{pid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            out[name] = (int(fields[11]) + int(fields[12])) / ticks
        except OSError:
            out[name] = 0.0
    return out


def wait(what, done, patience=600):
    start = time.monotonic()
    while not done():
        if time.monotonic() - start > patience:
            sys.exit(f"gave up waiting until {what}")
        time.sleep(0.05)


def answers():
    try:
        query("SELECT count() FROM events")
        return True
    except OSError:
        return False


wait("the processor created the tables", answers)
wait("the processor joined its group",
     lambda: metrics(process_metrics).get("exim_pilot_kafka_partitions_assigned", 0) >= 1)
wait("the tailer is up", lambda: bool(metrics(tail_metrics)))

# 1. Throughput.
published_at = None
cpu_before = cpu_seconds()
start = time.monotonic()
os.rename(os.path.join(work, "bulk"), log)
while True:
    now = time.monotonic()
    if published_at is None and metrics(tail_metrics).get(
            "exim_pilot_tail_records_published_total", 0) >= records:
        published_at = now
    if int(query("SELECT count() FROM events")) >= records:
        break
    if now - start > 1800:
        sys.exit("gave up: not every line reached ClickHouse in 30 minutes")
    time.sleep(0.05)
total = time.monotonic() - start
cpu_after = cpu_seconds()
size = os.path.getsize(log)
pm = metrics(process_metrics)
commits = pm.get("exim_pilot_store_batches_committed_total", 0)
store_secs = pm.get("exim_pilot_store_commit_seconds_sum", 0)
print(f"throughput: {records:,} lines ({size / 1e6:.0f} MB) from file to "
      f"queryable rows in {total:.1f} s: {records / total:,.0f} lines/s")
if published_at is not None:
    print(f"  tail: every line published to the broker after "
          f"{published_at - start:.1f} s ({records / (published_at - start):,.0f} lines/s)")
print(f"  process: {commits:.0f} store batches, {store_secs:.1f} s inside "
      f"ClickHouse commits ({records / max(store_secs, 1e-9):,.0f} lines/s while storing)")
cpu = {name: cpu_after[name] - cpu_before[name] for name in cpu_pids}
busy = sum(cpu.values())
cores = os.cpu_count() or 1
print("  CPU seconds: " + ", ".join(f"{name} {secs:.1f}" for name, secs in cpu.items())
      + f"; {busy:.1f} in all, {busy / total:.2f} of {cores} cores busy; with every core "
      f"busy all the time, at most {records / (busy / cores):,.0f} lines/s")

# 2. Freshness at a steady rate, once ClickHouse has finished merging
# what the throughput run wrote (so that its CPU time is the steady
# run's own).
settle = time.monotonic()
while time.monotonic() - settle < 60 and int(query("SELECT count() FROM system.merges")) > 0:
    time.sleep(0.2)
before = metrics(process_metrics)
cpu_before = cpu_seconds()
with open(os.path.join(work, "steady"), "rb") as f:
    steady = f.readlines()
written = {}  # offset of the line's first byte -> time it was written
seen = {}
done = threading.Event()


def watch():
    top = 0
    while not done.is_set() or len(seen) < len(written):
        # Only offsets past the last seen top: a cheap query, so that
        # ClickHouse's CPU time below is mostly the product's.
        top = max(top, int(query(
            "SELECT max(offset) FROM events "
            f"WHERE host = 'mx1.bench.test' AND offset > {top}")))
        now = time.monotonic()
        # A copy: the writing thread adds to `written` meanwhile, and a
        # dictionary that grows while it is iterated stops the watcher.
        for offset in [o for o in list(written) if o not in seen and o <= top]:
            seen[offset] = now
        time.sleep(0.02)


watcher = threading.Thread(target=watch)
watcher.start()
tick = 0.01
per_tick = max(1, round(rate * tick))
with open(log, "ab", buffering=0) as f:
    offset = f.tell()
    begin = time.monotonic()
    for i in range(0, len(steady), per_tick):
        chunk = steady[i:i + per_tick]
        data = b"".join(chunk)
        f.write(data)
        now = time.monotonic()
        position = offset
        for n, line in enumerate(chunk, start=i):
            if n % every == 0:
                written[position] = now
            position += len(line)
        offset += len(data)
        # Keep to the rate: sleep until this tick's end.
        delay = begin + (i + per_tick) / rate - time.monotonic()
        if delay > 0:
            time.sleep(delay)
    elapsed = time.monotonic() - begin
cpu_after = cpu_seconds()
done.set()
watcher.join(timeout=120)
lags = sorted((seen[o] - written[o]) * 1000 for o in written if o in seen)
missing = len(written) - len(lags)
q = statistics.quantiles(lags, n=100)
print(f"freshness: {len(steady):,} lines at {len(steady) / elapsed:,.0f} lines/s, "
      f"{len(lags)} sampled: write to visible in ClickHouse p50 {q[49]:.0f} ms, "
      f"p99 {q[98]:.0f} ms, max {lags[-1]:.0f} ms" + (f", {missing} never seen" if missing else ""))
after = metrics(process_metrics)
batches = after.get("exim_pilot_store_batches_committed_total", 0) - before.get(
    "exim_pilot_store_batches_committed_total", 0)
spent = after.get("exim_pilot_store_commit_seconds_sum", 0) - before.get(
    "exim_pilot_store_commit_seconds_sum", 0)
if batches:
    print(f"  process: {batches:.0f} store batches of {len(steady) / batches:,.0f} lines, "
          f"{spent / batches * 1000:.0f} ms per ClickHouse commit on average")
cpu = {name: cpu_after[name] - cpu_before[name] for name in cpu_pids}
print("  CPU seconds while writing: " + ", ".join(f"{name} {secs:.1f}" for name, secs in cpu.items())
      + f" ({sum(cpu.values()) / elapsed:.2f} of {os.cpu_count() or 1} cores busy)")

# 3. Disk: what ClickHouse keeps for these messages, once its parts are
# merged (copies of redelivered rows dropped), per million messages.
tables = query("SELECT name FROM system.tables WHERE database = 'bench' "
               "AND engine LIKE '%MergeTree%'").split()
for table in tables:
    query(f"OPTIMIZE TABLE {table} FINAL")
messages = int(query("SELECT count() FROM lifecycles FINAL"))
disk = query("SELECT table, sum(bytes_on_disk), sum(rows) FROM system.parts "
             "WHERE database = 'bench' AND active GROUP BY table "
             "ORDER BY sum(bytes_on_disk) DESC")
rows = [line.split("\t") for line in disk.splitlines() if line]
total_bytes = sum(int(r[1]) for r in rows)
lines_total = records + len(steady)
print(f"disk: {messages:,} messages from {lines_total:,} lines take "
      f"{total_bytes / 1e6:.1f} MB in ClickHouse: "
      f"{total_bytes / max(messages, 1) * 1e6 / 1e9:.2f} GB per million messages, "
      f"{total_bytes / lines_total:.0f} bytes per log line")
for table, size, count in rows[:6]:
    print(f"  {table}: {int(size) / 1e6:.1f} MB, {int(count):,} rows")
EOF
