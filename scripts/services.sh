# shellcheck shell=bash
# Services the integration tests need, started on loopback and stopped by PID.
# Meant to be sourced by scripts/test.sh (or by hand):
#
#   source scripts/services.sh
#   trap stop_services EXIT
#   start_redis            # exports SLUICE_TEST_REDIS_ADDR=127.0.0.1:PORT
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
  local attempt port pid i
  for attempt in 1 2 3; do
    port="$(_free_port)" || return 1
    mkdir -p "$SERVICE_TMPDIR/redis-$port"
    redis-server --bind 127.0.0.1 --port "$port" --save '' --appendonly no \
      --dir "$SERVICE_TMPDIR/redis-$port" --daemonize no \
      >"$SERVICE_TMPDIR/redis-$port.log" 2>&1 &
    pid=$!
    for i in $(seq 1 100); do # up to 10 s
      if redis-cli -h 127.0.0.1 -p "$port" ping 2>/dev/null | grep -q PONG; then
        SERVICE_PIDS+=("$pid")
        SERVICE_REDIS_PID="$pid"
        export SLUICE_TEST_REDIS_ADDR="127.0.0.1:$port"
        echo "services.sh: redis-server pid $pid on $SLUICE_TEST_REDIS_ADDR" >&2
        return 0
      fi
      kill -0 "$pid" 2>/dev/null || break # exited (port taken?): try another port
      sleep 0.1
    done
    kill "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
    echo "services.sh: redis-server on port $port did not start (attempt $attempt):" >&2
    tail -n 5 "$SERVICE_TMPDIR/redis-$port.log" >&2
  done
  return 1
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
  if [ -n "$SERVICE_TMPDIR" ]; then rm -rf "$SERVICE_TMPDIR"; SERVICE_TMPDIR=""; fi
}
