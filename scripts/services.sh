# shellcheck shell=bash
# Services the integration tests need, started on loopback and stopped by PID.
# Meant to be sourced by scripts/test.sh (or by hand):
#
#   source scripts/services.sh
#   trap stop_services EXIT
#   start_redis            # exports SLUICE_TEST_REDIS_ADDR=127.0.0.1:PORT
#   start_clickhouse       # exports SLUICE_TEST_CLICKHOUSE_ADDR=127.0.0.1:NATIVEPORT
#   start_prometheus       # exports SLUICE_TEST_PROMETHEUS=http://127.0.0.1:PORT and
#                          #   SLUICE_TEST_PROMETHEUS_TARGETS=DIR (file_sd: tests drop targets there)
#   ensure_uvicorn         # Debian's python3-uvicorn for /usr/bin/python3 (the conformance suite's
#                          #   uvicorn upstream); exports SLUICE_TEST_UVICORN=1 so a missing one fails
#   ensure_node            # Node.js for the conformance suite's Node http upstream
#   ensure_chromium        # Debian's chromium for the console's browser test; exports
#                          #   SLUICE_TEST_CHROMIUM=1 so a missing one fails
#
# Debian's packages are installed only when the binary is missing. Nothing is
# killed by name: stop_services ends exactly the PIDs recorded here.

SERVICE_PIDS=()          # PIDs started by this file, for stop_services
SERVICE_TMPDIR=""        # scratch directory for the services' files

_services_tmpdir() {
  if [ -z "$SERVICE_TMPDIR" ]; then
    SERVICE_TMPDIR="$(mktemp -d "${TMPDIR:-/tmp}/sluice-services.XXXXXX")"
  fi
}

# _free_port prints a loopback TCP port that nothing listens on now
# (random in 20000-59999; the caller still retries if the bind loses a race).
_free_port() {
  local port i
  for i in $(seq 1 50); do
    port=$((20000 + RANDOM % 40000))
    if ! (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
      echo "$port"; return 0
    fi
  done
  echo "services.sh: no free loopback port found" >&2
  return 1
}

# _apt_install PKG...: install Debian packages, refreshing the lists once if
# the first attempt fails (a fresh machine has stale or no lists).
_apt_install() {
  export DEBIAN_FRONTEND=noninteractive
  apt-get install -y --no-install-recommends "$@" >/dev/null ||
    { apt-get update >/dev/null && apt-get install -y --no-install-recommends "$@" >/dev/null; }
}

# _wait_up PID CMD...: runs CMD every 0.1 s until it succeeds (status 0),
# for up to 15 s; status 1 when PID exits first (its port was taken?) or
# the time runs out.
_wait_up() {
  local pid="$1" i
  shift
  for i in $(seq 1 150); do
    "$@" && return 0
    kill -0 "$pid" 2>/dev/null || return 1
    sleep 0.1
  done
  return 1
}

_redis_ping() { redis-cli -h 127.0.0.1 -p "$1" ping 2>/dev/null | grep -q PONG; }

# start_redis starts a throwaway Redis (no persistence) on a free loopback port
# and exports SLUICE_TEST_REDIS_ADDR. Idempotent within one shell.
start_redis() {
  if [ -n "${SLUICE_TEST_REDIS_ADDR:-}" ] && [ -n "${SERVICE_REDIS_PID:-}" ]; then
    return 0
  fi
  if ! command -v redis-server >/dev/null || ! command -v redis-cli >/dev/null; then
    echo "services.sh: installing redis-server (Debian package)" >&2
    _apt_install redis-server || { echo "services.sh: cannot install redis-server" >&2; return 1; }
  fi
  _services_tmpdir
  local attempt port pid
  for attempt in 1 2 3; do
    port="$(_free_port)" || return 1
    mkdir -p "$SERVICE_TMPDIR/redis-$port"
    redis-server --bind 127.0.0.1 --port "$port" --save '' --appendonly no \
      --dir "$SERVICE_TMPDIR/redis-$port" --daemonize no \
      >"$SERVICE_TMPDIR/redis-$port.log" 2>&1 &
    pid=$!
    if _wait_up "$pid" _redis_ping "$port"; then
      SERVICE_PIDS+=("$pid")
      SERVICE_REDIS_PID="$pid"
      export SLUICE_TEST_REDIS_ADDR="127.0.0.1:$port"
      echo "services.sh: redis-server pid $pid on $SLUICE_TEST_REDIS_ADDR" >&2
      return 0
    fi
    kill "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
    echo "services.sh: redis-server on port $port did not start (attempt $attempt):" >&2
    tail -n 5 "$SERVICE_TMPDIR/redis-$port.log" >&2
  done
  return 1
}

# clickhouse_config DIR TCPPORT HTTPPORT writes a ClickHouse 18.16 config
# (root <yandex>) that keeps every path under DIR and listens on loopback
# only; users.xml lets "default" in from loopback without a password and
# allows LowCardinality. The e2e tests write the same files for the servers
# they kill and restart themselves.
clickhouse_config() {
  local dir="$1" tcp="$2" http="$3"
  mkdir -p "$dir/data" "$dir/tmp" "$dir/user_files" "$dir/format_schemas" "$dir/log"
  cat >"$dir/config.xml" <<EOF
<yandex>
  <logger><level>warning</level><log>$dir/log/server.log</log><errorlog>$dir/log/error.log</errorlog><size>10M</size><count>1</count></logger>
  <listen_host>127.0.0.1</listen_host>
  <tcp_port>$tcp</tcp_port>
  <http_port>$http</http_port>
  <path>$dir/data/</path>
  <tmp_path>$dir/tmp/</tmp_path>
  <user_files_path>$dir/user_files/</user_files_path>
  <format_schema_path>$dir/format_schemas/</format_schema_path>
  <users_config>$dir/users.xml</users_config>
  <default_profile>default</default_profile>
  <default_database>default</default_database>
  <mark_cache_size>268435456</mark_cache_size>
  <max_concurrent_queries>100</max_concurrent_queries>
</yandex>
EOF
  cat >"$dir/users.xml" <<'EOF'
<yandex>
  <profiles><default><allow_experimental_low_cardinality_type>1</allow_experimental_low_cardinality_type></default></profiles>
  <users><default><password></password><networks><ip>127.0.0.1</ip><ip>::1</ip></networks><profile>default</profile><quota>default</quota></default></users>
  <quotas><default><interval><duration>3600</duration><queries>0</queries><errors>0</errors><result_rows>0</result_rows><read_rows>0</read_rows><execution_time>0</execution_time></interval></default></quotas>
</yandex>
EOF
}

# _clickhouse_ping TCPPORT HTTPPORT succeeds when the server answers.
_clickhouse_ping() {
  if command -v curl >/dev/null; then
    [ "$(curl -s "http://127.0.0.1:$2/ping" 2>/dev/null)" = "Ok." ]
  else
    clickhouse-client --host 127.0.0.1 --port "$1" -q 'SELECT 1' >/dev/null 2>&1
  fi
}

# start_clickhouse starts a throwaway ClickHouse (Debian's 18.16) with its
# files in the scratch directory, on free loopback ports, and exports
# SLUICE_TEST_CLICKHOUSE_ADDR (host:native port) and
# SLUICE_TEST_CLICKHOUSE_HTTP (host:http port). Idempotent within one shell.
start_clickhouse() {
  if [ -n "${SLUICE_TEST_CLICKHOUSE_ADDR:-}" ] && [ -n "${SERVICE_CLICKHOUSE_PID:-}" ]; then
    return 0
  fi
  if ! command -v clickhouse-server >/dev/null || ! command -v clickhouse-client >/dev/null; then
    echo "services.sh: installing clickhouse-server (Debian package)" >&2
    _apt_install clickhouse-server clickhouse-client || { echo "services.sh: cannot install clickhouse-server" >&2; return 1; }
  fi
  _services_tmpdir
  local attempt tcp http pid dir
  for attempt in 1 2 3; do
    tcp="$(_free_port)" || return 1
    http="$(_free_port)" || return 1
    [ "$tcp" = "$http" ] && continue
    dir="$SERVICE_TMPDIR/clickhouse-$tcp"
    clickhouse_config "$dir" "$tcp" "$http"
    clickhouse-server --config-file="$dir/config.xml" >"$dir/log/stdout.log" 2>&1 &
    pid=$!
    if _wait_up "$pid" _clickhouse_ping "$tcp" "$http"; then
      SERVICE_PIDS+=("$pid")
      SERVICE_CLICKHOUSE_PID="$pid"
      export SLUICE_TEST_CLICKHOUSE_ADDR="127.0.0.1:$tcp"
      export SLUICE_TEST_CLICKHOUSE_HTTP="127.0.0.1:$http"
      echo "services.sh: clickhouse-server pid $pid on $SLUICE_TEST_CLICKHOUSE_ADDR (http $http)" >&2
      return 0
    fi
    kill -9 "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
    echo "services.sh: clickhouse-server on port $tcp did not start (attempt $attempt):" >&2
    tail -n 5 "$dir/log/error.log" "$dir/log/stdout.log" >&2 2>/dev/null || true
  done
  return 1
}

# ensure_promtool installs Debian's prometheus package (prometheus and
# promtool) when either binary is missing.
ensure_promtool() {
  if ! command -v promtool >/dev/null || ! command -v prometheus >/dev/null; then
    echo "services.sh: installing prometheus (Debian package, brings promtool)" >&2
    _apt_install prometheus || { echo "services.sh: cannot install prometheus" >&2; return 1; }
  fi
}

_prometheus_ready() {
  (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null &&
    { ! command -v curl >/dev/null || curl -sf "http://127.0.0.1:$1/-/ready" >/dev/null; }
}

# start_prometheus starts a throwaway Prometheus (Debian's 2.42) on a free
# loopback port that scrapes, every second, the targets tests write as file_sd
# JSON into SLUICE_TEST_PROMETHEUS_TARGETS (job "sluice"), and evaluates
# dashboards/alerts.yaml every second. Exports SLUICE_TEST_PROMETHEUS (its
# base URL). Idempotent within one shell.
start_prometheus() {
  if [ -n "${SLUICE_TEST_PROMETHEUS:-}" ] && [ -n "${SERVICE_PROMETHEUS_PID:-}" ]; then
    return 0
  fi
  ensure_promtool || return 1
  _services_tmpdir
  local rules attempt port pid dir
  rules="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)/dashboards/alerts.yaml"
  for attempt in 1 2 3; do
    port="$(_free_port)" || return 1
    dir="$SERVICE_TMPDIR/prometheus-$port"
    mkdir -p "$dir/data" "$dir/targets"
    cat >"$dir/prometheus.yml" <<EOF
global:
  scrape_interval: 1s
  scrape_timeout: 1s
  evaluation_interval: 1s
rule_files:
  - $rules
scrape_configs:
  - job_name: sluice
    file_sd_configs:
      - files: ['$dir/targets/*.json']
        refresh_interval: 1s
EOF
    prometheus --config.file="$dir/prometheus.yml" --storage.tsdb.path="$dir/data" \
      --web.listen-address="127.0.0.1:$port" --log.level=warn >"$dir/prometheus.log" 2>&1 &
    pid=$!
    if _wait_up "$pid" _prometheus_ready "$port"; then
      SERVICE_PIDS+=("$pid")
      SERVICE_PROMETHEUS_PID="$pid"
      export SLUICE_TEST_PROMETHEUS="http://127.0.0.1:$port"
      export SLUICE_TEST_PROMETHEUS_TARGETS="$dir/targets"
      echo "services.sh: prometheus pid $pid on $SLUICE_TEST_PROMETHEUS" >&2
      return 0
    fi
    kill "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
    echo "services.sh: prometheus on port $port did not start (attempt $attempt):" >&2
    tail -n 5 "$dir/prometheus.log" >&2
  done
  return 1
}

# ensure_uvicorn installs Debian's python3-uvicorn when Debian's python3
# cannot import uvicorn (a pyenv python3 first on PATH does not count: the
# package goes to /usr/lib/python3/dist-packages), and exports
# SLUICE_TEST_UVICORN=1: the conformance suite (e2e/conformance_test.go) then
# fails instead of skipping when its upstreams are missing.
ensure_uvicorn() {
  if ! /usr/bin/python3 -c 'import uvicorn' 2>/dev/null; then
    echo "services.sh: installing python3-uvicorn (Debian package)" >&2
    _apt_install python3-uvicorn || { echo "services.sh: cannot install python3-uvicorn" >&2; return 1; }
    /usr/bin/python3 -c 'import uvicorn' || { echo "services.sh: /usr/bin/python3 still cannot import uvicorn" >&2; return 1; }
  fi
  export SLUICE_TEST_UVICORN=1
}

# ensure_node installs Debian's nodejs when there is no node at all (the
# conformance suite's Node upstream uses only Node's built-in modules).
ensure_node() {
  if ! command -v node >/dev/null && [ ! -x /usr/bin/node ]; then
    echo "services.sh: installing nodejs (Debian package)" >&2
    _apt_install nodejs || { echo "services.sh: cannot install nodejs" >&2; return 1; }
  fi
}

# ensure_chromium installs Debian's chromium when it is missing (the e2e
# suite drives it headless to load the console's pages).
ensure_chromium() {
  if ! command -v chromium >/dev/null; then
    echo "services.sh: installing chromium (Debian package)" >&2
    _apt_install chromium || { echo "services.sh: cannot install chromium" >&2; return 1; }
  fi
  export SLUICE_TEST_CHROMIUM=1
}

# stop_services ends the recorded PIDs (and only those) and removes the
# scratch directory. Safe to call twice, e.g. from an EXIT trap.
stop_services() {
  local pid
  for pid in "${SERVICE_PIDS[@]}"; do
    if kill -0 "$pid" 2>/dev/null; then
      kill "$pid" 2>/dev/null || true
      wait "$pid" 2>/dev/null || true
    fi
  done
  SERVICE_PIDS=()
  unset SERVICE_REDIS_PID SLUICE_TEST_REDIS_ADDR
  unset SERVICE_CLICKHOUSE_PID SLUICE_TEST_CLICKHOUSE_ADDR SLUICE_TEST_CLICKHOUSE_HTTP
  unset SERVICE_PROMETHEUS_PID SLUICE_TEST_PROMETHEUS SLUICE_TEST_PROMETHEUS_TARGETS
  if [ -n "$SERVICE_TMPDIR" ]; then rm -rf "$SERVICE_TMPDIR"; SERVICE_TMPDIR=""; fi
}
