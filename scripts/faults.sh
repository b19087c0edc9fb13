#!/usr/bin/env bash
# The fault, abuse and secrets suite: the end-to-end fault tests (upstream,
# Redis, client, secrets, tenants), the ClickHouse outage and slow-sink
# tests, the Redis-down limits test, the soak, and every fuzz target. It
# starts Redis and ClickHouse on loopback (scripts/services.sh), runs the
# tests against the built binary and the fake upstream, prints a summary,
# and ends what it started by PID.
#
# Usage: scripts/faults.sh
#   SLUICE_SOAK=10m         the soak's duration (default 10m; 0 skips it)
#   SLUICE_SOAK_RATE=200    its request rate per second
#   FUZZTIME=10s            each fuzz target's budget (0 skips fuzzing)
#   FAULTS_RUN=REGEXP       the tests to run (default: the whole suite)
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$PATH:/usr/local/go/bin"
command -v go >/dev/null || { echo "faults.sh: Go 1.26 is required" >&2; exit 1; }

SLUICE_SOAK="${SLUICE_SOAK:-10m}"
if [ "$SLUICE_SOAK" = "0" ]; then
  unset SLUICE_SOAK
else
  export SLUICE_SOAK
fi
export FUZZTIME="${FUZZTIME:-10s}"
FAULTS_RUN="${FAULTS_RUN:-^(TestFault|TestSoak|TestTranscriptsSurviveClickHouseKilled|TestSinkNeverSlowsRequests|TestLimitsRedisDown)}"

# seconds DURATION prints a Go duration of h, m and s parts in seconds
# (600 for "10m"; 0 when it cannot tell).
seconds() {
  local d="$1" total=0 n u
  while [[ "$d" =~ ^([0-9]+)(h|m|s)(.*)$ ]]; do
    n="${BASH_REMATCH[1]}" u="${BASH_REMATCH[2]}" d="${BASH_REMATCH[3]}"
    case "$u" in h) total=$((total + n * 3600)) ;; m) total=$((total + n * 60)) ;; s) total=$((total + n)) ;; esac
  done
  [ -z "$d" ] && echo "$total" || echo 0
}
soak_s=0
if [ -n "${SLUICE_SOAK:-}" ]; then
  soak_s="$(seconds "$SLUICE_SOAK")"
  [ "$soak_s" -gt 0 ] || { echo "faults.sh: SLUICE_SOAK=$SLUICE_SOAK: want a duration such as 10m or 90s" >&2; exit 2; }
fi
# The fault tests and the ClickHouse ones take about 15 minutes together;
# the soak adds its duration and a few minutes of settling and checking.
timeout_s=$((soak_s + 40 * 60))

mkdir -p bin
e2e_log=bin/faults-e2e.log
fuzz_log=bin/faults-fuzz.log
test_pid=""
cleanup() {
  if [ -n "$test_pid" ] && kill -0 "$test_pid" 2>/dev/null; then
    kill "$test_pid" 2>/dev/null || true
    wait "$test_pid" 2>/dev/null || true
  fi
  stop_services
}

source scripts/services.sh
trap cleanup EXIT
trap 'exit 130' INT TERM
start_redis
start_clickhouse

started=$SECONDS
echo "== e2e: go test -run '$FAULTS_RUN' ./e2e/ (SLUICE_SOAK=${SLUICE_SOAK:-off}, timeout ${timeout_s}s; log $e2e_log)"
go test -count=1 -timeout "${timeout_s}s" -run "$FAULTS_RUN" -v ./e2e/ >"$e2e_log" 2>&1 &
test_pid=$!
e2e_rc=0
wait "$test_pid" || e2e_rc=$?
test_pid=""
e2e_time=$((SECONDS - started))

fuzz_rc=0
if [ "$FUZZTIME" != "0" ]; then
  echo "== fuzz: every target, $FUZZTIME each (log $fuzz_log)"
  scripts/fuzz.sh >"$fuzz_log" 2>&1 || fuzz_rc=$?
fi

echo
echo "== summary"
pass=$(grep -c '^--- PASS' "$e2e_log" || true)
fail=$(grep -c '^--- FAIL' "$e2e_log" || true)
skip=$(grep -c '^--- SKIP' "$e2e_log" || true)
echo "e2e: $pass passed, $fail failed, $skip skipped in ${e2e_time}s (exit $e2e_rc)"
grep -E '^--- (FAIL|SKIP)' "$e2e_log" | sed 's/^/  /' || true
grep -E '^    soak_test\.go:[0-9]+: soak' "$e2e_log" | sed -E 's/^    soak_test\.go:[0-9]+: /  /' || true
if [ "$FUZZTIME" != "0" ]; then
  sed 's/^/  /' "$fuzz_log" | grep -Ev '^  (fuzz: elapsed|=== |--- PASS)' | tail -n 40
fi
if [ "$e2e_rc" -ne 0 ] || [ "$fuzz_rc" -ne 0 ]; then
  if [ "$e2e_rc" -ne 0 ] && [ "$fail" -eq 0 ]; then
    echo "e2e failed without a failing test (build error, timeout or panic):"
    tail -n 40 "$e2e_log"
  fi
  echo "faults: FAILED (details in $e2e_log and $fuzz_log)"
  exit 1
fi
echo "faults: all passed"
