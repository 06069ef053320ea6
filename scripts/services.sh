#!/usr/bin/env bash
# Installs and runs the servers that fleet mode's tests talk to, on loopback
# ports only:
#
#   - a Kafka-protocol broker: `tansu`, from crates.io, with its SQLite
#     storage engine;
#   - ClickHouse: Debian's clickhouse-server, with a configuration of our own;
#   - a current ClickHouse engine in-process (PyPI's chdb-core), used to
#     check that every statement we send also runs on current versions;
#   - Debian's Exim (exim4-daemon-light), for the queue tests: they run the
#     binary with a configuration of their own under a temporary folder
#     (see testkit's `exim` module). No system-wide Exim daemon is started
#     or left running.
#
# Tools are kept outside the checkout, in $EXIM_PILOT_TOOLS (default
# ~/.cache/exim-pilot/tools), so they survive fresh clones; a cold run
# installs them (tansu takes about 10 minutes to build on 2 cores).
#
#   scripts/services.sh install            install what is missing
#   scripts/services.sh env                print the variables tests read
#   scripts/services.sh start kafka DIR    start a broker with its data in DIR
#   scripts/services.sh start clickhouse DIR
#                                          start a ClickHouse server in DIR
#   scripts/services.sh stop DIR           stop the server started in DIR
#   scripts/services.sh up STATE           install, start both in STATE/, and
#                                          print `export` lines for them
#   scripts/services.sh down STATE         stop both
#
# `start` picks a free port, waits until the server answers, and prints its
# address (127.0.0.1:PORT for Kafka, http://127.0.0.1:PORT for ClickHouse).
# DIR/pid and DIR/address hold the process id and address. Starting again
# in the same DIR reuses its data and its port when that port is still free.
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
tools=${EXIM_PILOT_TOOLS:-${XDG_CACHE_HOME:-$HOME/.cache}/exim-pilot/tools}
tansu_version=${TANSU_VERSION:-}

log() { printf '[services] %s\n' "$*" >&2; }

sudo_cmd() {
  if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi
}

tansu_bin() { echo "$tools/bin/tansu"; }
clickhouse_bin() {
  for c in /usr/bin/clickhouse-server /usr/sbin/clickhouse-server /usr/bin/clickhouse; do
    [ -x "$c" ] && { echo "$c"; return; }
  done
  echo /usr/bin/clickhouse-server
}
chdb_python() { echo "$tools/venv/bin/python3"; }

install_clickhouse() {
  [ -x "$(clickhouse_bin)" ] && return 0
  log "installing Debian's clickhouse-server"
  local policy=/usr/sbin/policy-rc.d had_policy=0
  [ -e "$policy" ] && had_policy=1
  if [ $had_policy -eq 0 ]; then
    # Keep the package from starting its own service: tests start their own.
    printf '#!/bin/sh\nexit 101\n' | sudo_cmd tee "$policy" >/dev/null
    sudo_cmd chmod +x "$policy"
  fi
  sudo_cmd apt-get update -qq
  DEBIAN_FRONTEND=noninteractive sudo_cmd apt-get install -y -qq --no-install-recommends \
    clickhouse-server clickhouse-client >/dev/null
  [ $had_policy -eq 0 ] && sudo_cmd rm -f "$policy"
  return 0
}

install_exim() {
  local installed=0
  if [ ! -x /usr/sbin/exim4 ]; then
    log "installing Debian's exim4-daemon-light (no mail service is started)"
    "$root/scripts/install-exim-tools.sh" --daemon >&2
    installed=1
  fi
  # The tests run their own Exim and need no daemon. policy-rc.d keeps the
  # package scripts from starting Debian's; should one run anyway right
  # after this install, it is ours to stop, by the pid it wrote. A daemon
  # that ran before is the machine's own and is left alone.
  local pidfile=/run/exim4/exim.pid pid
  [ -f "$pidfile" ] || return 0
  pid=$(cat "$pidfile")
  if [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null; then
    if [ $installed -eq 1 ]; then
      log "stopping the Exim daemon the package started (pid $pid)"
      sudo_cmd kill "$pid"
    else
      log "note: a system-wide Exim daemon runs (pid $pid); the queue tests do not use it"
    fi
  fi
  return 0
}

install_tansu() {
  [ -x "$(tansu_bin)" ] && return 0
  log "building the tansu broker into $tools (about 10 minutes on 2 cores)"
  mkdir -p "$tools"
  local build
  build=$(mktemp -d)
  local version_args=()
  [ -n "$tansu_version" ] && version_args=(--version "$tansu_version")
  CARGO_TARGET_DIR="$build" cargo install tansu --locked --features dynostore,libsql \
    --root "$tools" "${version_args[@]}" >&2
  rm -rf "$build"
}

install_chdb() {
  local py
  py=$(chdb_python)
  if [ -x "$py" ] && "$py" -c 'import chdb' 2>/dev/null; then return 0; fi
  log "installing chdb-core (current ClickHouse engine) into $tools/venv"
  mkdir -p "$tools"
  python3 -m venv "$tools/venv"
  "$tools/venv/bin/pip" install --quiet --disable-pip-version-check chdb-core >&2
}

free_port() {
  python3 - <<'EOF'
import socket
s = socket.socket()
s.bind(("127.0.0.1", 0))
print(s.getsockname()[1])
s.close()
EOF
}

port_free() {
  python3 - "$1" <<'EOF'
import socket, sys
s = socket.socket()
# Servers set SO_REUSEADDR, so connections of a stopped server that are
# still in TIME_WAIT do not keep its port from being used again.
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
try:
    s.bind(("127.0.0.1", int(sys.argv[1])))
except OSError:
    sys.exit(1)
finally:
    s.close()
EOF
}

# wait_tcp PORT PID SECONDS: waits until PORT accepts connections.
wait_tcp() {
  local port=$1 pid=$2 limit=$3 i=0
  while [ $i -lt $((limit * 10)) ]; do
    if ! kill -0 "$pid" 2>/dev/null; then return 1; fi
    if python3 -c "import socket,sys; socket.create_connection(('127.0.0.1',$port),0.5)" 2>/dev/null; then
      return 0
    fi
    sleep 0.1
    i=$((i + 1))
  done
  return 1
}

pick_port() {
  local dir=$1
  if [ -f "$dir/port" ] && port_free "$(cat "$dir/port")"; then
    cat "$dir/port"
  else
    free_port
  fi
}

start_kafka() {
  local dir=$1 port pid
  mkdir -p "$dir"
  dir=$(cd "$dir" && pwd)
  port=$(pick_port "$dir")
  echo "$port" >"$dir/port"
  (
    cd "$dir"
    exec "$(tansu_bin)" broker \
      --listener-url "tcp://127.0.0.1:$port" \
      --advertised-listener-url "tcp://127.0.0.1:$port" \
      --storage-engine "sqlite://tansu.db" >>"$dir/server.log" 2>&1
  ) &
  pid=$!
  echo "$pid" >"$dir/pid"
  if ! wait_tcp "$port" "$pid" 60; then
    log "the broker did not start; its log:"
    tail -n 30 "$dir/server.log" >&2 || true
    return 1
  fi
  echo "127.0.0.1:$port" | tee "$dir/address"
}

start_clickhouse() {
  local dir=$1 port tcp_port pid
  mkdir -p "$dir/data" "$dir/tmp" "$dir/user_files" "$dir/format_schemas"
  dir=$(cd "$dir" && pwd)
  port=$(pick_port "$dir")
  echo "$port" >"$dir/port"
  tcp_port=$(free_port)
  cat >"$dir/config.xml" <<EOF
<?xml version="1.0"?>
<yandex>
    <logger>
        <level>warning</level>
        <log>$dir/server.log</log>
        <errorlog>$dir/server.err.log</errorlog>
        <size>10M</size>
        <count>2</count>
    </logger>
    <http_port>$port</http_port>
    <tcp_port>$tcp_port</tcp_port>
    <listen_host>127.0.0.1</listen_host>
    <path>$dir/data/</path>
    <tmp_path>$dir/tmp/</tmp_path>
    <user_files_path>$dir/user_files/</user_files_path>
    <format_schema_path>$dir/format_schemas/</format_schema_path>
    <users_config>$dir/users.xml</users_config>
    <default_profile>default</default_profile>
    <default_database>default</default_database>
    <mark_cache_size>268435456</mark_cache_size>
    <uncompressed_cache_size>268435456</uncompressed_cache_size>
    <max_concurrent_queries>100</max_concurrent_queries>
    <mlock_executable>false</mlock_executable>
</yandex>
EOF
  cat >"$dir/users.xml" <<EOF
<?xml version="1.0"?>
<yandex>
    <profiles>
        <default>
            <max_memory_usage>4000000000</max_memory_usage>
            <load_balancing>random</load_balancing>
        </default>
    </profiles>
    <users>
        <default>
            <password></password>
            <networks><ip>127.0.0.1</ip><ip>::1</ip></networks>
            <profile>default</profile>
            <quota>default</quota>
        </default>
    </users>
    <quotas><default><interval><duration>3600</duration><queries>0</queries><errors>0</errors>
        <result_rows>0</result_rows><read_rows>0</read_rows><execution_time>0</execution_time>
    </interval></default></quotas>
</yandex>
EOF
  local bin
  bin=$(clickhouse_bin)
  if [ "$(basename "$bin")" = "clickhouse" ]; then
    ( cd "$dir" && exec "$bin" server --config-file="$dir/config.xml" >>"$dir/stdout.log" 2>&1 ) &
  else
    ( cd "$dir" && exec "$bin" --config-file="$dir/config.xml" >>"$dir/stdout.log" 2>&1 ) &
  fi
  pid=$!
  echo "$pid" >"$dir/pid"
  local i=0
  while [ $i -lt 600 ]; do
    if ! kill -0 "$pid" 2>/dev/null; then break; fi
    if python3 -c "import urllib.request,sys; sys.exit(0 if urllib.request.urlopen('http://127.0.0.1:$port/ping', timeout=1).read().strip()==b'Ok.' else 1)" 2>/dev/null; then
      echo "http://127.0.0.1:$port" | tee "$dir/address"
      return 0
    fi
    sleep 0.1
    i=$((i + 1))
  done
  log "ClickHouse did not start; its logs:"
  tail -n 30 "$dir/server.err.log" "$dir/stdout.log" >&2 2>/dev/null || true
  return 1
}

stop_dir() {
  local dir=$1 pid i=0
  [ -f "$dir/pid" ] || return 0
  pid=$(cat "$dir/pid")
  if kill -0 "$pid" 2>/dev/null; then
    kill "$pid" 2>/dev/null || true
    while kill -0 "$pid" 2>/dev/null && [ $i -lt 100 ]; do
      sleep 0.1
      i=$((i + 1))
    done
    kill -9 "$pid" 2>/dev/null || true
  fi
  rm -f "$dir/pid"
}

print_env() {
  echo "export EXIM_PILOT_TANSU=$(tansu_bin)"
  echo "export EXIM_PILOT_CLICKHOUSE_SERVER=$(clickhouse_bin)"
  echo "export EXIM_PILOT_CHDB_PYTHON=$(chdb_python)"
  echo "export EXIM_PILOT_SERVICES=$root/scripts/services.sh"
  echo "export EXIM_PILOT_EXIM=/usr/sbin/exim4"
}

cmd=${1:-}
case "$cmd" in
  install)
    install_clickhouse
    install_chdb
    install_exim
    install_tansu
    ;;
  env)
    print_env
    ;;
  start)
    case "${2:-}" in
      kafka) start_kafka "$3" ;;
      clickhouse) start_clickhouse "$3" ;;
      *) echo "usage: $0 start kafka|clickhouse DIR" >&2; exit 2 ;;
    esac
    ;;
  stop)
    stop_dir "${2:?usage: $0 stop DIR}"
    ;;
  up)
    state=${2:?usage: $0 up STATE}
    "$0" install
    kafka=$(start_kafka "$state/kafka")
    clickhouse=$(start_clickhouse "$state/clickhouse")
    print_env
    echo "export EXIM_PILOT_TEST_KAFKA=$kafka"
    echo "export EXIM_PILOT_TEST_CLICKHOUSE=$clickhouse"
    ;;
  down)
    state=${2:?usage: $0 down STATE}
    stop_dir "$state/kafka"
    stop_dir "$state/clickhouse"
    ;;
  *)
    sed -n '2,28p' "$0" >&2
    exit 2
    ;;
esac
